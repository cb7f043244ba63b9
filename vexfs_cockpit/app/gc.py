"""Disk retention: what `vexfs-cockpit gc` removes by the ``store:`` policy.

The history DB is the record and is never pruned here. What grows without bound
otherwise: each run's artifact directory (console logs, per-test work dirs), the kbuild
cache and build dirs, and the console logs of dev VMs that no longer exist.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from vexfs_cockpit.config.models import CockpitConfig

DAY_S = 86400.0


@dataclass(frozen=True, slots=True)
class GcItem:
    path: Path
    bytes: int
    why: str


def _size(path: Path) -> int:
    if path.is_symlink() or path.is_file():
        return path.lstat().st_size
    total = 0
    for p in path.rglob("*"):
        try:
            total += p.lstat().st_size
        except OSError:
            continue
    return total


def _age_days(path: Path, now: float) -> float:
    return (now - path.lstat().st_mtime) / DAY_S


def _old_children(parent: Path, days: float, now: float, why: str, skip: Iterable[str] = ()) -> list[GcItem]:
    if not parent.is_dir():
        return []
    keep = set(skip)
    return [
        GcItem(p, _size(p), f"{why}, {_age_days(p, now):.0f} days old")
        for p in sorted(parent.iterdir())
        if p.name not in keep and not p.is_symlink() and _age_days(p, now) > days
    ]


def plan_gc(
    cfg: CockpitConfig,
    *,
    data: Path,
    build_cache: Path,
    running: Iterable[str] = (),
    now: float | None = None,
) -> list[GcItem]:
    """What the policy removes now. ``running``: run ids whose artifacts stay whatever
    their age (a run still writing)."""
    now = time.time() if now is None else now
    s = cfg.store
    items = _old_children(data / "runs", s.keep_runs_days, now, "run artifacts", skip=running)
    items += _old_children(build_cache, s.keep_build_cache_days, now, "kbuild cache entry")
    items += _old_children(data / "kbuild", s.keep_build_cache_days, now, "kbuild dir")
    vms = data / "vms"
    if vms.is_dir():
        alive = {p.name.removesuffix(".json") for p in vms.glob("*.json")}
        for log in sorted(vms.glob("*.console.log*")):
            vm = log.name.split(".console.log", 1)[0]
            if vm not in alive:
                items.append(GcItem(log, _size(log), f"console log of {vm}, which no longer exists"))
    return items


def apply_gc(items: Iterable[GcItem]) -> int:
    """Remove them; the bytes freed."""
    freed = 0
    for item in items:
        if item.path.is_dir() and not item.path.is_symlink():
            shutil.rmtree(item.path, ignore_errors=True)
        else:
            item.path.unlink(missing_ok=True)
        freed += item.bytes
    return freed
