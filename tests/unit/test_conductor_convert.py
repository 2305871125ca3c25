"""Rendering resolutions: the template cache must never leak one call's answer into another."""

from __future__ import annotations

from conductor_server.api import convert
from conductor_server.domain.catalog import PipelineCatalog
from conductor_server.domain.loader import parse_catalog
from conductor_server.domain.model import StepState, StepStatus
from conductor_server.domain.resolution import Resolution, resolve
from generated.huleedu.conductor.v1 import conductor_pb2 as pb
from generated.huleedu.events.v1 import events_pb2
from mesh.events.topics import COMMAND_KINDS
from pipelines import default_definitions

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
