"""What every domain does to the module under test: build it on the host against the
guest's kernel, push it, load/unload it, mount/unmount the filesystem in either shape
(device-less, or an image on a loop device formatted by ``mkfs``).

The module itself is ``ModuleSpec`` (the public API's one model of it, shared with the
warm loop's kload/kunload); every command here is argv words or a builder's quoted text.
Modules starting with ``_`` are not domains (discovery skips them).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vexfs_cockpit.plugin import (
    GUEST_DIR,
    LOSETUP,
    CommandResult,
    DomainBase,
    InfraError,
    KbuildResult,
    ModuleSpec,
    cleanup_cmd,
    default_cache_dir,
    detach_cmd,
    image_cmd,
    insmod_argv,
    is_loaded_cmd,
    kbuild,
    mount_argv,
    option,
    push_probe_cmd,
    registered_cmd,
    split_module_params,
    unload_cmd,
)

DEFAULT_MNT = "/mnt/vexfs-test"


@dataclass(slots=True)
class Mounted:
    mountpoint: str
    device: str | None  # /dev/loopN for block-backed shapes


class ModuleUnderTest:
    """What a domain does to the module under test (``ModuleSpec``, from its settings):
    build on the host, push, load/unload, mount/unmount, clean up."""

    def __init__(self, domain: DomainBase):
        self.domain = domain
        self.ctx = domain.ctx
        self.target = domain.target
        self.spec: ModuleSpec = domain.ctx.module()
        self.build: KbuildResult | None = None

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def fs_type(self) -> str:
        return self.spec.fs_type

    @property
    def ko_name(self) -> str:
        return self.spec.ko_name

    @property
    def remote_ko(self) -> str:
        return self.spec.remote_ko

    @property
    def has_module(self) -> bool:
        """False when the filesystem is already in the guest kernel (``module_name: ""``,
        e.g. ext4 for the block-device path in CI): nothing to build, push, load or unload."""
        return self.spec.has_module

    # -- host side ----------------------------------------------------------------
    def source_dir(self) -> Path:
        """The kbuild directory (M=), the same one kdev's kbuild uses."""
        return self.spec.src

    def _build_dir(self, make_args: tuple[str, ...]) -> Path:
        tag = re.sub(r"[^A-Za-z0-9_.=+-]", "_", "-".join(make_args)) or "default"
        return self.ctx.workdir.parent / "_kbuild" / tag

    def _lock(self):
        # Domains running in parallel share the run's build dirs.
        return _file_lock(self.ctx.workdir.parent / "_kbuild" / "build.lock")

    async def kbuild(self, make_args: tuple[str, ...] = (), *, reuse_identical: bool = False) -> KbuildResult:
        """Build against the guest kernel's headers (module_build's job): a real compile,
        unless ``reuse_identical`` lets a cached build of byte-identical inputs stand in
        (the warm loop's ktest, right after its own kbuild)."""
        async with self._lock():
            return await self._kbuild_unlocked(make_args, reuse_identical)

    async def _kbuild_unlocked(self, make_args: tuple[str, ...], reuse_identical: bool) -> KbuildResult:
        assert self.ctx.host is not None, "the runner gives domains a host target"
        out = self._build_dir(make_args)
        # fleet.guest_kernel a built kernel tree: the guest booted it, build against it
        tree = self.ctx.config.fleet.kernel_tree if self.ctx.config is not None else None
        self.build = await kbuild(
            self.source_dir(), self.ctx.guest_kernel, out, self.ctx.host, make_args=make_args,
            cache_dir=default_cache_dir(), reuse_cache=reuse_identical, tree=tree,
        )
        stamp = {"kernel": self.build.kernel, "ok": self.build.ok, "kos": [str(k) for k in self.build.kos],
                 "errors": list(self.build.errors), "message": self.build.message, "duration_s": self.build.duration_s}
        out.mkdir(parents=True, exist_ok=True)  # a cache hit built nothing here
        (out / "build.json").write_text(json.dumps(stamp))
        return self.build

    def _reuse_build(self) -> bool:
        """Reuse this run's build for the same kernel (other domains need the module, not
        another identical compile). The run's build dir is fresh per run."""
        stamp = self._build_dir(()) / "build.json"
        if not stamp.exists():
            return False
        data = json.loads(stamp.read_text())
        if data["kernel"] != self.ctx.guest_kernel or not all(Path(k).exists() for k in data["kos"]):
            return False
        self.build = KbuildResult(
            kernel=data["kernel"], command="(this run's earlier build)", build_dir=stamp.parent,
            exit_code=0 if data["ok"] else 1, output="", duration_s=data["duration_s"],
            kos=tuple(Path(k) for k in data["kos"]), errors=tuple(data["errors"]),
        )
        return True

    def built_ko(self) -> Path | None:
        if self.build is None or not self.build.ok:
            return None
        return self.spec.pick_ko(self.build.kos)

    # -- guest side ---------------------------------------------------------------
    async def push(self) -> str:
        ko = self.built_ko()
        if ko is None:
            raise FileNotFoundError(f"{self.ko_name} was not built")
        digest = hashlib.sha256(ko.read_bytes()).hexdigest()
        # One round trip makes the directory and says what is there: the .ko the warm
        # loop's kload just pushed (or an earlier domain's) is not sent again.
        there = await self.target.run(push_probe_cmd(self.remote_ko), check=True)
        if there.output.split()[:1] != [digest]:
            await self.target.put(ko, self.remote_ko)
        return self.remote_ko

    async def ensure_ready(self) -> str | None:
        """Build + push; return why not (for ``prerequisite_missing``), or None when ready."""
        why = await self.ensure_built()
        if why is None and self.has_module:
            await self.push()
        return why

    async def ensure_built(self) -> str | None:
        """This run's build of the module (host only, no guest needed): why it is not
        there (for ``prerequisite_missing``), or None when it is."""
        if not self.has_module:
            return None
        try:
            if self.built_ko() is None:
                # One domain builds; the others wait on the lock and reuse its result.
                async with self._lock():
                    if not self._reuse_build():
                        # A prerequisite here, not the test under judgment: identical inputs may reuse.
                        await self._kbuild_unlocked((), True)
        except (OSError, ValueError, InfraError) as err:  # no source/headers: a reason to skip, not a crash
            return f"{self.ko_name}: {err}"
        if self.built_ko() is None:
            assert self.build is not None
            first = self.build.errors[0] if self.build.errors else self.build.message
            return f"{self.ko_name} did not build against {self.ctx.guest_kernel}: {first}"
        return None

    async def load(self, params: str | None = None, *, timeout: float = 60) -> CommandResult:
        """insmod with the configured parameters, or with ``params`` (KEY=VALUE words, e.g.
        an option's bad_params)."""
        words = self.spec.params if params is None else split_module_params(params)
        return await self.target.run(insmod_argv(self.remote_ko, words), timeout=timeout)

    async def unload(self, *, timeout: float = 60) -> CommandResult:
        return await self.target.run(["rmmod", self.name], timeout=timeout)

    async def loaded(self) -> bool:
        if not self.has_module:
            return False
        res = await self.target.run(is_loaded_cmd(self.name))
        return res.ok

    async def ensure_loaded(self) -> None:
        if self.has_module and not await self.loaded():
            await self.target.run(insmod_argv(self.remote_ko, self.spec.params), check=True)

    async def registered(self) -> tuple[bool, bool]:
        """(module in /proc/modules, filesystem in /proc/filesystems), in one round trip."""
        res = await self.target.run(registered_cmd(self.name, self.fs_type))
        words = res.output.split()
        return "module" in words, "fs" in words

    async def ensure_unloaded(self) -> None:
        """Unmount our filesystem and rmmod, if loaded (one round trip: ~0.1 s under TCG)."""
        if self.has_module:
            await self.target.run(unload_cmd(self.name, self.fs_type))

    async def mount(self, mountpoint: str = DEFAULT_MNT, options: str = "", *, fresh_device: bool = True) -> Mounted:
        """Mount the filesystem under test; block-backed shapes get a fresh loop device."""
        await self.target.run(["mkdir", "-p", mountpoint], check=True)
        if self.spec.device is None:
            await self.target.run(mount_argv(self.fs_type, self.fs_type, mountpoint, options), check=True)
            return Mounted(mountpoint, None)
        dev = await self.make_loop_device(tag=mountpoint.strip("/").replace("/", "_"))
        res = await self.target.run(mount_argv(self.fs_type, dev, mountpoint, options))
        if not res.ok:
            await self.target.run([LOSETUP, "-d", dev])
            raise AssertionError(f"mount -t {self.fs_type} {dev} {mountpoint} failed: {res.first_line()}")
        return Mounted(mountpoint, dev)

    async def make_loop_device(self, tag: str) -> str:
        loop = self.spec.device
        assert loop is not None, "make_loop_device needs a block-backed module (device: {loop, mkfs})"
        img = f"{GUEST_DIR}/{tag}.img"
        await self.target.run(["mkdir", "-p", GUEST_DIR], check=True)
        await self.target.run(image_cmd(img, loop.size_mb), check=True, timeout=120)
        dev = (await self.target.run([LOSETUP, "-f", "--show", img], check=True)).output.strip()
        mkfs_words = await self._guest_mkfs(loop.mkfs)
        mkfs = await self.target.run([*mkfs_words, dev], timeout=120)
        if not mkfs.ok:
            await self.target.run([LOSETUP, "-d", dev])
            raise AssertionError(f"mkfs on {dev} failed: {mkfs.first_line()}")
        return dev

    async def _guest_mkfs(self, words: tuple[str, ...]) -> list[str]:
        """A mkfs whose first word is a host path (e.g. VexFS's tools/mkfs.vexfs) is
        copied into the guest first; when ``<path>.c`` exists it is compiled statically
        on the host instead (the guest has no compiler)."""
        tool = Path(words[0])
        if not tool.is_absolute():
            return list(words)  # a guest tool such as mkfs.ext4
        src = tool.with_name(tool.name + ".c")  # not with_suffix: mkfs.vexfs -> mkfs.c
        # Source beats a binary beside it: VexFS commits a tools/mkfs.vexfs that may be
        # stale or linked against another libc than the guest's.
        if src.exists() and self.ctx.host is not None:
            out = self.ctx.workdir / tool.name
            if not out.exists():
                await self.ctx.host.run(["gcc", "-O2", "-static", "-o", str(out), str(src)], check=True, timeout=120)
            tool = out
        if not tool.exists():
            raise FileNotFoundError(f"device.mkfs: {tool} does not exist on the host (nor {src.name})")
        remote = f"{GUEST_DIR}/{tool.name}"
        await self.target.put(tool, remote)
        await self.target.run(["chmod", "+x", remote], check=True)
        return [remote, *words[1:]]

    async def unmount(self, m: Mounted) -> CommandResult:
        res = await self.target.run(["umount", m.mountpoint], timeout=60)
        if m.device:
            # Detach even when umount failed, so a failure never leaks loop devices.
            await self.target.run(detach_cmd(m.mountpoint, m.device))
        return res

    async def cleanup(self) -> None:
        """Best effort: unmount everything of ours, detach our loop devices, unload."""
        # One round trip (each costs ~0.1 s under TCG; every domain's setup and teardown runs this).
        await self.target.run(cleanup_cmd(self.name, self.fs_type), timeout=60)


