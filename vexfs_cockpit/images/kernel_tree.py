"""A built kernel tree as the guest kernel (``fleet.guest_kernel: /path/to/linux``).

The guest boots the tree's ``arch/x86/boot/bzImage``; its modules come from the tree
itself, not from ``make modules_install``: the ``.ko`` files ``modules.order`` lists
are linked into a staging ``lib/modules/<release>/`` with ``modules.order``,
``modules.builtin`` and ``modules.builtin.modinfo``, and ``depmod -b`` writes its
``modules.dep`` there (what virtme-ng's ``virtme-prep-kdir-mods`` does). The staging
is cached under the image root by what it is made of, so a start that finds it
current runs no depmod. The module under test builds with ``make -C TREE M=...``.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from vexfs_cockpit.errors import ConfigError, InfraError

BZIMAGE = "arch/x86/boot/bzImage"
RELEASE = "include/config/kernel.release"
_RELEASE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}$")
_BUILT = ("modules.order", "modules.builtin", RELEASE)
STAGING_DIR = "tree-modules"  # under the image root
STAGING_KEEP_S = 24 * 3600  # superseded stagings of a tree stay this long


def is_tree_setting(value: str | None) -> bool:
    """``fleet.guest_kernel`` names a kernel tree (a path), not auto/host/a release."""
    return bool(value) and ("/" in value or value.startswith("~"))  # type: ignore[operator]


@dataclass(frozen=True, slots=True)
class KernelTree:
    path: Path
    release: str  # include/config/kernel.release: the guest's `uname -r`

    @property
    def bzimage(self) -> Path:
        return self.path / BZIMAGE

    @property
    def config(self) -> Path:
        return self.path / ".config"

    def module_paths(self) -> list[str]:
        """The tree-relative .ko paths modules.order lists (since 6.2 it names the
        ``.o`` each ``.ko`` is linked from; older trees name the ``.ko``)."""
        out = []
        for line in (self.path / "modules.order").read_text().splitlines():
            line = line.strip()
            if not line:
                continue
            rel = line.removeprefix("kernel/")
            out.append(rel[:-2] + ".ko" if rel.endswith(".o") else rel)
        return out

    def inputs_hash(self) -> str:
        """What a guest image of this tree depends on: bzImage and .config by content,
        the module lists, and each listed .ko by size and mtime."""
        h = hashlib.sha256()
        h.update(f"tree {self.path}\nrelease {self.release}\n".encode())
        for name in (BZIMAGE, ".config", "modules.order", "modules.builtin", "modules.builtin.modinfo"):
            p = self.path / name
            h.update(f"--- {name}\n".encode())
            if p.is_file():
                h.update(_sha256(p).encode())
        for rel in self.module_paths():
            st = (self.path / rel).stat()
            h.update(f"{rel}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        return h.hexdigest()


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_tree(value: str, key: str = "fleet.guest_kernel") -> KernelTree:
    """The built kernel tree ``value`` names, or one line naming ``key``, what is wrong
    and the fix: a value that is no kernel tree is a ConfigError (exit 2, like any bad
    setting), a tree not built or built stale an InfraError with the make command."""
    path = Path(value).expanduser()
    path = Path(os.path.abspath(path))
    make = f"make -C {path}"
    if not path.is_dir():
        raise ConfigError(f"{key} {value}: no such directory: give a built kernel tree, or auto, host or an installed version")
    if not (path / "Makefile").is_file() or not (path / "Kconfig").is_file():
        raise ConfigError(f"{key} {value}: not a kernel source tree (no Makefile and Kconfig): point it at the top of a Linux tree")
    if not (path / ".config").is_file():
        raise InfraError(
            f"{key} {value}: not configured (no .config): `{make} tinyconfig`, merge `vexfs-cockpit kernel config` "
            f"with scripts/kconfig/merge_config.sh, `{make} olddefconfig`, then `{make} bzImage modules`"
        )
    lacking = [name for name in (BZIMAGE, *_BUILT) if not (path / name).is_file()]
    if lacking:
        raise InfraError(f"{key} {value}: not built ({', '.join(lacking)} missing): run `{make} bzImage modules`")
    if (path / BZIMAGE).stat().st_mtime < (path / ".config").stat().st_mtime:
        raise InfraError(f"{key} {value}: .config is newer than {BZIMAGE} (the build is stale): run `{make} bzImage modules`")
    release = (path / RELEASE).read_text().strip()
    if not _RELEASE_RE.match(release) or ".." in release:
        raise InfraError(f"{key} {value}: {RELEASE} holds {release[:60]!r}, not a kernel release: run `{make} bzImage modules`")
    tree = KernelTree(path, release)
    gone = [rel for rel in tree.module_paths() if not (path / rel).is_file()]
    if gone:
        raise InfraError(
            f"{key} {value}: modules.order lists {gone[0]}{f' (+{len(gone) - 1} more)' if len(gone) > 1 else ''}"
            f" but it is not built: run `{make} modules`"
        )
    return tree


def stage_modules(tree: KernelTree, dest: Path) -> Path:
    """``dest/lib/modules/<release>/`` with the tree's modules linked in and depmod run
    (``depmod -b dest <release>``); returns that directory. ``dest`` must not exist."""
    moddir = dest / "lib" / "modules" / tree.release
    (moddir / "kernel").mkdir(parents=True)
    for rel in tree.module_paths():
        link = moddir / "kernel" / rel
        link.parent.mkdir(parents=True, exist_ok=True)
        # a link, not a copy (virtme-prep-kdir-mods does the same): a distro-sized
        # tree's unstripped modules are gigabytes; the image builder reads through it
        link.symlink_to(tree.path / rel)
    with (moddir / "modules.order").open("w") as f:
        f.writelines(f"kernel/{rel}\n" for rel in tree.module_paths())
    builtin = (tree.path / "modules.builtin").read_text().splitlines()
    (moddir / "modules.builtin").write_text("".join(f"kernel/{line.strip().removeprefix('kernel/')}\n" for line in builtin if line.strip()))
    if (tree.path / "modules.builtin.modinfo").is_file():
        shutil.copyfile(tree.path / "modules.builtin.modinfo", moddir / "modules.builtin.modinfo")
    depmod = shutil.which("depmod", path="/usr/sbin:/sbin:/usr/bin:/bin")
    if depmod is None:
        raise InfraError("depmod not found (it stages a kernel tree's modules): `apt-get install kmod`")
    proc = subprocess.run([depmod, "-b", str(dest), tree.release], capture_output=True, text=True, check=False)
    if proc.returncode != 0 or not (moddir / "modules.dep").is_file():
        raise InfraError(f"depmod -b {dest} {tree.release} failed: {(proc.stderr or proc.stdout).strip()[:300]}")
    return moddir


def staged_modules(tree: KernelTree, root: Path) -> Path:
    """The tree's depmod'ed staging under ``root/tree-modules/``, made now if no current
    one exists (keyed by the tree's inputs); stale stagings of the same release are
    removed after a day (a running VM's image was built from them, not booted)."""
    key = tree.inputs_hash()[:16]
    base = root / STAGING_DIR
    final = base / f"{tree.release}-{key}"
    moddir = final / "lib" / "modules" / tree.release
    if (moddir / "modules.dep").is_file():
        return moddir
    base.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".stage-", dir=base))
    try:
        stage_modules(tree, tmp / "s")
        try:
            (tmp / "s").rename(final)
        except OSError:
            if not (moddir / "modules.dep").is_file():  # not a concurrent stager's win
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    now = time.time()
    for old in base.iterdir():
        if old != final and old.name.startswith(f"{tree.release}-") and now - old.stat().st_mtime > STAGING_KEEP_S:
            shutil.rmtree(old, ignore_errors=True)
    return moddir
