"""Placement: which libvirt host each domain's VMs go to. A pure function, no I/O:
``fleet/hosts.py`` measures the hosts, ``vexfs-cockpit plan`` prints the result, and a
plan that cannot fit fails before anything starts, saying what does not fit where.

The model. Every VM has the same shape (``resources``: CPUs, memory, disk). A domain
runs its ``vms_per_domain`` VMs on one host. At most ``parallel`` domains run at once
over the whole fleet (``execution``), so a host holding k domains needs room for
``vms_per_domain x min(k, parallel)`` VMs at its peak. A host offers what the config
grants it (``hosts[].cpus/memory_mb/disk_gb``) or what libvirt reports, and at most
``max_vms`` VMs. A domain with an affinity (``placement.affinity``) only goes to hosts
carrying all its labels. The fleet-wide caps (``resources.max_total_*``) are
config/caps.py's check, made before this one.

Greedy and deterministic: the most constrained domain first (fewest eligible hosts,
then the given order); each goes to the eligible host that is least full after it
(then the one with fewer domains, then the config's host order).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field

from vexfs_cockpit.errors import ConfigError


class PlacementError(ConfigError):
    """The selected domains do not fit the hosts (exit 2, before anything starts)."""


@dataclass(frozen=True, slots=True)
class HostRoom:
    """What one host offers the cockpit."""

    name: str
    uri: str
    cpus: int
    memory_mb: int
    disk_gb: float | None = None  # None: not checked
    labels: frozenset[str] = frozenset()
    max_vms: int | None = None
    source: str = "config"  # where the numbers came from, e.g. "libvirt getInfo"

    def describe(self) -> str:
        disk = "" if self.disk_gb is None else f", {self.disk_gb:g} GB disk"
        cap = "" if self.max_vms is None else f", max {self.max_vms} VMs"
        return f"{self.cpus} CPUs, {self.memory_mb} MB{disk}{cap}"


@dataclass(frozen=True, slots=True)
class VmShape:
    cpus: int
    memory_mb: int
    disk_gb: float


@dataclass(slots=True)
class HostLoad:
    host: HostRoom
    domains: list[str] = field(default_factory=list)
    peak_vms: int = 0  # VMs on this host at once, at most

    def usage(self, shape: VmShape) -> tuple[int, int, float]:
        return (self.peak_vms * shape.cpus, self.peak_vms * shape.memory_mb, self.peak_vms * shape.disk_gb)


@dataclass(frozen=True, slots=True)
class Plan:
    loads: tuple[HostLoad, ...]  # in the config's host order
    where: dict[str, str]  # domain -> host name
    shape: VmShape
    vms_per_domain: int
    parallel: int

    def host_of(self, domain: str) -> HostRoom:
        return next(load.host for load in self.loads if load.host.name == self.where[domain])


def _why_not(host: HostRoom, vms: int, shape: VmShape) -> str:
    """'' if ``vms`` VMs of ``shape`` fit ``host`` at once, else what is short."""
    short = []
    if vms * shape.cpus > host.cpus:
        short.append(f"{vms * shape.cpus} CPUs > {host.cpus}")
    if vms * shape.memory_mb > host.memory_mb:
        short.append(f"{vms * shape.memory_mb} MB > {host.memory_mb} MB")
    if host.disk_gb is not None and vms * shape.disk_gb > host.disk_gb:
        short.append(f"{vms * shape.disk_gb:g} GB disk > {host.disk_gb:g} GB")
    if host.max_vms is not None and vms > host.max_vms:
        short.append(f"{vms} VMs > max_vms {host.max_vms}")
    return ", ".join(short)


def _fullness(host: HostRoom, vms: int, shape: VmShape) -> float:
    parts = [vms * shape.cpus / host.cpus, vms * shape.memory_mb / host.memory_mb]
    if host.disk_gb:
        parts.append(vms * shape.disk_gb / host.disk_gb)
    if host.max_vms:
        parts.append(vms / host.max_vms)
    return max(parts)


def place(
    domains: Sequence[str],
    hosts: Sequence[HostRoom],
    shape: VmShape,
    *,
    vms_per_domain: int = 1,
    parallel: int = 1,
    affinity: Mapping[str, Collection[str]] | None = None,
) -> Plan:
    """Put each domain on a host, or raise PlacementError naming every domain that does
    not fit and why, host by host."""
    if not hosts:
        raise PlacementError("no hosts to place VMs on: list some under hosts:, or leave hosts: empty for this machine")
    affinity = affinity or {}
    loads = [HostLoad(h) for h in hosts]
    order = {d: i for i, d in enumerate(domains)}
    eligible = {d: [ld for ld in loads if set(affinity.get(d, ())) <= ld.host.labels] for d in domains}
    problems: list[str] = []
    where: dict[str, str] = {}
    for d in sorted(domains, key=lambda d: (len(eligible[d]), order[d])):
        need = sorted(affinity.get(d, ()))
        if not eligible[d]:
            have = "; ".join(f"{h.name} [{', '.join(sorted(h.labels)) or '-'}]" for h in hosts)
            problems.append(f"{d} needs a host labelled {', '.join(need)} (placement.affinity): none is ({have})")
            continue
        options = []
        refusals = []
        for i, ld in enumerate(eligible[d]):
            peak = vms_per_domain * min(len(ld.domains) + 1, max(parallel, 1))
            why = _why_not(ld.host, peak, shape)
            if why:
                with_others = f" with {', '.join(ld.domains)} there" if ld.domains else ""
                refusals.append(f"{ld.host.name} ({ld.host.describe()}): {peak} VMs at once{with_others} need {why}")
            else:
                options.append((_fullness(ld.host, peak, shape), len(ld.domains), i, ld, peak))
        if not options:
            each = f"{vms_per_domain} VM(s) of {shape.cpus} CPU, {shape.memory_mb} MB, {shape.disk_gb:g} GB"
            problems.append(f"{d} ({each}) does not fit: " + "; ".join(refusals))
            continue
        *_, best, peak = min(options, key=lambda o: o[:3])
        best.domains.append(d)
        best.peak_vms = peak
        where[d] = best.host.name
    if problems:
        raise PlacementError("plan does not fit: " + " | ".join(problems))
    for ld in loads:
        ld.domains.sort(key=order.__getitem__)
    return Plan(tuple(loads), where, shape, vms_per_domain, parallel)


def move(plan: Plan, domain: str, lost: Collection[str], affinity: Mapping[str, Collection[str]] | None = None) -> str:
    """Put ``domain`` on another host than the ``lost`` ones, the others' domains staying
    where they are (they may be running); the host it now goes to. PlacementError (one
    line) when no host left can take it."""
    affinity = affinity or {}
    need = set(affinity.get(domain, ()))
    for ld in plan.loads:
        if domain in ld.domains:
            ld.domains.remove(domain)
    options, refusals = [], []
    for i, ld in enumerate(plan.loads):
        if ld.host.name in lost or not need <= ld.host.labels:
            continue
        peak = plan.vms_per_domain * min(len(ld.domains) + 1, max(plan.parallel, 1))
        why = _why_not(ld.host, peak, plan.shape)
        if why:
            refusals.append(f"{ld.host.name}: {why}")
        else:
            options.append((_fullness(ld.host, peak, plan.shape), len(ld.domains), i, ld, peak))
    if not options:
        left = "; ".join(refusals) or "no other host" + (f" labelled {', '.join(sorted(need))}" if need else "")
        raise PlacementError(f"{domain}: no host left to move it to ({left})")
    *_, best, peak = min(options, key=lambda o: o[:3])
    best.domains.append(domain)
    best.peak_vms = max(best.peak_vms, peak)
    plan.where[domain] = best.host.name
    return best.host.name


__all__ = ["HostLoad", "HostRoom", "PlacementError", "Plan", "VmShape", "move", "place"]
