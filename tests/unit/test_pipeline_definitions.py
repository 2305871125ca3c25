"""Loading pipeline definitions: the shipped file, versions, and every validation error."""

from __future__ import annotations

import hashlib
import json
import textwrap

import pytest

from conductor_server.domain.catalog import PipelineCatalog
from conductor_server.domain.errors import DefinitionError, DefinitionIssue, IssueKind, UnknownFlag
from conductor_server.domain.loader import parse_catalog
from mesh.events.topics import COMMAND_KINDS
from pipelines import default_definitions

COMMANDS = frozenset(COMMAND_KINDS)
FILE = "defs.yaml"


def load(text: str) -> PipelineCatalog:
    return parse_catalog(textwrap.dedent(text), FILE, COMMANDS)


def problems(text: str) -> list[DefinitionIssue]:
    with pytest.raises(DefinitionError) as caught:
        load(text)
    return list(caught.value.issues)


def only(text: str) -> DefinitionIssue:
    [issue] = problems(text)
    assert issue.file == FILE
    return issue


def shipped() -> PipelineCatalog:
    source = default_definitions()
    return parse_catalog(source.read_text(encoding="utf-8"), str(source), COMMANDS)


def test_the_shipped_file_defines_the_reference_pipelines_in_file_order() -> None:
    catalog = shipped()
    assert [p.name for p in catalog.pipelines] == [
        "spellcheck",
        "nlp",
        "cj_assessment",
        "ai_feedback",
        "comprehensive",
    ]
    assert list(catalog.steps) == ["spellcheck", "nlp", "cj_assessment", "ai_feedback"]
    deps = {name: step.depends_on for name, step in catalog.steps.items()}
    assert deps == {
        "spellcheck": (),
        "nlp": ("spellcheck",),
        "cj_assessment": ("spellcheck",),
        "ai_feedback": ("spellcheck", "nlp"),
    }
    gated = {name for name, step in catalog.steps.items() if "prompt_attached" in step.requires}
    assert gated == {"nlp", "cj_assessment", "ai_feedback"}
    assert all(0 < step.min_success_ratio < 1 for step in catalog.steps.values())
    assert all(step.command in COMMANDS for step in catalog.steps.values())
    steps_of_comprehensive = [step.name for step in catalog.pipeline("comprehensive").steps]
    assert steps_of_comprehensive == ["spellcheck", "cj_assessment", "nlp", "ai_feedback"]
    # only spellcheck's output is the essays' new text; every step has a timeout
    texts = {name: step.produces_text for name, step in catalog.steps.items()}
    assert texts == {"spellcheck": True, "nlp": False, "cj_assessment": False, "ai_feedback": False}
    timeouts = {name: step.timeout_seconds for name, step in catalog.steps.items()}
    assert timeouts == {"spellcheck": 900, "nlp": 1800, "cj_assessment": 1800, "ai_feedback": 1800}


def test_versions_are_sha256_of_canonical_json_of_the_normalized_steps_in_order() -> None:
    catalog = shipped()
    steps = [catalog.steps["spellcheck"], catalog.steps["nlp"]]
    normalized = [
        {
            "name": s.name,
            "service": s.service,
            "command": s.command,
            "depends_on": sorted(s.depends_on),
            "requires": sorted(s.requires),
            "min_success_ratio": s.min_success_ratio,
            "timeout_seconds": s.timeout_seconds,
            "produces_text": s.produces_text,
        }
        for s in steps
    ]
    text = json.dumps(normalized, sort_keys=True, separators=(",", ":"))
    assert catalog.pipeline_versions["nlp"] == hashlib.sha256(text.encode()).hexdigest()
    whole = json.dumps(dict(catalog.pipeline_versions), sort_keys=True, separators=(",", ":"))
    assert catalog.version == hashlib.sha256(whole.encode()).hexdigest()


BASE = """
pipelines:
  first:
    description: {description}
    steps:
      - name: a
        service: worker
        command: spellcheck
        min_success_ratio: {ratio}
      - name: b
        service: worker
        command: nlp
        depends_on: {deps}
"""


def test_versions_change_with_meaning_and_not_with_prose_or_list_order() -> None:
    catalog = load(BASE.format(description="one", ratio=0.9, deps="[a]"))
    reworded = load(BASE.format(description="two", ratio=0.9, deps="[a]"))
    stricter = load(BASE.format(description="one", ratio=1.0, deps="[a]"))
    assert reworded.version == catalog.version
    assert reworded.pipeline_versions == catalog.pipeline_versions
    assert stricter.pipeline_versions["first"] != catalog.pipeline_versions["first"]
    assert stricter.version != catalog.version


