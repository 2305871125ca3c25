"""Python async client SDK for the PipelineConductor and the BatchService.

>>> from clients import BatchClient, ConductorClient, Credentials, RpcError
"""

from clients.batch import BatchClient
from clients.channel import Credentials
from clients.conductor import ConductorClient
from clients.errors import RpcError

__all__ = ["BatchClient", "ConductorClient", "Credentials", "RpcError"]
