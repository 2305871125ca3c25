"""Content stores: the HTTP Content Service contract (against a mock transport) and memory."""

from __future__ import annotations

import json
import uuid

import httpx
import pytest

from batch_server.content.http import HttpContentStore
from batch_server.content.memory import MemoryContentStore
from batch_server.domain.errors import ContentNotFound
from mesh.errors import BackendUnavailable

URL = "http://content.test/v1/content"


class FakeContentService:
    """The documented contract: POST {content} -> {storage_id}; GET /<id> -> {content}."""

    def __init__(self) -> None:
        self.texts: dict[str, str] = {}
        self.fail_after: int | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and str(request.url) == URL:
            if self.fail_after is not None and len(self.texts) >= self.fail_after:
                return httpx.Response(503, text="overloaded")
            storage_id = str(uuid.uuid4())
            self.texts[storage_id] = json.loads(request.content)["content"]
            return httpx.Response(201, json={"storage_id": storage_id})
        storage_id = request.url.path.rsplit("/", 1)[-1]
        if request.method == "GET" and storage_id in self.texts:
            return httpx.Response(
                200, json={"storage_id": storage_id, "content": self.texts[storage_id]}
            )
        return httpx.Response(404, json={"error": "not found"})


async def test_texts_round_trip_through_the_http_contract() -> None:
    service = FakeContentService()
    async with HttpContentStore(URL, transport=httpx.MockTransport(service)) as store:
        ids = await store.put_many(["first", "andra åäö"])
        assert [await store.get(i) for i in ids] == ["first", "andra åäö"]
        with pytest.raises(ContentNotFound):
            await store.get("missing")
        await store.probe()


async def test_a_failing_content_service_is_unavailable() -> None:
    service = FakeContentService()
    service.fail_after = 1
    async with HttpContentStore(URL, transport=httpx.MockTransport(service)) as store:
        with pytest.raises(BackendUnavailable) as caught:
            await store.put_many(["a", "b", "c"])
    assert caught.value.backend == "content-service"
    assert "503" in caught.value.reason


async def test_an_unreachable_content_service_is_unavailable() -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    store = HttpContentStore(URL, transport=httpx.MockTransport(refuse))
    with pytest.raises(BackendUnavailable, match="ConnectError"):
        await store.put_many(["a"])
    await store.close()
    await store.close()  # idempotent


async def test_an_answer_without_a_storage_id_is_unavailable() -> None:
    transport = httpx.MockTransport(lambda _: httpx.Response(200, json={"id": "x"}))
    async with HttpContentStore(URL, transport=transport) as store:
        with pytest.raises(BackendUnavailable, match="storage_id"):
            await store.put_many(["a"])


async def test_memory_content_store() -> None:
    store = MemoryContentStore()
    [storage_id] = await store.put_many(["x"])
    assert await store.get(storage_id) == "x"
    with pytest.raises(ContentNotFound):
        await store.get("nope")