def test_a_step_defaults_to_no_dependencies_no_gates_and_ratio_one() -> None:
    catalog = load("""
        pipelines:
          solo:
            steps:
              - {name: only, service: worker, command: spellcheck}
    """)
    step = catalog.step("only")
    assert (step.depends_on, step.requires, step.min_success_ratio) == ((), (), 1.0)
    assert (step.timeout_seconds, step.produces_text) == (None, False)  # no timeout, no text
    assert catalog.pipeline("solo").description == ""


def pipelines(**steps: str) -> str:
    """Definition YAML of pipelines named by the keywords, each with the one step given."""
    return (
        "pipelines: {"
        + ", ".join(f"{name}: {{steps: [{step}]}}" for name, step in steps.items())
        + "}"
    )


def step_with(fields: str) -> str:
    return "{name: a, service: worker, command: spellcheck, " + fields + "}"


def test_a_timeout_is_a_number_of_seconds_up_to_seven_days() -> None:
    for written, seconds in [("0.5", 0.5), ("900", 900.0), ("604800", 604800.0)]:
        step = step_with(f"timeout_seconds: {written}, produces_text: true")
        loaded = load(pipelines(p=step)).step("a")
        assert (loaded.timeout_seconds, loaded.produces_text) == (seconds, True)


@pytest.mark.parametrize(
    "fields",
    ["timeout_seconds: 60", "timeout_seconds: 60.5", "produces_text: true"],
)
def test_timeout_and_produces_text_are_part_of_a_step_s_meaning(fields: str) -> None:
    plain = load(pipelines(p=GOOD_STEP))
    changed = load(pipelines(p=step_with(fields)))
    assert changed.pipeline_versions["p"] != plain.pipeline_versions["p"]
    issue = only(pipelines(p=GOOD_STEP, q=step_with(fields)))
    assert (issue.kind, issue.pipeline, issue.step) == (IssueKind.CONFLICTING_STEP, "q", "a")
    assert fields.split(":")[0] in issue.detail


GOOD_STEP = "{name: a, service: worker, command: spellcheck}"


