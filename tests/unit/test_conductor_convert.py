"""Rendering resolutions: the template cache must never leak one call's answer into another."""

from __future__ import annotations

from hypothesis import given

from conductor_server.api import convert
from conductor_server.domain.catalog import PipelineCatalog
from conductor_server.domain.loader import parse_catalog
from conductor_server.domain.model import StepDefinition, StepState, StepStatus
from conductor_server.domain.resolution import Resolution, resolve
from generated.huleedu.conductor.v1 import conductor_pb2 as pb
from generated.huleedu.events.v1 import events_pb2
from mesh.events.topics import COMMAND_KINDS
from pipelines import default_definitions
from tests.support.pipeline_strategies import dags

PROMPT = frozenset({"prompt_attached"})


def catalog() -> PipelineCatalog:
    source = default_definitions()
    return parse_catalog(source.read_text(encoding="utf-8"), str(source), set(COMMAND_KINDS))


def built(batch_id: str, resolution: Resolution) -> pb.ResolvePipelineResponse:
    """The response built field by field, without the template cache."""
    return convert._build_resolution(batch_id, resolution)


def test_each_response_equals_the_message_built_from_scratch() -> None:
    rules = catalog()
    satisfied = {"spellcheck": StepState("spellcheck", 3, 0, 3, StepStatus.SATISFIED)}
    cases = [
        ("b1", resolve(rules, "comprehensive", {}, PROMPT)),
        ("b2", resolve(rules, "comprehensive", satisfied, PROMPT)),  # same target, pruned
        ("b3", resolve(rules, "comprehensive", {}, PROMPT)),  # the first key again
        ("b4", resolve(rules, "nlp", satisfied, PROMPT)),
    ]
    for _ in range(2):  # the second pass answers from the templates
        for batch_id, resolution in cases:
            response = convert.resolution_to_proto(batch_id, resolution)
            assert response == built(batch_id, resolution)
    pruned = convert.resolution_to_proto("b2", cases[1][1])
    assert [(p.step, p.reason) for p in pruned.pruned_steps] == [
        ("spellcheck", events_pb2.SKIP_REASON_ALREADY_SATISFIED)
    ]
    assert [s.name for s in pruned.steps] == ["nlp", "cj_assessment", "ai_feedback"]


def test_a_changed_response_does_not_change_the_template() -> None:
    resolution = resolve(catalog(), "spellcheck", {}, frozenset())
    first = convert.resolution_to_proto("b1", resolution)
    first.steps[0].name = "tampered"
    first.target = "tampered"
    again = convert.resolution_to_proto("b2", resolution)
    assert again == built("b2", resolution)


@given(dags())
def test_step_definitions_round_trip_through_their_proto(steps: list[StepDefinition]) -> None:
    for step in steps:
        message = convert.step_definition_to_proto(step)
        assert message.HasField("timeout") == (step.timeout_seconds is not None)
        assert convert.step_definition_from_proto(message) == step


def test_a_step_s_timeout_is_a_duration_and_unset_without_one() -> None:
    steps = catalog().steps
    spellcheck = convert.step_definition_to_proto(steps["spellcheck"])
    assert (spellcheck.timeout.seconds, spellcheck.timeout.nanos) == (900, 0)
    assert spellcheck.produces_text
    nlp = convert.step_definition_to_proto(steps["nlp"])
    assert (nlp.timeout.seconds, nlp.produces_text) == (1800, False)
    untimed = convert.step_definition_to_proto(StepDefinition("x", "w", "nlp", min_success_ratio=1))
    assert not untimed.HasField("timeout")
    half = StepDefinition("x", "w", "nlp", timeout_seconds=0.5)
    assert convert.step_definition_to_proto(half).timeout.nanos == 500_000_000
