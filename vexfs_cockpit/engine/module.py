"""The module under test: ONE model of the kernel module and filesystem a config
describes, and the guest commands that act on it.

The domains (``domains/_common.ModuleUnderTest``, through the public API
``vexfs_cockpit.plugin``) and the warm loop (``app/kdev``) both read the module from
here: its name (insmod/rmmod, /proc/modules), the filesystem type (mount -t), the
.ko's name, the insmod parameters, the kbuild directory (M=) and where a build
leaves the .ko.

Every guest command that is shell text is built by a pure function below, and every
value in it that a config can set is quoted with ``q`` (shlex.quote). The config
also refuses hostile names (config/models.py patterns), but the quote is what makes
a value one word: tests/test_quoting.py feeds hostile strings through each builder.
"""

from __future__ import annotations

import hashlib
import os
import re
import shlex
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vexfs_cockpit.config.models import split_module_params

if TYPE_CHECKING:
    from vexfs_cockpit.config.models import CockpitConfig, ModuleSettings

GUEST_DIR = "/tmp/vexfs-cockpit"  # where the .ko, images and helper tools go in the guest
# util-linux losetup by path: busybox ash (the self-test guest's login shell) would run its
# own losetup applet, which lacks --show. The path is the same on a Debian guest.
LOSETUP = "/usr/sbin/losetup"

# Build outputs and VCS dirs: not "source" for the is-the-.ko-stale check.
_NOT_SOURCE_SUFFIXES = (".o", ".ko", ".mod", ".mod.c", ".cmd", ".log")
_NOT_SOURCE_NAMES = {"modules.order", "Module.symvers"}


def is_source_file(name: str) -> bool:
    """Whether a file of this name in the module tree is source (not a build output, not
    hidden): what the staleness check and `watch` look at."""
    return not (name.startswith(".") or name in _NOT_SOURCE_NAMES or name.endswith(_NOT_SOURCE_SUFFIXES))


def q(word: str | os.PathLike[str] | int) -> str:
    """One shell word, whatever ``word`` holds (shlex.quote)."""
    return shlex.quote(os.fspath(word) if isinstance(word, os.PathLike) else str(word))


