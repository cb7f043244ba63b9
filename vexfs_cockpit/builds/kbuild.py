"""Build an out-of-tree kernel module on the host against a guest kernel's headers,
or against the built kernel tree the guest booted (``make -C TREE M=...``).

The source is copied into a fresh build dir first, so the repo never collects
*.o/*.ko and every build is a real build from scratch (no stale objects). All
commands go through a host ``Target`` so they land in the test's evidence; the
host target must see this machine's filesystem (``LocalTarget``).
"""

from __future__ import annotations

import asyncio
import contextlib
import fnmatch
import hashlib
import json
import os
import re
import shlex
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import platformdirs

from vexfs_cockpit.builds import fastpath
from vexfs_cockpit.engine.target import Target
from vexfs_cockpit.errors import InfraError

# Build outputs never copied from the source dir (a manual build there must not leak in);
# the fast path's stamp is one (it says what the build dir was last built from).
_ARTIFACTS = ("*.o", "*.ko", "*.mod", "*.mod.c", "*.cmd", ".*.cmd", "modules.order", "Module.symvers", ".tmp_versions",
              f"{fastpath.STAMP}*")

# gcc/clang: "path/file.c:38:16: error: msg" (column optional; "fatal error" too).
_CC_ERROR = re.compile(r"^(?P<loc>[^\s:][^:]*:\d+(?::\d+)?): (?:fatal )?error: (?P<msg>.+)$")
# modpost: 'ERROR: modpost: "sym" [/path/x.ko] undefined!'
_MODPOST_ERROR = re.compile(r"^ERROR: modpost: (?P<msg>.+)$")
_MAKE_ERROR = re.compile(r"^make(?:\[\d+\])?: \*\*\* (?P<msg>.+)$")


def _is_artifact(name: str) -> bool:
    return any(fnmatch.fnmatch(name, p) for p in _ARTIFACTS)


def _prune(build_dir: Path, src: Path) -> None:
    """Remove what an incremental build dir holds that ``src`` no longer has (a deleted
    header must fail the build, not be found in the old copy); build outputs stay."""
    if not build_dir.is_dir():
        return
    for path in sorted(build_dir.rglob("*"), reverse=True):  # files before their dirs
        rel = path.relative_to(build_dir)
        if any(_is_artifact(part) for part in rel.parts) or (src / rel).exists():
            continue
        if path.is_dir() and not path.is_symlink():
            with contextlib.suppress(OSError):
                path.rmdir()  # only once empty: it may hold artifacts
        else:
            path.unlink(missing_ok=True)


class KernelHeadersMissing(InfraError):
    """No /lib/modules/<kernel>/build: the host cannot build for that kernel."""


MODULES_ROOT = Path("/lib/modules")


def headers_dir(kernel: str) -> Path:
    return MODULES_ROOT / kernel / "build"


class UnsafeBuildPath(InfraError):
    """A path derived from the kernel version leaves its base directory."""


def _contained(base: Path, path: Path, kernel: str, what: str) -> Path:
    """``path`` (resolved) if it is a direct child of ``base`` (resolved), else UnsafeBuildPath.

    The kernel version comes from the guest (`uname -r`) and names a directory this
    module creates, fills and removes (``rm -rf``, ``_prune``): a version with ``/`` or
    ``..`` in it, or a symlink planted at that name, must not move that outside
    ``base``. Checked again here although the readers check the version.
    """
    root = base.resolve()
    got = path.resolve()
    if got.parent != root or got.name in ("", ".", ".."):
        raise UnsafeBuildPath(
            f"kbuild: the {what} for kernel {kernel!r} would be {got}, not a directory directly in {root}: "
            "refusing to create or remove it (a kernel version is one path component)"
        )
    return got


