"""``AsyncResource``: ``async with`` starts the resource and closes it, even when the body fails."""

from __future__ import annotations

import pytest

from mesh.resource import AsyncResource


class Recorder(AsyncResource):
    def __init__(self) -> None:
        self.calls: list[str] = []

    async def start(self) -> None:
        self.calls.append("start")

    async def close(self) -> None:
        self.calls.append("close")


class Plain(AsyncResource):
    def __init__(self) -> None:
        self.closed = False

    async def close(self) -> None:
        self.closed = True


async def test_enter_starts_and_returns_it_exit_closes_it() -> None:
    resource = Recorder()
    async with resource as entered:
        assert entered is resource
        assert resource.calls == ["start"]
    assert resource.calls == ["start", "close"]


async def test_it_is_closed_when_the_body_raises_and_the_error_propagates() -> None:
    resource = Recorder()
    with pytest.raises(KeyError):
        async with resource:
            raise KeyError("body")
    assert resource.calls == ["start", "close"]


async def test_start_does_nothing_by_default() -> None:
    async with Plain() as plain:
        assert not plain.closed
    assert plain.closed
