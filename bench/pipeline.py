"""Step transitions and whole runs, what a user waits for, against the Kafka round trip as floor.

Setup: Redis, PostgreSQL and Kafka of the environment (``REDIS_URL``, ``DATABASE_URL``,
``KAFKA_BOOTSTRAP_SERVERS``; ``. .devstack/env``), else a private devstack; a fresh database
and Kafka namespace (3 partitions a topic) per invocation. Both servers run as a user runs them
(``python -m conductor_server``, ``python -m batch_server``, ``LOG_LEVEL=WARNING``, logs in
``.cache/bench/pipeline-*.log``), the demo workers as ``--worker-processes`` processes of
``python -m launcher.workers`` (one consumer group, no delay, every essay succeeds; 2 by
default: a batch's nlp and cj_assessment commands then go to different workers, as they would
go to different services, and the workers' CPU per essay-step is reported to show they are not
the bottleneck). The client is the SDK (``clients.BatchClient``): a batch of N short essays
with the flag ``prompt_attached`` runs ``comprehensive`` (spellcheck; nlp and cj_assessment
after it; ai_feedback after spellcheck and nlp), one batch at a time. Creating a batch is not
timed; one 100-essay run warms up first.

Transition latency (the headline): for each step of a run that has dependencies (read from the
pipeline definitions: 3 a run), the Kafka timestamp (CreateTime, set by the producer) of its
first StepCommand minus the latest timestamp of its dependencies' EssayStepOutcomes. It is split
at the last of the dependencies' BatchStepCompleted into the conductor's share (counting the
outcomes, writing the completion) and the BatchService's (dispatching the step). 30 runs
(``--quick``: 5) at 100, 1,000 and 10,000 (not with ``--quick``) essays. The records are read
after each run by a consumer without a group, assigned every partition of those topics and
paused while a run is timed, so observing costs a run nothing. Percentiles are nearest rank
(the value at index floor(q n) of the sorted values: below 100 values, p99 is the maximum);
Kafka timestamps are whole milliseconds.

Floor (baseline): two hops over the mesh's own bus (``KafkaBus``: its idempotent acks=all
producer and its consumer runner): a small envelope written to topic A, a consumer on A writes
it to topic B at once, a consumer on B receives it; the time from the write on A to the receipt
on B, one trip at a time, in this process, in equal chunks before each size (300 trips;
``--quick``: 200). ``ratio`` = transition p50 at 1,000 essays / floor p50: a transition is two
such hops (outcome to the conductor, completion to the BatchService) plus both servers' work.

Outcome delivery (the floor at each size): a step's outcomes in one hop, with nothing counted.
A ``StepCommand`` of N essays goes to a demo worker process of its own (``launcher.workers``
on a namespace of its own), which writes the N outcomes as a step's worker does in a run; a
consumer in this process (the mesh's consumer runner, a handler that only notes them) receives
them. The time from the last outcome's Kafka timestamp to the receipt of the last of them is
the part of a transition at N essays that Kafka delivery takes: the conductor cannot have
counted the last outcome before it has it. 20 bursts (``--quick``: 10) before each size.

Whole runs: wall time from StartPipeline returning to WatchBatch reporting the run finished.
CPU µs per essay-step of each process (utime+stime from ``/proc`` around each timed run;
workers summed) = CPU / (essays x 4 steps x runs). Memory: VmRSS and VmHWM (peak RSS, MiB) of
each server after each 10,000-essay run; "10,000" is the peak after the first of them,
"100,000" after the tenth (100,000 essays in batches of 10,000, one after another); "growth"
is VmRSS after the tenth over VmRSS after the first (no growth: at most 10%).

Goals (measured and reported, not asserted): transition p50 <= 25 ms and p99 <= 100 ms at 100
and 1,000 essays, p50 <= 250 ms at 10,000; a 10,000-essay run <= 3 s (median); run time
growth from 1,000 to 10,000 essays <= 11x; peak RSS <= 150 MiB per server after 100,000
essays, without growth across the repeated runs.

Usage: ``python -m bench.pipeline [--quick] [--worker-processes N] [--runs N]``; the last line
printed is one JSON object (with ``--quick`` its 10,000 and 100,000 figures are null).
"""

from __future__ import annotations

