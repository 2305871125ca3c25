"""The process runtime: the garbage-collector setting, the watch over the long-running loops,
the filters that hold back a chatty library's repeats and tracebacks."""

from __future__ import annotations

import asyncio
import dataclasses
import gc
import logging
from collections.abc import Iterator

import pytest

from batch_server.settings import BatchSettings
from mesh.runtime import (
    LoopEnded,
    RepeatFilter,
    SelfResolvingFilter,
    configure_logging,
    run,
    tune_gc,
    until_stopped,
)
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


async def _forever() -> None:
    await asyncio.Event().wait()


async def test_until_stopped_returns_once_stop_is_set_and_leaves_the_loops_running() -> None:
    stop = asyncio.Event()
    loop = asyncio.create_task(_forever(), name="relay")
    asyncio.get_running_loop().call_later(0.05, stop.set)
    await asyncio.wait_for(until_stopped(stop, [loop]), 5)
    assert not loop.done()
    loop.cancel()


async def test_a_loop_that_fails_ends_the_wait_with_its_error() -> None:
    async def failing() -> None:
        await asyncio.sleep(0.05)  # runs a while (the wait is under way), then fails
        raise ConnectionResetError("gone")

    loops = [
        asyncio.create_task(_forever(), name="consumer"),
        asyncio.create_task(failing(), name="relay"),
    ]
    with pytest.raises(LoopEnded, match="relay ended on its own") as raised:
        await asyncio.wait_for(until_stopped(asyncio.Event(), loops), 5)
    assert isinstance(raised.value.__cause__, ConnectionResetError)
    loops[0].cancel()


@pytest.mark.parametrize("ending", ["returns", "is cancelled"])
async def test_a_loop_that_ends_without_an_error_ends_the_wait_too(ending: str) -> None:
    # "returns": a loop that runs a while (the wait is under way), then returns
    loop = asyncio.create_task(asyncio.sleep(0.05) if ending == "returns" else _forever())
    if ending == "is cancelled":
        asyncio.get_running_loop().call_later(0.05, loop.cancel)
    with pytest.raises(LoopEnded) as raised:
        await asyncio.wait_for(until_stopped(asyncio.Event(), [loop]), 5)
    assert raised.value.__cause__ is None


def test_run_exits_1_when_main_fails() -> None:
    async def main(stop: asyncio.Event) -> None:
        raise LoopEnded("relay ended on its own")

    assert run(main, dataclasses.replace(ServerSettings(), uvloop=False)) == 1


def _record(name: str, msg: str, *args: object) -> logging.LogRecord:
    return logging.LogRecord(name, logging.ERROR, __file__, 1, msg, args, None)


def test_repeats_of_a_chatty_library_are_held_back_and_counted() -> None:
    now = [100.0]
    repeats = RepeatFilter(("aiokafka",), window=10.0, clock=lambda: now[0])
    template = "Unable connect to node with id %s: %s"
    shown = [repeats.filter(_record("aiokafka", template, 1, "refused")) for _ in range(200)]
    assert shown == [True] + [False] * 199
    # another template, and the same template from another logger, have windows of their own
    assert repeats.filter(_record("aiokafka", "Unable to update metadata from %s", [1]))
    assert repeats.filter(_record("aiokafka.consumer.fetcher", template, 1, "refused"))
    now[0] += 10.0
    after = _record("aiokafka", template, 1, "refused")
    assert repeats.filter(after)
    assert after.getMessage() == (
        "Unable connect to node with id 1: refused [199 more like this not shown since 10 s ago]"
    )
    assert not repeats.filter(_record("aiokafka", template, 1, "refused"))


def test_other_loggers_pass_untouched() -> None:
    repeats = RepeatFilter(("aiokafka",), clock=lambda: 0.0)
    records = [_record("mesh.events.consumer", "transient failure at %s", n) for n in range(5)]
    assert all(repeats.filter(r) for r in records)
    assert [r.getMessage() for r in records] == [f"transient failure at {n}" for n in range(5)]


@pytest.mark.parametrize(
    ("name", "message", "shown_as"),
    [
        (
            "aiokafka.consumer.group_coordinator",
            "[Error 15] GroupCoordinatorNotAvailableError",
            "INFO",
        ),
        ("aiokafka.consumer.fetcher", "Failed fetch offsets: NotLeaderForPartitionError", "INFO"),
        ("aiokafka.consumer.fetcher", "Unexpected error: KafkaConnectionError", "ERROR"),
        ("conductor_server.app", "NotLeaderForPartitionError", "ERROR"),
    ],
)
def test_kafka_errors_that_resolve_themselves_are_info(
    name: str, message: str, shown_as: str
) -> None:
    record = logging.LogRecord(name, logging.ERROR, __file__, 1, message, None, None)
    keep = SelfResolvingFilter(lambda: logging.INFO).filter(record)
    assert keep
    assert record.levelname == shown_as
    quiet = logging.LogRecord(name, logging.ERROR, __file__, 1, message, None, None)
    assert SelfResolvingFilter(lambda: logging.WARNING).filter(quiet) == (shown_as == "ERROR")


def _log_failure(logger: str, level: int, message: str) -> None:
    try:
        raise ConnectionRefusedError(111, "Connection refused")
    except ConnectionRefusedError:
        logging.getLogger(logger).log(level, message, exc_info=True)


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize("log_format", ["text", "json"])
def test_a_library_retry_warning_is_one_line_and_its_repeats_are_held_back(
    capsys: pytest.CaptureFixture[str], log_format: str
) -> None:
    configure_logging("INFO", log_format)
    for _ in range(5):
        _log_failure("asyncpg.pool", logging.WARNING, "Failed to restore the pool connection floor")
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1
    assert "Traceback" not in lines[0]
    assert "exception" not in lines[0]
    assert (
        "Failed to restore the pool connection floor "
        "(ConnectionRefusedError(111, 'Connection refused'))"
    ) in lines[0]


@pytest.mark.usefixtures("restore_logging")
@pytest.mark.parametrize(
    ("logger", "level"),
    [("asyncpg.pool", logging.ERROR), ("mesh.postgres.pool", logging.WARNING)],
)
def test_errors_and_the_products_own_warnings_keep_their_traceback(
    capsys: pytest.CaptureFixture[str], logger: str, level: int
) -> None:
    configure_logging("INFO")
    _log_failure(logger, level, "connection lost")
    err = capsys.readouterr().err
    assert "Traceback (most recent call last)" in err
    assert err.rstrip().endswith("ConnectionRefusedError: [Errno 111] Connection refused")
