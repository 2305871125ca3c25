"""Two deployments on one Kafka cluster and one PostgreSQL server. A server of a second
namespace refuses to start on the first one's database (it belongs to the first namespace that
started on it), saying so; on a database of its own it runs beside the first, and their
consumer groups are namespaced (no group is shared). The first deployment is unaffected."""

from __future__ import annotations

import asyncio
import secrets

from chaos.check import Scope, kafka
from chaos.check.findings import Findings
from chaos.deployment import Server
from chaos.report import Row
from chaos.trial import Context, Trial, trial
from mesh.events.topics import topic_name_prefix

REFUSAL_TIMEOUT = 60.0


async def _refused(intruder: Server, owner: str, found: Findings) -> None:
    """``intruder`` (another namespace, on ``owner``'s database) must exit non-zero, saying
    whose database it is."""
    await intruder.start(serving=False)
    code = await intruder.wait_exit(REFUSAL_TIMEOUT)
    said = [line for line in intruder.text().splitlines() if "KAFKA_NAMESPACE" in line]
    if code is None:
        await intruder.kill()
        found.problem(f"{intruder.name} did not refuse to start on another namespace's database")
    elif code == 0 or not any(repr(owner) in line for line in said):
        found.problem(f"{intruder.name} exited {code} without naming the owner: {said[:1]}")
    else:
        message = said[0].split("] ", 1)[-1]  # after the log line's level, logger and cid
        found.notes.append(f"{intruder.name} refused (exit {code}): {message}")


async def _groups(a: Scope, b: Scope, found: Findings) -> None:
    """Each deployment's groups exist under its own prefix and consume only its own topics."""
    groups = await kafka.groups_of(a.bootstrap)
    for scope in (a, b):
        prefix = topic_name_prefix(scope.namespace)
        missing = sorted(set(scope.groups()) - set(groups))
        if missing:
            found.problem(f"groups of {scope.namespace} missing: {missing}")
        for group in (g for g in groups if g.startswith(prefix)):
            foreign = sorted(
                t
                for t in await kafka.committed_topics(a.bootstrap, group)
                if not t.startswith(prefix)
            )
            if foreign:
                found.problem(f"group {group} consumes another namespace's topics: {foreign}")
    shared = set(a.groups()) & set(b.groups())
    if shared:
        found.problem(f"groups shared by both deployments: {sorted(shared)}")
    found.notes.append(f"groups: {sorted(set(a.groups()) | set(b.groups()))}")


async def _second(ctx: Context, first: Trial, namespace: str, found: Findings) -> Row:
    async with trial(ctx, "two-namespaces", namespace=namespace) as second:
        second.start()
        await second.mid_run()
        await asyncio.sleep(ctx.profile.after)
        await _groups(first.scope, second.scope, found)
        return await second.verdict()


async def two_namespaces(ctx: Context) -> Row:
    """A second namespace refused on the first's database, then run beside it on its own."""
    other = f"chaos{secrets.token_hex(4)}"
    async with trial(ctx, "two-namespaces") as first:
        first.start()
        await first.mid_run()
        found = Findings()
        for server in first.mesh.servers:
            intruder = server.twin(f"{other}-{server.name}-intruder", KAFKA_NAMESPACE=other)
            await _refused(intruder, first.mesh.namespace, found)
        second = await _second(ctx, first, other, found)
        row = await first.verdict(findings=found)
        row.findings.merge(second.findings, prefix="second deployment: ")
        row.records += second.records
        row.failed_rpcs += second.failed_rpcs
        row.unavailable += second.unavailable
        row.calls += second.calls
        return row
