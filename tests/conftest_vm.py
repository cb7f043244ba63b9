"""Fixtures for tests on a real booted guest (libvirt qemu:///system + the self-test image).

- ``guest``: a ready ``Lease`` on ONE VM booted once per test session. The VM,
  its serial console and its ``KernelLogBuffer`` (boot log included) live on a
  background asyncio loop for the whole session; each test gets its own SSH
  target and event bus on the test's loop (pytest-asyncio gives every test a new
  loop, and an SSH connection only works on the loop that opened it).
  ``lease.vm.reset()`` works; a test that leaves the guest dead (panic, hang)
  costs the next test a reset, not a failure. ``lease.extra["bus"]`` carries the
  VM's events (KernelLogLine, VmStateChanged, VmSample) onto the test's loop.
- ``fresh_guest``: a VM of its own for destructive tests, destroyed afterwards.

Without libvirt or the image these fixtures FAIL (CI must really run VM tests);
set VEXFS_ALLOW_SKIP_VM=1 to skip instead.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import threading
from collections.abc import AsyncIterator, Coroutine, Iterator
from concurrent.futures import Future
from pathlib import Path
from typing import Any, TypeVar

import pytest

from vexfs_cockpit.config.models import CockpitConfig
from vexfs_cockpit.engine.bus import EventBus, Subscription
from vexfs_cockpit.engine.provider import Lease
from vexfs_cockpit.errors import CockpitError

T = TypeVar("T")
ENV = "pytest"  # VM names: vexfs-pytest-<what><pid>-<n>; never clash with a dev cockpit's
_fresh_counter = itertools.count()


def vm_config() -> CockpitConfig:
    from vexfs_cockpit.config.load import load_config

    return load_config(None, os.environ.get("VEXFS_TEST_ENV", "test"))


def _unavailable(why: str) -> None:
    if os.environ.get("VEXFS_ALLOW_SKIP_VM") == "1":
        pytest.skip(f"no VM available: {why}")
    pytest.fail(f"VM tests need a real guest: {why} (set VEXFS_ALLOW_SKIP_VM=1 to skip them instead)", pytrace=False)


def _check_host(cfg: CockpitConfig) -> None:
    """Fail (or skip) with the reason when libvirt or the image is not usable."""
    import libvirt

    from vexfs_cockpit.fleet.events_thread import ensure_event_loop
    from vexfs_cockpit.images.initramfs import build_image

    ensure_event_loop()
    try:
        libvirt.open(cfg.fleet.libvirt_uri).close()
    except libvirt.libvirtError as err:
        _unavailable(f"cannot reach libvirt at {cfg.fleet.libvirt_uri} ({err.get_error_message()}): `virtlogd -d; libvirtd -d`")
    try:
        build_image(cfg.fleet)
    except CockpitError as err:
        _unavailable(f"guest image: {err}")


class BackgroundLoop:
    """An asyncio loop on its own thread, for objects that must outlive one test's loop."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="vm-fixture-loop", daemon=True)
        self._thread.start()

    def call(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        """Run ``coro`` there and wait for it (from sync code)."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    async def acall(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run ``coro`` there and await it from another loop."""
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self.loop)
        return await asyncio.wrap_future(fut)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=30)
        self.loop.close()


class SessionGuest:
    """The shared VM: booted on the background loop, kept up between tests."""

    def __init__(self, cfg: CockpitConfig, bg: BackgroundLoop, artifacts: Path):
        self.cfg = cfg
        self.bg = bg
        self.artifacts = artifacts
        self.name = ""
        self.kernel = ""
        self.vm: Any = None  # GuestVm (background loop)
        self.klog: Any = None  # KernelLogBuffer: thread-safe, usable from any loop
        self.bus: EventBus | None = None
        self._provider: Any = None

    async def boot(self) -> None:
        from vexfs_cockpit.fleet.libvirt import vm_name
        from vexfs_cockpit.fleet.provider import LibvirtProvider
        from vexfs_cockpit.engine.klog_buffer import KernelLogBuffer

        self.bus = EventBus()
        self._provider = LibvirtProvider(self.cfg, self.bus, self.artifacts, env=ENV, run_id="pytest-session")
        self.name = vm_name(ENV, f"guest{os.getpid()}", 0)
        self.klog = KernelLogBuffer(self.name)
        self.vm = await self._provider.boot_vm(self.name, klog=self.klog)
        res = await self.vm.target.run("uname -r", timeout=30, check=True)
        self.kernel = res.output.strip()

    async def ensure_ready(self) -> None:
        """Reset the VM if an earlier test left it dead or hung."""
        if await self.vm.state() != "ready" or not await self.vm.is_responsive(timeout=10):
            await self.vm.reset("an earlier test left the shared guest down")

    async def reset(self, reason: str) -> None:
        await self.vm.reset(reason)

    async def state(self) -> str:
        return str(await self.vm.state())

    async def forward(self, to: EventBus) -> tuple[Subscription, asyncio.Task[None]]:
        """Copy this VM's events onto another loop's bus (bus queues are not thread-safe)."""
        assert self.bus is not None
        sub = self.bus.subscribe()

        async def pump() -> None:
            async for ev in sub:
                if getattr(ev, "vm", self.name) == self.name:
                    to.publish_threadsafe(ev)

        return sub, asyncio.get_running_loop().create_task(pump())

    async def stop_forward(self, handle: tuple[Subscription, asyncio.Task[None]]) -> None:
        sub, task = handle
        sub.close()
        await asyncio.gather(task, return_exceptions=True)

    async def aclose(self) -> None:
        if self._provider is not None:
            await self._provider.aclose()


