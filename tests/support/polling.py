"""Waiting for a condition with a deadline: tests poll, they never sleep a fixed time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable


async def eventually(
    predicate: Callable[[], Awaitable[bool]],
    within: float = 10.0,
    ignoring: tuple[type[BaseException], ...] = (),
) -> None:
    """Poll ``predicate`` until it is true; fail after ``within`` seconds.

    Exceptions of the ``ignoring`` types (e.g. an RPC refused while a backend restarts) count as
    "not yet".
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while True:
        try:
            if await predicate():
                return
        except ignoring:
            pass
        assert loop.time() < deadline, f"condition not reached within {within} s"
        await asyncio.sleep(0.02)
