"""The fleet on real guests (qemu:///system, TCG): boot, console, SSH, samples, panic,
reset, and no orphaned VM after Ctrl-C or a killed cockpit. Marked ``vm``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.events import KernelLogLine, VmSample, VmStateChanged
from vexfs_cockpit.engine.provider import Lease
from vexfs_cockpit.errors import CockpitError
from vexfs_cockpit.images.initramfs import READY_MARKER
from vexfs_cockpit.klog.model import Severity

from tests.conftest_vm import first_event

pytestmark = pytest.mark.vm

URI = "qemu:///system"


def _vexfs_domains(prefix: str) -> list[str]:
    out = subprocess.run(["virsh", "-c", URI, "list", "--all", "--name"], capture_output=True, text=True, check=True)
    return [n for n in out.stdout.split() if n.startswith(prefix)]


async def test_boot_console_lines_and_ssh(guest: Lease) -> None:
    bus: EventBus = guest.extra["bus"]  # type: ignore[assignment]
    res = await guest.target.run("echo hello; uname -r; hostname")
    assert res.ok and res.output.split() == ["hello", guest.guest_kernel, guest.vm_name]
    # the whole boot log is in the buffer: the VM started paused, the console attached first
    lines, _ = guest.klog.window(0)  # type: ignore[union-attr]
    assert lines[0].startswith("[    0.000000] Linux version " + guest.guest_kernel)
    assert any(ln.strip() == READY_MARKER for ln in lines)
    # a line written into the guest's kernel log arrives as a KernelLogLine with its number
    seen = asyncio.create_task(first_event(bus, KernelLogLine, lambda e: "vexfs-cockpit: fleet-vm-probe" in e.text, 20))
    await asyncio.sleep(0)
    line_no = await guest.klog.sync(guest.target, "fleet-vm-probe")  # type: ignore[union-attr]
    ev = await seen
    assert ev.vm == guest.vm_name and ev.line_no == line_no and ev.source == "console"
    assert "vexfs-cockpit: fleet-vm-probe" in Path(str(guest.extra["console_log"])).read_text(errors="replace")
    assert await guest.vm.is_responsive(timeout=5)  # type: ignore[union-attr]
    assert await guest.vm.state() == "ready"  # type: ignore[union-attr]


async def test_health_samples_arrive_at_1hz(guest: Lease) -> None:
    bus: EventBus = guest.extra["bus"]  # type: ignore[assignment]
    sub = bus.subscribe(VmSample)
    got: list[VmSample] = []
    async with asyncio.timeout(10):
        async for ev in sub:
            got.append(ev)  # type: ignore[arg-type]
            if len(got) == 3:
                break
    sub.close()
    assert {e.vm for e in got} == {guest.vm_name}
    assert all(e.state == "ready" and e.mem_kb > 10_000 and 0 <= e.cpu_pct <= 400 for e in got)
    assert all(e.net_rx_bytes == 0 and e.block_rd_bytes == 0 for e in got)  # n/a; no disk
    gaps = [b.ts - a.ts for a, b in zip(got, got[1:])]
    assert all(0.5 < g < 2.0 for g in gaps), gaps


async def test_panic_stops_the_vm_and_reset_recovers(fresh_guest: Lease) -> None:
    g = fresh_guest
    bus: EventBus = g.extra["bus"]  # type: ignore[assignment]
    assert g.klog is not None and g.vm is not None
    await g.target.run("touch /tmp/before-panic", check=True)
    start = g.klog.cursor()
    stopped = asyncio.create_task(
        first_event(bus, VmStateChanged, lambda e: e.vm == g.vm_name and e.state == "stopped", 60))
    await asyncio.sleep(0)
    try:
        await g.target.run("echo c > /proc/sysrq-trigger", timeout=10)
    except CockpitError:
        pass  # the link dies with the kernel
    await stopped  # panic=-1 + on_reboot=destroy: the domain stops, visibly
    rep = await g.klog.wait_for({"panic"}, start, timeout=30)
    assert rep is not None and rep.severity == Severity.CRITICAL and "sysrq" in rep.title
    assert not await g.vm.is_responsive(timeout=3)
    assert await g.vm.state() in ("stopped", "undefined")

    ready = asyncio.create_task(
        first_event(bus, VmStateChanged, lambda e: e.vm == g.vm_name and e.state == "ready", 200))
    await asyncio.sleep(0)
    await g.vm.reset("test: after a panic")
    assert (await ready).reason == "boot #2"
    # the same target object works again, on a freshly booted guest
    res = await g.target.run("test -e /tmp/before-panic; echo $?; cut -d. -f1 /proc/uptime")
    gone, uptime = res.output.split()
    assert gone == "1" and int(uptime) < 120
    assert await g.vm.state() == "ready" and await g.vm.is_responsive(timeout=5)
    # the log keeps counting: the second boot's lines follow the panic
    lines, _ = g.klog.window(start)
    panic_at = next(i for i, ln in enumerate(lines) if "Kernel panic - not syncing" in ln)
    assert any("Linux version" in ln for ln in lines[panic_at:])
    assert any(ln.strip() == READY_MARKER for ln in lines[panic_at:])


CHILD = r"""
import asyncio, sys
from pathlib import Path
from vexfs_cockpit.config.load import load_config
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.events import VmStateChanged
from vexfs_cockpit.fleet.provider import LibvirtProvider

