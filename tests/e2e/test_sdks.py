"""The Go and TypeScript SDKs against both servers as processes on real backends, with workers.

Each test runs its SDK's own test suite (``clients/go``: ``go test -tags e2e``; ``clients/ts``:
``node --test``) with the servers' addresses in the environment: create a batch, start
``comprehensive``, watch it to the end, read its status, and get NOT_FOUND, INVALID_ARGUMENT
(naming its field) and FAILED_PRECONDITION (with its violations) back as the SDK's typed error;
cancel a run and retry it to the end; update a batch's labels and read its essays.
The SDKs' unit tests (retries, deadlines, the API key, error decoding) run in the same call.
"""

from __future__ import annotations

import asyncio
import os
import re

from tests.e2e.conftest import GO, ROOT, go_env

NPM = "npm"


async def _run(command: list[str], cwd: str, env: dict[str, str], within: float) -> str:
    process = await asyncio.create_subprocess_exec(
        *command,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        out, _ = await asyncio.wait_for(process.communicate(), within)
    except TimeoutError:
        process.kill()
        await process.wait()
        raise AssertionError(f"{' '.join(command)} took over {within}s") from None
    text = out.decode(errors="replace")
    assert process.returncode == 0, f"{' '.join(command)} failed:\n{text[-8000:]}"
    return text


async def test_the_go_sdk_against_the_servers(sdk_mesh: dict[str, str]) -> None:
    command = [GO, "test", "-tags", "e2e", "-count=1", "-v", "./..."]
    out = await _run(command, str(ROOT / "clients" / "go"), {**go_env(), **sdk_mesh}, 540)
    passed = set(re.findall(r"--- PASS: (\w+)", out))
    assert {
        "TestAComprehensiveRunEndsAndItsStatusReadsBack",
        "TestAnUnknownBatchIsNotFound",
        "TestABatchWithoutEssaysIsAnInvalidArgumentNamingTheField",
        "TestAGatedPipelineWithoutItsFlagIsAFailedPrecondition",
        "TestIdempotentCallsAreRetriedOnUnavailable",
        "TestACancelledRunEndsCancelledAndARetryFinishesIt",
        "TestABatchIsUpdatedAndItsEssaysRead",
        "TestRetryRunIsRetriedUnderTheOneRequestIDTheSDKFilledIn",
        "TestEveryRPCIsRetriedUnlessARepeatWouldDoItsWorkTwice",
    } <= passed, out
    assert "--- FAIL" not in out, out
    assert "--- SKIP" not in out, out


async def test_the_typescript_sdk_against_the_servers(sdk_mesh: dict[str, str]) -> None:
    env = {**os.environ, **sdk_mesh}
    out = await _run([NPM, "run", "--silent", "test:e2e"], str(ROOT / "clients" / "ts"), env, 300)
    counts = dict(re.findall(r"^# (pass|fail|skipped|cancelled|todo) (\d+)$", out, re.MULTILINE))
    assert counts.get("fail") == "0", out
    assert counts.get("skipped") == "0", out
    assert int(counts.get("pass", "0")) >= 13, out  # 6 against the servers, 7 of the transport
