"""What both SDK clients share: the channel's lifecycle, credentials, deadlines, metadata, error
translation."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from typing import Protocol, TypeVar

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
Item = TypeVar("Item")


class Paged(Protocol):
    """A page of a listing (ListBatchesResponse, ListEssaysResponse)."""

    @property
    def next_page_token(self) -> str: ...


Page = TypeVar("Page", bound=Paged)


def ensure_request_id(given: str) -> str:
    """``given``, or a new random request id: a call the channel may retry must carry one, so
    that a repeat returns what the first attempt did instead of doing the work again."""
    return given or f"py-{uuid.uuid4().hex}"


async def pages(
    fetch: Callable[[str], Awaitable[Page]], items: Callable[[Page], Iterable[Item]]
) -> AsyncIterator[Item]:
    """Every item of a paged listing: ``fetch(page_token)`` page after page (``""`` first) until
    a page has no ``next_page_token``."""
    token = ""
    while True:
        page = await fetch(token)
        for item in items(page):
            yield item
        token = page.next_page_token
        if not token:
            return


class ClientBase(AsyncResource):
    """Owns one channel; an async context manager with an idempotent ``close()``.

    ``credentials`` default to the environment's (``Credentials.from_env``: ``HULEEDU_API_KEY``
    and the ``HULEEDU_TLS_*`` variables); pass ``Credentials()`` for none. With a
    ``tracer_provider`` (OpenTelemetry) every call is a client span, and its context goes to the
    server in the call's metadata (W3C ``traceparent``), so the server's spans join the caller's
    trace.
    """

    SERVICE = ""
    # Methods of SERVICE that are safe to repeat, so retried on UNAVAILABLE.
    IDEMPOTENT: tuple[str, ...] = ()

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
        idempotent = [f"{self.SERVICE}/{method}" for method in self.IDEMPOTENT]
        self._channel = open_channel(
            target, idempotent, credentials=credentials, interceptors=interceptors
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
