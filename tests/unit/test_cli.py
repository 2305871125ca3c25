"""The ``huleedu`` command line's behaviour around its output (the commands run in the e2e tier)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    # `huleedu conductor pipelines | head -1`: the command's handler stands in for the RPC
    # (no server here) and prints far more than a pipe holds after the reader has closed it.
    script = textwrap.dedent(
        """
        import sys
        from clients import cli

        async def pipelines(args):
            for n in range(100_000):
                print(f"line {n}")

        cli._conductor = pipelines
        sys.exit(cli.main(["conductor", "pipelines"]))
        """
    )
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write
    try:
        result = subprocess.run(
            [sys.executable, "-c", script],
            cwd=ROOT,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
        )
    finally:
        os.close(write)
    assert result.returncode == 141, result.stderr
    assert result.stderr == ""
