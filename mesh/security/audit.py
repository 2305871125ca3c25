"""The audit log: one line per call the trust boundary refused, on the ``mesh.audit`` logger.

Each line names the method, the status code, why (``Refused.audit``: "unknown API key (sha256
3fa9c2d1e0b4...)", "missing scope batches:write", ...), the principal when known and the peer
address; never a key. A principal held at its rate or stream limit can be refused thousands of
times a second, so those refusals are logged at most once per ``window`` seconds per principal
and kind, the next line saying how many were not shown.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

from mesh.errors import LimitExceeded, Refused

log = logging.getLogger("mesh.audit")


class AuditLog:
    def __init__(self, window: float = 1.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._window = window
        self._clock = clock
        self._shown: dict[tuple[str, str], tuple[float, int]] = {}  # -> (shown at, held back)

    def refused(self, exc: Refused, code: str, method: str, peer: str) -> None:
        more = ""
        if isinstance(exc, LimitExceeded):
            key = (exc.principal, type(exc).__name__)
            now = self._clock()
            last = self._shown.get(key)
            if last is not None and now - last[0] < self._window:
                self._shown[key] = (last[0], last[1] + 1)
                return
            self._shown[key] = (now, 0)
            if last is not None and last[1]:
                more = f" [{last[1]} more like this not shown]"
        log.warning(
            "refused %s %s: %s (principal %s, peer %s)%s",
            method,
            code,
            exc.audit,
            exc.principal or "unknown",
            peer,
            more,
        )
