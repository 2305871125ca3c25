"""Waiting for a condition with a deadline: tests poll, they never sleep a fixed time.

``eventually`` is the suite's one polling loop; a synchronous test runs it with ``asyncio.run``.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Callable

INTERVAL = 0.02  # seconds between two checks


async def eventually(
    predicate: Callable[[], bool | Awaitable[bool]],
    within: float = 10.0,
    ignoring: tuple[type[BaseException], ...] = (),
    *,
    what: str = "the condition",
) -> None:
    """Check ``predicate`` (plain or async) until it is true; fail after ``within`` seconds.

    Exceptions of the ``ignoring`` types (e.g. an RPC refused while a backend restarts) count as
    "not yet"; the last one is chained to the failure. Any other exception (an assertion in the
    predicate) fails at once. ``what`` names the condition in the failure message.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last: BaseException | None = None
    while True:
        try:
            answer = predicate()
            if inspect.isawaitable(answer):
                answer = await answer
            if answer:
                return
        except ignoring as exc:
            last = exc
        if loop.time() >= deadline:
            raise AssertionError(f"timed out after {within} s waiting for {what}") from last
        await asyncio.sleep(INTERVAL)
