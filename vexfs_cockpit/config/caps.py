"""The fleet's resource caps: refuse a run whose concurrent VMs would not fit.

Concurrent VMs = vms_per_domain x (min(max_parallel_tests, selected domains) when
parallel_test_execution, else 1): domains that run one after another share the budget.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vexfs_cockpit.config.models import DOMAIN_NAMES, CockpitConfig
from vexfs_cockpit.config.show import display_path, num
from vexfs_cockpit.errors import ConfigError


@dataclass(frozen=True, slots=True)
class FleetNeed:
    vms: int  # concurrent VMs
    parallel_domains: int
    memory_gb: float
    cpus: int
    disk_gb: float


def enabled_domains(cfg: CockpitConfig, known: Iterable[str] = DOMAIN_NAMES) -> list[str]:
    """Domains a plain run selects: those listed under ``domains:`` (all known ones when
    the section is empty), minus ``enabled: false``. Same rule as the session's."""
    names = list(cfg.domains) if cfg.domains else list(known)
    return [n for n in names if cfg.domain(n).enabled]


def fleet_need(cfg: CockpitConfig, selected_domains: Sequence[str]) -> FleetNeed:
    r, e = cfg.resources, cfg.execution
    parallel = min(e.max_parallel_tests, len(selected_domains)) if e.parallel_test_execution else 1
    vms = r.vms_per_domain * max(parallel, 1) if selected_domains else 0
    return FleetNeed(vms, parallel, vms * r.memory_mb / 1024, vms * r.cpus, vms * r.disk_gb)


def blame(cfg: CockpitConfig, keys: list[str]) -> tuple[str, str]:
    """(label, key) of the involved key set by the highest-precedence layer: the most
    recent change is the likeliest culprit. Ties go to the first key (the cap)."""
    layers = cfg._layers
    best: tuple[int, str, str] | None = None
    for key in keys:
        label = cfg._origins.get(key)
        if label is None:
            continue
        rank = layers.index(label) if label in layers else -1
        if best is None or rank > best[0]:
            best = (rank, label, key)
    if best is not None:
        return best[1], best[2]
    fallback = layers[-1] if layers else (display_path(cfg.source_path) if cfg.source_path else "config")
    return fallback, keys[0]


def check_resource_caps(cfg: CockpitConfig, selected_domains: Sequence[str]) -> None:
    """Raise ConfigError (one line naming the file to fix) if the fleet is over a cap."""
    need = fleet_need(cfg, selected_domains)
    if need.vms == 0:
        return
    r, e = cfg.resources, cfg.execution
    how = (
        f"{r.vms_per_domain} per domain x {need.parallel_domains} domains in parallel"
        if e.parallel_test_execution
        else f"{r.vms_per_domain} per domain, domains one at a time"
    )
    demand = ["resources.vms_per_domain"]
    if e.parallel_test_execution:
        demand += ["execution.max_parallel_tests", "execution.parallel_test_execution"]
    checks = (
        ("memory", need.memory_gb, r.max_total_memory_gb, "max_total_memory_gb", "memory_mb", f"{r.memory_mb} MB", "GB"),
        ("CPU", need.cpus, r.max_total_cpus, "max_total_cpus", "cpus", f"{r.cpus} CPU", "CPUs"),
        ("disk", need.disk_gb, r.max_total_disk_gb, "max_total_disk_gb", "disk_gb", f"{num(r.disk_gb)} GB", "GB"),
    )
    for what, total, cap, cap_key, per_key, per_vm, unit in checks:
        if total <= cap:
            continue
        label, key = blame(cfg, [f"resources.{cap_key}", f"resources.{per_key}", *demand])
        raise ConfigError(
            f"{label}: {key}: the fleet is over its {what} cap: {need.vms} concurrent VMs ({how})"
            f" x {per_vm} = {num(round(total, 2))} {unit} > {cap_key} {num(cap)};"
            f" lower resources.{per_key}, resources.vms_per_domain or execution.max_parallel_tests,"
            f" or raise resources.{cap_key}"
        )



@dataclass(frozen=True, slots=True)
class HostCapacity:
    """What this host has for VMs right now (``fleet.host.measure_host``)."""

    cpus: int
    memory_available_gb: float  # MemAvailable
    disk_free_gb: float  # free on the filesystem that holds the VMs' files
    disk_path: str


# Left for the cockpit itself, the store and QEMU's own overhead per VM.
HOST_MEMORY_RESERVE_GB = 0.5


def check_host_fit(cfg: CockpitConfig, selected_domains: Sequence[str], host: HostCapacity, *, vms: int | None = None) -> None:
    """Raise ConfigError (one line with the numbers) if the VMs cannot fit on this host:
    the caps are what the config allows, this is what the machine has. ``vms`` overrides
    the concurrent VM count (a dev VM from `vm start` is one)."""
    need = fleet_need(cfg, selected_domains)
    count = need.vms if vms is None else vms
    if count == 0:
        return
    r = cfg.resources
    origin = blame(cfg, ["resources.memory_mb", "resources.vms_per_domain"])[0]
    if r.cpus > host.cpus:
        raise ConfigError(
            f"{origin}: resources.cpus: each VM asks for {r.cpus} vCPUs but this host has {host.cpus} CPUs;"
            f" set resources.cpus to at most {host.cpus}"
        )
    memory = count * r.memory_mb / 1024
    room = host.memory_available_gb - HOST_MEMORY_RESERVE_GB
    if memory > room:
        raise ConfigError(
            f"{origin}: resources.memory_mb: {count} VMs x {r.memory_mb} MB = {num(round(memory, 2))} GB"
            f" does not fit in this host's {num(round(host.memory_available_gb, 2))} GB available"
            f" ({num(HOST_MEMORY_RESERVE_GB)} GB kept for the cockpit); lower resources.memory_mb or run fewer VMs at once"
        )
    disk = count * r.disk_gb
    if disk > host.disk_free_gb:
        raise ConfigError(
            f"{origin}: resources.disk_gb: {count} VMs x {num(r.disk_gb)} GB = {num(round(disk, 2))} GB"
            f" > {num(round(host.disk_free_gb, 2))} GB free on {host.disk_path}; free space there or lower resources.disk_gb"
        )