@contextlib.asynccontextmanager
async def _file_lock(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        await asyncio.to_thread(fcntl.flock, fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


class ModuleDomain(DomainBase):
    """A domain whose tests need the module built, pushed and loaded, and (with
    ``mount_in_setup``) the filesystem mounted at ``self.m``. A build that failed makes
    every test SKIP with the compiler's first error as the reason."""

    mount_in_setup: bool = True
    load_in_setup: bool = True

    async def prepare_host(self) -> bool:
        """Build before the VM boots: a module that does not compile skips the domain
        without a boot; one that does is reused by ``setup_domain`` on the guest."""
        self.prerequisite_missing = await ModuleUnderTest(self).ensure_built()
        return self.prerequisite_missing is None

    async def setup_domain(self) -> bool:
        self.mod = ModuleUnderTest(self)
        await self.mod.cleanup()  # a previous domain run on this VM may have left it loaded
        why = await self.mod.ensure_ready()
        if why:
            self.prerequisite_missing = why
            return False
        if self.load_in_setup:
            await self.mod.ensure_loaded()
        if self.mount_in_setup:
            self.m: Mounted = await self.mod.mount(DEFAULT_MNT, str(option(self, "mount_options", "")))
        return await self.after_setup()

    async def after_setup(self) -> bool:
        return True

    async def teardown_domain(self) -> bool:
        await self.mod.cleanup()
        return True


TOOLS_DIR = Path(__file__).parent / "tools"


async def guest_tool(domain: DomainBase, name: str) -> str:
    """Compile ``domains/tools/<name>.c`` statically on the host (the guest has no
    compiler) and copy it into the guest; return its guest path."""
    assert domain.ctx.host is not None, "the runner gives domains a host target"
    binary = domain.ctx.workdir / name
    if not binary.exists():
        src = TOOLS_DIR / f"{name}.c"
        await domain.ctx.host.run(["gcc", "-O2", "-static", "-o", str(binary), str(src)], check=True, timeout=120)
    remote = f"{GUEST_DIR}/{name}"
    await domain.target.run(["mkdir", "-p", GUEST_DIR], check=True)
    await domain.target.put(binary, remote)
    await domain.target.run(["chmod", "+x", remote], check=True)
    return remote


async def timed(coro) -> tuple[Any, float]:
    t0 = time.monotonic()
    res = await coro
    return res, time.monotonic() - t0
