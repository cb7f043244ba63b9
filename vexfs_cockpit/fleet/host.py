"""What this host has for VMs: CPUs, available memory, free disk where VM files go."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from vexfs_cockpit.config.caps import HostCapacity


def _mem_available_gb(meminfo: Path = Path("/proc/meminfo")) -> float:
    for line in meminfo.read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) / (1024 * 1024)
    raise OSError(f"{meminfo}: no MemAvailable line")


def measure_host(vm_files: Path) -> HostCapacity:
    """The host's capacity now; ``vm_files`` is where overlays, seeds and console logs go
    (its nearest existing parent is measured)."""
    where = vm_files
    while not where.exists() and where != where.parent:
        where = where.parent
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return HostCapacity(
        cpus=cpus,
        memory_available_gb=_mem_available_gb(),
        disk_free_gb=shutil.disk_usage(where).free / 1024**3,
        disk_path=str(where),
    )
