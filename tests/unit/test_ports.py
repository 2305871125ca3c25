"""The loopback ports test servers get: outside the range outgoing connections take theirs from."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

from bench.harness import ports


def test_a_port_is_below_the_ephemeral_range_free_and_never_handed_out_twice() -> None:
    low, high = ports.ephemeral_range()
    handed = [ports.free_port() for _ in range(50)]
    assert len(set(handed)) == len(handed)
    for port in handed:
        assert ports.LOWEST <= port < low, (port, low, high)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))  # nothing listens on it


def test_the_range_is_the_kernels_or_ianas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    kernel = tmp_path / "ip_local_port_range"
    kernel.write_text("40000\t50000\n")
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE", kernel)
    assert ports.ephemeral_range() == (40_000, 50_000)
    assert ports.LOWEST <= ports.free_port() < 40_000
    monkeypatch.setattr(ports, "EPHEMERAL_RANGE", tmp_path / "missing")
    assert ports.ephemeral_range() == (49_152, 65_535)


def test_a_port_in_use_is_passed_over(monkeypatch: pytest.MonkeyPatch) -> None:
    with socket.socket() as holder, socket.socket() as probe:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        probe.bind(("127.0.0.1", 0))
        taken, free = holder.getsockname()[1], probe.getsockname()[1]
        probe.close()
        picks = iter([taken, free])
        monkeypatch.setattr(random, "randrange", lambda _low, _high: next(picks))
        monkeypatch.setattr(ports, "ephemeral_range", lambda: (65_535, 65_535))
        assert ports.free_port() == free
