"""``make run`` serves within 10 s on a bare machine, and the README's session works as written,
without authentication and with the README's API keys."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.conftest import ROOT, launch

README = (ROOT / "README.md").read_text()


def _block(start: str, end: str, fence: str) -> str:
    section = README[README.index(start) + len(start) : README.index(end)]
    return section.split(f"```{fence}\n", 1)[1].rsplit("```", 1)[0]


def test_make_run_is_the_launcher() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:.*\n\t\$\(PY\) -m launcher$", makefile, re.MULTILINE)


@pytest.fixture
def launched_with_keys(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The README's key block, run as written in a scratch folder (``make run`` is the launcher
    it starts)."""
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    script = _block("<!-- readme-keys:start -->", "<!-- readme-keys:end -->", "bash")
    assert script.rstrip().endswith("make run"), script
    launcher = f"exec {sys.executable} -m launcher --worker-delay 0.2"
    script = script.rstrip().removesuffix("make run") + launcher
    command = ["bash", "-euo", "pipefail", "-c", script]
    extra = {"PYTHONPATH": str(ROOT)}
    for found in launch(command, tmp_path, tmp_path / "launcher.log", extra):
        yield found | {"HULEEDU_API_KEY": (tmp_path / "me.key").read_text().strip()}


def test_the_readme_session_runs_as_written(launched: dict[str, str]) -> None:
    _session(launched)


def test_with_api_keys_the_session_runs_with_the_readmes_key_and_not_without(
    launched_with_keys: dict[str, str],
) -> None:
    assert (
        "Authentication     API keys from keys.jsonl" in Path(launched_with_keys["log"]).read_text()
    )
    _session(launched_with_keys)
    without = {k: v for k, v in launched_with_keys.items() if k != "HULEEDU_API_KEY"}
    refused = subprocess.run(
        [str(ROOT / ".venv/bin/huleedu"), "batch", "list"],
        env={**os.environ, **without},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 1
    assert '"code": "UNAUTHENTICATED"' in refused.stderr


def _session(launched: dict[str, str]) -> None:
    script = _block("<!-- readme-session:start -->", "<!-- readme-session:end -->", "bash")
    env = {
        **os.environ,
        "BATCH_ADDRESS": launched["BATCH_ADDRESS"],
        "CONDUCTOR_ADDRESS": launched["CONDUCTOR_ADDRESS"],
    }
    if "HULEEDU_API_KEY" in launched:
        env["HULEEDU_API_KEY"] = launched["HULEEDU_API_KEY"]
    result = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    watched = [line for line in lines if line.startswith("#")]
    assert watched, result.stdout
    assert re.search(r" (COMPLETED|COMPLETED_WITH_FAILURES|FAILED): ", watched[-1]), watched
    assert '"runs"' in result.stdout  # batch status
    assert '"steps"' in result.stdout  # conductor state and resolution


def test_the_readme_python_example_runs(launched: dict[str, str]) -> None:
    code = README.split("```python\n", 1)[1].split("```", 1)[0]
    code = code.replace("127.0.0.1:5000", launched["BATCH_ADDRESS"])
    result = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    last = result.stdout.strip().splitlines()[-1]  # "<sequence> <run status> <step>=<status>..."
    _sequence, status, *steps = last.split()
    assert status in {"COMPLETED", "COMPLETED_WITH_FAILURES", "FAILED"}, result.stdout
    assert steps == ["spellcheck=SATISFIED", "nlp=SATISFIED"], result.stdout
