"""A dependency graph over numbered steps: closure, stable topological order, cycles.

Nodes are integers; a node's number is its declaration index, so "smallest first" means "declared
first". Edges point from a step to the steps it depends on.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Collection, Iterable, Sequence
from dataclasses import dataclass
from heapq import heapify, heappop, heappush


@dataclass(frozen=True, slots=True)
class StepGraph:
    """``deps[n]``: the nodes ``n`` depends on; ``dependents[n]``: the nodes depending on ``n``;
    ``counts[n]``: how many dependencies ``n`` has."""

    deps: tuple[tuple[int, ...], ...]
    dependents: tuple[tuple[int, ...], ...]
    counts: tuple[int, ...]

    @classmethod
    def from_dependencies(cls, deps: Sequence[Sequence[int]]) -> StepGraph:
        dependents: list[list[int]] = [[] for _ in deps]
        for node, node_deps in enumerate(deps):
            for dep in node_deps:
                dependents[dep].append(node)
        return cls(tuple(map(tuple, deps)), tuple(map(tuple, dependents)), tuple(map(len, deps)))

    def closure(self, roots: Iterable[int]) -> list[int]:
        """``roots`` and every node they depend on, directly or not (in no particular order)."""
        deps = self.deps
        seen = bytearray(len(deps))
        stack = list(roots)
        found: list[int] = []
        while stack:
            node = stack.pop()
            if not seen[node]:
                seen[node] = 1
                found.append(node)
                stack.extend(deps[node])
        return found

    def order(self, nodes: Iterable[int]) -> list[int]:
        """A topological order of ``nodes`` (dependencies first), ties broken by smallest node.

        ``nodes`` must be closed under dependencies (a ``closure``). Kahn's algorithm with a heap:
        O(n log n + e). Nodes on or behind a cycle are left out, so a result shorter than
        ``nodes`` means the subgraph has a cycle.
        """
        counts = self.counts
        dependents = self.dependents
        pending = [-1] * len(counts)  # unmet dependencies of a member; -1 for a non-member
        ready: list[int] = []
        for node in nodes:
            count = counts[node]
            pending[node] = count
            if not count:
                ready.append(node)
        heapify(ready)
        ordered: list[int] = []
        append, pop, push = ordered.append, heappop, heappush  # hot loop: local names
        while ready:
            node = pop(ready)
            append(node)
            for dependent in dependents[node]:
                count = pending[dependent]
                if count > 0:
                    pending[dependent] = count - 1
                    if count == 1:
                        push(ready, dependent)
        return ordered

    def cycles(self, nodes: Collection[int]) -> list[tuple[int, ...]]:
        """One cycle per strongly connected component of ``nodes`` that has one.

        Each cycle starts at its component's smallest node and follows dependencies back to it
        (``(a, b, a)``: a depends on b, b on a); the list is sorted.
        """
        members = set(nodes)
        found = []
        for component in _components(self.deps, members):
            start = min(component)
            if len(component) > 1 or start in self.deps[start]:
                found.append(self._cycle_through(start, component))
        return sorted(found)

    def _cycle_through(self, start: int, component: Collection[int]) -> tuple[int, ...]:
        """The shortest cycle through ``start`` inside ``component`` (breadth-first)."""
        parent = {start: start}
        queue = deque([start])
        while queue:
            node = queue.popleft()
            for dep in self.deps[node]:
                if dep == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(parent[path[-1]])
                    return (*reversed(path), start)
                if dep in component and dep not in parent:
                    parent[dep] = node
                    queue.append(dep)
        raise ValueError(f"node {start} is on no cycle of its component")


def _components(deps: Sequence[Sequence[int]], members: set[int]) -> list[set[int]]:
    """Strongly connected components of the subgraph on ``members`` (iterative Tarjan)."""
    tarjan = _Tarjan(deps, members)
    for root in sorted(members):
        if root not in tarjan.index:
            tarjan.visit(root)
    return tarjan.components


class _Tarjan:
    def __init__(self, deps: Sequence[Sequence[int]], members: set[int]) -> None:
        self.deps = deps
        self.members = members
        self.index: dict[int, int] = {}
        self.low: dict[int, int] = {}
        self.stack: list[int] = []
        self.on_stack: set[int] = set()
        self.components: list[set[int]] = []

    def _enter(self, node: int) -> None:
        self.index[node] = self.low[node] = len(self.index)
        self.stack.append(node)
        self.on_stack.add(node)

    def visit(self, root: int) -> None:
        self._enter(root)
        work = [(root, 0)]  # (node, position of the next edge to follow)
        while work:
            node, position = work[-1]
            edges = self.deps[node]
            if position < len(edges):
                work[-1] = (node, position + 1)
                dep = edges[position]
                if dep not in self.members:
                    continue
                if dep not in self.index:
                    self._enter(dep)
                    work.append((dep, 0))
                elif dep in self.on_stack:
                    self.low[node] = min(self.low[node], self.index[dep])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                self.low[parent] = min(self.low[parent], self.low[node])
            if self.low[node] == self.index[node]:
                self._pop_component(node)

    def _pop_component(self, node: int) -> None:
        component: set[int] = set()
        while True:
            member = self.stack.pop()
            self.on_stack.discard(member)
            component.add(member)
            if member == node:
                break
        self.components.append(component)
