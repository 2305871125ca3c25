"""Python async client SDK for the PipelineConductor and the BatchService.

>>> from clients import BatchClient, ConductorClient, RpcError
"""

from clients.batch import BatchClient
from clients.conductor import ConductorClient
from clients.errors import RpcError

__all__ = ["BatchClient", "ConductorClient", "RpcError"]
