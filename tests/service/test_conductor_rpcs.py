"""Every PipelineConductorService RPC and error path, over a real server with in-memory state."""

from __future__ import annotations

import grpc
import pytest
from google.rpc import error_details_pb2 as details

from clients import RpcError
from generated.huleedu.conductor.v1 import conductor_pb2 as pb
from generated.huleedu.events.v1 import events_pb2
from mesh.events import envelope
from mesh.events.bus import OutgoingEvent
from mesh.events.topics import EventKind, dlq_topic, topic_name
from tests.service.conftest import RunningConductor
from tests.support.polling import eventually
from tests.support.status import violations

ESSAYS = [f"e{i}" for i in range(10)]
PROMPT = {"prompt_attached": True}


async def _register(
    c: RunningConductor, batch: str = "b1", flags: dict[str, bool] | None = None
) -> None:
    await c.client.register_batch(batch, ESSAYS, flags if flags is not None else PROMPT)


async def _finish_spellcheck(c: RunningConductor, batch: str = "b1", failures: int = 0) -> None:
    for i, essay in enumerate(ESSAYS):
        await c.client.record_step_outcome(batch, "spellcheck", essay, succeeded=i >= failures)


def _payloads(c: RunningConductor, kind: EventKind) -> list[events_pb2.EventEnvelope]:
    return [envelope.decode(r.value) for r in c.bus.records(topic_name(kind))]


async def test_list_and_get_pipelines_show_definitions_with_versions(
    conductor: RunningConductor,
) -> None:
    listing = await conductor.client.list_pipelines()
    names = [p.name for p in listing.pipelines]
    assert names == ["spellcheck", "nlp", "cj_assessment", "ai_feedback", "comprehensive"]
    assert all(len(p.version) == 64 for p in listing.pipelines)
    assert list(listing.flags) == ["prompt_attached"]  # every flag some step requires
    nlp = await conductor.client.get_pipeline("nlp")
    assert [s.name for s in nlp.steps] == ["spellcheck", "nlp"]
    assert list(nlp.steps[1].requires) == ["prompt_attached"]
    assert [(s.timeout.seconds, s.produces_text) for s in nlp.steps] == [(900, True), (1800, False)]


async def test_unknown_pipeline_is_not_found_with_resource_info(
    conductor: RunningConductor,
) -> None:
    with pytest.raises(RpcError) as caught:
        await conductor.client.get_pipeline("nope")
    assert caught.value.code is grpc.StatusCode.NOT_FOUND
    info = caught.value.detail(details.ResourceInfo)
    assert isinstance(info, details.ResourceInfo)
    assert info.resource_name == "nope"


async def test_register_batch_is_idempotent_and_rejects_a_different_essay_set(
    conductor: RunningConductor,
) -> None:
    first = await conductor.client.register_batch("b1", ESSAYS, PROMPT)
    again = await conductor.client.register_batch("b1", ESSAYS, PROMPT)
    assert (first.created, again.created, again.essay_count) == (True, False, 10)
    with pytest.raises(RpcError) as caught:
        await conductor.client.register_batch("b1", ESSAYS[:3])
    assert caught.value.code is grpc.StatusCode.ALREADY_EXISTS


async def test_registering_an_unknown_flag_is_refused_naming_the_known_ones(
    conductor: RunningConductor,
) -> None:
    for flags in ({"prompt_atached": True}, {"prompt_atached": False}):  # true or false
        with pytest.raises(RpcError) as caught:
            await conductor.client.register_batch("b1", ESSAYS, flags)
        assert violations(caught.value, "UNKNOWN_FLAG") == [
            ("flags[prompt_atached]", "unknown flag 'prompt_atached'; known flags: prompt_attached")
        ]
    with pytest.raises(RpcError) as caught:  # nothing was registered
        await conductor.client.get_batch_pipeline_state("b1")
    assert caught.value.reason == "BATCH_NOT_FOUND"
    with pytest.raises(RpcError) as caught:  # every unknown flag, sorted, the known ones kept
        await conductor.client.register_batch("b1", ESSAYS, {"zz": True, "aa": True, **PROMPT})
    assert [field for field, _ in violations(caught.value, "UNKNOWN_FLAG")] == [
        "flags[aa]",
        "flags[zz]",
    ]


async def test_resolving_or_validating_with_an_unknown_flag_is_refused(
    conductor: RunningConductor,
) -> None:
    await _register(conductor)
    calls = [
        conductor.client.resolve_pipeline("b1", "nlp", flags={"promt": True}, dry_run=True),
        conductor.client.validate_prerequisites("b1", "spellcheck", flags={"promt": False}),
        conductor.client.resolve_pipeline("unknown-batch", "nlp", flags={"promt": True}),
    ]
    for call in calls:
        with pytest.raises(RpcError) as caught:
            await call
        [(field, _)] = violations(caught.value, "UNKNOWN_FLAG")
        assert field == "flags[promt]"
    assert _payloads(conductor, EventKind.PHASE_SKIPPED) == []


