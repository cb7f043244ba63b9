"""LibvirtProvider without a VM: run-id tracking, klog flush on a stopped VM, the
unreachable-libvirt error, SIGTERM as cancel. Real leases are in test_fleet_vm.py."""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import pytest

from vexfs_cockpit.config.models import CockpitConfig, FleetSettings
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.events import RunStarted, VmStateChanged
from vexfs_cockpit.errors import InfraError
from vexfs_cockpit.fleet.libvirt import NameTaken
from vexfs_cockpit.fleet.provider import LibvirtProvider, cancel_on_sigterm


def _cfg(uri: str = "qemu+unix:///system?socket=/nonexistent/libvirt-sock") -> CockpitConfig:
    return CockpitConfig(env="test", fleet=FleetSettings(libvirt_uri=uri))


async def test_lease_without_libvirt_is_one_infra_error(tmp_path: Path) -> None:
    p = LibvirtProvider(_cfg(), EventBus(), tmp_path)
    with pytest.raises(InfraError) as ei:
        async with p.lease("kernel_module", 0):
            pytest.fail("no lease without libvirt")
    assert "\n" not in str(ei.value) and "libvirtd -d" in str(ei.value)
    await p.aclose()
    with pytest.raises(InfraError, match="closed"):
        async with p.lease("kernel_module", 0):
            pass


async def test_run_id_and_console_log_follow_run_started(tmp_path: Path) -> None:
    bus = EventBus()
    p = LibvirtProvider(_cfg(), bus, tmp_path)
    assert p._console_log("vexfs-test-a-0") == tmp_path / "no-run" / "console" / "vexfs-test-a-0.log"
    bus.publish(RunStarted(run_id="r42", config_path="", profile="selftest", env="test", domains=()))
    assert p.run_id == "r42" and p.fleet.run_id == "r42"
    assert p._console_log("vexfs-test-a-0") == tmp_path / "r42" / "console" / "vexfs-test-a-0.log"
    await p.aclose()


async def test_a_stopped_vm_flushes_its_klog(tmp_path: Path) -> None:
    """panic=-1 kills the guest mid-report: the half-collected report must be closed."""

    class Klog:
        flushed = 0

        def flush(self) -> list[object]:
            self.flushed += 1
            return []

    class Vm:
        klog = Klog()

    bus = EventBus()
    p = LibvirtProvider(_cfg(), bus, tmp_path)
    p._vms["vexfs-test-a-0"] = Vm()  # type: ignore[assignment]
    bus.publish(VmStateChanged(vm="vexfs-test-a-0", state="running"))
    bus.publish(VmStateChanged(vm="vexfs-test-other-0", state="stopped"))
    assert Vm.klog.flushed == 0
    bus.publish(VmStateChanged(vm="vexfs-test-a-0", state="stopped", reason="shutdown"))
    assert Vm.klog.flushed == 1
    p._vms.clear()
    await p.aclose()


async def test_sigterm_cancels_the_main_task() -> None:
    started = asyncio.Event()

    async def main() -> str:
        started.set()
        await asyncio.Event().wait()  # a run in progress
        return "finished"

    task = asyncio.create_task(main())
    cancel_on_sigterm(task)  # type: ignore[arg-type]
    try:
        await started.wait()
        os.kill(os.getpid(), signal.SIGTERM)
        with pytest.raises(asyncio.CancelledError):
            await task
    finally:
        asyncio.get_running_loop().remove_signal_handler(signal.SIGTERM)


# -- restoring the next domain's VM ahead (fleet.restore=auto) ---------------------------------


class _FakeVm:
    def __init__(self, name: str, alive: bool = True) -> None:
        self.name, self.klog, self.alive, self.closed = name, None, alive, False

    async def is_responsive(self, timeout: float = 5.0) -> bool:
        return self.alive

    async def aclose(self, grace_s: float = 10.0) -> None:
        self.closed = True


