"""``run --shard I/N``: this job's part of the selection (engine.shard partitions it,
with durations from the session's history)."""

from __future__ import annotations

from dataclasses import dataclass

from vexfs_cockpit.engine.plugin import DomainBase
from vexfs_cockpit.engine.runner import selected_specs
from vexfs_cockpit.engine.shard import ShardSpec, plan_shards
from vexfs_cockpit.store.history import History


@dataclass(frozen=True, slots=True)
class ShardSelection:
    domains: list[str]  # in the run's order; empty when this shard got nothing
    only_tests: dict[str, set[str]]
    provenance: dict[str, str]  # recorded with the run
    line: str  # what the batch front end prints before the run


def shard_selection(
    registry: dict[str, type[DomainBase]],
    domains: list[str],
    only_tests: dict[str, set[str]] | None,
    spec: ShardSpec,
    history: History | None,
) -> ShardSelection:
    selection = {d: selected_specs(registry[d], only_tests.get(d) if only_tests else None) for d in domains}
    wanted = [(d, s.name) for d, specs in selection.items() for s in specs]
    durations = history.test_durations(wanted) if history is not None else {}
    plan = plan_shards(selection, durations, spec.count)
    mine = plan.part(spec)
    total = sum(s.estimate_s for s in plan.shards)
    n = sum(len(t) for t in mine.tests.values())
    known = sum(1 for k in wanted if k in durations)
    line = (f"shard {spec}: {n} of {len(wanted)} tests in {len(mine.tests)} domain(s), "
            f"est. {mine.estimate_s:.0f} s of {total:.0f} s "
            f"({known}/{len(wanted)} durations from history; partition {plan.fingerprint})")
    return ShardSelection(
        domains=[d for d in domains if d in mine.tests],
        only_tests={d: set(ts) for d, ts in mine.tests.items()},
        provenance={"shard": str(spec), "shard_partition": plan.fingerprint},
        line=line,
    )


__all__ = ["ShardSelection", "shard_selection"]
