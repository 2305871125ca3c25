"""Essay texts in an HTTP Content Service (seed 023 §5.1), used when CONTENT_SERVICE_URL is set.

The contract (JSON over HTTP, ``{url}`` is CONTENT_SERVICE_URL, e.g.
``http://content_service:8000/v1/content``)::

    POST {url}                 body {"content": "<text>"}
                               → 200/201 {"storage_id": "<id>"}
    GET  {url}/{storage_id}    → 200 {"storage_id": "<id>", "content": "<text>"}, 404 if unknown

A connection failure, a timeout, a 5xx or any other unexpected answer is
``BackendUnavailable("content-service")``: the RPC that needed the text fails UNAVAILABLE and
writes nothing else. Texts stored before the failure of a multi-essay request stay behind as
unreferenced content (the service never refers to them).
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

import httpx

from batch_server.domain.errors import ContentNotFound
from mesh.errors import BackendUnavailable
from mesh.resource import AsyncResource

BACKEND = "content-service"


class HttpContentStore(AsyncResource):
    """A ``ContentStore`` over HTTP; an async context manager owning its connection pool."""

    def __init__(
        self,
        url: str,
        *,
        timeout: float = 5.0,
        concurrency: int = 16,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self._url = url.rstrip("/")
        self._client = httpx.AsyncClient(timeout=timeout, transport=transport)
        self._limit = asyncio.Semaphore(concurrency)
        self._closed = False

    async def close(self) -> None:
        if not self._closed:
            self._closed = True
            await self._client.aclose()

    async def put_many(self, texts: Sequence[str]) -> list[str]:
        tasks = [asyncio.ensure_future(self._put(text)) for text in texts]
        try:
            return list(await asyncio.gather(*tasks))
        except BaseException:
            for task in tasks:  # the first failure decides: stop storing the rest
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def get(self, storage_id: str) -> str:
        response = await self._request("GET", f"{self._url}/{quote(storage_id, safe='')}")
        if response.status_code == httpx.codes.NOT_FOUND:
            raise ContentNotFound(storage_id)
        return self._field(response, "content")

    async def probe(self) -> None:
        """Health probe: the service answers HTTP at all (any status but 5xx)."""
        response = await self._request("GET", f"{self._url}/healthz-probe")
        if response.status_code >= 500:
            raise BackendUnavailable(BACKEND, f"HTTP {response.status_code}")

    async def _put(self, text: str) -> str:
        async with self._limit:
            response = await self._request("POST", self._url, json={"content": text})
        return self._field(response, "storage_id")

    async def _request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        try:
            return await self._client.request(method, url, **kwargs)
        except httpx.HTTPError as exc:
            raise BackendUnavailable(BACKEND, f"{type(exc).__name__}: {exc}") from exc

    @staticmethod
    def _field(response: httpx.Response, name: str) -> str:
        if not response.is_success:
            raise BackendUnavailable(BACKEND, f"HTTP {response.status_code} from {response.url}")
        try:
            value = response.json()[name]
        except (ValueError, KeyError, TypeError) as exc:
            raise BackendUnavailable(BACKEND, f"unexpected answer (no '{name}')") from exc
        if not isinstance(value, str) or not value:
            raise BackendUnavailable(BACKEND, f"unexpected answer ('{name}' is not a string)")
        return value
