"""Step dependencies: the effective graph per strategy, its order and its cycles."""

from __future__ import annotations

import heapq
from collections.abc import Mapping, Sequence

from agentflow.api.models import Strategy, WorkflowSpec


def step_dependencies(spec: WorkflowSpec) -> dict[str, list[str]]:
    """The steps each step waits for.

    Sequential: the previous step, plus its ``dependsOn``; Parallel and DAG: its ``dependsOn``.
    Names are kept as written (unknown ones included: validation reports them), without
    duplicates.
    """
    deps: dict[str, list[str]] = {}
    previous: str | None = None
    for step in spec.steps:
        names: list[str] = []
        if spec.strategy is Strategy.SEQUENTIAL and previous is not None:
            names.append(previous)
        for name in step.depends_on:
            if name not in names:
                names.append(name)
        deps[step.name] = names
        previous = step.name
    return deps


def find_cycle(deps: Mapping[str, Sequence[str]]) -> list[str] | None:
    """One dependency cycle as ``[a, b, a]`` (a depends on b, b on a), or None.

    Only edges between known steps count.  Iterative depth-first search, so a 256-step chain
    does not hit the recursion limit.
    """
    white, grey, black = 0, 1, 2
    colour = dict.fromkeys(deps, white)
    for root in deps:
        if colour[root] != white:
            continue
        path: list[str] = [root]
        iterators = [iter(deps[root])]
        colour[root] = grey
        while iterators:
            child = next(iterators[-1], None)
            if child is None:
                colour[path.pop()] = black
                iterators.pop()
                continue
            if child not in colour:
                continue
            if colour[child] == grey:
                return [*path[path.index(child) :], child]
            if colour[child] == white:
                colour[child] = grey
                path.append(child)
                iterators.append(iter(deps[child]))
    return None


def topological_order(deps: Mapping[str, Sequence[str]]) -> list[str]:
    """Steps with every step after the steps it depends on; ties keep declaration order.

    Steps in a cycle (an invalid spec) come last, in declaration order.
    """
    index = {name: i for i, name in enumerate(deps)}
    dependents: dict[str, list[str]] = {name: [] for name in deps}
    waiting: dict[str, int] = {}
    for name, names in deps.items():
        known = [d for d in set(names) if d in index]
        waiting[name] = len(known)
        for dep in known:
            dependents[dep].append(name)
    ready = [(index[name], name) for name, count in waiting.items() if count == 0]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        order.append(name)
        for dependent in dependents[name]:
            waiting[dependent] -= 1
            if waiting[dependent] == 0:
                heapq.heappush(ready, (index[dependent], dependent))
    if len(order) < len(deps):
        placed = set(order)
        order.extend(name for name in deps if name not in placed)
    return order


class Ancestors:
    """Transitive dependencies of each step, as bit sets over declaration order.

    Built once in topological order (O(steps x deps) big-int ORs), so asking whether one step
    is upstream of another is cheap even for long chains.  Edges to unknown steps and edges
    inside a cycle (an invalid spec) are ignored.
    """

    def __init__(self, deps: Mapping[str, Sequence[str]]) -> None:
        self._names = list(deps)
        self._index = {name: i for i, name in enumerate(self._names)}
        self._bits: dict[str, int] = {}
        for name in topological_order(deps):
            bits = 0
            for dep in deps[name]:
                j = self._index.get(dep)
                if j is not None and dep in self._bits:
                    bits |= (1 << j) | self._bits[dep]
            self._bits[name] = bits

    def contains(self, step: str, other: str) -> bool:
        """Whether ``other`` is upstream of ``step``."""
        j = self._index.get(other)
        return j is not None and bool(self._bits.get(step, 0) >> j & 1)

    def __call__(self, step: str) -> list[str]:
        """The steps upstream of ``step``, in declaration order."""
        bits = self._bits.get(step, 0)
        out: list[str] = []
        while bits:
            low = bits & -bits
            out.append(self._names[low.bit_length() - 1])
            bits ^= low
        return out
