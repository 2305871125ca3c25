"""PostgreSQL rows to domain values (the reverse is in the statements' parameters)."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from batch_server.domain.essays import StoredEssay
from batch_server.domain.model import (
    Batch,
    BatchMetadata,
    BatchSummary,
    Essay,
    PipelineRun,
    RunStatus,
    RunStep,
    StepResult,
    StepStatus,
    Transition,
)
from batch_server.ports import RetryRecord

Row = Mapping[str, Any]


def _json(value: Any) -> Any:
    return json.loads(value) if isinstance(value, str) else value


def batch(row: Row, essays: Iterable[Row]) -> Batch:
    return Batch(row["batch_id"], tuple(essay(e) for e in essays), metadata(row), row["created_at"])


def metadata(row: Row) -> BatchMetadata:
    return BatchMetadata(
        name=row["name"],
        course_code=row["course_code"],
        language=row["language"],
        flags=dict(_json(row["flags"])),
        labels=dict(_json(row["labels"])),
    )


def essay(row: Row) -> Essay:
    return Essay(
        row["essay_id"], row["client_ref"], row["original_storage_id"], row["current_storage_id"]
    )


def stored_essay(row: Row) -> StoredEssay:
    return StoredEssay(row["batch_id"], row["position"], essay(row))


def summary(row: Row) -> BatchSummary:
    latest = row["latest_status"]
    return BatchSummary(
        row["batch_id"],
        row["name"],
        row["essay_count"],
        row["created_at"],
        RunStatus(latest) if latest is not None else None,
        dict(_json(row["labels"])),
    )


def step_result(row: Row) -> StepResult:
    return StepResult(
        row["step"],
        row["satisfied"],
        row["succeeded"],
        row["failed"],
        row["total"],
        dict(_json(row["succeeded_essays"])),
    )


def run_step(row: Row) -> RunStep:
    return RunStep(
        row["step"],
        row["command"],
        tuple(row["depends_on"]),
        StepStatus(row["status"]),
        row["succeeded"],
        row["failed"],
        row["total"],
        tuple(row["essay_ids"]),
        row["attempt"],
        row["timeout_seconds"],
        row["deadline"],
        row["timed_out"],
        tuple(row["retry_essays"]),
    )


def run(row: Row, steps: Sequence[Row]) -> PipelineRun:
    return PipelineRun(
        run_id=row["run_id"],
        batch_id=row["batch_id"],
        pipeline=row["pipeline"],
        status=RunStatus(row["status"]),
        definition_version=row["definition_version"],
        steps=tuple(run_step(s) for s in steps),
        created_at=row["created_at"],
        finished_at=row["finished_at"],
        request_id=row["request_id"],
        correlation_id=row["correlation_id"],
        version=row["version"],
        completed_steps=tuple(row["completed_steps"]),
        attempt=row["attempt"],
        cancel_reason=row["cancel_reason"],
    )


def runs(run_rows: Sequence[Row], step_rows: Iterable[Row]) -> list[PipelineRun]:
    """Runs in ``run_rows`` order, each with its steps (``step_rows`` ordered by position)."""
    by_run: dict[str, list[Row]] = {}
    for s in step_rows:
        by_run.setdefault(s["run_id"], []).append(s)
    return [run(r, by_run.get(r["run_id"], [])) for r in run_rows]


def transition(row: Row) -> Transition:
    return Transition(
        row["run_id"],
        row["seq"],
        row["step"],
        StepStatus(row["step_status"]),
        row["succeeded"],
        row["failed"],
        row["total"],
        RunStatus(row["run_status"]),
        row["finished_at"],
        row["attempt"],
        row["step_attempt"],
        row["timed_out"],
        row["deadline"],
        row["cancel_reason"],
    )


def retry(row: Row) -> RetryRecord:
    return RetryRecord(
        row["run_id"],
        row["attempt"],
        row["request_id"],
        tuple(row["steps"]),
        tuple((step, int(count)) for step, count in _json(row["retried"])),
    )
