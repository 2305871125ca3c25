"""Process runtime for the entry points: logging, the event loop (uvloop), the garbage
collector, signals, the server's long-running loops, exit codes."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import logging
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Sequence
from typing import Any, TypeVar

from mesh.correlation import CorrelationFilter
from mesh.jsonlog import JsonFormatter
from mesh.settings import ServerSettings, ServiceSettings, SettingsError

log = logging.getLogger(__name__)

S = TypeVar("S", bound=ServiceSettings)

LOG_FORMAT = "%(asctime)s %(levelname)-8s %(name)s [cid=%(correlation_id)s] %(message)s"
# Libraries that log every retry of a lost connection while a backend is down.
CHATTY_LIBRARIES = ("aiokafka", "asyncpg")


class StartupError(Exception):
    """Start-up cannot continue (backend unreachable, bad definitions): exit non-zero."""


@contextlib.contextmanager
def usage_errors(parser: argparse.ArgumentParser) -> Iterator[None]:
    """Settings read inside are the command's input: a ``SettingsError`` (a malformed value,
    backends set in part) ends the command as a usage error, ``prog: error: ...`` and exit
    status 2, as a bad option does, rather than a traceback."""
    try:
        yield
    except SettingsError as exc:
        parser.error(str(exc))


async def start_within(what: str, start: Callable[[], Awaitable[Any]], within: float) -> None:
    """Run ``start`` (a connection, a migration, a consumer's join) or fail start-up naming
    ``what``."""
    try:
        await asyncio.wait_for(start(), within)
    except Exception as exc:
        raise StartupError(f"{what} failed to start: {exc!r}") from exc


class LoopEnded(RuntimeError):
    """A loop meant to run until shutdown (a consumer, the outbox relay) ended on its own."""


LOOP_STOP_SECONDS = 10.0  # a background loop's graceful stop, before it is cancelled

# A loop run beside a server (the outbox relay): its ``run`` and the ``halt`` that ends it.
Background = tuple[Callable[[], Coroutine[Any, Any, Any]], Callable[[], Awaitable[Any]]]


async def stop_loop(halt: Callable[[], Awaitable[Any]], task: asyncio.Task[Any]) -> None:
    """Ask a loop to finish what it is doing (``halt``), then wait for it; cancel it after
    ``LOOP_STOP_SECONDS`` (a loop stuck on a dead connection must not turn SIGTERM into a hang).

    Halting rather than cancelling lets the relay finish the batch it has published and mark
    it sent, so a restart does not publish it again. A loop that had already ended is not
    awaited: ``until_stopped`` raised its error.
    """
    if task.done():
        return
    try:
        await asyncio.wait_for(halt(), LOOP_STOP_SECONDS)
    except TimeoutError:
        log.warning(
            "%s did not stop within %.0f s; cancelling it", task.get_name(), LOOP_STOP_SECONDS
        )
        task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def until_stopped(stop: asyncio.Event, loops: Sequence[asyncio.Task[Any]]) -> None:
    """Return once ``stop`` is set; raise ``LoopEnded`` if one of ``loops`` ends first.

    A server without one of its loops cannot do its work (outcomes are not counted, events
    are not relayed), so it must not go on serving as if it could: the caller shuts down and
    the process exits non-zero, for its supervisor to restart it.
    """
    stopped = asyncio.create_task(stop.wait(), name="stop-signal")
    try:
        ended, _ = await asyncio.wait({stopped, *loops}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        stopped.cancel()
    if stop.is_set():
        return  # shutting down: the loops end now anyway
    for loop in loops:
        if loop in ended:
            error = None if loop.cancelled() else loop.exception()
            raise LoopEnded(f"{loop.get_name()} ended on its own: {error!r}") from error


class RepeatFilter(logging.Filter):
    """One record per (logger, message template) every ``window`` seconds, for chatty libraries.

    While a Kafka broker is down aiokafka logs every reconnect attempt, about 200 lines a
    second (measured). The first record of a kind passes; repeats within the window are counted
    and dropped, and the next one to pass says how many were not shown.
    """

    def __init__(
        self,
        prefixes: tuple[str, ...],
        window: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__()
        self._prefixes = prefixes
        self._window = window
        self._clock = clock
        self._shown: dict[tuple[str, object], tuple[float, int]] = {}  # -> (shown at, held back)

    def filter(self, record: logging.LogRecord) -> bool:
        if not record.name.startswith(self._prefixes):
            return True
        key = (record.name, record.msg)
        now = self._clock()
        last = self._shown.get(key)
        if last is not None and now - last[0] < self._window:
            self._shown[key] = (last[0], last[1] + 1)
            return False
        self._shown[key] = (now, 0)
        if last is not None and last[1]:
            record.msg = (
                f"{record.msg} [{last[1]} more like this not shown since {now - last[0]:.0f} s ago]"
            )
        return True


class OneLineWarnings(logging.Filter):
    """A chatty library's warnings name their exception on the line instead of a traceback.

    While PostgreSQL is down asyncpg's pool warns at each attempt to reconnect, with a traceback
    of 15 to 30 lines through its own connect path (measured: three quarters of the log of
    ``python -m launcher`` over a 30 s outage). The library retries on its own and the traceback
    names only its internals, so the line keeps the exception's type and message. Errors keep
    their traceback.
    """

    def __init__(self, prefixes: tuple[str, ...]) -> None:
        super().__init__()
        self._prefixes = prefixes

    def filter(self, record: logging.LogRecord) -> bool:
        if (
            record.exc_info
            and record.exc_info[1] is not None
            and record.levelno < logging.ERROR
            and record.name.startswith(self._prefixes)
        ):
            record.msg, record.args = f"{record.getMessage()} ({record.exc_info[1]!r})", None
            record.exc_info, record.exc_text = None, None
        return True


class SelfResolvingFilter(logging.Filter):
    """Kafka client errors that resolve themselves are logged as INFO, not ERROR.

    While a cluster is starting, or right after topics are created, aiokafka logs ERROR for
    conditions it retries on its own (no group coordinator yet, a partition leader not elected
    yet). An operator cannot act on them; a persistent outage still shows as stalled consumers,
    backend metrics and the repeated warnings of the consumers and the relay.
    """

    MARKERS = (
        "GroupCoordinatorNotAvailableError",
        "NotCoordinatorForGroupError",
        "NotLeaderForPartitionError",
        "LeaderNotAvailableError",
        "CoordinatorLoadInProgressError",
    )

    def __init__(self, threshold: Callable[[], int]) -> None:
        super().__init__()
        self._threshold = threshold

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.ERROR or not record.name.startswith("aiokafka"):
            return True
        message = record.getMessage()
        if not any(marker in message for marker in self.MARKERS):
            return True
        record.levelno, record.levelname = logging.INFO, "INFO"
        return self._threshold() <= logging.INFO


def configure_logging(level: str, log_format: str = "text") -> None:
    """Log to stderr at ``level``: as text lines, or ``json`` objects (``mesh.jsonlog``)."""
    if log_format not in ("text", "json"):
        raise SettingsError(f"LOG_FORMAT={log_format!r} is not text or json")
    handler = logging.StreamHandler(sys.stderr)
    formatter = JsonFormatter() if log_format == "json" else logging.Formatter(LOG_FORMAT)
    handler.setFormatter(formatter)
    handler.addFilter(CorrelationFilter())
    handler.addFilter(SelfResolvingFilter(logging.getLogger().getEffectiveLevel))
    handler.addFilter(RepeatFilter(CHATTY_LIBRARIES))
    handler.addFilter(OneLineWarnings(CHATTY_LIBRARIES))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("aiokafka", "asyncio"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def _loop_factory(use_uvloop: bool) -> Callable[[], asyncio.AbstractEventLoop] | None:
    if not use_uvloop:
        return None
    try:
        import uvloop
    except ImportError:  # optional: plain asyncio works, just slower
        return None
    return uvloop.new_event_loop


def tune_gc(threshold: int) -> None:
    """Collect the young generation every ``threshold`` net allocations (0: leave CPython's 700).

    A consumer keeps a whole poll alive while its handler runs: a thousand records, envelopes
    and messages. With CPython's 700 that live batch alone sets off young collections that
    traverse it and promote it to older generations, which are then traversed again: measured
    with ``gc.callbacks`` on the consumer benchmark's no-op runner, 2.7-4.3 µs of collection per
    record (1,300 young collections per 200k records). With 10,000, the net allocations of a
    poll stay under the threshold (they are freed by reference counting once it is done):
    about one collection per 200k records. Cyclic garbage is still collected, just in larger
    steps, and the older generations keep their thresholds.
    """
    if threshold > 0:
        _, older, oldest = gc.get_threshold()
        gc.set_threshold(threshold, older, oldest)


def run(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]], server: ServerSettings) -> int:
    """Run ``main(stop)`` until it returns; SIGTERM/SIGINT set ``stop``. Returns the exit code."""
    tune_gc(server.gc_threshold)

    async def supervised() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        with asyncio.Runner(loop_factory=_loop_factory(server.uvloop)) as runner:
            runner.run(supervised())
    except StartupError as exc:
        log.critical("start-up failed: %s", exc)
        return 1
    except Exception:
        log.critical("fatal error", exc_info=True)
        return 1
    return 0


def run_service(
    argv: list[str] | None,
    *,
    prog: str,
    description: str,
    settings_type: type[S],
    serve: Callable[[S, asyncio.Event], Coroutine[Any, Any, None]],
) -> int:
    """A server's command line: ``--help`` lists every variable; settings come from the
    environment, once; then ``serve(settings, stop)`` runs until SIGTERM. Returns the exit code."""
    parser = argparse.ArgumentParser(
        prog=prog,
        description=description,
        epilog=settings_type.help_text(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.parse_args(argv)
    with usage_errors(parser):
        settings = settings_type.from_env(os.environ)
        configure_logging(settings.server.log_level, settings.server.log_format)
    return run(lambda stop: serve(settings, stop), settings.server)
