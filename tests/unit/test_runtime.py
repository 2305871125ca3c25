"""The process runtime: the garbage-collector setting is applied before the server starts."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
from collections.abc import Iterator

import pytest

from batch_server.settings import BatchSettings
from mesh.runtime import run, tune_gc
from mesh.settings import ServerSettings


@pytest.fixture(autouse=True)
def restore_gc_threshold() -> Iterator[None]:
    saved = gc.get_threshold()
    yield
    gc.set_threshold(*saved)


def test_the_threshold_sets_the_young_generation_only() -> None:
    gc.set_threshold(700, 11, 12)
    tune_gc(12_345)
    assert gc.get_threshold() == (12_345, 11, 12)


def test_zero_leaves_the_collector_as_it_is() -> None:
    gc.set_threshold(700, 10, 10)
    tune_gc(0)
    assert gc.get_threshold() == (700, 10, 10)


def test_the_servers_raise_it_by_default_and_the_environment_overrides() -> None:
    assert ServerSettings().gc_threshold == 10_000
    assert BatchSettings.from_env({"GC_THRESHOLD": "0"}).server.gc_threshold == 0


def test_run_applies_the_setting_before_main_starts() -> None:
    seen: list[tuple[int, int, int]] = []

    async def main(stop: asyncio.Event) -> None:
        seen.append(gc.get_threshold())

    gc.set_threshold(700, 10, 10)
    server = dataclasses.replace(ServerSettings(), gc_threshold=4_321, uvloop=False)
    assert run(main, server) == 0
    assert seen == [(4_321, 10, 10)]
