"""The HTTP side port: ``GET /metrics`` (Prometheus text format) and ``GET /healthz``.

Two read-only endpoints do not justify a web framework; this is a minimal HTTP/1.1 responder on
asyncio streams. Rendering the registry is CPU-only and fast, so it runs on the loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from mesh.grpc.health import HealthReporter

log = logging.getLogger(__name__)

_REASONS = {200: "OK", 404: "Not Found", 405: "Method Not Allowed", 503: "Service Unavailable"}


class HttpSidePort:
    """Serves /metrics and /healthz; an async context manager bound to ``host:port``."""

    def __init__(
        self, host: str, port: int, registry: CollectorRegistry, health: HealthReporter
    ) -> None:
        self._host = host
        self._port = port
        self._registry = registry
        self._health = health
        self._server: asyncio.Server | None = None
        self.port = port

    async def __aenter__(self) -> HttpSidePort:
        self._server = await asyncio.start_server(self._handle, self._host, self._port)
        self.port = self._server.sockets[0].getsockname()[1]
        log.info("metrics and health on http://%s:%d", self._host, self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            request_line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            method, path = [*request_line.decode("latin-1").split(), "", ""][:2]
            status, content_type, body = self._respond(method, path.split("?", 1)[0])
            head = (
                f"HTTP/1.1 {status} {_REASONS[status]}\r\nContent-Type: {content_type}\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
            )
            writer.write(head.encode() + (body if method != "HEAD" else b""))
            await writer.drain()
        except (TimeoutError, ConnectionError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    def _respond(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method not in ("GET", "HEAD"):
            return 405, "text/plain", b"method not allowed\n"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, generate_latest(self._registry)
        if path == "/healthz":
            serving = self._health.serving
            status = "degraded" if self._health.degraded else "ok" if serving else "unavailable"
            body = {"status": status, "backends": self._health.backends}
            return (200 if serving else 503), "application/json", json.dumps(body).encode()
        return 404, "text/plain", b"not found\n"