def _headers_contained(kernel: str) -> Path:
    """``headers_dir(kernel)`` if it is ``/lib/modules/<one component>/build`` (not resolved:
    ``build`` is normally a symlink into /usr/src), else UnsafeBuildPath: make runs the
    Makefile found there."""
    kdir = headers_dir(kernel)
    norm = Path(os.path.normpath(kdir))
    if norm != kdir or norm.parent.parent != MODULES_ROOT or norm.parent.name in ("", ".", ".."):
        raise UnsafeBuildPath(
            f"kbuild: the headers dir for kernel {kernel!r} would be {norm}, not {MODULES_ROOT}/<kernel>/build: "
            "refusing to build against it (a kernel version is one path component)"
        )
    return kdir


@dataclass(frozen=True, slots=True)
class KbuildResult:
    kernel: str
    command: str
    build_dir: Path
    exit_code: int | None  # None: killed by the timeout
    output: str  # everything make and the compiler printed
    duration_s: float
    kos: tuple[Path, ...] = ()
    errors: tuple[str, ...] = field(default=())  # first error lines, paths relative to the build dir
    timed_out: bool = False
    cached: bool = False  # identical sources, kernel and make args were built before: that .ko
    fast: bool = False  # replayed kbuild's recorded commands instead of running make
    fallback: str = ""  # an incremental build that ran make: why the fast path could not

    @property
    def how(self) -> str:
        """A word or two for where the build's time went: cache, fast, make (and why)."""
        if self.cached:
            return "cache"
        if self.fast:
            return "fast"
        return f"make: {self.fallback}" if self.fallback else "make"

    @property
    def ok(self) -> bool:
        return self.exit_code == 0 and bool(self.kos)

    @property
    def ko(self) -> Path | None:
        return self.kos[0] if self.kos else None

    @property
    def message(self) -> str:
        """One line for a test result or the user."""
        if self.ok and self.cached:
            return f"{', '.join(k.name for k in self.kos)} for {self.kernel}: identical sources built before (cache)"
        if self.ok and self.fast:
            return (f"built {', '.join(k.name for k in self.kos)} for {self.kernel} in {self.duration_s:.1f}s "
                    "(fast: kbuild's recorded commands, make skipped)")
        if self.ok:
            return f"built {', '.join(k.name for k in self.kos)} for {self.kernel} in {self.duration_s:.1f}s"
        if self.timed_out:
            return f"kbuild for {self.kernel} timed out after {self.duration_s:.0f}s"
        if self.errors:
            more = f" (+{len(self.errors) - 1} more)" if len(self.errors) > 1 else ""
            return f"build failed for {self.kernel}: {self.errors[0]}{more}"
        if self.exit_code == 0:
            return f"make succeeded for {self.kernel} but produced no .ko in {self.build_dir}"
        last = next((ln for ln in reversed(self.output.splitlines()) if ln.strip()), "no output")
        return f"build failed for {self.kernel} (exit {self.exit_code}): {last.strip()}"


def parse_errors(output: str, build_dir: Path | None = None, limit: int = 5) -> tuple[str, ...]:
    """The first compiler/modpost error lines; make's own '***' lines only if there are none."""
    prefix = f"{build_dir}/" if build_dir else None
    found: list[str] = []
    make_lines: list[str] = []
    for raw in output.splitlines():
        line = raw.strip()
        if m := _CC_ERROR.match(line):
            loc = m["loc"]
            if prefix and loc.startswith(prefix):
                loc = loc[len(prefix):]
            found.append(f"{loc}: error: {m['msg']}")
        elif m := _MODPOST_ERROR.match(line):
            msg = m["msg"].replace(prefix, "") if prefix else m["msg"]
            found.append(f"modpost: {msg}")
        elif m := _MAKE_ERROR.match(line):
            make_lines.append(f"make: {m['msg']}")
        if len(found) >= limit:
            break
    return tuple(found or make_lines[:1])


def _forget_outputs_since(build_dir: Path, started: float) -> None:
    """Remove objects and modules a killed build wrote (``started``: time.monotonic())."""
    since = time.time() - (time.monotonic() - started) - 1.0  # wall clock, a second of slack
    for pattern in ("*.o", "*.ko"):
        for path in build_dir.rglob(pattern):
            with contextlib.suppress(OSError):
                if path.stat().st_mtime >= since:
                    path.unlink()


def default_cache_dir() -> Path:
    return platformdirs.user_cache_path("vexfs-cockpit", appauthor=False) / "kbuild"


