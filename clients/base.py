"""What both SDK clients share: the channel's lifecycle, credentials, deadlines, metadata, error
translation."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import TypeVar

import grpc
from google.protobuf.message import Message
from opentelemetry import trace

from clients.channel import DEFAULT_TIMEOUT_SECONDS, Credentials, open_channel
from clients.errors import RpcError
from mesh import correlation
from mesh.resource import AsyncResource
from mesh.tracing import rpc

Request = TypeVar("Request", bound=Message)
Response = TypeVar("Response", bound=Message)


class ClientBase(AsyncResource):
    """Owns one channel; an async context manager with an idempotent ``close()``.

    ``credentials`` default to the environment's (``Credentials.from_env``: ``HULEEDU_API_KEY``
    and the ``HULEEDU_TLS_*`` variables); pass ``Credentials()`` for none. With a
    ``tracer_provider`` (OpenTelemetry) every call is a client span, and its context goes to the
    server in the call's metadata (W3C ``traceparent``), so the server's spans join the caller's
    trace.
    """

    SERVICE = ""

    def __init__(
        self,
        target: str,
        timeout: float = DEFAULT_TIMEOUT_SECONDS,
        credentials: Credentials | None = None,
        *,
        tracer_provider: trace.TracerProvider | None = None,
    ) -> None:
        self.target = target
        self.timeout = timeout
        if credentials is None:
            credentials = Credentials.from_env(os.environ)
        interceptors = (
            rpc.client_interceptors(tracer_provider.get_tracer("huleedu.clients"))
            if tracer_provider is not None
            else []
        )
        self._channel = open_channel(
            target, self.SERVICE, credentials=credentials, interceptors=interceptors
        )
        self._auth = credentials.metadata()
        self._closed = False

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._channel.close()

    def _metadata(self) -> tuple[tuple[str, str], ...]:
        cid = correlation.correlation_id.get()
        return ((correlation.METADATA_KEY, cid), *self._auth) if cid else self._auth

    async def _unary(
        self,
        method: grpc.aio.UnaryUnaryMultiCallable[Request, Response],
        request: Request,
        timeout: float | None,
    ) -> Response:
        try:
            return await method(request, timeout=timeout or self.timeout, metadata=self._metadata())
        except grpc.aio.AioRpcError as exc:
            raise RpcError.from_aio(exc) from exc

    async def _stream(
        self,
        method: grpc.aio.UnaryStreamMultiCallable[Request, Response],
        request: Request,
        timeout: float | None,
    ) -> AsyncIterator[Response]:
        call = method(request, timeout=timeout, metadata=self._metadata())
        try:
            async for item in call:
                yield item
        except grpc.aio.AioRpcError as exc:
            raise RpcError.from_aio(exc) from exc
        finally:
            call.cancel()