class SessionVmControl:
    """VmControl for a test: lifecycle on the background loop, SSH on the test's loop."""

    def __init__(self, guest: SessionGuest, target: Any):
        self._g = guest
        self._target = target
        self.name = guest.name

    async def reset(self, reason: str) -> None:
        await self._g.bg.acall(self._g.reset(reason))
        await self._target.reconnect()

    async def state(self) -> str:
        return await self._g.bg.acall(self._g.state())

    async def is_responsive(self, timeout: float = 5.0) -> bool:
        try:
            async with asyncio.timeout(timeout):
                res = await self._target.run("true", timeout=timeout)
        except (TimeoutError, CockpitError, OSError):
            return False
        return bool(res.ok)


def _ssh_target(guest_name: str, port: int, cfg: CockpitConfig) -> Any:
    from vexfs_cockpit.images.initramfs import build_image
    from vexfs_cockpit.transport.ssh import SshTarget

    img = build_image(cfg.fleet)  # cached: a manifest read
    return SshTarget(guest_name, "127.0.0.1", port, "root", client_keys=img.client_keys(),
                     known_hosts=img.host_key_known_hosts(), reconnect_deadline_s=60.0)


@pytest.fixture(scope="session")
def guest_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SessionGuest]:
    """The session's shared VM (booted once). Tests normally use ``guest``."""
    cfg = vm_config()
    _check_host(cfg)
    bg = BackgroundLoop()
    sg = SessionGuest(cfg, bg, tmp_path_factory.mktemp("vm-artifacts"))
    try:
        try:
            bg.call(sg.boot(), timeout=cfg.fleet.boot_timeout_s * 4)
        except CockpitError as err:
            pytest.fail(f"the shared test guest did not boot: {err}", pytrace=False)
        yield sg
    finally:
        bg.call(sg.aclose(), timeout=120)
        bg.close()


@pytest.fixture
async def guest(guest_session: SessionGuest) -> AsyncIterator[Lease]:
    """A ready Lease on the shared VM, with an SSH target and bus on this test's loop."""
    sg = guest_session
    await sg.bg.acall(sg.ensure_ready())
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    fwd = await sg.bg.acall(sg.forward(bus))
    target = _ssh_target(sg.name, sg.vm.ssh_port, sg.cfg)
    try:
        await target.connect()
        yield Lease(
            vm_name=sg.name, target=target, klog=sg.klog, vm=SessionVmControl(sg, target),
            guest_kernel=sg.kernel,
            extra={"bus": bus, "ssh_port": sg.vm.ssh_port, "console_log": str(sg.vm.console.log_path)},
        )
    finally:
        await target.close()
        await sg.bg.acall(sg.stop_forward(fwd))


@pytest.fixture
async def fresh_guest(tmp_path: Path) -> AsyncIterator[Lease]:
    """A VM of this test's own (destructive tests), destroyed afterwards."""
    from vexfs_cockpit.fleet.provider import LibvirtProvider

    cfg = vm_config()
    _check_host(cfg)
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    provider = LibvirtProvider(cfg, bus, tmp_path / "artifacts", env=ENV, run_id="pytest-fresh")
    try:
        async with provider.lease(f"fresh{os.getpid()}", next(_fresh_counter)) as lease:
            lease.extra["bus"] = bus
            lease.extra["provider"] = provider
            yield lease
    finally:
        await provider.aclose()


def _await_chain(coro: Any) -> list[str]:
    """A suspended coroutine's await chain, outermost first (``Task.get_stack`` stops at the top frame)."""
    chain = []
    while coro is not None:
        frame = getattr(coro, "cr_frame", None) or getattr(coro, "gi_frame", None)
        if frame is not None:
            chain.append(f"{Path(frame.f_code.co_filename).name}:{frame.f_lineno} {frame.f_code.co_name}")
        coro = getattr(coro, "cr_await", None) or getattr(coro, "gi_yieldfrom", None)
    return chain


def where_everything_is(frames: int = 6) -> str:
    """Every asyncio task's innermost awaits and every thread's innermost frames."""
    import sys
    import traceback

    out: list[str] = []
    for task in asyncio.all_tasks():
        chain = _await_chain(task.get_coro())[-frames:]
        out.append(f"task {task.get_name()}: {' -> '.join(chain) or '(no frames)'}")
    for ident, frame in sys._current_frames().items():
        stack = traceback.extract_stack(frame)[-frames:]
        out.append(f"thread {ident}: {' -> '.join(f'{Path(f.filename).name}:{f.lineno} {f.name}' for f in stack)}")
    return "\n".join(out)


async def within(coro: Coroutine[Any, Any, T], limit_s: float, what: str, tail: Any = None) -> T:
    """Await ``coro``; past ``limit_s`` fail with where every task and thread is stuck
    (pytest-timeout would only show the main thread idling in select)."""
    task = asyncio.ensure_future(coro)
    done, _ = await asyncio.wait([task], timeout=limit_s)
    if not done:
        dump = where_everything_is()
        task.cancel()
        await asyncio.wait([task], timeout=30)
        extra = f"\nlast lines:\n{tail()}" if tail is not None else ""
        pytest.fail(f"{what} did not finish within {limit_s:g}s; where it waited:\n{dump}{extra}", pytrace=False)
    return task.result()


async def first_event(bus: EventBus, kind: type, pred: Any, timeout: float) -> Any:
    """The first ``kind`` event on ``bus`` for which ``pred`` holds, within ``timeout``."""
    sub = bus.subscribe(kind)
    try:
        async with asyncio.timeout(timeout):
            async for ev in sub:
                if pred(ev):
                    return ev
    finally:
        sub.close()
    raise AssertionError("bus closed")
