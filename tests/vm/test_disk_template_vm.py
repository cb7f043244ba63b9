"""The ``disk`` template on a real guest: a qcow2 overlay on the Debian base image plus a
cloud-init seed, booted by the provider under TCG, then SSH, the console stream, the
fixture module end to end and the kernel_module domain with the real Runner.

Opt-in, because the base image takes minutes to build and the guest ~1-2 min to boot:
- ``VEXFS_BASE_IMAGE_PATH=/path/base.qcow2``: boot that image;
- ``VEXFS_TEST_DISK_TEMPLATE=build``: build (or reuse the cached) `vexfs-cockpit image base`.
Otherwise every test here is skipped, saying so.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio

from vexfs_cockpit.config.load import load_config
from vexfs_cockpit.config.models import CockpitConfig
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.events import KernelLogLine
from vexfs_cockpit.engine.provider import Lease
from vexfs_cockpit.engine.results import TestStatus
from vexfs_cockpit.images.initramfs import READY_MARKER

from tests.conftest_vm import first_event

pytestmark = pytest.mark.vm

ENV = "pytest"
FIXTURE = Path(__file__).parent.parent / "fixtures" / "selftest_fs"
REMOTE_KO = "/tmp/vexfs_selftest.ko"
MNT = "/mnt/vst_disk"
SKIP_WHY = (
    "the disk template boots a Debian base image (minutes): set VEXFS_BASE_IMAGE_PATH=/path/base.qcow2, "
    "or VEXFS_TEST_DISK_TEMPLATE=build to build/reuse `vexfs-cockpit image base`"
)


def _disk_config() -> CockpitConfig:
    env_path = os.environ.get("VEXFS_BASE_IMAGE_PATH")
    if env_path:
        base = Path(env_path)
    elif os.environ.get("VEXFS_TEST_DISK_TEMPLATE") == "build":
        from vexfs_cockpit.images.base import build_base_image

        base = build_base_image(load_config(None, "test").fleet, progress=print).path
    else:
        pytest.skip(SKIP_WHY)
    return load_config(None, "test", {"fleet.template": "disk", "fleet.base_image_path": str(base)})


@pytest_asyncio.fixture
async def disk_guest(tmp_path: Path) -> AsyncIterator[tuple[Lease, EventBus, float]]:
    """A disk-template VM through the provider's lease (what `run` uses); destroyed afterwards."""
    from vexfs_cockpit.fleet.provider import LibvirtProvider

    cfg = _disk_config()
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    provider = LibvirtProvider(cfg, bus, tmp_path / "artifacts", env=ENV, run_id="pytest-disk")
    try:
        await provider.prepare()  # image + accelerator probe: not part of the boot time
        started = time.monotonic()
        async with provider.lease(f"disk{os.getpid()}", 0) as lease:
            yield lease, bus, time.monotonic() - started
        # the overlay and the seed (it holds the guest host key) go with the VM
        from vexfs_cockpit.images.disk import vm_dir

        assert not vm_dir(provider._prepared.image, lease.vm_name).exists()  # type: ignore[union-attr,arg-type]
    finally:
        await provider.aclose()


async def _sh(lease: Lease, cmd: str, timeout: float = 120.0) -> str:
    return (await lease.target.run(cmd, timeout=timeout, check=True)).output


