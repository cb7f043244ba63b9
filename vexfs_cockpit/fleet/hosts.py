"""The hosts of ``hosts:`` as placement sees them: each one's capacity, read over its
libvirt connection (``getInfo``: CPUs and memory) unless the config grants less.

Read-only connections, opened side by side (one thread each: libvirt calls block, and
a remote host over SSH takes a while to answer). Nothing is defined or started.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from pathlib import Path

import libvirt

from vexfs_cockpit.config.caps import HOST_MEMORY_RESERVE_GB
from vexfs_cockpit.config.models import CockpitConfig, HostSettings
from vexfs_cockpit.errors import ConfigError, HostUnavailable
from vexfs_cockpit.fleet.libvirt import libvirt_message
from vexfs_cockpit.fleet.placement import HostRoom

# What a host keeps for itself (its OS, libvirtd, QEMU's own overhead): as on this machine.
HOST_RESERVE_MB = int(HOST_MEMORY_RESERVE_GB * 1024)
LOCAL = "local"  # the name of the implicit host when hosts: is empty


def _quiet(_ctx: object, _err: object) -> None:
    """libvirt prints every error on stderr by default; ours become one line each."""


@dataclass(frozen=True, slots=True)
class HostHealth:
    """What a host's libvirt says of itself right now (getInfo, getFreeMemory)."""

    cpus: int
    memory_mb: int
    free_memory_mb: int | None  # None: that driver does not say


def read_health(h: HostSettings) -> HostHealth:
    """``h``'s size and free memory over one read-only connection (blocking; a few ms
    locally, an SSH handshake for a remote host). HostUnavailable if libvirt there does
    not answer."""
    libvirt.registerErrorHandler(_quiet, None)
    try:
        conn = libvirt.openReadOnly(h.uri)
    except libvirt.libvirtError as err:
        raise HostUnavailable(f"hosts[{h.name}]: cannot reach libvirt at {h.uri}: {libvirt_message(err)}"
                              " — check the URI, that libvirtd runs there and that SSH to it works") from None
    try:
        _model, memory_mb, cpus, *_ = conn.getInfo()
        try:
            free: int | None = conn.getFreeMemory() // (1024 * 1024)
        except libvirt.libvirtError:
            free = None
    except libvirt.libvirtError as err:
        raise HostUnavailable(f"hosts[{h.name}]: libvirt at {h.uri} did not say its size: {libvirt_message(err)}") from None
    finally:
        conn.close()
    return HostHealth(cpus=cpus, memory_mb=memory_mb, free_memory_mb=free)


def read_host(h: HostSettings, health: HostHealth | None = None) -> HostRoom:
    """``h``'s capacity (blocking; from ``health`` when it was just read). HostUnavailable
    if libvirt there does not answer; ConfigError if the config grants more than the host has."""
    health = health or read_health(h)
    cpus, memory_mb = health.cpus, health.memory_mb
    room_mb = max(memory_mb - HOST_RESERVE_MB, 0)
    for key, granted, has, unit in (("cpus", h.cpus, cpus, " CPUs"), ("memory_mb", h.memory_mb, room_mb, " MB")):
        if granted is not None and granted > has:
            kept = f" ({HOST_RESERVE_MB} MB kept for the host)" if key == "memory_mb" else ""
            raise ConfigError(f"hosts[{h.name}].{key}: {granted}{unit} is more than the {has}{unit} libvirt reports "
                              f"at {h.uri}{kept}; lower it or leave it out to use what the host has")
    source = "config" if h.cpus and h.memory_mb else f"libvirt: {cpus} CPUs, {memory_mb} MB"
    return HostRoom(
        name=h.name, uri=h.uri, cpus=h.cpus or cpus, memory_mb=h.memory_mb or room_mb, disk_gb=h.disk_gb,
        labels=frozenset(h.labels), max_vms=h.max_vms, source=source,
    )


def local_room(cfg: CockpitConfig, vm_files: Path) -> HostRoom:
    """This machine when ``hosts:`` is empty: measured as a run's own check measures it
    (config/caps.check_host_fit), free memory and disk rather than totals."""
    from vexfs_cockpit.fleet.host import measure_host

    m = measure_host(vm_files)
    return HostRoom(
        name=LOCAL, uri=cfg.fleet.libvirt_uri, cpus=m.cpus,
        memory_mb=max(int((m.memory_available_gb - HOST_MEMORY_RESERVE_GB) * 1024), 0),
        disk_gb=round(m.disk_free_gb, 1), source=f"this machine: MemAvailable, free disk on {m.disk_path}",
    )


async def read_hosts(cfg: CockpitConfig, vm_files: Path) -> list[HostRoom]:
    """Every configured host's room, read side by side, in the config's order."""
    if not cfg.hosts:
        return [await asyncio.to_thread(local_room, cfg, vm_files)]
    return list(await asyncio.gather(*(asyncio.to_thread(read_host, h) for h in cfg.hosts)))


__all__ = ["LOCAL", "HostHealth", "local_room", "read_health", "read_host", "read_hosts"]