def tree_release(tree: Path) -> str:
    """A built kernel tree's release (what its guest's `uname -r` says), "" if unbuilt."""
    try:
        return (tree / "include" / "config" / "kernel.release").read_text().strip()
    except OSError:
        return ""


def inputs_key(src: Path, kernel: str, make_args: Sequence[str], tree: Path | None = None) -> str:
    """Hash of everything a build depends on that can change between iterations: the
    source tree (build outputs excluded), the kernel (its headers, or the kernel tree's
    config and symbol versions) and the make words."""
    h = hashlib.sha256()
    h.update(f"{kernel}\0{' '.join(make_args)}\0".encode())
    hdr = headers_dir(kernel) / "Makefile"
    if tree is not None:
        h.update(f"tree {tree}\0".encode())
        for name in (".config", "Module.symvers"):
            if (tree / name).exists():
                h.update(str((tree / name).stat().st_mtime_ns).encode())
    elif hdr.exists():
        h.update(str(hdr.resolve().stat().st_mtime_ns).encode())
    for path in sorted(p for p in src.rglob("*") if p.is_file()):
        rel = path.relative_to(src)
        if any(rel.match(pat) for pat in _ARTIFACTS):
            continue
        h.update(str(rel).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:24]


def _from_cache(entry: Path, kernel: str) -> KbuildResult | None:
    meta = entry / "build.json"
    if not meta.exists():
        return None
    data = json.loads(meta.read_text())
    kos = tuple(entry / name for name in data["kos"])
    if not kos or not all(k.exists() for k in kos):
        return None
    return KbuildResult(
        kernel=kernel, command=data["command"], build_dir=entry, exit_code=0,
        output=data["output"], duration_s=0.0, kos=kos, cached=True,
    )


def _to_cache(entry: Path, res: KbuildResult) -> None:
    entry.mkdir(parents=True, exist_ok=True)
    for ko in res.kos:
        shutil.copy2(ko, entry / ko.name)
    meta = {"command": res.command, "output": res.output, "kos": [k.name for k in res.kos],
            "built_s": res.duration_s}
    (entry / "build.json").write_text(json.dumps(meta))


