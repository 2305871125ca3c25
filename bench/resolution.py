"""Benchmark: resolving pipelines against stdlib ``graphlib`` on random DAGs.

For 100, 1,000 and 10,000 steps (about 3 dependencies each, declared in an order shuffled
against the dependencies), it times, on the same graph in the same process:

- ours: ``resolve(catalog, "all", {}, flags)``, a pipeline holding every step: its steps in
  stable topological order (declaration-order ties), pruning, gates, its version;
- step target: ``resolve(catalog, "sink", ...)``, a step whose closure is the whole graph: the
  same plus the closure walk and hashing the closure's definitions;
- baseline: ``tuple(graphlib.TopologicalSorter(deps).static_order())``.

The catalog sorts the step table once when it is built (``StepGraph.order``, heap-based Kahn);
a resolution reads its closure off that order (see ``conductor_server/domain/catalog.py``). The
one-off sort is timed too ("load sort"), against graphlib sorting the same graph.

Two protocols, in rounds over every size so that a noisy spell hits all sizes alike; figures
are medians, garbage collector off while timing:
- warm: calls repeated back to back (data stays in the CPU caches while it fits);
- cold: a 64 MiB buffer is rewritten before each single call, so every size starts from cold
  caches, as a resolution does on a server that did other work in between.

Goal: at most 1.5x graphlib at 10,000 steps; linear growth (10x the steps, at most
12x the time). The last line printed is one JSON object (DESIGN §9); its headline figures
("ours", "baseline", "ratio") are the warm ones.

    python bench/resolution.py [--quick] [--seed N]
"""

from __future__ import annotations

import argparse
import gc
import graphlib
import json
import random
import statistics
import time
from collections.abc import Callable

from conductor_server.domain.catalog import PipelineCatalog
from conductor_server.domain.graph import StepGraph
from conductor_server.domain.model import PipelineDefinition, StepDefinition
from conductor_server.domain.resolution import resolve

SIZES = (100, 1_000, 10_000)
DEPENDENCIES = 3
REPEATS = {False: 31, True: 7}
WORK_PER_SAMPLE = 20_000  # warm: steps resolved per timed sample, so small sizes are not noise
EVICT = bytearray(64 << 20)  # larger than the last-level cache
MEASURES = ("ours", "step", "load_sort", "graphlib")


def random_dag(size: int, rnd: random.Random) -> list[StepDefinition]:
    """``size`` steps: each depends on up to 3 steps created before it, and a last step "sink"
    on every step nothing else depends on (so its closure is the whole graph). Declaration order
    is shuffled against dependency order; the definitions are created in declaration order, as
    a loader reading a file creates them."""
    deps = [rnd.sample(range(node), min(node, DEPENDENCIES)) for node in range(size - 1)]
    needed = {dep for node_deps in deps for dep in node_deps}
    deps.append([node for node in range(size - 1) if node not in needed])
    names = [f"s{node}" for node in range(size - 1)] + ["sink"]
    declared = list(range(size))
    rnd.shuffle(declared)
    return [
        StepDefinition(
            name=names[node],
            service="bench",
            command="spellcheck",
            depends_on=tuple(names[dep] for dep in deps[node]),
        )
        for node in declared
    ]


def warm(call: Callable[[], object], number: int) -> float:
    """Seconds per call, over ``number`` calls back to back."""
    gc.collect()
    gc.disable()
    try:
        start = time.perf_counter()
        for _ in range(number):
            call()
        return (time.perf_counter() - start) / number
    finally:
        gc.enable()


def cold(call: Callable[[], object]) -> float:
    """Seconds for one call, after evicting the CPU caches."""
    gc.collect()
    EVICT[:] = bytes(len(EVICT))
    gc.disable()
    try:
        start = time.perf_counter()
        call()
        return time.perf_counter() - start
    finally:
        gc.enable()


