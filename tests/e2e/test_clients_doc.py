"""Each example of docs/clients.md (Python, Go, TypeScript) runs as written against ``make run``.

The Go block is a program of its own module that requires the SDK's through a ``replace`` of the
checkout's ``clients/go``; the TypeScript block is compiled by the SDK's pinned TypeScript against
the built package (linked as ``node_modules/@huleedu/pipeline-mesh-client``) and run by Node.
The SDKs' example programs (``clients/go/examples/quickstart``, ``clients/ts/examples``) are the
same code, checked here too.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import GO, ROOT, go_env

DOC = (ROOT / "docs" / "clients.md").read_text()
GO_SDK = ROOT / "clients" / "go"
TS_SDK = ROOT / "clients" / "ts"
TERMINAL = r"(COMPLETED|COMPLETED_WITH_FAILURES|FAILED)"


def block(language: str) -> str:
    [code] = re.findall(rf"^```{language}\n(.*?)^```$", DOC, re.MULTILINE | re.DOTALL)
    return str(code)


def run(command: list[str], cwd: Path, env: dict[str, str], timeout: float = 300) -> str:
    result = subprocess.run(
        command, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout
    )
    assert result.returncode == 0, f"{' '.join(command)}:\n{result.stdout}{result.stderr}"
    return result.stdout


def check_session(out: str, name: str = "NOT_FOUND") -> None:
    """The run was followed to its end, every step satisfied, and NOT_FOUND came back typed."""
    lines = out.strip().splitlines()
    assert re.fullmatch(rf"\d+ {TERMINAL}( \w+=\w+){{4}}", lines[-2]), out
    assert lines[-2].split()[1] == "COMPLETED", out
    assert lines[-1].startswith(f"not found: {name}"), out


def test_the_python_example_runs(launched: dict[str, str]) -> None:
    env = {**os.environ, "BATCH_ADDRESS": launched["BATCH_ADDRESS"]}
    out = run([sys.executable, "-c", block("python")], ROOT, env)
    check_session(out)
    assert out.strip().splitlines()[-2].endswith("ai_feedback=SATISFIED"), out


def test_the_go_example_runs(launched: dict[str, str], tmp_path: Path) -> None:
    module = "github.com/huleedu/pipeline-mesh/clients/go"
    (tmp_path / "go.mod").write_text(
        f"module example\n\ngo 1.24.0\n\nrequire {module} v0.0.0\n\nreplace {module} => {GO_SDK}\n"
    )
    shutil.copy(GO_SDK / "go.sum", tmp_path / "go.sum")
    (tmp_path / "main.go").write_text(block("go"))
    assert block("go") == (GO_SDK / "examples" / "quickstart" / "main.go").read_text()
    env = {**go_env(), "BATCH_ADDRESS": launched["BATCH_ADDRESS"]}
    env["GOFLAGS"] = f"{env['GOFLAGS']} -mod=mod"  # the example's go.mod lists only the SDK
    out = run([GO, "run", "."], tmp_path, env)
    out = out.replace("RUN_STATUS_", "").replace("RUN_STEP_STATUS_", "")  # Go prints full names
    check_session(out, "NotFound")


def test_the_typescript_example_runs(launched: dict[str, str], tmp_path: Path) -> None:
    run(["npm", "run", "--silent", "build"], TS_SDK, dict(os.environ))
    modules = tmp_path / "node_modules"
    (modules / "@huleedu").mkdir(parents=True)
    (modules / "@huleedu" / "pipeline-mesh-client").symlink_to(TS_SDK)
    (modules / "@types").symlink_to(TS_SDK / "node_modules" / "@types")
    (tmp_path / "package.json").write_text('{"type": "module"}\n')
    (tmp_path / "example.ts").write_text(block("typescript"))
    assert block("typescript") == (TS_SDK / "examples" / "quickstart.ts").read_text()
    tsc = str(TS_SDK / "node_modules" / ".bin" / "tsc")
    options = ["--strict", "--target", "es2022", "--module", "nodenext", "--types", "node"]
    run([tsc, *options, "example.ts"], tmp_path, dict(os.environ))
    env = {**os.environ, "BATCH_ADDRESS": launched["BATCH_ADDRESS"]}
    out = run(["node", "example.js"], tmp_path, env)
    check_session(out, "NotFound")
