"""Consumer throughput: ``mesh.consumer.Consumer`` with a no-op handler vs a raw aiokafka loop.

All contenders read the same pre-produced topic, each with its own consumer group, in
interleaved rounds of the same run. Ours decodes and validates every envelope, builds a
``Message`` per record, runs the dispatcher and commits (at most) once per batch. The baseline is
a bare ``getmany`` loop that parses each value as an ``EventEnvelope`` and does nothing else (no
validation, no commit): the least any consumer of these events must do. Also shown: the bare
loop that only counts bytes (no parse), and the bare parsing loop committing once per batch.
Each rate is timed from the first record received to the last, so group joins do not count.
Rounds alternate the contenders' order (forward, then reversed; ours always runs next to the
baseline), and each round's ratio of ours to a baseline is reported too: the median of these
paired ratios is the steadiest figure on a machine whose speed drifts within minutes.
The process runs with the servers' garbage-collector setting (``mesh.runtime.tune_gc`` with
``GC_THRESHOLD``'s default), which applies to every contender alike; ``--gc-threshold 700``
measures with CPython's default instead.

Needs Kafka: ``scripts/devstack up && . .devstack/env`` (or pass ``--bootstrap``).
Usage: ``python -m bench.consumer [--quick]``; the last line printed is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from aiokafka import AIOKafkaConsumer
from prometheus_client import CollectorRegistry

from generated.huleedu.events.v1 import events_pb2
from mesh import envelope as codec
from mesh.bus import Message, OutgoingEvent
from mesh.consumer import Consumer, ConsumerConfig
from mesh.consumer_metrics import ConsumerMetrics
from mesh.kafka_admin import create_topics
from mesh.producer import Producer
from mesh.runtime import tune_gc
from mesh.settings import ServerSettings
from mesh.topics import EventKind, dlq_topic, topic_name

KIND = EventKind.ESSAY_STEP_OUTCOME
parse_envelope = events_pb2.EventEnvelope.FromString
MAX_RECORDS = 1000
BYTES = "raw getmany, bytes only"
BASELINE = "raw getmany + parse (baseline)"
BATCHED = "raw getmany + parse into a list"
WITH_COMMIT = "raw getmany + parse + commit"
OURS = "mesh Consumer, no-op handler"
POLL_MS = 200


async def produce(bootstrap: str, namespace: str, count: int) -> None:
    async with Producer(bootstrap, namespace=namespace, linger_ms=20) as producer:
        chunk = 10_000
        for start in range(0, count, chunk):
            await producer.publish_many(
                [
                    OutgoingEvent(
                        KIND,
                        codec.build(
                            events_pb2.EssayStepOutcome(
                                batch_id=f"batch-{n % 64}",
                                step="spellcheck",
                                essay_id=f"essay-{n}",
                                outcome=events_pb2.STEP_OUTCOME_SUCCEEDED,
                                output_storage_id=f"store-{n}",
                            ),
                            source_service="bench",
                        ),
                    )
                    for n in range(start, min(start + chunk, count))
                ]
            )


Rate = tuple[float, float]  # (events per wall second, events per CPU second of this process)


async def raw_loop(
    bootstrap: str, topic: str, count: int, *, parse: bool, commit: bool, keep: bool = False
) -> Rate:
    consumer: Any = AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4().hex[:8]}",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        seen, first, first_cpu = 0, 0.0, 0.0
        while seen < count:
            polled = await consumer.getmany(timeout_ms=POLL_MS, max_records=MAX_RECORDS)
            if not polled:
                continue
            if not first:
                first, first_cpu = time.perf_counter(), time.process_time()
            if keep:  # the batch a batch handler is handed, alive until the next poll
                batch = [parse_envelope(r.value) for records in polled.values() for r in records]
                seen += len(batch)
                continue
            for records in polled.values():
                seen += len(records)
                if parse:
                    for record in records:
                        parse_envelope(record.value)
            if commit:
                await consumer.commit({tp: recs[-1].offset + 1 for tp, recs in polled.items()})
        return count / (time.perf_counter() - first), count / (time.process_time() - first_cpu)
    finally:
        await consumer.stop()


async def ours(bootstrap: str, namespace: str, count: int) -> Rate:
    seen, first, first_cpu = 0, 0.0, 0.0
    done = asyncio.Event()

    async def noop(messages: Sequence[Message]) -> None:
        nonlocal seen, first, first_cpu
        if not first:
            first, first_cpu = time.perf_counter(), time.process_time()
        seen += len(messages)
        if seen >= count:
            done.set()

    config = ConsumerConfig(
        bootstrap,
        group_id=f"bench-ours-{uuid.uuid4().hex[:8]}",
        service="bench",
        namespace=namespace,
        max_records=MAX_RECORDS,
        poll_timeout_ms=POLL_MS,
    )
    async with (
        Producer(bootstrap, namespace=namespace) as dead_letters,
        Consumer(
            config, [KIND], noop, dead_letters, metrics=ConsumerMetrics(CollectorRegistry())
        ) as consumer,
    ):
        task = asyncio.create_task(consumer.run())
        await done.wait()
        elapsed, cpu = time.perf_counter() - first, time.process_time() - first_cpu
        await consumer.stop()
        await task
    return count / elapsed, count / cpu


async def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20k events, 3 rounds")
    parser.add_argument("--events", type=int, help="events to pre-produce")
    parser.add_argument("--rounds", type=int, help="rounds per contender")
    parser.add_argument("--partitions", type=int, default=3)
    parser.add_argument("--bootstrap", default=os.environ.get("KAFKA_BOOTSTRAP_SERVERS"))
    parser.add_argument(
        "--gc-threshold",
        type=int,
        default=ServerSettings().gc_threshold,
        help="young-generation GC threshold for the whole run (default: the servers' setting)",
    )
    args = parser.parse_args(argv)
    tune_gc(args.gc_threshold)
    if not args.bootstrap:
        sys.exit("no Kafka: run `scripts/devstack up && . .devstack/env`, or pass --bootstrap")
    count = args.events or (20_000 if args.quick else 100_000)
    rounds = args.rounds or (3 if args.quick else 10)
    namespace = f"bench{uuid.uuid4().hex[:8]}"
    topic = topic_name(KIND, namespace)
    await create_topics(args.bootstrap, [topic, dlq_topic(topic)], partitions=args.partitions)
    await produce(args.bootstrap, namespace, count)

    boot = args.bootstrap
    contenders: dict[str, Callable[[], Awaitable[Rate]]] = {
        BYTES: lambda: raw_loop(boot, topic, count, parse=False, commit=False),
        BASELINE: lambda: raw_loop(boot, topic, count, parse=True, commit=False),
        BATCHED: lambda: raw_loop(boot, topic, count, parse=True, commit=False, keep=True),
        WITH_COMMIT: lambda: raw_loop(boot, topic, count, parse=True, commit=True),
        OURS: lambda: ours(boot, namespace, count),
    }
    walls: dict[str, list[float]] = {name: [] for name in contenders}
    cpus: dict[str, list[float]] = {name: [] for name in contenders}
    # Interleaved, so machine noise hits every contender alike; ours next to the baseline.
    run_order = [BYTES, BATCHED, WITH_COMMIT, BASELINE, OURS]
    for n in range(rounds):
        order = run_order if n % 2 == 0 else run_order[::-1]
        for name in order:
            wall, cpu = await contenders[name]()
            walls[name].append(wall)
            cpus[name].append(cpu)

    print(
        f"consumer throughput: {count} events, {args.partitions} partitions, {rounds} rounds, "
        f"GC threshold {gc.get_threshold()[0]}"
    )
    print(f"{'events/s':<32}{'best':>10}{'median':>10}{'min':>10}{'per CPU-s':>12}")
    for name in contenders:
        w = walls[name]
        print(
            f"{name:<32}{max(w):>10,.0f}{statistics.median(w):>10,.0f}{min(w):>10,.0f}"
            f"{statistics.median(cpus[name]):>12,.0f}"
        )
    paired = {
        name: [mine / theirs for mine, theirs in zip(walls[OURS], walls[name], strict=True)]
        for name in (BASELINE, BATCHED, BYTES)
    }
    print(f"{'ours / other, same round':<36}{'median':>8}{'quartiles':>14}{'min':>8}{'max':>8}")
    for name, ratios in paired.items():
        low, high = _quartiles(ratios)
        print(
            f"{'vs ' + name:<36}{statistics.median(ratios):>8.3f}"
            f"{f'{low:.3f}-{high:.3f}':>14}{min(ratios):>8.3f}{max(ratios):>8.3f}"
        )
    # Best of the rounds is the headline (as timeit takes the fastest run: on a shared machine
    # other load only ever slows a run down); the CPU-second rates do not count other processes.
    mine, baseline = max(walls[OURS]), max(walls[BASELINE])
    bytes_only = max(walls[BYTES])
    cpu_mine, cpu_base = statistics.median(cpus[OURS]), statistics.median(cpus[BASELINE])
    result = {
        "bench": "consumer",
        "ours": round(mine),
        "baseline": round(baseline),
        "unit": "events/s",
        "ratio": round(mine / baseline, 3),
        "statistic": f"best of {rounds}",
        "median_ours": round(statistics.median(walls[OURS])),
        "median_baseline": round(statistics.median(walls[BASELINE])),
        "cpu_ours": round(cpu_mine),
        "cpu_baseline": round(cpu_base),
        "cpu_ratio": round(cpu_mine / cpu_base, 3),
        "paired_ratio_median": round(statistics.median(paired[BASELINE]), 3),
        "paired_ratio_quartiles": [round(q, 3) for q in _quartiles(paired[BASELINE])],
        "paired_ratio_batched_median": round(statistics.median(paired[BATCHED]), 3),
        "paired_ratio_bytes_only_median": round(statistics.median(paired[BYTES]), 3),
        "baseline_bytes_only": round(bytes_only),
        "ratio_bytes_only": round(mine / bytes_only, 3),
        "cpu_ratio_bytes_only": round(cpu_mine / statistics.median(cpus[BYTES]), 3),
        "baseline_parse_commit": round(max(walls[WITH_COMMIT])),
        "baseline_batched": round(max(walls[BATCHED])),
        "ratio_batched": round(mine / max(walls[BATCHED]), 3),
        "cpu_ratio_batched": round(cpu_mine / statistics.median(cpus[BATCHED]), 3),
        "events": count,
        "partitions": args.partitions,
        "max_records": MAX_RECORDS,
        "gc_threshold": gc.get_threshold()[0],
    }
    print(json.dumps(result))
    return result


def _quartiles(values: Sequence[float]) -> tuple[float, float]:
    """First and third quartiles (both the value itself when there is only one)."""
    if len(values) < 2:
        return values[0], values[0]
    low, _, high = statistics.quantiles(values, n=4, method="inclusive")
    return low, high


if __name__ == "__main__":
    asyncio.run(main())