async def main(env: str, art: str) -> None:
    cfg = load_config(None, "test")
    bus = EventBus()
    bus.listen(lambda ev: isinstance(ev, VmStateChanged) and print("STATE", ev.state, flush=True))
    p = LibvirtProvider(cfg, bus, Path(art), env=env)
    try:
        async with p.lease("sig", 0) as lease:
            print("READY", flush=True)
            await lease.target.run("sleep 600", timeout=900)
    finally:
        await p.aclose()

asyncio.run(main(sys.argv[1], sys.argv[2]))
"""


async def _child_until(env: str, tmp_path: Path, marker: str) -> asyncio.subprocess.Process:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", CHILD, env, str(tmp_path), stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    seen: list[str] = []
    async with asyncio.timeout(240):
        while True:
            line = (await proc.stdout.readline()).decode(errors="replace").strip()
            if not line and proc.returncode is not None:
                pytest.fail(f"child ended before {marker!r}: {seen[-10:]}")
            seen.append(line)
            if line == marker:
                return proc


@pytest.mark.parametrize("moment", ["STATE booting", "READY"], ids=["mid-boot", "mid-run"])
async def test_sigint_leaves_no_vm(moment: str, tmp_path: Path) -> None:
    env = f"sig{os.getpid()}"
    proc = await _child_until(env, tmp_path, moment)
    assert _vexfs_domains(f"vexfs-{env}-") == [f"vexfs-{env}-sig-0"]
    proc.send_signal(signal.SIGINT)
    async with asyncio.timeout(90):
        await proc.communicate()
    assert proc.returncode != 0  # interrupted, not finished
    assert _vexfs_domains(f"vexfs-{env}-") == []


async def test_killed_cockpit_vm_is_reaped_by_the_next(tmp_path: Path) -> None:
    from vexfs_cockpit.fleet.libvirt import FleetManager

    env = f"kill{os.getpid()}"
    proc = await _child_until(env, tmp_path, "READY")
    proc.kill()  # no cleanup runs: the VM stays behind, owned by a dead pid
    await proc.wait()
    assert _vexfs_domains(f"vexfs-{env}-") == [f"vexfs-{env}-sig-0"]
    fm = FleetManager(URI, EventBus(), env)
    try:
        reaped = await fm.connect(reap=True)
    finally:
        await fm.aclose()
    assert f"vexfs-{env}-sig-0" in reaped
    assert _vexfs_domains(f"vexfs-{env}-") == []
