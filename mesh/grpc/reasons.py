"""The ``ErrorInfo`` reasons of both services: one vocabulary, each reason with its status code.

A failed call's status code says what kind of failure it is; its ``ErrorInfo.reason`` says
which one, precisely enough for a client to act on (``BATCH_NOT_FOUND`` and ``RUN_NOT_FOUND`` are
both NOT_FOUND). Both services answer with these reasons, each in its own ``ErrorInfo.domain``
(``batch.huleedu``, ``conductor.huleedu``), and a reason always comes with the same code: a
status rule names a reason, and the code follows from it.

``docs/errors.md`` lists every reason with the details it carries and the RPCs that answer it; a
unit test holds that table and the protos' comments to this enum.
"""

from __future__ import annotations

from enum import StrEnum

import grpc

Code = grpc.StatusCode


class Reason(StrEnum):
    """An ``ErrorInfo`` reason; ``code`` is its status code, ``meaning`` says when it is given."""

    code: grpc.StatusCode
    meaning: str

    def __new__(cls, value: str, code: grpc.StatusCode, meaning: str) -> Reason:
        member = str.__new__(cls, value)
        member._value_ = value
        member.code = code
        member.meaning = meaning
        return member

    # NOT_FOUND: the request names something that does not exist.
    BATCH_NOT_FOUND = (
        "BATCH_NOT_FOUND",
        Code.NOT_FOUND,
        "no batch has that id (or, at the conductor, none is registered under it)",
    )
    RUN_NOT_FOUND = (
        "RUN_NOT_FOUND",
        Code.NOT_FOUND,
        "the batch has no run of that id, or no run at all",
    )
    ESSAY_NOT_FOUND = "ESSAY_NOT_FOUND", Code.NOT_FOUND, "no essay has that id (in the batch given)"
    PIPELINE_NOT_FOUND = (
        "PIPELINE_NOT_FOUND",
        Code.NOT_FOUND,
        "no pipeline (or step) has the name given as the pipeline or target",
    )
    STEP_NOT_FOUND = "STEP_NOT_FOUND", Code.NOT_FOUND, "no step has the name given as a step"
    CONTENT_NOT_FOUND = (
        "CONTENT_NOT_FOUND",
        Code.NOT_FOUND,
        "no text is stored under that storage id",
    )
    # INVALID_ARGUMENT: the request is wrong whatever the state; a BadRequest names the fields.
    INVALID_ARGUMENT = (
        "INVALID_ARGUMENT",
        Code.INVALID_ARGUMENT,
        "the request is malformed or out of bounds",
    )
    REQUEST_ID_REUSED = (
        "REQUEST_ID_REUSED",
        Code.INVALID_ARGUMENT,
        "the request_id was already used for a different request",
    )
    UNKNOWN_FLAG = (
        "UNKNOWN_FLAG",
        Code.INVALID_ARGUMENT,
        "a flag that no step of the loaded pipelines requires",
    )
    # FAILED_PRECONDITION: the request is fine but the state does not allow it (yet).
    PREREQUISITES_NOT_MET = (
        "PREREQUISITES_NOT_MET",
        Code.FAILED_PRECONDITION,
        "a step needs a flag the batch does not have or a step it has not satisfied",
    )
    UNKNOWN_COMMAND = (
        "UNKNOWN_COMMAND",
        Code.FAILED_PRECONDITION,
        "a step's command has no command topic",
    )
    ESSAY_NOT_EXPECTED = (
        "ESSAY_NOT_EXPECTED",
        Code.FAILED_PRECONDITION,
        "the step expects no outcome of that essay",
    )
    RUN_FINISHED = "RUN_FINISHED", Code.FAILED_PRECONDITION, "the run has already ended"
    RUN_NOT_FINISHED = "RUN_NOT_FINISHED", Code.FAILED_PRECONDITION, "the run is still active"
    NOTHING_TO_RETRY = (
        "NOTHING_TO_RETRY",
        Code.FAILED_PRECONDITION,
        "no step of the run has an essay to run again",
    )
    # ABORTED and ALREADY_EXISTS: the request collides with another one.
    ACTIVE_RUN_EXISTS = "ACTIVE_RUN_EXISTS", Code.ABORTED, "another run of the batch is active"
    OUTCOME_CONFLICT = (
        "OUTCOME_CONFLICT",
        Code.ALREADY_EXISTS,
        "the essay already has the other outcome of the step",
    )
    REGISTRATION_CONFLICT = (
        "REGISTRATION_CONFLICT",
        Code.ALREADY_EXISTS,
        "the batch is registered with a different essay set",
    )
    # The trust boundary and the backends.
    UNAUTHENTICATED = (
        "UNAUTHENTICATED",
        Code.UNAUTHENTICATED,
        "no credentials, or credentials of no valid principal",
    )
    MISSING_SCOPE = (
        "MISSING_SCOPE",
        Code.PERMISSION_DENIED,
        "the principal lacks the scope the method needs",
    )
    RATE_LIMITED = (
        "RATE_LIMITED",
        Code.RESOURCE_EXHAUSTED,
        "the principal's rate of calls of the scope is spent",
    )
    TOO_MANY_STREAMS = (
        "TOO_MANY_STREAMS",
        Code.RESOURCE_EXHAUSTED,
        "the principal holds as many open streams as it may",
    )
    BACKEND_UNAVAILABLE = (
        "BACKEND_UNAVAILABLE",
        Code.UNAVAILABLE,
        "a backend is down; retry with backoff",
    )
    # INTERNAL: a fault of the service, not of the request.
    CONDUCTOR_FAILED = (
        "CONDUCTOR_FAILED",
        Code.INTERNAL,
        "the conductor answered something the BatchService has no meaning for",
    )
    INTERNAL = (
        "INTERNAL",
        Code.INTERNAL,
        "an unexpected error, logged by the server with its traceback",
    )
