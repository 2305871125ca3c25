"""Process runtime for the entry points: logging, the event loop (uvloop), signals, exit codes."""

from __future__ import annotations

import asyncio
import logging
import signal
import sys
from collections.abc import Callable, Coroutine
from typing import Any

from mesh.correlation import CorrelationFilter

log = logging.getLogger(__name__)

LOG_FORMAT = "%(asctime)s %(levelname)-8s %(name)s [cid=%(correlation_id)s] %(message)s"


class StartupError(Exception):
    """Start-up cannot continue (backend unreachable, bad definitions): exit non-zero."""


def configure_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter(LOG_FORMAT))
    handler.addFilter(CorrelationFilter())
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


def run(main: Callable[[asyncio.Event], Coroutine[Any, Any, None]], use_uvloop: bool) -> int:
    """Run ``main(stop)`` until it returns; SIGTERM/SIGINT set ``stop``. Returns the exit code."""

    async def supervised() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        await main(stop)

    try:
        with asyncio.Runner(loop_factory=_loop_factory(use_uvloop)) as runner:
            runner.run(supervised())
    except StartupError as exc:
        log.critical("start-up failed: %s", exc)
        return 1
    except Exception:
        log.critical("fatal error", exc_info=True)
        return 1
    return 0
