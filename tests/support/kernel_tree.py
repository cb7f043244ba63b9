"""A small built kernel tree from Debian's linux-source-6.12, for the tree-mode tests.

Extracted once into a cache dir outside the repo, configured as ``make tinyconfig``
plus the cockpit's own fragment (``vexfs-cockpit kernel config``) plus an overlay that
keeps the NIC, loop, ext4 and virtio-rng modular (so the initramfs really gets them
from the tree's staged modules), and built with ``-j2``. Each step is skipped when its
output is current: a second run costs seconds. Run as a script to warm the cache:
``python -m tests.support.kernel_tree`` (prints where the tree is).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

SOURCE_TARBALL = Path("/usr/src/linux-source-6.12.tar.xz")
CACHE = Path(os.environ.get("VEXFS_KERNEL_TREE_CACHE", Path.home() / ".cache" / "vexfs-cockpit" / "kernel-src"))
# Modules the guest image must stage from modules.order (and their dependencies:
# ext4 pulls jbd2, mbcache, crc16, crc32c_generic).
MODULAR_OVERLAY = "CONFIG_E1000=m\nCONFIG_BLK_DEV_LOOP=m\nCONFIG_EXT4_FS=m\nCONFIG_HW_RANDOM_VIRTIO=m\n"
_STAMP = ".vexfs-cockpit-config"


def _run(argv: list[str], cwd: Path, log: Path) -> None:
    with log.open("a") as out:
        out.write(f"$ {' '.join(argv)}\n")
        out.flush()
        proc = subprocess.run(argv, cwd=cwd, stdout=out, stderr=subprocess.STDOUT, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"`{' '.join(argv)}` failed in {cwd}: see {log}")


def config_text() -> str:
    from vexfs_cockpit.images.kconfig import fragment

    return fragment() + "# tree-mode test: these stay modules\n" + MODULAR_OVERLAY


def prepare_tree(cache: Path = CACHE, jobs: int = 2) -> tuple[Path, dict[str, float]]:
    """The built tree and how long each step took this time (0 when it was cached)."""
    cache.mkdir(parents=True, exist_ok=True)
    tree = cache / "linux-source-6.12"
    log = cache / "build.log"
    took: dict[str, float] = {}
    t0 = time.monotonic()
    if not (tree / "Makefile").is_file():
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=cache))
        _run(["tar", "xf", str(SOURCE_TARBALL), "-C", str(tmp)], cache, log)
        (tmp / "linux-source-6.12").rename(tree)
        shutil.rmtree(tmp, ignore_errors=True)
    took["extract_s"] = time.monotonic() - t0

    t0 = time.monotonic()
    want = config_text()
    stamp = tree / _STAMP
    if not (tree / ".config").is_file() or not stamp.is_file() or stamp.read_text() != want:
        frag = tree / "vexfs-cockpit.config"
        frag.write_text(want)
        _run(["make", "tinyconfig"], tree, log)
        _run(["scripts/kconfig/merge_config.sh", "-m", ".config", frag.name], tree, log)
        _run(["make", "olddefconfig"], tree, log)
        stamp.write_text(want)
    took["config_s"] = time.monotonic() - t0

    t0 = time.monotonic()
    bz = tree / "arch/x86/boot/bzImage"
    if not bz.is_file() or bz.stat().st_mtime < (tree / ".config").stat().st_mtime or not (tree / "modules.order").is_file():
        _run(["make", f"-j{jobs}", "bzImage", "modules"], tree, log)
    took["build_s"] = time.monotonic() - t0
    return tree, took


if __name__ == "__main__":
    built, times = prepare_tree()
    print(built, {k: round(v, 1) for k, v in times.items()})
    sys.exit(0)
