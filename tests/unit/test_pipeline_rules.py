"""The application layer over the pipeline domain: loading and resolving, counted."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from conductor_server.domain.errors import (
    DefinitionError,
    IssueKind,
    PreconditionFailed,
    UnknownTarget,
)
from conductor_server.domain.model import StepState, StepStatus
from conductor_server.metrics import ConductorMetrics
from conductor_server.rules import PipelineRules, definitions_at, load_catalog
from pipelines import default_definitions

PROMPT = frozenset({"prompt_attached"})


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def metrics(registry: CollectorRegistry) -> ConductorMetrics:
    return ConductorMetrics(registry)


def sample(registry: CollectorRegistry, name: str) -> float | None:
    return registry.get_sample_value(name)


def test_the_seed_counters_exist_at_zero(
    registry: CollectorRegistry, metrics: ConductorMetrics
) -> None:
    for name in (
        "bcs_pipeline_config_load_success_total",
        "bcs_pipeline_config_load_error_total",
        "bcs_pipeline_rules_success_total",
        "bcs_pipeline_rules_error_total",
        "bcs_pipeline_rules_pruned_total",
    ):
        assert sample(registry, name) == 0.0


def test_loading_the_shipped_file_counts_a_success(
    registry: CollectorRegistry, metrics: ConductorMetrics
) -> None:
    rules = PipelineRules.load(definitions_at(""), metrics)
    assert rules.catalog.source == str(default_definitions())
    assert sample(registry, "bcs_pipeline_config_load_success_total") == 1.0
    assert sample(registry, "bcs_pipeline_config_load_error_total") == 0.0


def test_a_bad_file_counts_an_error_and_names_the_file(
    registry: CollectorRegistry, metrics: ConductorMetrics, tmp_path: Path
) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("pipelines: {p: {steps: []}}\n", encoding="utf-8")
    with pytest.raises(DefinitionError) as caught:
        load_catalog(definitions_at(str(path)), metrics)
    [issue] = caught.value.issues
    assert (issue.kind, issue.file, issue.pipeline) == (IssueKind.EMPTY_PIPELINE, str(path), "p")
    assert sample(registry, "bcs_pipeline_config_load_error_total") == 1.0
    assert sample(registry, "bcs_pipeline_config_load_success_total") == 0.0


def test_a_missing_file_is_a_definition_error(
    registry: CollectorRegistry, metrics: ConductorMetrics, tmp_path: Path
) -> None:
    with pytest.raises(DefinitionError) as caught:
        load_catalog(tmp_path / "absent.yaml", metrics)
    assert caught.value.issues[0].kind is IssueKind.UNREADABLE_FILE
    assert isinstance(caught.value.__cause__, FileNotFoundError)
    assert sample(registry, "bcs_pipeline_config_load_error_total") == 1.0


def test_a_failed_reload_keeps_the_current_catalog(
    registry: CollectorRegistry, metrics: ConductorMetrics, tmp_path: Path
) -> None:
    rules = PipelineRules.load(default_definitions(), metrics)
    before = rules.catalog
    with pytest.raises(DefinitionError):
        rules.reload(tmp_path / "absent.yaml")
    assert rules.catalog is before
    assert sample(registry, "bcs_pipeline_config_load_success_total") == 1.0
    assert sample(registry, "bcs_pipeline_config_load_error_total") == 1.0


def test_resolutions_count_successes_errors_and_pruned_steps(
    registry: CollectorRegistry, metrics: ConductorMetrics
) -> None:
    rules = PipelineRules.load(default_definitions(), metrics)
    satisfied = {
        name: StepState(name, 10, 0, 10, StepStatus.SATISFIED) for name in ("spellcheck", "nlp")
    }
    assert [s.name for s in rules.resolve("comprehensive", satisfied, PROMPT).steps] == [
        "cj_assessment",
        "ai_feedback",
    ]
    assert rules.resolve("spellcheck", {}, frozenset()).steps
    with pytest.raises(UnknownTarget):
        rules.resolve("nope", {}, PROMPT)
    with pytest.raises(PreconditionFailed):
        rules.resolve("nlp", {}, frozenset())
    assert sample(registry, "bcs_pipeline_rules_success_total") == 2.0
    assert sample(registry, "bcs_pipeline_rules_error_total") == 2.0
    assert sample(registry, "bcs_pipeline_rules_pruned_total") == 2.0


def test_prerequisites_go_through_the_current_catalog(metrics: ConductorMetrics) -> None:
    rules = PipelineRules.load(default_definitions(), metrics)
    assert rules.check_prerequisites("spellcheck", {}, frozenset()).name == "spellcheck"


def test_a_reload_resolves_against_the_new_catalog(
    metrics: ConductorMetrics, tmp_path: Path
) -> None:
    """Subgraphs are kept per target; a reload must drop them, or the old steps would run."""
    rules = PipelineRules.load(default_definitions(), metrics)
    before = rules.resolve("nlp", {}, PROMPT)
    assert [s.name for s in before.steps] == ["spellcheck", "nlp"]
    path = tmp_path / "pipelines.yaml"
    path.write_text(
        "pipelines:\n"
        "  nlp:\n"
        "    steps:\n"
        "      - {name: nlp, service: nlp_service, command: nlp, requires: [prompt_attached]}\n",
        encoding="utf-8",
    )
    rules.reload(path)
    after = rules.resolve("nlp", {}, PROMPT)
    assert [s.name for s in after.steps] == ["nlp"]
    assert after.version != before.version
