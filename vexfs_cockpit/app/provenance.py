"""Where a run came from, recorded with it: the guest kernel and where it came from, the
module source (path, git commit and dirty flag, or a hash of the tree when it is not a
git checkout), the profile, environment and a hash of the merged config, the cockpit's
version and the host. A baseline is only comparable on the same kernel and module."""

from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path

from vexfs_cockpit import __version__
from vexfs_cockpit.config.models import CockpitConfig
from vexfs_cockpit.engine.module import is_source_file


def _git(src: Path, *argv: str) -> str | None:
    try:
        proc = subprocess.run(["git", "-C", str(src), *argv], capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def tree_hash(src: Path) -> str:
    """sha256 over the source files' relative paths and bytes (build outputs left out)."""
    h = hashlib.sha256()
    for root, dirs, files in sorted(os.walk(src)):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(f for f in files if is_source_file(f)):
            path = Path(root) / name
            try:
                data = path.read_bytes()
            except OSError:
                continue
            h.update(str(path.relative_to(src)).encode() + b"\0" + data + b"\0")
    return h.hexdigest()[:16]


def module_source(src: Path) -> dict[str, str]:
    if not src.is_dir():
        return {"module_source": str(src), "module_commit": "(source not found)"}
    commit = _git(src, "rev-parse", "HEAD")
    if commit is None:
        return {"module_source": str(src), "module_tree": tree_hash(src)}
    dirty = _git(src, "status", "--porcelain", "--untracked-files=no", "--", ".")
    return {"module_source": str(src), "module_commit": commit, "module_dirty": "yes" if dirty else "no"}


def guest_kernel(cfg: CockpitConfig) -> dict[str, str]:
    """The kernel the guests boot, when it is known before they do."""
    setting = cfg.fleet.guest_kernel
    if cfg.fleet.template != "direct-kernel":
        return {"kernel_from": f"the {cfg.fleet.template} template's image"}
    from vexfs_cockpit.errors import CockpitError
    from vexfs_cockpit.images.initramfs import resolve_kernel_version

    try:
        release = resolve_kernel_version(setting)
    except CockpitError:
        return {"kernel_from": f"fleet.guest_kernel {setting} (not resolvable)"}
    from vexfs_cockpit.config.distro import host_kernel_package

    source = {"auto": host_kernel_package(), "host": "the running kernel"}.get(
        setting, f"the kernel tree {setting}" if setting.startswith("/") else "fleet.guest_kernel")
    return {"kernel": release, "kernel_from": source}


def collect(cfg: CockpitConfig, module_src: Path | None) -> dict[str, str]:
    out = {
        "cockpit": __version__,
        "host": os.uname().nodename,
        "profile": cfg.profile,
        "env": cfg.env,
        "config_sha256": hashlib.sha256(cfg.model_dump_json().encode()).hexdigest()[:16],
        **guest_kernel(cfg),
    }
    if module_src is not None:
        out |= module_source(module_src)
    return out