import argparse
import json
import secrets
import statistics
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from bench.harness.backends import Backends, backends, scratch_database
from bench.harness.kafka import Observer, Transition, floor, outcome_delivery, transition_name
from bench.harness.processes import START_TIMEOUT, Mesh, Process, mesh_env, running_mesh
from bench.state import percentile
from clients import BatchClient
from conductor_server.domain.loader import parse_catalog
from generated.huleedu.batch.v1 import batch_pb2
from mesh.events.topics import COMMAND_KINDS
from mesh.runtime import tune_gc
from mesh.settings import ServerSettings
from pipelines import default_definitions

PIPELINE = "comprehensive"
SIZES = (100, 1_000, 10_000)
MEMORY_RUNS = 10  # batches of 10,000: 100,000 essays
CREATE_TIMEOUT, RUN_TIMEOUT = 600.0, 600.0
P50_GOAL = {100: 25.0, 1_000: 25.0, 10_000: 250.0}  # transition, ms
P99_GOAL = {100: 100.0, 1_000: 100.0}
RUN_GOAL_S, GROWTH_GOAL, RSS_GOAL_MB, RSS_GROWTH_PCT = 3.0, 11.0, 150.0, 10.0
SERVERS = ("conductor", "batch")
PROCESSES = ("conductor", "batch", "workers")


def dependencies(pipeline: str) -> dict[str, tuple[str, ...]]:
    """Each step of ``pipeline`` and the steps it waits for, from the shipped definitions."""
    text = default_definitions().read_text()
    catalog = parse_catalog(text, "pipelines.yaml", COMMAND_KINDS.keys())
    return {step.name: step.depends_on for step in catalog.pipeline(pipeline).steps}


# --- runs ------------------------------------------------------------------------------------


@dataclass
class Run:
    essays: int
    seconds: float
    transitions: dict[str, Transition]  # by name
    cpu: dict[str, float]  # process -> CPU seconds during the run
    memory: dict[str, tuple[float, float]]  # server -> (VmRSS, VmHWM) MiB after the run


@dataclass
class Bench:
    mesh: Mesh
    client: BatchClient
    observer: Observer
    deps: dict[str, tuple[str, ...]]

    async def run(self, essays: int) -> Run:
        """One batch of ``essays`` through the pipeline, timed from StartPipeline returning."""
        texts = [f"Essay {i}: teh cat sat on teh mat and wrote about it." for i in range(essays)]
        flags = {"prompt_attached": True}
        batch = await self.client.create_batch(texts, flags=flags, timeout=CREATE_TIMEOUT)
        cpu = self.mesh.cpu()
        started = await self.client.start_pipeline(batch.batch_id, PIPELINE)
        began = time.perf_counter()
        watch = self.client.watch_batch(batch.batch_id, started.run.run_id, RUN_TIMEOUT)
        status = [update.run.status async for update in watch][-1]
        seconds = time.perf_counter() - began
        spent = {name: used - cpu[name] for name, used in self.mesh.cpu().items()}
        if status != batch_pb2.RUN_STATUS_COMPLETED:
            name = batch_pb2.RunStatus.Name(status)
            raise RuntimeError(f"batch {batch.batch_id}: the run ended {name}")
        timeline = await self.observer.read(batch.batch_id)
        return Run(essays, seconds, timeline.transitions(self.deps), spent, self.mesh.memory())

    async def runs(self, essays: int, count: int) -> list[Run]:
        done = []
        for number in range(count):
            done.append(run := await self.run(essays))
            shown = ", ".join(
                f"{t.total} ({t.conductor}+{t.batch})" for t in run.transitions.values()
            )
            print(
                f"{essays:>6,} essays, run {number + 1}/{count}: {run.seconds:.2f} s, "
                f"transitions {shown} ms",
                file=sys.stderr,
            )
        return done


@dataclass
class Results:
    runs: dict[int, list[Run]] = field(default_factory=dict)
    floor_ms: list[float] = field(default_factory=list)
    delivery_ms: dict[int, list[float]] = field(default_factory=dict)
    processes: list[Process] = field(default_factory=list)