async def kbuild(
    src: Path,
    kernel: str,
    out_dir: Path | None,
    host: Target,
    *,
    make_args: Sequence[str] = (),
    jobs: int = 2,
    timeout: float = 600.0,
    cache_dir: Path | None = None,
    reuse_cache: bool = True,
    incremental: bool = False,
    tree: Path | None = None,
) -> KbuildResult:
    """Copy ``src`` to ``out_dir/<src.name>-<kernel>/`` (fresh) and run kbuild there.

    ``out_dir=None`` builds under a new temp dir. ``make_args`` are extra make
    words, e.g. ``["BREAK_BUILD=1"]``. A failed build is a result, not an
    exception; missing headers or source raise (the fix is on the host).
    ``incremental`` keeps the last build's objects, as ``make`` in one's own tree
    does (the warm loop's ``kbuild``: ~0.4 s less per edit); the copy keeps each
    file's mtime, so make rebuilds exactly what changed, and files gone from
    ``src`` are removed from the build dir first. An incremental build whose changes
    kbuild's records cover replays those records instead of running make
    (``builds.fastpath``: the same .ko without make's ~0.8 s of start-up); anything
    else runs make, and the result says why. ``tree``: the built kernel tree the
    guest booted (``fleet.guest_kernel``): make runs there instead of in the headers.
    """
    if not kernel:
        raise ValueError("kbuild needs the guest kernel version (uname -r)")
    if tree is not None:
        kdir = tree
        if tree_release(tree) != kernel:
            raise InfraError(
                f"kbuild: the guest runs {kernel} but the kernel tree {tree} is {tree_release(tree) or 'not built'}: "
                f"boot the tree (`--kernel {tree}`) or build it (`make -C {tree} bzImage modules`)"
            )
        if not (tree / "Module.symvers").is_file():
            raise KernelHeadersMissing(f"kbuild: the kernel tree {tree} has no Module.symvers: run `make -C {tree} modules`")
    else:
        kdir = _headers_contained(kernel)
    src = src.resolve()
    if not src.is_dir():
        raise InfraError(f"module source {src} is not a directory: check the kernel_module source path in the config")
    if tree is None and not (kdir / "Makefile").exists():
        raise KernelHeadersMissing(
            f"no kernel headers for {kernel} at {kdir}: install them with `apt-get install linux-headers-{kernel}`"
            " (a guest booted from a kernel tree: give the same --kernel TREE, or set fleet.guest_kernel to it)"
        )
    # A successful build of byte-identical inputs is reused (like ccache): the warm
    # loop's kbuild and the test run's module_build then compile once, not twice.
    # Failures are never cached: an error is always a fresh compiler run.
    entry = cache_dir / inputs_key(src, kernel, make_args, tree) if cache_dir is not None else None
    if entry is not None and reuse_cache and (hit := _from_cache(entry, kernel)) is not None:
        return hit
    base = out_dir if out_dir is not None else Path(tempfile.mkdtemp(prefix="vexfs-kbuild-"))
    # before anything is created in it or removed from it
    build_dir = _contained(base, base / f"{src.name}-{kernel}", kernel, "build dir")

    excludes = " ".join(f"--exclude={shlex.quote(p)}" for p in _ARTIFACTS)
    b, s = shlex.quote(str(build_dir)), shlex.quote(str(src))
    if incremental:
        _prune(build_dir, src)
    fresh = "" if incremental else f"rm -rf {b} && "
    # pax keeps sub-second mtimes: with whole seconds, an edit in the second of the last
    # build would look older than its .o and not be compiled.
    copy = f"{fresh}mkdir -p {b} && tar -C {s} {excludes} --format=posix -cf - . | tar -C {b} -xf -"
    res = await host.run(copy, timeout=60)
    if not res.ok:
        raise InfraError(f"cannot copy {src} to build dir {build_dir}: {res.first_line() or f'exit {res.exit_code}'}")

    cmd = shlex.join(["make", "-C", str(kdir), f"M={build_dir}", f"-j{max(1, jobs)}", "modules", *make_args])
    started = time.monotonic()
    fallback, before = "", ""
    if incremental:
        # The host target runs commands with this process's environment (LocalTarget).
        manifest = fastpath.source_manifest(build_dir, _is_artifact)
        fast = await fastpath.fast_rebuild(build_dir, kdir, host, make_args=make_args, env=os.environ, jobs=jobs,
                                           timeout=timeout, manifest=manifest)
        if fast.ok:
            result = KbuildResult(
                kernel=kernel, command=f"replay of kbuild's records in {build_dir} (instead of {cmd})",
                build_dir=build_dir, exit_code=0, output=fast.output, duration_s=time.monotonic() - started,
                kos=tuple(sorted(build_dir.glob("*.ko"))), fast=True,
            )
            if entry is not None and result.ok:
                _to_cache(entry, result)
            return result
        fallback = fast.fallback
        # what it replayed before it stopped is done again by make, which says it all
        before = f"fast path not taken ({fallback}): running make\n"
    try:
        res = await host.run(cmd, timeout=timeout)
    except asyncio.CancelledError:
        # make is killed with its group (SIGKILL): it cannot delete the target it was
        # writing, and a half-written object newer than its source would look built.
        _forget_outputs_since(build_dir, started)
        raise
    duration = time.monotonic() - started
    kos = tuple(sorted(build_dir.glob("*.ko"))) if res.exit_code == 0 else ()
    result = KbuildResult(
        kernel=kernel,
        command=cmd,
        build_dir=build_dir,
        exit_code=res.exit_code,
        output=before + res.output,
        duration_s=duration,
        kos=kos,
        errors=() if res.exit_code == 0 else parse_errors(res.output, build_dir),
        timed_out=res.timed_out,
        fallback=fallback,
    )
    if incremental and result.ok:
        fastpath.record_build(build_dir, kdir, make_args, os.environ, manifest)
    if entry is not None and result.ok:
        _to_cache(entry, result)
    return result
