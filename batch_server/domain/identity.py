"""Identifiers: generated ids, deterministic event ids, and request fingerprints.

Events that a redelivery or a retry could emit twice get an id derived from what they are about
(uuid5), so the outbox and every consumer can drop the repeat by id.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import Sequence

from batch_server.domain.model import BatchMetadata, EssayInput

_NAMESPACE = uuid.UUID("6f0f8a52-51d3-4a8e-9a57-3c1b64f0d6a1")  # fixed: ids must not change


def new_id() -> str:
    """A fresh id for a batch, an essay or a run."""
    return str(uuid.uuid4())


def _derived(*parts: str) -> str:
    return str(uuid.uuid5(_NAMESPACE, "/".join(parts)))


def _of_attempt(attempt: int) -> tuple[str, ...]:
    return () if attempt == 1 else (str(attempt),)  # attempt 1 keeps the ids of before retries


def step_command_event_id(run_id: str, step: str, attempt: int = 1) -> str:
    """The id of the one StepCommand of ``step`` in ``attempt`` of run ``run_id``."""
    return _derived("step-command", run_id, step, *_of_attempt(attempt))


def run_completed_event_id(run_id: str, attempt: int = 1) -> str:
    """The id of the PipelineRunCompleted of ``attempt`` of run ``run_id``."""
    return _derived("run-completed", run_id, *_of_attempt(attempt))


def run_cancelled_event_id(run_id: str, attempt: int = 1) -> str:
    return _derived("run-cancelled", run_id, *_of_attempt(attempt))


def batch_created_event_id(batch_id: str) -> str:
    return _derived("batch-created", batch_id)


def spellcheck_requested_event_id(essay_id: str) -> str:
    return _derived("spellcheck-requested", essay_id)


def batch_fingerprint(essays: Sequence[EssayInput], metadata: BatchMetadata) -> str:
    """A digest of a CreateBatch request: a reused request id with another digest is refused."""
    canonical = json.dumps(
        {
            "essays": [[e.text, e.client_ref] for e in essays],
            "name": metadata.name,
            "course_code": metadata.course_code,
            "language": metadata.language,
            "flags": dict(sorted(metadata.flags.items())),
            "labels": dict(sorted(metadata.labels.items())),
        },
        ensure_ascii=False,
        sort_keys=True,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
