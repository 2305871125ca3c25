"""The ``huleedu`` command line's behaviour around its output (the commands run in the e2e tier)."""

from __future__ import annotations

import io
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from clients import cli
from mesh.security.keys import key_digest, parse_lines

ROOT = Path(__file__).resolve().parents[2]


def test_a_reader_that_goes_away_ends_the_command_quietly() -> None:
    # `huleedu conductor pipelines | head -1`: the command's handler stands in for the RPC
    # (no server here) and prints far more than a pipe holds after the reader has closed it.
    script = textwrap.dedent(
        """
        import sys
        from clients import cli
        from clients.cli import conductor

        async def pipelines(client, args, out):
            for n in range(100_000):
                print(f"line {n}")

        conductor.pipelines = pipelines
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


def test_keys_new_prints_a_key_file_line_and_shows_the_key_once(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert cli.main(["keys", "new", "--principal", "ops", "--scope", "batches:read"]) == 0
    out, err = capsys.readouterr()
    key = err.rsplit(" ", 1)[1].strip()
    principal, _ = parse_lines(out, "keys.jsonl").for_key(key)
    assert principal is not None
    assert principal.scopes == {"batches:read"}
    assert key not in out
    path = tmp_path / "ops.key"
    cli.main(
        ["keys", "new", "--principal", "ops", "--scope", "batches:read", "--key-file", str(path)]
    )
    out, err = capsys.readouterr()
    assert "hk_" not in err
    assert path.stat().st_mode & 0o777 == 0o600
    assert parse_lines(out, "k").for_key(path.read_text().strip())[0] is not None


def test_keys_hash_is_what_a_key_file_stores(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("hk_example\n"))
    assert cli.main(["keys", "hash"]) == 0
    assert capsys.readouterr().out.strip() == key_digest("hk_example")


def test_credentials_come_from_the_environment_unless_an_option_says_otherwise(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("HULEEDU_API_KEY", "hk_from_env")
    monkeypatch.setenv("HULEEDU_TLS_CA_FILE", "env-ca.pem")
    args = cli.build_parser().parse_args(["conductor", "pipelines"])
    found = cli.credentials(args)
    assert (found.api_key, found.ca_file, found.secure) == ("hk_from_env", "env-ca.pem", True)
    key_file = tmp_path / "key"
    key_file.write_text("hk_from_file\n")
    args = cli.build_parser().parse_args(
        ["--api-key-file", str(key_file), "--tls-ca-file", "ca.pem", "conductor", "pipelines"]
    )
    found = cli.credentials(args)
    assert (found.api_key, found.ca_file) == ("hk_from_file", "ca.pem")
    assert "hk_from_file" not in repr(found)