class Case:
    """One graph of one size, and what is timed on it."""

    def __init__(self, size: int, rnd: random.Random) -> None:
        steps = random_dag(size, rnd)
        self.catalog = PipelineCatalog("bench", (PipelineDefinition("all", "", tuple(steps)),))
        self.deps = {step.name: step.depends_on for step in steps}
        index = {step.name: position for position, step in enumerate(steps)}
        self.graph = StepGraph.from_dependencies(
            [[index[dep] for dep in step.depends_on] for step in steps]
        )
        self.number = max(1, WORK_PER_SAMPLE // size)
        self.calls: dict[str, Callable[[], object]] = {
            "ours": lambda: resolve(self.catalog, "all", {}, frozenset()),
            "step": lambda: resolve(self.catalog, "sink", {}, frozenset()),
            "load_sort": lambda: self.graph.order(range(size)),
            "graphlib": lambda: tuple(graphlib.TopologicalSorter(self.deps).static_order()),
        }
        self.samples: dict[tuple[str, str], list[float]] = {}
        self._check(steps)

    def _check(self, steps: list[StepDefinition]) -> None:
        order = [step.name for step in resolve(self.catalog, "all", {}, frozenset()).steps]
        position = {name: index for index, name in enumerate(order)}
        assert len(order) == len(steps)
        assert all(position[dep] < position[step.name] for step in steps for dep in step.depends_on)
        assert [s.name for s in resolve(self.catalog, "sink", {}, frozenset()).steps] == order

    def sample(self) -> None:
        for what, call in self.calls.items():
            self.samples.setdefault(("warm", what), []).append(warm(call, self.number))
            self.samples.setdefault(("cold", what), []).append(cold(call))

    def median(self, protocol: str, what: str) -> float:
        return statistics.median(self.samples[(protocol, what)])


def table(cases: dict[int, Case], protocol: str) -> None:
    print(f"\n{protocol}: milliseconds per call (median)")
    print(
        f"{'steps':>8}  {'ours':>8}  {'step target':>11}  {'graphlib':>9}  {'ratio':>6}"
        f"  {'load sort':>9}  {'ratio':>6}"
    )
    for size, case in cases.items():
        ours, step, load_sort, baseline = (case.median(protocol, w) for w in MEASURES)
        print(
            f"{size:>8,}  {ours * 1e3:>8.3f}  {step * 1e3:>11.3f}  {baseline * 1e3:>9.3f}"
            f"  {ours / baseline:>6.3f}  {load_sort * 1e3:>9.3f}  {load_sort / baseline:>6.3f}"
        )
    big, mid = cases[SIZES[-1]], cases[SIZES[-2]]
    growth = [big.median(protocol, w) / mid.median(protocol, w) for w in MEASURES]
    print(
        "growth 1k -> 10k steps: ours {:.1f}x, step target {:.1f}x, load sort {:.1f}x, "
        "graphlib {:.1f}x".format(*growth)
    )


def summary(cases: dict[int, Case], repeats: int, quick: bool) -> dict[str, object]:
    big, mid = cases[SIZES[-1]], cases[SIZES[-2]]

    def growth(protocol: str, what: str) -> float:
        return round(big.median(protocol, what) / mid.median(protocol, what), 2)

    figures: dict[str, object] = {
        "bench": "resolution",
        "ours": round(big.median("warm", "ours"), 7),
        "baseline": round(big.median("warm", "graphlib"), 7),
        "unit": "s",
        "ratio": round(big.median("warm", "ours") / big.median("warm", "graphlib"), 4),
        "steps": SIZES[-1],
    }
    for protocol in ("warm", "cold"):
        figures[protocol] = {
            "per_size": {
                str(size): {what: round(case.median(protocol, what), 7) for what in MEASURES}
                for size, case in cases.items()
            },
            "growth_1k_10k": {what: growth(protocol, what) for what in MEASURES},
        }
    figures.update(
        growth_1k_10k=growth("warm", "ours"),
        cold_growth_1k_10k=growth("cold", "ours"),
        repeats=repeats,
        quick=quick,
        goal={"ratio_at_10k": 1.5, "growth_1k_10k": 12},
    )
    return figures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats (a smoke run)")
    parser.add_argument("--seed", type=int, default=4, help="random graph seed")
    args = parser.parse_args()
    repeats = REPEATS[args.quick]
    rnd = random.Random(args.seed)
    cases = {size: Case(size, rnd) for size in SIZES}
    for _ in range(repeats):
        for case in cases.values():
            case.sample()
    print(
        f"resolution vs graphlib.TopologicalSorter.static_order, random DAGs, ~{DEPENDENCIES} "
        f"dependencies a step, {repeats} rounds"
    )
    for protocol in ("warm", "cold"):
        table(cases, protocol)
    print(json.dumps(summary(cases, repeats, args.quick)))


if __name__ == "__main__":
    main()