@pytest.mark.parametrize(
    ("batch_id", "essays", "field"),
    [
        ("", ["a"], "batch_id"),
        ("has space", ["a"], "batch_id"),
        ("x" * 256, ["a"], "batch_id"),
        ("b", [], "essay_ids"),
        ("b", ["a", "a"], "essay_ids[1]"),
        ("b", ["ok", "tab\there"], "essay_ids[1]"),
    ],
)
async def test_malformed_registration_is_invalid_argument_naming_the_field(
    conductor: RunningConductor, batch_id: str, essays: list[str], field: str
) -> None:
    with pytest.raises(RpcError) as caught:
        await conductor.client.register_batch(batch_id, essays)
    assert caught.value.code is grpc.StatusCode.INVALID_ARGUMENT
    bad = caught.value.detail(details.BadRequest)
    assert isinstance(bad, details.BadRequest)
    assert field in [v.field for v in bad.field_violations]


async def test_resolve_orders_steps_and_accepts_a_plain_step_target(
    conductor: RunningConductor,
) -> None:
    await _register(conductor)
    full = await conductor.client.resolve_pipeline("b1", "comprehensive", dry_run=True)
    assert [s.name for s in full.steps] == ["spellcheck", "nlp", "cj_assessment", "ai_feedback"]
    assert len(full.definition_version) == 64
    step = await conductor.client.resolve_pipeline("b1", "spellcheck", dry_run=True)
    assert [s.name for s in step.steps] == ["spellcheck"]


async def test_unmet_gate_is_failed_precondition_naming_the_flag(
    conductor: RunningConductor,
) -> None:
    await _register(conductor, flags={})
    with pytest.raises(RpcError) as caught:
        await conductor.client.resolve_pipeline("b1", "nlp")
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION
    failure = caught.value.detail(details.PreconditionFailure)
    assert isinstance(failure, details.PreconditionFailure)
    assert [(v.type, v.subject) for v in failure.violations] == [("FLAG", "prompt_attached")]
    # the request's flags override the registered ones
    resolved = await conductor.client.resolve_pipeline("b1", "nlp", flags=PROMPT, dry_run=True)
    assert [s.name for s in resolved.steps] == ["spellcheck", "nlp"]


async def test_unknown_target_and_unknown_batch_are_not_found(conductor: RunningConductor) -> None:
    await _register(conductor)
    for batch, target, reason in [
        ("b1", "nope", "PIPELINE_NOT_FOUND"),
        ("zz", "nlp", "BATCH_NOT_FOUND"),
    ]:
        with pytest.raises(RpcError) as caught:
            await conductor.client.resolve_pipeline(batch, target)
        assert caught.value.code is grpc.StatusCode.NOT_FOUND
        assert caught.value.reason == reason


async def test_prerequisites_name_every_unmet_step_and_flag(conductor: RunningConductor) -> None:
    await _register(conductor, flags={})
    with pytest.raises(RpcError) as caught:
        await conductor.client.validate_prerequisites("b1", "ai_feedback")
    failure = caught.value.detail(details.PreconditionFailure)
    assert isinstance(failure, details.PreconditionFailure)
    assert [(v.type, v.subject) for v in failure.violations] == [
        ("STEP", "spellcheck"),
        ("STEP", "nlp"),
        ("FLAG", "prompt_attached"),
    ]
    ok = await conductor.client.validate_prerequisites("b1", "spellcheck")
    assert ok.step == "spellcheck"


async def test_outcomes_count_exactly_once_and_complete_the_step_once(
    conductor: RunningConductor,
) -> None:
    await _register(conductor)
    responses = [
        await conductor.client.record_step_outcome("b1", "spellcheck", e, succeeded=e != "e0")
        for e in ESSAYS
    ]
    assert [r.completed_step for r in responses] == [False] * 9 + [True]
    repeat = await conductor.client.record_step_outcome("b1", "spellcheck", "e5", succeeded=True)
    assert (repeat.newly_recorded, repeat.completed_step) == (False, False)
    assert (repeat.state.succeeded, repeat.state.failed, repeat.state.total) == (9, 1, 10)
    assert repeat.state.status == pb.STEP_STATUS_SATISFIED  # 9/10 meets the 0.9 ratio

    state = await conductor.client.get_batch_pipeline_state("b1")
    by_step = {s.step: s for s in state.steps}
    assert by_step["nlp"].total == 9  # e0 failed spellcheck: not sent to NLP
    assert by_step["nlp"].status == pb.STEP_STATUS_NOT_STARTED

    completed = _payloads(conductor, EventKind.BATCH_STEP_COMPLETED)
    assert len(completed) == 1
    event = completed[0].batch_step_completed
    assert (event.step, event.succeeded, event.failed, event.satisfied) == (
        "spellcheck",
        9,
        1,
        True,
    )
    assert sorted(e.essay_id for e in event.succeeded_essays) == ESSAYS[1:]


