"""The kernel developer's warm loop: build, load, unload and test the module under test.

Edit, rebuild, reload and re-test the module under test (the config's ``module``
section) on a dev VM from ``vm start`` that stays up — no boot in between:

- ``kbuild [--vm NAME]``: build on the host against the guest kernel (the running
  VM's with ``--vm``, else the image's); prints one result line, the first compiler
  errors and the .ko path. Builds live in ``<data dir>/kbuild/`` (never the repo) and
  are incremental: an edit kbuild's records cover is rebuilt by replaying them
  (``builds.fastpath``, ~0.8 s less than make), anything else by make.
- ``kload NAME``: push the last built .ko (rebuilt first when there is none for the
  VM's kernel or the source is newer) and insmod it; prints the kernel log lines the
  load produced (from the serial console, bracketed by /dev/kmsg sync markers).
- ``kunload NAME``: rmmod it; unmounts our filesystem first if mounted (and says so).
- ``ktest NAME``: the normal runner, store and progress printer (``run --batch``) on
  the dev VM through ``fleet.attach.AttachProvider``; results land in the history.

The argparse faces are ``commands.kdev``; these operations print to the ``out`` they
are given and return the command's exit code.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import secrets
import shlex
import sys
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from vexfs_cockpit.config.models import split_module_params
from vexfs_cockpit.engine.module import ModuleSpec, insmod_argv, kmsg_marked_cmd, module_state_cmd
from vexfs_cockpit.errors import ConfigError, UsageError

if TYPE_CHECKING:
    from vexfs_cockpit.config.models import CockpitConfig
    from vexfs_cockpit.engine.plugin import DomainBase
    from vexfs_cockpit.engine.provider import Lease
    from vexfs_cockpit.engine.target import CommandResult, Target
    from vexfs_cockpit.builds.kbuild import KbuildResult
    from vexfs_cockpit.klog.model import KernelReport
    from vexfs_cockpit.transport.pool import TargetPool

SYNC_TIMEOUT_S = 10.0
CRASH_GRACE_S = 5.0  # after SSH died mid-command: how long the console may take to finish the report
WATCH_STOP_S = 30.0  # a stopped watch finishes the cycle step it is in (an rmmod, a test) first


# ----------------------------------------------------------------------------- the module
def module_of(cfg: CockpitConfig) -> ModuleSpec:
    """The module under test (the config's ``module`` section), which the warm loop needs
    to be a loadable module."""
    m = cfg.module
    where = cfg._origins.get("module.module_name") or str(cfg.source_path or "the config")
    if not m.module_name:
        raise ConfigError(
            f"{where}: module.module_name is empty (the filesystem is built into the guest kernel): "
            "there is no module to build or load"
        )
    return ModuleSpec.from_config(cfg)


async def build(mod: ModuleSpec, kernel: str, host: Target | None = None, tree: Path | None = None) -> KbuildResult:
    """Build ``mod`` for ``kernel`` on the host (against the built kernel ``tree`` the
    guest booted, if any); the make output goes to kbuild.log beside it."""
    from vexfs_cockpit.builds.kbuild import default_cache_dir, kbuild
    from vexfs_cockpit.transport.local import LocalTarget

    if not mod.src.is_dir():
        raise ConfigError(f"module.build_path: {mod.src} is not a directory; point it at the module's kbuild directory")
    # A real compile (the developer asked for one), incremental as make in their own tree;
    # its .ko is cached so the ktest that follows does not compile identical sources again.
    res = await kbuild(
        mod.src, kernel, mod.warm_build_root(), host or LocalTarget("host"), jobs=os.cpu_count() or 2,
        cache_dir=default_cache_dir(), reuse_cache=False, incremental=True, tree=tree,
    )
    try:
        (res.build_dir / "kbuild.log").write_text(f"$ {res.command}\n{res.output}")
    except OSError:
        pass
    return res


def report_build(res: KbuildResult, mod: ModuleSpec, out: TextIO) -> bool:
    """Print the one-line result, the first errors and the .ko (or the log) path."""
    print(res.message, file=out)
    if res.ok:
        ko = mod.pick_ko(res.kos)
        if ko is not None and ko.name != mod.ko_name:
            print(f"note: the build made {ko.name}, not module.module_path {mod.ko_name}", file=out)
        print(ko, file=out)
        return ko is not None and ko.name == mod.ko_name
    for err in res.errors:
        print(f"  {err}", file=out)
    print(f"full log: {res.build_dir / 'kbuild.log'}", file=out)
    return False


def kernel_tree_for(cfg: CockpitConfig, kernel: str, booted: object = "") -> Path | None:
    """The built kernel tree a guest running ``kernel`` booted, if any: the one its image
    was made from (``booted``, from the dev VM's image manifest), else fleet.guest_kernel's."""
    from vexfs_cockpit.builds.kbuild import tree_release

    for tree in (Path(booted) if isinstance(booted, str) and booted else None, cfg.fleet.kernel_tree):
        if tree is not None and tree_release(tree) == kernel:
            return tree
    return None


async def ensure_built(mod: ModuleSpec, kernel: str, out: TextIO, tree: Path | None = None) -> Path | None:
    """The .ko for ``kernel``: the last build if fresh, else a new build (None if it failed)."""
    ko = mod.fresh_ko(kernel)
    if ko is not None:
        return ko
    why = "source changed since the last build" if mod.built_ko(kernel).exists() else f"no build for {kernel} yet"
    print(f"building {mod.ko_name} ({why})", file=out)
    res = await build(mod, kernel, tree=tree)
    return mod.built_ko(kernel) if report_build(res, mod, out) else None


# ----------------------------------------------------------------------------- kernel log around a command
@dataclass(slots=True)
class KlogWindow:
    lines: list[str]
    reports: list[KernelReport]
    source: str  # console | dmesg | console (guest lost)

    def bad_reports(self) -> list[KernelReport]:
        from vexfs_cockpit.klog.model import Severity

        return [r for r in self.reports if r.severity >= Severity.WARNING]


async def run_marked(lease: Lease, tag: str, cmd: list[str], timeout: float) -> tuple[CommandResult | Exception, KlogWindow]:
    """Run ``cmd`` in the guest between two /dev/kmsg markers, in ONE SSH round trip
    (under TCG each costs tens of ms or more), and return its result — or the
    infrastructure error it raised when it took the guest down — and the kernel
    log between the markers.

    The serial console is the source: it still talks when SSH is gone. When the
    console does not echo the end marker (console loglevel too low), ``dmesg`` is.
    """
    from vexfs_cockpit.errors import CockpitError
    from vexfs_cockpit.klog.patterns import SYNC_MARKER

    klog, target = lease.klog, lease.target
    assert klog is not None
    nonce = secrets.token_hex(3)
    begin, end = f"{SYNC_MARKER}{tag} begin {nonce}", f"{SYNC_MARKER}{tag} end {nonce}"

    script = kmsg_marked_cmd(cmd, begin, end)
    since = klog.cursor()
    try:
        res = await target.run(script, timeout=timeout)
    except CockpitError as err:  # TargetUnavailable: the command took the guest down
        await klog.wait_for(set(), since, timeout=CRASH_GRACE_S)  # the report's tail is still arriving
        lines, reports = klog.window(since)
        return err, KlogWindow([ln for ln in lines if begin not in ln], reports, "console (guest lost)")
    res.cmd = shlex.join(cmd)  # errors name the command, not the marker wrapper
    stop = None if res.timed_out else await klog.wait_for_text(end, since, SYNC_TIMEOUT_S)
    if stop is not None or res.timed_out:
        lines, reports = klog.window(since, stop)
        first = next((i + 1 for i, ln in enumerate(lines) if begin in ln), 0)
        return res, KlogWindow(lines[first:], [r for r in reports if r.line >= since + first], "console")
    return res, await _dmesg_window(target, begin, end)


async def _dmesg_window(target: Target, begin: str, end: str) -> KlogWindow:
    from vexfs_cockpit.klog.classify import Classifier

    res = await target.run(["dmesg"], timeout=30)
    all_lines = res.output.splitlines()
    idx = next((i for i in range(len(all_lines) - 1, -1, -1) if begin in all_lines[i]), None)
    if idx is None:
        return KlogWindow([], [], "dmesg (the marker never reached the kernel log)")
    lines = [ln for ln in all_lines[idx + 1:] if end not in ln]
    clf = Classifier(target.name)
    reports = [r for n, ln in enumerate(lines) for r in clf.feed(n, ln)] + clf.flush()
    return KlogWindow(lines, reports, "dmesg")


def print_window(w: KlogWindow, out: TextIO) -> None:
    for ln in w.lines:
        print(f"  klog| {ln}", file=out)
    if not w.lines:
        print(f"  klog| (no kernel log lines; source: {w.source})", file=out)
    for rep in w.bad_reports():
        print(f"KERNEL {rep.kind}: {rep.title}", file=out)


# ----------------------------------------------------------------------------- attach helper
async def attached(cfg: CockpitConfig, name: str, uri: str | None, targets: TargetPool | None = None) -> tuple[Any, Lease]:
    """(provider, lease) on the running dev VM ``name``; close the provider after use
    (with ``targets``, its SSH connections stay in that pool for the next command)."""
    from vexfs_cockpit.engine.bus import EventBus
    from vexfs_cockpit.fleet.attach import AttachProvider

    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    provider = AttachProvider(cfg, bus, name, uri=uri, targets=targets)
    try:
        lease = await provider.attach()
    except BaseException:
        await provider.aclose()
        raise
    return provider, lease


@dataclass(frozen=True, slots=True)
class GuestModuleState:
    loaded: bool
    mounts: list[tuple[str, str]]  # (device, mountpoint) of our filesystem, in mount order
    pushed_sha256: str = ""  # of the .ko already at GUEST_DIR (empty: none there)


async def module_state(target: Target, mod: ModuleSpec) -> GuestModuleState:
    """Is the module loaded, where is its filesystem mounted, which .ko was pushed
    last — one round trip (and the push directory made on the way)."""
    res = await target.run(module_state_cmd(mod.name, mod.remote_ko), check=True)
    lines = res.output.splitlines()
    mounts = []
    digest = ""
    for ln in lines:
        f = ln.split()
        if len(f) >= 2 and f[0] == "sha256":
            digest = f[1]
        elif len(f) >= 3 and f[2] == mod.fs_type:
            mounts.append((f[0], f[1].replace("\\040", " ")))
    return GuestModuleState("loaded" in lines, mounts, digest)


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def _why(res: CommandResult) -> str:
    return "timed out" if res.timed_out else res.first_line() or f"exit {res.exit_code}"


# ----------------------------------------------------------------------------- kload / kunload
async def kload(cfg: CockpitConfig, name: str, *, params: str | None = None, uri: str | None = None,
                out: TextIO | None = None, targets: TargetPool | None = None) -> int:
    out = out or sys.stdout  # resolved per call: tests and callers swap sys.stdout
    mod = module_of(cfg)
    try:
        words = insmod_argv(mod.remote_ko, mod.params if params is None else split_module_params(params))
    except ValueError as err:  # an unbalanced quote: one line, before any VM is touched
        raise UsageError(f"--params: insmod parameters as KEY=VALUE words: {err}") from None
    provider, lease = await attached(cfg, name, uri, targets)
    try:
        target = lease.target
        ko = await ensure_built(mod, lease.guest_kernel, out, kernel_tree_for(cfg, lease.guest_kernel, lease.extra.get("kernel_tree")))
        if ko is None:
            return 1
        state = await module_state(target, mod)
        if state.loaded:
            print(f"{mod.name} is already loaded in {name} — `vexfs-cockpit kunload {name}` first", file=out)
            return 1
        if state.pushed_sha256 != hashlib.sha256(ko.read_bytes()).hexdigest():  # rsync-like: same bytes stay
            await target.put(ko, mod.remote_ko)
        res, window = await run_marked(lease, f"kload {mod.name}", words, timeout=60)
        return _report(res, window, f"insmod {mod.name}", name, out,
                       lambda r: f"loaded {mod.name} into {name} ({lease.guest_kernel}) in {_ms(r.duration_s)}")
    finally:
        await provider.aclose()


def _report(res: Any, window: Any, what: str, vm: str, out: TextIO, done: Callable[[Any], str]) -> int:
    """Print the kernel lines a load/unload produced and its outcome; the exit code."""
    print_window(window, out)
    if isinstance(res, Exception):
        print(f"{what}: lost {vm}: {res}", file=out)
        return 1
    if not res.ok:
        print(f"{what} failed: {_why(res)}", file=out)
        return 1
    print(done(res), file=out)
    return 1 if window.bad_reports() else 0


async def kunload(cfg: CockpitConfig, name: str, *, uri: str | None = None, out: TextIO | None = None,
                  targets: TargetPool | None = None) -> int:
    out = out or sys.stdout  # resolved per call: tests and callers swap sys.stdout
    mod = module_of(cfg)
    provider, lease = await attached(cfg, name, uri, targets)
    try:
        target = lease.target
        state = await module_state(target, mod)
        if not state.loaded:
            print(f"{mod.name} is not loaded in {name}: nothing to unload", file=out)
            return 0
        for dev, mp in reversed(state.mounts):  # innermost first
            r = await target.run(["umount", mp], timeout=60)
            if not r.ok:
                print(f"umount {mp} ({mod.fs_type}) failed: {_why(r)} — stop what uses it "
                      f"(`vexfs-cockpit ssh {name} fuser -m {mp}`)", file=out)
                return 1
            print(f"unmounted {mp} ({mod.fs_type} on {dev}) first", file=out)
        res, window = await run_marked(lease, f"kunload {mod.name}", ["rmmod", mod.name], timeout=60)
        return _report(res, window, f"rmmod {mod.name}", name, out,
                       lambda r: f"unloaded {mod.name} from {name} in {_ms(r.duration_s)}")
    finally:
        await provider.aclose()


# ----------------------------------------------------------------------------- kbuild
async def guest_kernel_of(cfg: CockpitConfig, name: str, uri: str | None) -> tuple[str, str]:
    """The kernel a running dev VM booted and the kernel tree it came from ("" if none):
    from its domain XML when it boots an image's kernel directly (no SSH), else
    ``uname -r`` over SSH."""
    from vexfs_cockpit.fleet.attach import booted_image, check_attachable
    from vexfs_cockpit.fleet.devvm import connect_fleet, dev_target
    from vexfs_cockpit.fleet.provider import guest_kernel_release

    uri = uri or cfg.fleet.libvirt_uri
    fm = await connect_fleet(uri, cfg.env)
    try:
        info = await fm.info(name)
        check_attachable(name, uri, info)
        image = await booted_image(fm, name)
    finally:
        await fm.aclose()
    if image is not None:
        return image.kernel_version, image.kernel_tree
    target = dev_target(cfg, name, info, reconnect_deadline_s=20.0)
    try:
        return await guest_kernel_release(target, name), ""  # checked: it becomes a host build path
    finally:
        await target.close()


async def kbuild_cmd(cfg: CockpitConfig, vm: str | None, *, uri: str | None = None, out: TextIO | None = None) -> int:
    out = out or sys.stdout  # resolved per call: tests and callers swap sys.stdout
    res = await build_for(cfg, vm, uri=uri)
    return 0 if report_build(res, module_of(cfg), out) else 1


async def build_for(cfg: CockpitConfig, vm: str | None, *, uri: str | None = None) -> KbuildResult:
    """The warm loop's build for the running dev VM ``vm``'s kernel (else the image's)."""
    mod = module_of(cfg)
    booted = ""
    if vm:
        kernel, booted = await guest_kernel_of(cfg, vm, uri)
    elif cfg.fleet.template == "disk":
        raise UsageError(
            "kbuild: with fleet.template 'disk' the guest boots its base image's own kernel — "
            "build for a running VM's kernel with `vexfs-cockpit kbuild --vm NAME`"
        )
    else:
        from vexfs_cockpit.images.initramfs import resolve_kernel_version

        kernel = await asyncio.to_thread(resolve_kernel_version, cfg.fleet.guest_kernel)
    return await build(mod, kernel, tree=kernel_tree_for(cfg, kernel, booted))


# ----------------------------------------------------------------------------- ktest
def expand_tests(spec: str, registry: dict[str, type[DomainBase]]) -> tuple[list[str], list[str]]:
    """``--tests`` items plus the tests they depend on, in domain order, and the added ones.

    The runner skips a test whose dependency did not run, so `ktest --tests
    kernel_module/module_load_basic` must run module_build too.
    """
    wanted: dict[str, set[str]] = {}
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        domain, sep, test = item.partition("/")
        if not sep or not test:
            raise UsageError(f"--tests: expected DOMAIN/TEST, found {item!r}")
        cls = registry.get(domain)
        if cls is None:
            raise UsageError(f"--tests: unknown domain {domain!r}; known: {', '.join(sorted(registry))}")
        names = {s.name for s in cls.discover_tests()}
        if test not in names:
            raise UsageError(f"--tests: {domain} has no test {test!r}; its tests: {', '.join(sorted(names))}")
        wanted.setdefault(domain, set()).add(test)
    items: list[str] = []
    added: list[str] = []
    for domain, tests in wanted.items():
        specs = {s.name: s for s in registry[domain].discover_tests()}
        todo, closure = list(tests), set(tests)
        while todo:
            for dep in specs[todo.pop()].options.depends_on:
                if dep in specs and dep not in closure:
                    closure.add(dep)
                    todo.append(dep)
        items += [f"{domain}/{n}" for n in specs if n in closure]
        added += [f"{domain}/{n}" for n in specs if n in closure - tests]
    return items, added


async def preflight(cfg: CockpitConfig, name: str, uri: str | None) -> str:
    """Fail with one line before a run is recorded when the VM cannot be attached; the
    kernel tree the VM booted ("" if none: an installed kernel, or a disk guest)."""
    from vexfs_cockpit.fleet.attach import booted_image, check_attachable
    from vexfs_cockpit.fleet.devvm import connect_fleet

    uri = uri or cfg.fleet.libvirt_uri
    fm = await connect_fleet(uri, cfg.env)
    try:
        check_attachable(name, uri, await fm.info(name))
        image = await booted_image(fm, name)
    finally:
        await fm.aclose()
    return image.kernel_tree if image is not None else ""


# ----------------------------------------------------------------------------- watch, for a front end
async def watch_lines(argv: list[str]) -> AsyncIterator[str]:
    """The lines a `vexfs-cockpit watch` process (``argv``) prints, as it prints them: its
    "watching" line, one result line per save, or the one line it failed with. Closing
    the iterator ends the watch as Ctrl-C does (SIGINT, then kill if it lingers)."""
    import signal

    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT, stdin=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        async for raw in proc.stdout:
            if line := raw.decode(errors="replace").rstrip():
                yield line
        await proc.wait()  # ended by itself: its last line said why
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(proc.wait(), WATCH_STOP_S)
            except TimeoutError:
                proc.kill()
                await proc.wait()
