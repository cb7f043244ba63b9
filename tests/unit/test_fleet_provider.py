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
