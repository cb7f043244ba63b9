"""CI sharding: ``run --batch --shard I/N`` runs a deterministic, duration-balanced 1/N
of the selected tests.

Pure functions, no I/O: the caller passes the selection (domain -> its test specs) and
the estimated duration of each test (from history; ``DEFAULT_TEST_S`` when there is
none). Every shard job of a CI matrix computes the whole partition from the same inputs
and keeps its own part, so the inputs must be the same on every job: the same selection
and the same history (or none). Nothing here depends on hash order or the machine.

The unit of assignment is a *group*: the tests of one domain joined by ``depends_on``
(a test always runs with what it depends on, else it would only ever be SKIPPED; a
group split over two shards would run its dependencies twice). A shard that holds any
group of a domain also pays that domain's VM boot and setup (``DOMAIN_OVERHEAD_S``),
so the greedy assignment charges it the first time a domain lands on a shard.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from vexfs_cockpit.engine.plugin import TestSpec
from vexfs_cockpit.errors import UsageError

# A test with no stored duration. Most tests here take 0.1-10 s; a guess in the middle
# keeps an unknown test from being treated as free.
DEFAULT_TEST_S = 5.0
# Booting a guest and the domain's setup, charged once per domain a shard runs (a TCG
# guest is ~9 s from boot to ready on these machines: FIELD-NOTES, measured 2026-12-06).
DOMAIN_OVERHEAD_S = 10.0

_SHARD_RE = re.compile(r"(\d+)/(\d+)")


@dataclass(frozen=True, slots=True)
class ShardSpec:
    index: int  # 1-based, as written on the command line
    count: int

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


def parse_shard(text: str) -> ShardSpec:
    """``"2/4"`` -> ShardSpec(2, 4); a UsageError (one line) for anything else."""
    m = _SHARD_RE.fullmatch(text.strip())
    if not m:
        raise UsageError(f"--shard: expected I/N (e.g. 2/4), found {text!r}")
    index, count = int(m.group(1)), int(m.group(2))
    if count < 1 or not 1 <= index <= count:
        raise UsageError(f"--shard: {text!r} is out of range: I/N needs 1 <= I <= N, e.g. --shard 1/{max(count, 2)}")
    if count > 1000:
        raise UsageError(f"--shard: {count} shards is more than 1000; use fewer CI jobs")
    return ShardSpec(index, count)


@dataclass(frozen=True, slots=True)
class Group:
    """Tests of one domain that must run together (joined by depends_on)."""

    domain: str
    tests: tuple[str, ...]  # in the domain's run order
    estimate_s: float

    @property
    def key(self) -> tuple[str, str]:
        return (self.domain, self.tests[0])


@dataclass(frozen=True, slots=True)
class Shard:
    tests: dict[str, tuple[str, ...]]  # domain -> its tests in this shard, in run order
    estimate_s: float  # tests plus one DOMAIN_OVERHEAD_S per domain


@dataclass(frozen=True, slots=True)
class ShardPlan:
    shards: tuple[Shard, ...]
    fingerprint: str  # the same on every job that computed the same partition

    def part(self, spec: ShardSpec) -> Shard:
        return self.shards[spec.index - 1]


def _root(parent: dict[str, str], n: str) -> str:
    """Union-find: the root of ``n``'s set (halving the path on the way)."""
    while parent[n] != n:
        parent[n] = parent[parent[n]]
        n = parent[n]
    return n


def groups(selection: Mapping[str, Sequence[TestSpec]], durations: Mapping[tuple[str, str], float],
           default_s: float = DEFAULT_TEST_S) -> list[Group]:
    """Each domain's selected tests as groups joined by depends_on (a union-find over
    the dependency edges inside the selection), each with its estimated duration."""
    out: list[Group] = []
    for domain in sorted(selection):
        specs = list(selection[domain])
        names = [s.name for s in specs]
        parent = {n: n for n in names}
        for s in specs:
            for dep in s.options.depends_on:
                if dep in parent:
                    a, b = _root(parent, s.name), _root(parent, dep)
                    if a != b:
                        parent[max(a, b)] = min(a, b)  # deterministic root: the smaller name
        members: dict[str, list[str]] = {}
        for n in names:  # run order within the group is the domain's order
            members.setdefault(_root(parent, n), []).append(n)
        for tests in members.values():
            est = sum(durations.get((domain, t), default_s) for t in tests)
            out.append(Group(domain, tuple(tests), est))
    return out


def plan_shards(selection: Mapping[str, Sequence[TestSpec]], durations: Mapping[tuple[str, str], float],
                count: int, *, default_s: float = DEFAULT_TEST_S,
                domain_overhead_s: float = DOMAIN_OVERHEAD_S) -> ShardPlan:
    """Partition the selection into ``count`` shards: greedy LPT (longest group first,
    onto the shard whose total would be smallest after it, counting a domain's VM once
    per shard). Ties break on names and shard number, never on hash or dict order."""
    gs = sorted(groups(selection, durations, default_s), key=lambda g: (-g.estimate_s, g.key))
    loads = [0.0] * count
    placed: list[dict[str, list[str]]] = [{} for _ in range(count)]
    for g in gs:
        # what each shard's total would become with g on it (its VM too, if new there)
        totals = [loads[i] + g.estimate_s + (0.0 if g.domain in placed[i] else domain_overhead_s)
                  for i in range(count)]
        best = min(range(count), key=lambda i: (totals[i], i))
        loads[best] = totals[best]
        placed[best].setdefault(g.domain, []).extend(g.tests)
    order = {d: {s.name: k for k, s in enumerate(specs)} for d, specs in selection.items()}
    shards = tuple(
        Shard({d: tuple(sorted(ts, key=order[d].__getitem__)) for d, ts in sorted(p.items())}, round(load, 3))
        for p, load in zip(placed, loads, strict=True)
    )
    h = hashlib.sha256()
    for i, s in enumerate(shards):
        for d, ts in s.tests.items():
            h.update(f"{i}\0{d}\0{','.join(ts)}\n".encode())
    return ShardPlan(shards, h.hexdigest()[:12])


__all__ = ["DEFAULT_TEST_S", "DOMAIN_OVERHEAD_S", "Group", "Shard", "ShardPlan", "ShardSpec",
           "groups", "parse_shard", "plan_shards"]
