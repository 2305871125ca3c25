"""Loopback ports for the servers a test, a benchmark or the chaos harness starts.

A port the kernel picks for ``bind(("127.0.0.1", 0))`` comes from its ephemeral range
(``net.ipv4.ip_local_port_range``), the range every outgoing connection takes its local port
from: between the check and the server's own bind, a client connecting to Kafka or PostgreSQL
may take it, and the server fails to start ("address already in use"). ``free_port`` picks
below that range instead, where only listeners go, and never the same port twice in a process.
"""

from __future__ import annotations

import random
import socket
from pathlib import Path

EPHEMERAL_RANGE = Path("/proc/sys/net/ipv4/ip_local_port_range")
LOWEST = 10_000  # below are the well-known and commonly configured ports
_handed_out: set[int] = set()


def ephemeral_range() -> tuple[int, int]:
    """The kernel's range of local ports for outgoing connections (Linux; else IANA's)."""
    try:
        low, high = EPHEMERAL_RANGE.read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 49_152, 65_535


def free_port() -> int:
    """A loopback port nothing listens on, outside the ephemeral range, not handed out before."""
    low, _ = ephemeral_range()
    for _ in range(1_000):
        port = random.randrange(LOWEST, low) if low > LOWEST + 1_000 else 0
        if port in _handed_out:
            continue
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:  # in use, or in TIME_WAIT: another one
                continue
            port = int(sock.getsockname()[1])
        _handed_out.add(port)
        return port
    raise RuntimeError(f"no free loopback port between {LOWEST} and {low}")