@pytest.mark.parametrize(
    ("essay", "first", "second", "code"),
    [
        ("e1", True, False, grpc.StatusCode.ALREADY_EXISTS),
        ("stranger", True, True, grpc.StatusCode.FAILED_PRECONDITION),
    ],
)
async def test_conflicting_or_unexpected_outcomes_are_refused(
    conductor: RunningConductor, essay: str, first: bool, second: bool, code: grpc.StatusCode
) -> None:
    await _register(conductor)
    if essay in ESSAYS:
        await conductor.client.record_step_outcome("b1", "spellcheck", essay, succeeded=first)
    with pytest.raises(RpcError) as caught:
        await conductor.client.record_step_outcome("b1", "spellcheck", essay, succeeded=second)
    assert caught.value.code is code


async def test_outcome_for_a_step_whose_dependencies_are_pending_is_refused(
    conductor: RunningConductor,
) -> None:
    await _register(conductor)
    with pytest.raises(RpcError) as caught:
        await conductor.client.record_step_outcome("b1", "nlp", "e1", succeeded=True)
    assert caught.value.code is grpc.StatusCode.FAILED_PRECONDITION


async def test_pruned_steps_emit_phase_skipped_except_on_dry_runs(
    conductor: RunningConductor,
) -> None:
    await _register(conductor)
    await _finish_spellcheck(conductor)
    dry = await conductor.client.resolve_pipeline("b1", "nlp", dry_run=True)
    assert [s.name for s in dry.steps] == ["nlp"]
    assert [p.step for p in dry.pruned_steps] == ["spellcheck"]
    assert _payloads(conductor, EventKind.PHASE_SKIPPED) == []
    await conductor.client.resolve_pipeline("b1", "nlp")
    skipped = [e.phase_skipped for e in _payloads(conductor, EventKind.PHASE_SKIPPED)]
    assert [(s.batch_id, s.step, s.target) for s in skipped] == [("b1", "spellcheck", "nlp")]


async def test_a_fully_satisfied_batch_resolves_to_no_steps(conductor: RunningConductor) -> None:
    await _register(conductor)
    await _finish_spellcheck(conductor)
    resolved = await conductor.client.resolve_pipeline("b1", "spellcheck", dry_run=True)
    assert list(resolved.steps) == []
    assert [p.step for p in resolved.pruned_steps] == ["spellcheck"]


async def _outcome_event(batch: str, essay: str, ok: bool = True) -> OutgoingEvent:
    payload = events_pb2.EssayStepOutcome(
        batch_id=batch,
        step="spellcheck",
        essay_id=essay,
        outcome=events_pb2.STEP_OUTCOME_SUCCEEDED if ok else events_pb2.STEP_OUTCOME_FAILED,
    )
    return OutgoingEvent(
        EventKind.ESSAY_STEP_OUTCOME, envelope.build(payload, source_service="test")
    )


async def test_outcome_events_are_counted_and_poison_goes_to_the_dead_letter_topic(
    conductor: RunningConductor,
) -> None:
    await _register(conductor)
    good = [await _outcome_event("b1", e) for e in ESSAYS]
    duplicates = good[:3]
    unknown_batch = await _outcome_event("nobody", "e1")
    await conductor.bus.publish_many([*good[:5], *duplicates, unknown_batch, *good[5:]])
    from mesh.events.bus import OutgoingRecord

    topic = topic_name(EventKind.ESSAY_STEP_OUTCOME)
    await conductor.bus.write([OutgoingRecord(topic=topic, value=b"\x00garbage", key=b"b1")])

    async def counted() -> bool:
        state = await conductor.client.get_batch_pipeline_state("b1")
        spell = next(s for s in state.steps if s.step == "spellcheck")
        return spell.succeeded == 10 and spell.status == pb.STEP_STATUS_SATISFIED

    await eventually(counted)

    async def dead_lettered() -> bool:
        return len(conductor.bus.records(dlq_topic(topic))) == 2

    await eventually(dead_lettered)
    letters = [
        envelope.decode(r.value).dead_letter for r in conductor.bus.records(dlq_topic(topic))
    ]
    assert sorted(letter.error_info.type.rsplit(".", 1)[-1] for letter in letters) == [
        "UndecodableEnvelope",
        "UnknownBatch",
    ]
    assert b"\x00garbage" in [letter.payload for letter in letters]