@dataclass(frozen=True, slots=True)
class LoopImage:
    """A block-backed filesystem: an image of ``size`` on a loop device, formatted by ``mkfs``."""

    size: str  # e.g. "64M"
    mkfs: tuple[str, ...]  # the command's words; the loop device is appended

    @property
    def size_mb(self) -> int:
        m = re.fullmatch(r"(\d+)([KMG])", self.size)
        if not m:
            raise ValueError(f"bad loop size {self.size!r}: use e.g. 64M")
        n, unit = int(m[1]), m[2]
        return max(1, {"K": n // 1024, "M": n, "G": n * 1024}[unit])


@dataclass(frozen=True, slots=True)
class ModuleSpec:
    """The kernel module + filesystem under test, as a config section describes it."""

    name: str  # insmod/rmmod and /proc/modules; "" = the filesystem is built into the guest kernel
    fs_type: str  # /proc/filesystems, mount -t
    ko_name: str  # the built .ko's file name (module_path's last part)
    src: Path  # the kbuild directory (M=)
    params: tuple[str, ...] = ()  # insmod parameters, one word each
    device: LoopImage | None = None  # None: mounted without a block device

    @classmethod
    def from_settings(
        cls,
        settings: Mapping[str, Any] | ModuleSettings,
        config: CockpitConfig | None = None,
        project_root: Path | None = None,
    ) -> ModuleSpec:
        """From a ``module`` or domain section (a model or its dump). The kbuild directory
        follows config/paths' rule (a ``source_env`` checkout or the project root); with
        no ``config`` (a bare test context) it is ``build_path`` under ``project_root``."""
        from vexfs_cockpit.config.paths import build_dir

        get = settings.get if isinstance(settings, Mapping) else partial(getattr, settings)
        if config is not None:
            src = build_dir(config, settings)
        else:
            src = ((project_root or Path(".")) / str(get("build_path"))).resolve()
        device = get("device", "none")
        loop = None
        if device not in (None, "none"):
            d = device if isinstance(device, Mapping) else device.model_dump()
            loop = LoopImage(str(d.get("loop", "64M")), tuple(shlex.split(str(d["mkfs"]))))
        return cls(
            name=str(get("module_name")),
            fs_type=str(get("fs_type")),
            ko_name=Path(str(get("module_path"))).name,
            src=src,
            params=split_module_params(str(get("module_params", "") or "")),
            device=loop,
        )

    @classmethod
    def from_config(cls, cfg: CockpitConfig) -> ModuleSpec:
        """The top-level ``module`` section (what the warm loop builds and loads)."""
        return cls.from_settings(cfg.module, cfg)

    @property
    def has_module(self) -> bool:
        """False for a filesystem already in the guest kernel: nothing to build or load."""
        return bool(self.name)

    @property
    def remote_ko(self) -> str:
        """Where the .ko is pushed in the guest."""
        return f"{GUEST_DIR}/{self.ko_name}"

    # -- where builds land ----------------------------------------------------------
    def build_dir_in(self, root: Path, kernel: str) -> Path:
        """The directory ``builds.kbuild.kbuild(src, kernel, root, ...)`` builds in."""
        return root / f"{self.src.name}-{kernel}"

    def warm_build_root(self) -> Path:
        """Where the warm loop (kdev's kbuild/kload) builds this source: one directory per
        source path under the data dir, never the source tree."""
        from vexfs_cockpit.config.paths import data_dir

        tag = hashlib.sha256(str(self.src).encode()).hexdigest()[:10]
        return data_dir() / "kbuild" / tag

    def built_ko(self, kernel: str, root: Path | None = None) -> Path:
        """Where a build for ``kernel`` under ``root`` (default: the warm loop's) leaves
        the .ko (it may not exist)."""
        return self.build_dir_in(root if root is not None else self.warm_build_root(), kernel) / self.ko_name

    def pick_ko(self, kos: Sequence[Path]) -> Path | None:
        """Of the .ko files a build made, ours (``module_path``), else the first one."""
        return next((k for k in kos if k.name == self.ko_name), kos[0] if kos else None)

    def newest_source_mtime(self) -> float:
        newest = 0.0
        for root, dirs, files in os.walk(self.src):
            dirs[:] = [d for d in dirs if not d.startswith(".")]
            for f in files:
                if not is_source_file(f):
                    continue
                try:
                    newest = max(newest, os.stat(os.path.join(root, f)).st_mtime)
                except OSError:
                    continue
        return newest

    def fresh_ko(self, kernel: str, root: Path | None = None) -> Path | None:
        """The last built .ko for ``kernel`` if it is newer than every source file."""
        ko = self.built_ko(kernel, root)
        try:
            built = ko.stat().st_mtime
        except OSError:
            return None
        return ko if built >= self.newest_source_mtime() else None


# ----------------------------------------------------------------------------- guest commands
# Pure functions: values in, command out. Shell text quotes every value; argv lists are
# quoted word by word by the target (engine/target.render_command).


def insmod_argv(remote_ko: str, params: Iterable[str]) -> list[str]:
    return ["insmod", remote_ko, *params]


def is_loaded_cmd(name: str) -> str:
    """Shell test: is module ``name`` in /proc/modules."""
    return f"grep -q {q('^' + name + ' ')} /proc/modules"


def registered_cmd(name: str, fs_type: str) -> str:
    """Prints ``module`` when the module is loaded (skipped for name "") and ``fs`` when
    ``fs_type`` is in /proc/filesystems."""
    module = f"{is_loaded_cmd(name)} && echo module; " if name else ""
    return f"{module}grep -qw {q(fs_type)} /proc/filesystems && echo fs; true"


def unload_cmd(name: str, fs_type: str) -> str:
    """If loaded: unmount every ``fs_type`` mount, then rmmod."""
    return (
        f"if {is_loaded_cmd(name)}; then "
        f"grep -qF {q(' ' + fs_type + ' ')} /proc/mounts && umount -a -t {q(fs_type)}; rmmod {q(name)}; fi; true"
    )


def cleanup_cmd(name: str, fs_type: str, guest_dir: str = GUEST_DIR) -> str:
    """Best effort: lazily unmount every ``fs_type`` mount, detach the loop devices on
    images under ``guest_dir``, rmmod ``name`` if loaded (skipped for name "")."""
    unload = f"if {is_loaded_cmd(name)}; then rmmod {q(name)}; fi; " if name else ""
    # The type reaches awk through its environment: an awk string literal or -v would
    # interpret backslashes in it.
    return (
        f"for m in $(FSTYPE={q(fs_type)} awk '$3 == ENVIRON[\"FSTYPE\"] {{print $2}}' /proc/mounts); do umount -l \"$m\"; done; "
        f"for d in $({LOSETUP} -a | grep -F {q(guest_dir)} | cut -d: -f1); do {LOSETUP} -d \"$d\"; done; {unload}true"
    )


def push_probe_cmd(remote: str) -> str:
    """Make the push directory and print the sha256 of what is at ``remote`` already."""
    return f"mkdir -p {q(os.path.dirname(remote) or '.')} && {{ sha256sum {q(remote)} 2>/dev/null; true; }}"


def module_state_cmd(name: str, remote_ko: str) -> str:
    """One round trip for the warm loop: ``loaded`` if the module is, ``sha256 <digest>``
    of the pushed .ko, then /proc/mounts."""
    return (
        f"mkdir -p {q(os.path.dirname(remote_ko) or '.')}; {is_loaded_cmd(name)} && echo loaded; "
        f"sha256sum {q(remote_ko)} 2>/dev/null | sed 's/^/sha256 /'; cat /proc/mounts"
    )


def mount_argv(fs_type: str, source: str, mountpoint: str, options: str = "") -> list[str]:
    return ["mount", "-t", fs_type, *(["-o", options] if options else []), source, mountpoint]


def image_cmd(image: str, size_mb: int) -> str:
    """A fresh zero-filled image file of ``size_mb`` MiB."""
    return f"rm -f {q(image)} && dd if=/dev/zero of={q(image)} bs=1M count={int(size_mb)} 2>&1"


def detach_cmd(mountpoint: str, device: str) -> str:
    """Unmount (if still mounted) and detach the loop device, even when umount fails."""
    return f"umount {q(mountpoint)} 2>/dev/null; {LOSETUP} -d {q(device)}"


def write_cmd(path: str, value: str | int, *, background: bool = False) -> str:
    """Write ``value`` and a newline to ``path`` (a /proc or debugfs knob), byte for byte
    (printf: echo would read backslashes); ``background`` does not wait for the write (a
    knob that blocks, e.g. a hang)."""
    cmd = f"printf '%s\\n' {q(value)} > {q(path)}"
    return f"({cmd} &) ; true" if background else cmd


def sysfs_dir(name: str) -> str:
    return f"/sys/module/{name}"


def sysfs_state_cmd(name: str) -> str:
    """``initstate`` and ``refcnt`` of a loaded module."""
    d = sysfs_dir(name)
    return f"cat {q(d + '/initstate')} {q(d + '/refcnt')}"


def sysfs_params_cmd(name: str) -> str:
    """The names of the module's parameters in sysfs (nothing when it has none)."""
    return f"ls {q(sysfs_dir(name) + '/parameters')} 2>/dev/null"


def kmsg_marked_cmd(words: Sequence[str], begin: str, end: str) -> str:
    """Run ``words`` between two lines written to /dev/kmsg, exiting with its status."""

    def mark(text: str) -> str:
        return f"printf '%s\\n' {q(text)} > /dev/kmsg 2>/dev/null"

    return f"{mark(begin)}; {shlex.join(words)}; rc=$?; {mark(end)}; exit $rc"