async def measure(
    found: Backends, sizes: Sequence[int], runs: int, trips: int, bursts: int, workers: int
) -> Results:
    results, namespace = Results(), f"bench{secrets.token_hex(4)}"
    async with scratch_database(found.database_url) as database:
        env = mesh_env(found, database, namespace)
        bootstrap = found.kafka_bootstrap
        async with (
            running_mesh(env, workers, results.processes) as mesh,
            Observer(bootstrap, namespace) as observer,
            floor(bootstrap, namespace, START_TIMEOUT) as probe,
            outcome_delivery(env, results.processes) as burst,
            BatchClient(f"127.0.0.1:{env['BATCH_GRPC_PORT']}") as client,
        ):
            bench = Bench(mesh, client, observer, dependencies(PIPELINE))
            await bench.run(100)  # warm-up
            for essays in sizes:
                results.floor_ms += [s * 1000 for s in await probe.trips(trips // len(sizes))]
                results.delivery_ms[essays] = await burst.deliveries(essays, bursts)
                results.runs[essays] = await bench.runs(essays, runs)
    return results


# --- figures ---------------------------------------------------------------------------------


def _ms(values: Sequence[float], q: float) -> float:
    return round(percentile(values, q), 2)


def _latencies(runs: Sequence[Run], name: str | None = None, share: str = "total") -> list[float]:
    """Transition times (ms): all of ``runs``' or those named ``name``; ``share``: ``total``,
    ``conductor`` or ``batch``."""
    return [
        getattr(transition, share)
        for run in runs
        for n, transition in run.transitions.items()
        if name in (None, n)
    ]


def _per_size(results: Results, figure: Callable[[list[Run]], Any]) -> dict[str, Any]:
    return _per_size_of(results.runs, figure)


def _per_size_of(values: Mapping[int, Any], figure: Callable[[Any], Any]) -> dict[str, Any]:
    return {str(essays): figure(of_size) for essays, of_size in values.items()}


def cpu_per_essay_step(runs: Sequence[Run], steps: int) -> dict[str, float]:
    work = sum(run.essays for run in runs) * steps
    return {name: round(sum(r.cpu[name] for r in runs) / work * 1e6, 1) for name in PROCESSES}


def transition_figures(results: Results, names: Sequence[str]) -> dict[str, Any]:
    figures: dict[str, Any] = {}
    for essays in SIZES:
        values = _latencies(results.runs.get(essays, []))
        figures[f"transition_p50_ms_{essays}"] = _ms(values, 0.5) if values else None
        figures[f"transition_p99_ms_{essays}"] = _ms(values, 0.99) if values else None
    figures["transition_max_ms"] = _per_size(results, lambda runs: max(_latencies(runs)))
    figures["transition_p50_ms_by_step"] = _per_size(
        results, lambda runs: {n: _ms(_latencies(runs, n), 0.5) for n in names}
    )
    figures["transition_share_p50_ms"] = _per_size(
        results, lambda runs: {s: _ms(_latencies(runs, None, s), 0.5) for s in SERVERS}
    )
    return figures


def run_figures(results: Results, steps: int) -> dict[str, Any]:
    medians = _per_size(results, lambda runs: round(statistics.median(r.seconds for r in runs), 3))
    run_1000, run_10000 = medians.get("1000"), medians.get("10000")
    big = results.runs.get(10_000)
    return {
        "run_s_1000": run_1000,
        "run_s_10000": run_10000,
        "run_s_median": medians,
        "runs_s_10000": [round(run.seconds, 3) for run in big] if big else None,
        "growth_1000_to_10000": round(run_10000 / run_1000, 2) if run_10000 and run_1000 else None,
        "cpu_us_per_essay_step": cpu_per_essay_step(big, steps) if big else None,
        "cpu_us_per_essay_step_by_size": _per_size(results, lambda r: cpu_per_essay_step(r, steps)),
    }


def memory_figures(runs: Sequence[Run]) -> dict[str, Any]:
    if len(runs) < MEMORY_RUNS:
        return {"rss_mb_max_10000": None, "rss_mb_max_100000": None, "rss_growth_pct": None}
    first, tenth = runs[0].memory, runs[MEMORY_RUNS - 1].memory
    peak = {server: round(tenth[server][1], 1) for server in SERVERS}
    rss = {server: [round(run.memory[server][0], 1) for run in runs] for server in SERVERS}
    growth = {s: round((tenth[s][0] / first[s][0] - 1) * 100, 1) for s in SERVERS}
    return {
        "rss_mb_max_10000": {server: round(first[server][1], 1) for server in SERVERS},
        "rss_mb_max_100000": max(peak.values()),
        "rss_mb_max_100000_by_server": peak,
        "rss_mb_max_after_all_runs": {s: round(runs[-1].memory[s][1], 1) for s in SERVERS},
        "rss_mb_after_each_run_10000": rss,
        "rss_growth_pct": max(growth.values()),  # VmRSS after the tenth run vs the first
        "rss_growth_pct_by_server": growth,
    }


def _check(label: str, value: Any, limit: float) -> tuple[str, Any, bool | None]:
    return label, value, None if value is None else value <= limit


def goals(figures: Mapping[str, Any]) -> list[tuple[str, Any, bool | None]]:
    """(goal, figure, met) for each goal; met is None when the figure was not measured."""
    rows = []
    for essays, p50 in P50_GOAL.items():
        value = figures[f"transition_p50_ms_{essays}"]
        rows.append(_check(f"transition p50 <= {p50:.0f} ms at {essays:,} essays", value, p50))
        if essays in P99_GOAL:
            p99, value = P99_GOAL[essays], figures[f"transition_p99_ms_{essays}"]
            rows.append(_check(f"transition p99 <= {p99:.0f} ms at {essays:,} essays", value, p99))
    rows += [
        _check(
            f"10,000-essay run <= {RUN_GOAL_S:.0f} s (median)", figures["run_s_10000"], RUN_GOAL_S
        ),
        _check(
            f"growth 1,000 -> 10,000 essays <= {GROWTH_GOAL:.0f}x",
            figures["growth_1000_to_10000"],
            GROWTH_GOAL,
        ),
        _check(
            f"peak RSS <= {RSS_GOAL_MB:.0f} MiB a server after 100,000",
            figures["rss_mb_max_100000"],
            RSS_GOAL_MB,
        ),
    ]
    growth = figures["rss_growth_pct"]
    rows.append(
        _check(f"RSS growth over ten runs <= {RSS_GROWTH_PCT:.0f}%", growth, RSS_GROWTH_PCT)
    )
    return rows


def figures(results: Results, names: Sequence[str], steps: int, workers: int) -> dict[str, Any]:
    ours, baseline = _ms(_latencies(results.runs[1_000]), 0.5), _ms(results.floor_ms, 0.5)
    figures: dict[str, Any] = {
        "bench": "pipeline",
        "ours": ours,
        "baseline": baseline,
        "unit": "ms",
        "ratio": round(ours / baseline, 2),
        **transition_figures(results, names),
        "floor_p50_ms": baseline,
        "floor_p99_ms": _ms(results.floor_ms, 0.99),
        **{
            f"delivery_p50_ms_{essays}": _ms(values, 0.5)
            for essays, values in results.delivery_ms.items()
        },
        "delivery_bursts": _per_size_of(results.delivery_ms, len),
        **run_figures(results, steps),
        **memory_figures(results.runs.get(10_000, [])),
        "runs": _per_size(results, len),
        "transitions": _per_size(results, lambda runs: len(_latencies(runs))),
        "floor_trips": len(results.floor_ms),
        "worker_processes": workers,
        "percentiles": "nearest rank",
    }
    figures["goals_met"] = {label: met for label, _, met in goals(figures)}
    return figures


# --- report ----------------------------------------------------------------------------------


def transition_table(results: Results, names: Sequence[str]) -> list[str]:
    steps = [name.split(" -> ")[1] for name in names]
    lines = [
        "Step transitions (ms): a step's first command - its dependencies' last outcome;",
        "p50 of each transition, and of the conductor's and the BatchService's shares",
        f"{'essays':>7} {'runs':>4} {'n':>4} {'p50':>6} {'p99':>6} {'max':>6} |"
        + "".join(f" {step:>13}" for step in steps)
        + f" | {'conductor':>9} {'batch':>6}",
    ]
    for essays, runs in results.runs.items():
        values = _latencies(runs)
        by_step = "".join(f" {_ms(_latencies(runs, name), 0.5):>13.0f}" for name in names)
        conductor, batch = (_ms(_latencies(runs, None, share), 0.5) for share in SERVERS)
        lines.append(
            f"{essays:>7,} {len(runs):>4} {len(values):>4} {_ms(values, 0.5):>6.0f} "
            f"{_ms(values, 0.99):>6.0f} {max(values):>6.0f} |{by_step} | {conductor:>9.0f} "
            f"{batch:>6.0f}"
        )
    return lines


def run_table(results: Results, steps: int) -> list[str]:
    lines = [
        "Whole runs (s): StartPipeline returned -> WatchBatch reports the run finished;",
        "CPU us per essay-step during the runs",
        f"{'essays':>7} {'runs':>4} {'median':>7} {'min':>7} {'max':>7} | "
        f"{'conductor':>9} {'batch':>6} {'workers':>7}",
    ]
    for essays, runs in results.runs.items():
        seconds = [run.seconds for run in runs]
        cpu = cpu_per_essay_step(runs, steps)
        lines.append(
            f"{essays:>7,} {len(runs):>4} {statistics.median(seconds):>7.3f} "
            f"{min(seconds):>7.3f} {max(seconds):>7.3f} | {cpu['conductor']:>9.1f} "
            f"{cpu['batch']:>6.1f} {cpu['workers']:>7.1f}"
        )
    return lines


def memory_table(runs: Sequence[Run]) -> list[str]:
    lines = [
        "Servers' memory after each 10,000-essay run (MiB; peak = VmHWM)",
        f"{'run':>4} {'conductor RSS':>14} {'batch RSS':>10} {'conductor peak':>15} "
        f"{'batch peak':>11}",
    ]
    for number, run in enumerate(runs, 1):
        (c_rss, c_peak), (b_rss, b_peak) = (run.memory[server] for server in SERVERS)
        lines.append(f"{number:>4} {c_rss:>14.1f} {b_rss:>10.1f} {c_peak:>15.1f} {b_peak:>11.1f}")
    return lines


def summary(figures: Mapping[str, Any]) -> list[str]:
    verdicts = {True: "met", False: "MISSED", None: "n/a"}
    lines = [
        f"Floor, the mesh bus's two-hop Kafka round trip ({figures['floor_trips']} trips): "
        f"p50 {figures['floor_p50_ms']:.2f} ms, p99 {figures['floor_p99_ms']:.2f} ms",
        f"ratio: transition p50 at 1,000 essays / floor p50 = {figures['ratio']:.1f}",
        "Outcome delivery, a step's outcomes from a worker process to a consumer that only"
        " notes them (p50, ms; bursts):",
        *(
            f"{int(essays):>7,} essays: {figures[f'delivery_p50_ms_{essays}']:>7.1f} ({count})"
            for essays, count in figures["delivery_bursts"].items()
        ),
        "",
        "Goals",
    ]
    for label, value, met in goals(figures):
        shown = "n/a" if value is None else str(value)
        lines.append(f"  {label:<48} {shown:>8}  {verdicts[met]}")
    return lines


def log_lines(processes: Sequence[Process]) -> list[str]:
    """What the mesh's logs say at WARNING or above (the first lines of each)."""
    lines = []
    for process in processes:
        found = process.problems()
        lines.append(f"{process.log.name}: {len(found)} lines at WARNING or above")
        lines += [f"    {line[:150]}" for line in found[:5]]
    return lines


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 runs at 100 and 1,000 essays")
    parser.add_argument("--worker-processes", type=int, default=2)
    parser.add_argument("--runs", type=int, help="runs at each size (default 30, --quick 5)")
    args = parser.parse_args(argv)
    sizes = SIZES[:2] if args.quick else SIZES
    runs = args.runs or (5 if args.quick else 30)
    trips = 200 if args.quick else 300
    bursts = 10 if args.quick else 20
    tune_gc(ServerSettings().gc_threshold)  # the servers' setting, for the floor's process
    import uvloop

    with backends() as found:
        results = uvloop.run(measure(found, sizes, runs, trips, bursts, args.worker_processes))
    deps = dependencies(PIPELINE)
    names = [transition_name(step, needs) for step, needs in deps.items() if needs]
    result = figures(results, names, len(deps), args.worker_processes)
    lines = [*transition_table(results, names), "", *run_table(results, len(deps)), ""]
    if 10_000 in results.runs:
        lines += [*memory_table(results.runs[10_000]), ""]
    lines += [*summary(result), "", *log_lines(results.processes)]
    print("\n".join(lines))
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