@pytest.mark.parametrize(
    ("text", "kind", "pipeline", "step", "field"),
    [
        ("pipelines: [unclosed", IssueKind.INVALID_YAML, "", "", ""),
        ("- just a list", IssueKind.INVALID_TYPE, "", "", ""),
        ("{other: 1, pipelines: {p: {steps: [" + GOOD_STEP + "]}}}", IssueKind.UNKNOWN_FIELD,
         "", "", "other"),
        ("{}", IssueKind.MISSING_FIELD, "", "", "pipelines"),
        ("pipelines: 3", IssueKind.INVALID_TYPE, "", "", "pipelines"),
        ("pipelines: {}", IssueKind.NO_PIPELINES, "", "", "pipelines"),
        ("pipelines: {Bad-Name: {steps: [" + GOOD_STEP + "]}}", IssueKind.INVALID_NAME,
         "Bad-Name", "", ""),
        ("pipelines: {p: [1]}", IssueKind.INVALID_TYPE, "p", "", ""),
        ("pipelines: {p: {description: x}}", IssueKind.MISSING_FIELD, "p", "", "steps"),
        ("pipelines: {p: {steps: []}}", IssueKind.EMPTY_PIPELINE, "p", "", "steps"),
        ("pipelines: {p: {steps: [" + GOOD_STEP + "], owner: me}}", IssueKind.UNKNOWN_FIELD,
         "p", "", "owner"),
        ("pipelines: {p: {description: 5, steps: [" + GOOD_STEP + "]}}", IssueKind.INVALID_TYPE,
         "p", "", "description"),
        ("pipelines: {p: {steps: [nope]}}", IssueKind.INVALID_TYPE, "p", "steps[0]", ""),
        ("pipelines: {p: {steps: [{service: w, command: nlp}]}}", IssueKind.MISSING_FIELD,
         "p", "steps[0]", "name"),
        ("pipelines: {p: {steps: [{name: 7, service: w, command: nlp}]}}",
         IssueKind.INVALID_NAME, "p", "steps[0]", "name"),
        ("pipelines: {p: {steps: [{name: a, command: nlp}]}}", IssueKind.MISSING_FIELD,
         "p", "a", "service"),
        ("pipelines: {p: {steps: [{name: a, service: [w], command: nlp}]}}",
         IssueKind.INVALID_TYPE, "p", "a", "service"),
        ("pipelines: {p: {steps: [{name: a, service: w, command: teleport}]}}",
         IssueKind.UNKNOWN_COMMAND, "p", "a", "command"),
        ("pipelines: {p: {steps: [{name: a, service: w, command: nlp, depend_on: [b]}]}}",
         IssueKind.UNKNOWN_FIELD, "p", "a", "depend_on"),
        ("pipelines: {p: {steps: [{name: a, service: w, command: nlp, depends_on: b}]}}",
         IssueKind.INVALID_TYPE, "p", "a", "depends_on"),
        ("pipelines: {p: {steps: [{name: a, service: w, command: nlp, requires: [Prompt]}]}}",
         IssueKind.INVALID_NAME, "p", "a", "requires"),
        ("pipelines: {p: {steps: [{name: a, service: w, command: nlp, requires: [x, x]}]}}",
         IssueKind.REPEATED_ENTRY, "p", "a", "requires"),
        ("pipelines: {p: {steps: [{name: a, service: w, command: nlp, min_success_ratio: 0}]}}",
         IssueKind.RATIO_OUT_OF_RANGE, "p", "a", "min_success_ratio"),
        ("pipelines: {p: {steps: [{name: a, service: w, command: nlp, min_success_ratio: 1.5}]}}",
         IssueKind.RATIO_OUT_OF_RANGE, "p", "a", "min_success_ratio"),
        ("pipelines: {p: {steps: [{name: a, service: w, command: nlp, min_success_ratio: .nan}]}}",
         IssueKind.RATIO_OUT_OF_RANGE, "p", "a", "min_success_ratio"),
        ("pipelines: {p: {steps: [{name: a, service: w, command: nlp, min_success_ratio: yes}]}}",
         IssueKind.INVALID_TYPE, "p", "a", "min_success_ratio"),
        ("pipelines: {p: {steps: [{name: a, service: w, command: nlp, timeout_seconds: 0}]}}",
         IssueKind.TIMEOUT_OUT_OF_RANGE, "p", "a", "timeout_seconds"),
        ("pipelines: {p: {steps: [{name: a, service: w, command: nlp, timeout_seconds: -5}]}}",
         IssueKind.TIMEOUT_OUT_OF_RANGE, "p", "a", "timeout_seconds"),
        ("pipelines: {p: {steps: [{name: a, service: w, command: nlp, timeout_seconds: 604801}]}}",
         IssueKind.TIMEOUT_OUT_OF_RANGE, "p", "a", "timeout_seconds"),
        ("pipelines: {p: {steps: [{name: a, service: w, command: nlp, timeout_seconds: .inf}]}}",
         IssueKind.TIMEOUT_OUT_OF_RANGE, "p", "a", "timeout_seconds"),
        ("pipelines: {p: {steps: [{name: a, service: w, command: nlp, timeout_seconds: .nan}]}}",
         IssueKind.TIMEOUT_OUT_OF_RANGE, "p", "a", "timeout_seconds"),
        ("pipelines: {p: {steps: [{name: a, service: w, command: nlp, timeout_seconds: 15m}]}}",
         IssueKind.INVALID_TYPE, "p", "a", "timeout_seconds"),
        ("pipelines: {p: {steps: [{name: a, service: w, command: nlp, timeout_seconds: true}]}}",
         IssueKind.INVALID_TYPE, "p", "a", "timeout_seconds"),
        ("pipelines: {p: {steps: [{name: a, service: w, command: nlp, produces_text: 1}]}}",
         IssueKind.INVALID_TYPE, "p", "a", "produces_text"),
        ("pipelines: {p: {steps: [{name: a, service: w, command: nlp, produces_text: text}]}}",
         IssueKind.INVALID_TYPE, "p", "a", "produces_text"),
        ("pipelines: {p: {steps: [{name: a, service: w, command: nlp, depends_on: [z]}]}}",
         IssueKind.UNKNOWN_DEPENDENCY, "p", "a", "depends_on"),
        ("pipelines: {p: {steps: [" + GOOD_STEP + ", " + GOOD_STEP + "]}}",
         IssueKind.DUPLICATE_STEP, "p", "a", ""),
    ],
)  # fmt: skip
def test_each_field_level_problem_names_file_pipeline_step_and_field(
    text: str, kind: IssueKind, pipeline: str, step: str, field: str
) -> None:
    issue = only(text)
    assert (issue.kind, issue.pipeline, issue.step, issue.field) == (kind, pipeline, step, field)
    assert FILE in str(issue)


def test_a_duplicate_key_is_reported_with_its_line() -> None:
    issue = only("""
        pipelines:
          p:
            steps:
              - {name: a, service: worker, command: spellcheck}
          p:
            steps:
              - {name: a, service: worker, command: spellcheck}
    """)
    assert (issue.kind, issue.line) == (IssueKind.DUPLICATE_KEY, 6)
    assert str(issue).startswith(f"{FILE}:6: ")