def _ahead_provider(tmp_path: Path, *, restore: str = "auto", cpus_cap: int = 2, fail: set[str] | None = None,  # type: ignore[no-untyped-def]
                    taken: set[str] | None = None):
    cfg = _cfg()
    cfg.fleet.restore = restore  # type: ignore[assignment]
    cfg.resources.cpus, cfg.resources.max_total_cpus = 1, cpus_cap
    bus = EventBus()
    p = LibvirtProvider(cfg, bus, tmp_path)
    made: list[_FakeVm] = []

    async def golden() -> object:
        return object()

    async def free_name(domain: str, index: int, skip: frozenset[str] = frozenset()) -> str:
        return next(n for n in (f"vexfs-test-{domain}-{i}" for i in range(index, index + 9)) if n not in skip)

    async def boot_vm(name: str, **kw: object) -> _FakeVm:
        if fail and any(d in name for d in fail):
            raise InfraError(f"VM {name} did not come up")
        if taken and name in taken:  # another cockpit created it between our check and our create
            raise NameTaken(f"VM {name} already exists")
        vm = _FakeVm(name)
        made.append(vm)
        p._vms[name] = vm  # type: ignore[assignment]
        return vm

    p.golden_snapshot, p._free_name, p.boot_vm = golden, free_name, boot_vm  # type: ignore[method-assign]
    return p, bus, made


def _started(bus: EventBus, *domains: str, parallel: int = 1) -> None:
    bus.publish(RunStarted(run_id="r1", config_path="", profile="selftest", env="test", domains=domains, parallel=parallel))


async def test_the_next_domains_vm_is_restored_while_the_current_one_runs(tmp_path: Path) -> None:
    p, bus, made = _ahead_provider(tmp_path)
    _started(bus, "a", "b", "c")
    vm = await p._take_spare("a")  # the first domain's VM started restoring at RunStarted
    assert vm is not None and vm.name == "vexfs-test-a-0"
    p._refill()  # what lease() does once its VM is up
    assert p._spare is not None and p._spare[0] == "b"
    b = await p._take_spare("b")
    assert b is not None and b.name == "vexfs-test-b-0" and [v.name for v in made] == ["vexfs-test-a-0", "vexfs-test-b-0"]
    await p.aclose()


async def test_a_spare_for_a_skipped_domain_is_destroyed(tmp_path: Path) -> None:
    p, bus, made = _ahead_provider(tmp_path)
    _started(bus, "a", "b", "c")
    await p._take_spare("a")
    p._refill()  # restores b's VM ...
    assert await p._take_spare("c") is None  # ... but b was skipped: one domain at a time, c comes next
    await asyncio.gather(*p._background)
    assert made[1].name == "vexfs-test-b-0" and made[1].closed and "vexfs-test-b-0" not in p._vms
    p._refill()
    assert p._spare is None  # nothing is planned after c
    await p.aclose()


async def test_a_failed_or_dead_spare_means_the_lease_boots_its_own(tmp_path: Path) -> None:
    p, bus, made = _ahead_provider(tmp_path, fail={"a"})
    _started(bus, "a", "b")
    assert await p._take_spare("a") is None  # the restore ahead failed: lease() boots one
    p._refill()
    assert p._spare is not None
    await asyncio.sleep(0)  # let b's spare come up
    made[-1].alive = False  # ... and die while it waits
    assert await p._take_spare("b") is None
    assert made[-1].closed
    await p.aclose()


async def test_no_spare_when_restore_is_off_or_the_caps_leave_no_room(tmp_path: Path) -> None:
    for kw in ({"restore": "off"}, {"cpus_cap": 1}):
        p, bus, made = _ahead_provider(tmp_path, **kw)  # type: ignore[arg-type]
        _started(bus, "a", "b")
        assert p._spare is None and await p._take_spare("a") is None and not made
        await p.aclose()


async def test_run_finished_destroys_an_unused_spare(tmp_path: Path) -> None:
    from vexfs_cockpit.engine.events import RunFinished

    p, bus, made = _ahead_provider(tmp_path)
    _started(bus, "a", "b")
    await p._take_spare("a")
    p._refill()
    spare = p._spare
    assert spare is not None
    await spare[1]
    bus.publish(RunFinished(run_id="r1", status="aborted", counts={}))
    await asyncio.gather(*p._background)
    assert made[-1].name == "vexfs-test-b-0" and made[-1].closed and p._spare is None
    await p.aclose()


async def test_a_name_another_cockpit_took_meanwhile_is_skipped(tmp_path: Path) -> None:
    p, bus, made = _ahead_provider(tmp_path, taken={"vexfs-test-a-0"})
    vm = await p._boot_fresh("a", 0)
    assert vm.name == "vexfs-test-a-1" and [v.name for v in made] == ["vexfs-test-a-1"]
    await p.aclose()