@pytest.mark.timeout(1800)  # boot (minutes under TCG) + the kernel_module domain
async def test_disk_guest_boots_runs_ssh_streams_console_and_the_fixture_module(
    disk_guest: tuple[Lease, EventBus, float], tmp_path: Path
) -> None:
    from tests.support.e2e import results_by_name, run_domains
    from vexfs_cockpit.builds.kbuild import kbuild
    from vexfs_cockpit.transport.local import LocalTarget

    g, bus, boot_s = disk_guest
    print(f"disk guest {g.vm_name} ready in {boot_s:.1f} s (boot to ready marker + SSH, TCG)")

    # booted from the distro image, not the initramfs: systemd is PID 1 and the seed ran
    res = await g.target.run("echo hello; uname -r; hostname; cat /proc/1/comm; . /etc/os-release; echo $ID")
    assert res.ok, res.output
    assert res.output.split() == ["hello", g.guest_kernel, g.vm_name.replace("_", "-"), "systemd", "debian"]
    # cloud-init took the seed without a schema complaint
    schema = await g.target.run("cloud-init schema --system", timeout=120)
    assert schema.ok and "Valid" in schema.output, schema.output

    # the boot log arrived through the console stream (VM started paused, console attached first)
    lines, _ = g.klog.window(0)  # type: ignore[union-attr]
    assert any(f"Linux version {g.guest_kernel}" in ln for ln in lines)
    assert any(ln.strip() == READY_MARKER for ln in lines)
    console_log = Path(str(g.extra["console_log"]))
    # a line written into the guest's kernel log comes back as a KernelLogLine event
    seen = asyncio.create_task(first_event(bus, KernelLogLine, lambda e: "vexfs-cockpit: disk-probe" in e.text, 30))
    await asyncio.sleep(0)
    line_no = await g.klog.sync(g.target, "disk-probe", timeout=30)  # type: ignore[union-attr]
    ev = await seen
    assert ev.vm == g.vm_name and ev.line_no == line_no and ev.source == "console"
    assert "vexfs-cockpit: disk-probe" in console_log.read_text(errors="replace")

    # the watchdog's settings hold on this guest too
    assert (await _sh(g, "cat /proc/sys/kernel/hung_task_timeout_secs")).strip() == "5"
    assert (await _sh(g, "cat /proc/sys/kernel/sysrq")).strip() != "0"
    # the tools domains call by path resolve on the distro image
    from domains._common import LOSETUP

    await _sh(g, f"test -x {LOSETUP} && command -v mkfs.ext4 fio flock setpriv insmod rmmod sha256sum")

    # the fixture module: built on the host for the guest's kernel, loaded, used, unloaded
    built = await kbuild(FIXTURE, g.guest_kernel, tmp_path / "kbuild", LocalTarget())
    assert built.ok and built.ko is not None, built.message
    await g.target.put(built.ko, REMOTE_KO)
    data = os.urandom(1 << 20)
    (tmp_path / "data.bin").write_bytes(data)
    await g.target.put(tmp_path / "data.bin", "/tmp/vst_data.bin")
    await _sh(g, f"insmod {REMOTE_KO}")
    assert "vexfs_selftest" in await _sh(g, "cat /proc/filesystems")
    await _sh(g, f"mkdir -p {MNT} && mount -t vexfs_selftest -o size=4M none {MNT}")
    await _sh(g, f"cp /tmp/vst_data.bin {MNT}/f && sync")
    assert (await _sh(g, f"sha256sum {MNT}/f")).split()[0] == hashlib.sha256(data).hexdigest()
    await _sh(g, f"umount {MNT} && rmmod vexfs_selftest")
    assert "vexfs_selftest" not in await _sh(g, "cat /proc/filesystems /proc/modules")

    # the kernel_module domain of the default profile, with the real Runner, on this guest
    cfg = load_config(None, "test")
    summary = await run_domains(g, cfg, ["kernel_module"], tmp_path / "run", env="pytest-disk")
    results = results_by_name(summary, "kernel_module")
    assert results, "the kernel_module domain ran no test"
    bad = {n: f"{r.status.value}: {r.message}" for n, r in results.items() if r.status is not TestStatus.PASSED}
    assert not bad, f"kernel_module on the disk guest: {bad}"

    # a reset reboots the same overlay and seed (cloud-init's per-instance steps do not
    # run again): the ready marker must come again, and SSH with the same host key
    cursor = g.klog.cursor()  # type: ignore[union-attr]
    started = time.monotonic()
    await g.vm.reset("disk template reset test")  # type: ignore[union-attr]
    print(f"disk guest reset to ready in {time.monotonic() - started:.1f} s")
    since_reset = g.klog.window(cursor)[0]  # type: ignore[union-attr]
    assert [ln.strip() for ln in since_reset if ln.strip() == READY_MARKER] == [READY_MARKER]
    assert any(f"Linux version {g.guest_kernel}" in ln for ln in since_reset)
    up = float((await _sh(g, "cut -d' ' -f1 /proc/uptime")).strip())
    assert up < time.monotonic() - started + 5  # a new boot, not the old guest
    assert (await _sh(g, "cat /proc/sys/kernel/hung_task_timeout_secs")).strip() == "5"