def test_a_cycle_is_reported_with_its_path() -> None:
    issue = only("""
        pipelines:
          loop:
            steps:
              - {name: entry, service: w, command: nlp, depends_on: [c]}
              - {name: a, service: w, command: nlp, depends_on: [b]}
              - {name: b, service: w, command: nlp, depends_on: [c]}
              - {name: c, service: w, command: nlp, depends_on: [a]}
    """)
    assert (issue.kind, issue.pipeline, issue.step) == (IssueKind.CYCLE, "loop", "a")
    assert issue.cycle == ("a", "b", "c", "a")
    assert "a → b → c → a" in str(issue)


def test_a_self_dependency_is_a_cycle() -> None:
    issue = only("pipelines: {p: {steps: [{name: a, service: w, command: nlp, depends_on: [a]}]}}")
    assert (issue.kind, issue.cycle) == (IssueKind.CYCLE, ("a", "a"))


def test_a_step_defined_differently_in_two_pipelines_names_both() -> None:
    issue = only("""
        pipelines:
          one:
            steps:
              - {name: a, service: worker, command: spellcheck}
          two:
            steps:
              - {name: a, service: other, command: spellcheck, min_success_ratio: 0.5}
    """)
    assert (issue.kind, issue.pipeline, issue.step) == (IssueKind.CONFLICTING_STEP, "two", "a")
    assert "'one'" in issue.detail
    assert "service" in issue.detail
    assert "min_success_ratio" in issue.detail


def test_the_same_step_with_its_lists_in_another_order_is_no_conflict() -> None:
    catalog = load("""
        pipelines:
          one:
            steps:
              - {name: a, service: w, command: nlp}
              - {name: b, service: w, command: nlp}
              - {name: c, service: w, command: nlp, depends_on: [a, b], requires: [x, y]}
          two:
            steps:
              - {name: b, service: w, command: nlp}
              - {name: a, service: w, command: nlp}
              - {name: c, service: w, command: nlp, depends_on: [b, a], requires: [y, x]}
    """)
    assert catalog.step("c").depends_on == ("a", "b")  # the first definition is kept


def test_a_pipeline_named_like_a_step_must_run_exactly_that_step_and_its_dependencies() -> None:
    issue = only("""
        pipelines:
          base:
            steps:
              - {name: a, service: w, command: spellcheck}
              - {name: b, service: w, command: nlp, depends_on: [a]}
          b:
            steps:
              - {name: a, service: w, command: spellcheck}
    """)
    assert (issue.kind, issue.pipeline, issue.step) == (IssueKind.AMBIGUOUS_TARGET, "b", "b")


def test_every_problem_is_reported_at_once_in_file_order() -> None:
    found = problems("""
        pipelines:
          one:
            steps:
              - {name: a, service: w, command: teleport}
              - {name: b, service: w, command: nlp, depends_on: [a, ghost]}
              - {name: c, service: w, command: nlp, depends_on: [c], min_success_ratio: 2}
          empty:
            steps: []
          two:
            steps:
              - {name: b, service: x, command: nlp}
    """)
    summary = [(issue.kind, issue.pipeline, issue.step) for issue in found]
    assert summary == [
        (IssueKind.UNKNOWN_COMMAND, "one", "a"),
        (IssueKind.RATIO_OUT_OF_RANGE, "one", "c"),
        (IssueKind.UNKNOWN_DEPENDENCY, "one", "b"),
        (IssueKind.EMPTY_PIPELINE, "empty", ""),
        (IssueKind.CONFLICTING_STEP, "two", "b"),
    ]


def test_the_error_message_lists_every_issue() -> None:
    with pytest.raises(DefinitionError) as caught:
        load("pipelines: {p: {steps: []}, q: {steps: [nope]}}")
    message = str(caught.value)
    assert message.startswith("2 problem(s)")
    assert "pipeline 'p'" in message
    assert "pipeline 'q', step 'steps[0]'" in message


def test_the_known_flags_are_those_some_step_requires() -> None:
    catalog = shipped()
    assert catalog.flags == ("prompt_attached",)
    catalog.check_flags(["prompt_attached"])
    with pytest.raises(UnknownFlag) as caught:
        catalog.check_flags(["zz", "prompt_attached", "aa"])
    assert (caught.value.unknown, caught.value.known) == (("aa", "zz"), ("prompt_attached",))
    assert caught.value.description("aa") == "unknown flag 'aa'; known flags: prompt_attached"
    two = load("""
        pipelines:
          p:
            steps:
              - {name: a, service: w, command: spellcheck, requires: [zeta, alpha]}
              - {name: b, service: w, command: nlp, requires: [alpha]}
    """)
    assert two.flags == ("alpha", "zeta")
    with pytest.raises(UnknownFlag) as caught:
        load(pipelines(p=GOOD_STEP)).check_flags(["prompt_attached"])
    assert str(caught.value) == "unknown flag 'prompt_attached'; known flags: none"
