"""`vexfs-cockpit plan`: where a run's VMs would go, without starting anything.

Reads each host of ``hosts:`` over its libvirt connection (read-only; getInfo for CPUs
and memory unless the config grants less), places the selected domains
(fleet/placement.py: capacity, per-host max_vms, placement.affinity labels) and prints
the placement. A plan that cannot fit is one line saying what does not fit where
(exit 2); an unreachable host is exit 3. `run` makes the same checks before booting.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import TextIO

from vexfs_cockpit.commands.run import add_run_options


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("plan", help="print where each domain's VMs would run (hosts:), starting nothing",
                       description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(p)
    p.add_argument("--domains", metavar="A,B", help="comma-separated domains (default: all enabled)")
    p.set_defaults(handler=cmd_plan)


def cmd_plan(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from vexfs_cockpit.app.session import select_domains
    from vexfs_cockpit.config.caps import check_resource_caps
    from vexfs_cockpit.config.load import config_from_args
    from vexfs_cockpit.config.paths import data_dir
    from vexfs_cockpit.engine.discovery import discover_domains
    from vexfs_cockpit.fleet.hosts import read_hosts
    from vexfs_cockpit.fleet.placement import VmShape, place

    out = out or sys.stdout
    registry = discover_domains()
    cfg = config_from_args(args, known_domains=set(registry))
    domains = select_domains(cfg, registry, args.domains)
    check_resource_caps(cfg, domains)  # the fleet-wide caps first, as a run does
    rooms = asyncio.run(read_hosts(cfg, data_dir() / "runs"))
    r, e = cfg.resources, cfg.execution
    parallel = e.max_parallel_tests if e.parallel_test_execution else 1
    plan = place(domains, rooms, VmShape(r.cpus, r.memory_mb, r.disk_gb), vms_per_domain=r.vms_per_domain,
                 parallel=parallel, affinity=cfg.placement.affinity)
    print(f"plan: {len(domains)} domain(s) on {sum(1 for ld in plan.loads if ld.domains)} of {len(rooms)} host(s); "
          f"{r.vms_per_domain} VM(s) per domain of {r.cpus} CPU, {r.memory_mb} MB, {r.disk_gb:g} GB; "
          f"up to {parallel} domain(s) at once", file=out)
    rows = [("HOST", "URI", "CAPACITY", "PEAK USE", "DOMAINS")]
    for ld in plan.loads:
        cpus, mem, disk = ld.usage(plan.shape)
        peak = f"{ld.peak_vms} VMs: {cpus} CPUs, {mem} MB" + (f", {disk:g} GB" if ld.host.disk_gb is not None else "")
        labels = f" [{', '.join(sorted(ld.host.labels))}]" if ld.host.labels else ""
        rows.append((ld.host.name + labels, ld.host.uri, f"{ld.host.describe()} ({ld.host.source})",
                     peak if ld.domains else "-", ", ".join(ld.domains) or "-"))
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]) - 1)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=False)) + "  " + row[-1], file=out)
    return 0


__all__ = ["add_parser", "cmd_plan"]
