"""``make run`` serves within 10 s on a bare machine, and the README's session works as written."""

from __future__ import annotations

import os
import re
import subprocess
import sys

from tests.e2e.conftest import ROOT

README = (ROOT / "README.md").read_text()


def _block(start: str, end: str, fence: str) -> str:
    section = README[README.index(start) + len(start) : README.index(end)]
    return section.split(f"```{fence}\n", 1)[1].rsplit("```", 1)[0]


def test_make_run_is_the_launcher() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert re.search(r"^run:.*\n\t\$\(PY\) -m launcher$", makefile, re.MULTILINE)


def test_the_readme_session_runs_as_written(launched: dict[str, str]) -> None:
    script = _block("<!-- readme-session:start -->", "<!-- readme-session:end -->", "bash")
    env = {
        **os.environ,
        "BATCH_ADDRESS": launched["BATCH_ADDRESS"],
        "CONDUCTOR_ADDRESS": launched["CONDUCTOR_ADDRESS"],
    }
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
