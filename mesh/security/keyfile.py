"""Keys from a file the operator owns, reloaded without a restart when it changes.

The file is read at start-up (a bad file fails start-up, naming each bad line). Then its
modification time, size and inode are checked every ``interval`` seconds, off the RPC path; a
change is loaded whole and replaces the index in one assignment, so a call sees either the old
keys or the new ones. A file that has become unreadable or invalid keeps the previous keys, with
one ERROR line per version of the file.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import stat

from mesh.resource import AsyncResource
from mesh.security.keys import KeyIndex, KeySourceError, parse_lines

log = logging.getLogger(__name__)


class KeyFile(AsyncResource):
    """The key index of ``path``; ``index`` is always the latest valid version."""

    def __init__(self, path: str, interval: float = 2.0) -> None:
        self.path = path
        self.index = KeyIndex({}, {})
        self._interval = interval
        self._loaded: tuple[int, int, int] | None = None
        self._failed: tuple[int, int, int] | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Load the file (``KeySourceError`` or ``OSError`` if it cannot be used), then watch it."""
        self._load(self._stamp())
        self._task = asyncio.create_task(self._watch(), name="key-file-watch")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None

    def _stamp(self) -> tuple[int, int, int]:
        info = os.stat(self.path)
        return info.st_mtime_ns, info.st_size, info.st_ino

    def _load(self, stamp: tuple[int, int, int]) -> None:
        with open(self.path, encoding="utf-8") as file:
            index = parse_lines(file.read(), self.path)
            mode = os.fstat(file.fileno()).st_mode
        self.index, self._loaded, self._failed = index, stamp, None
        log.info(
            "loaded %d API keys of %d principals from %s%s",
            index.keys,
            index.principals,
            self.path,
            " (with mTLS names)" if index.has_certificates else "",
        )
        if mode & (stat.S_IWGRP | stat.S_IWOTH):
            log.warning("%s is writable by other users, who could add keys to it", self.path)

    def check(self) -> None:
        """Reload the file if it changed since it was last read."""
        try:
            stamp = self._stamp()
        except OSError as exc:
            self._report(_GONE, exc)
            return
        if stamp in (self._loaded, self._failed):
            return
        try:
            self._load(stamp)
        except (OSError, UnicodeDecodeError, KeySourceError) as exc:
            self._report(stamp, exc)

    def _report(self, version: tuple[int, int, int], exc: Exception) -> None:
        """One ERROR line per unusable version of the file."""
        if version != self._failed:
            self._failed = version
            log.error("keeping the previous keys: %s cannot be used: %s", self.path, exc)

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self._interval)
            self.check()


_GONE = (0, 0, 0)  # the version of a file that cannot be found
