"""Python async client SDK for the PipelineConductor and the BatchService.

>>> from clients import BatchClient, ConductorClient, Credentials, RpcError, RunStatus

Methods return the contract's messages (typed by the generated stubs); the enums of
``clients.enums`` turn their enum fields into names (``RunStatus(run.status)`` prints
``COMPLETED``). Every failed call raises ``RpcError`` with its decoded ``google.rpc`` details.
Credentials (an API key, TLS) come from the ``HULEEDU_*`` environment unless passed.
"""

from clients.batch import BatchClient
from clients.channel import Credentials
from clients.conductor import ConductorClient
from clients.enums import (
    EssayView,
    OutcomeVerdict,
    RunStatus,
    RunStepStatus,
    SkipReason,
    StepOutcome,
    StepStatus,
)
from clients.errors import RpcError

__version__ = "0.1.0"

__all__ = [
    "BatchClient",
    "ConductorClient",
    "Credentials",
    "EssayView",
    "OutcomeVerdict",
    "RpcError",
    "RunStatus",
    "RunStepStatus",
    "SkipReason",
    "StepOutcome",
    "StepStatus",
    "__version__",
]
