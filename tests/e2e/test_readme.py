"""``make run`` serves within 10 s on a bare machine, and the README's sessions work as written:
the session (a run to the end, then a run cancelled and retried), without authentication and
with the README's API keys, and the failures session on the launcher started as the README says
(failed essays, a failed run, its retry)."""

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


def _blocks(start: str, end: str) -> list[str]:
    """Every bash block between the markers."""
    section = README[README.index(start) + len(start) : README.index(end)]
    return re.findall(r"```bash\n(.*?)```", section, re.DOTALL)


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
    launcher = f"exec {sys.executable} -m launcher"  # make run: 0.5 s a command, time to cancel
    script = script.rstrip().removesuffix("make run") + launcher
    command = ["bash", "-euo", "pipefail", "-c", script]
    extra = {"PYTHONPATH": str(ROOT)}
    for found in launch(command, tmp_path, tmp_path / "launcher.log", extra):
        yield found | {"HULEEDU_API_KEY": (tmp_path / "me.key").read_text().strip()}


@pytest.fixture
def made_run(tmp_path: Path) -> Iterator[dict[str, str]]:
    """``make run`` as it is (the demo workers take 0.5 s a command: the session cancels a run
    while it runs)."""
    yield from launch([sys.executable, "-m", "launcher"], ROOT, tmp_path / "launcher.log")


@pytest.fixture
def launched_with_failures(tmp_path: Path) -> Iterator[dict[str, str]]:
    """The launcher as the README's failures block starts it."""
    command = _blocks("<!-- readme-failures:start -->", "<!-- readme-failures:end -->")[0].strip()
    assert command.startswith(".venv/bin/python -m launcher "), command
    argv = [sys.executable, *command.split()[1:]]
    yield from launch(argv, ROOT, tmp_path / "launcher.log")


def test_the_readme_session_runs_as_written(made_run: dict[str, str]) -> None:
    _session(made_run)


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
    assert refused.stderr.startswith("error: UNAUTHENTICATED"), refused.stderr


def _run(script: str, launched: dict[str, str]) -> list[str]:
    """``script`` under bash -euo pipefail against the launched servers; its stdout lines."""
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
        timeout=180,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "\x1b" not in result.stdout  # not a terminal: no colours, no cursor movement
    return result.stdout.splitlines()


def _ended(lines: list[str]) -> list[str]:
    """The final status of each watch, in order (``run ID ended STATUS``)."""
    return [line.split()[-1] for line in lines if re.fullmatch(r"run \S+ ended \w+", line)]


def _session(launched: dict[str, str]) -> None:
    script = _block("<!-- readme-session:start -->", "<!-- readme-session:end -->", "bash")
    lines = _run(script, launched)
    text = "\n".join(lines)
    # the first run to the end, one line per update, then the cancelled run's retry to the end
    assert _ended(lines) == ["COMPLETED", "COMPLETED"], text
    watched = [line for line in lines if line.startswith("#")]
    assert watched[0].startswith("#1 "), watched
    assert "spellcheck SATISFIED 3/3 ok" in text
    assert "newest run:" in text  # batch status
    assert ["essay-0", "ok", "ok", "ok", "ok"] in [line.split()[1:] for line in lines]  # essays
    assert re.search(r"^nlp +SATISFIED +3/3 ok *$", text, re.MULTILINE), text  # conductor state
    assert "nlp for batch " in text  # the resolution
    assert re.search(r"^Cancelled run \S+ of batch \S+\.$", text, re.MULTILINE), text
    assert "CANCELLED  (wrong prompt)" in text
    assert re.search(r"^Retrying run \S+ of batch \S+: attempt 2\.$", text, re.MULTILINE), text
    assert re.search(r"^watching run \S+  comprehensive  attempt 2  ", text, re.MULTILINE), text


def test_the_readme_failures_session_runs_as_written(
    launched_with_failures: dict[str, str],
) -> None:
    _, script = _blocks("<!-- readme-failures:start -->", "<!-- readme-failures:end -->")
    lines = _run(script, launched_with_failures)
    text = "\n".join(lines)
    first, retried = _ended(lines)
    assert first in {"FAILED", "COMPLETED_WITH_FAILURES"}, text
    assert retried in {"COMPLETED", "COMPLETED_WITH_FAILURES", "FAILED"}, text
    assert "failed DEMO_FAILURE" in text  # batch essays
    assert re.search(r"^Retrying run \S+ of batch \S+: attempt 2\.$", text, re.MULTILINE), text
    assert re.search(r"^watching run \S+  comprehensive  attempt 2  ", text, re.MULTILINE), text


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
