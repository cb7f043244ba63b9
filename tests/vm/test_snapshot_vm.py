"""Snapshot restore on real guests (issue 15): copies of one golden snapshot, at once.

Each test uses a provider with ``fleet.restore=auto``; the golden snapshot is
built by the first one (a cold boot + save) and found on disk by the others.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.conftest_vm import ENV, _check_host, first_event, vm_config
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.events import VmStateChanged

pytestmark = pytest.mark.vm


def _restore_config():  # type: ignore[no-untyped-def]
    cfg = vm_config()
    cfg.fleet.restore = "auto"
    return cfg


@pytest.fixture
async def provider(tmp_path: Path) -> AsyncIterator[tuple[object, EventBus, list[object]]]:
    from vexfs_cockpit.fleet.provider import LibvirtProvider

    cfg = _restore_config()
    _check_host(cfg)
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    events: list[object] = []
    bus.listen(events.append)
    p = LibvirtProvider(cfg, bus, tmp_path / "artifacts", env=ENV, run_id="pytest-snapshot")
    try:
        yield p, bus, events
    finally:
        await p.aclose()


def _state_reasons(events: list[object], vm: str) -> list[str]:
    return [f"{e.state}: {e.reason}" for e in events if isinstance(e, VmStateChanged) and e.vm == vm]


async def test_two_copies_at_once_answer_with_pinned_key_fresh_clock_and_randomness(provider) -> None:  # type: ignore[no-untyped-def]
    p, _bus, events = provider
    snap = await p.golden_snapshot()
    assert snap is not None, p._golden_why
    assert snap.path.stat().st_mode & 0o077 == 0, "the saved RAM holds the guest host key"
    domain = f"snap{os.getpid()}"
    async with p.lease(domain, 0) as a, p.lease(domain, 1) as b:
        assert a.vm_name != b.vm_name and a.extra["ssh_port"] != b.extra["ssh_port"]
        assert a.extra["boot"] == "restored" and b.extra["boot"] == "restored", (
            _state_reasons(events, a.vm_name) + _state_reasons(events, b.vm_name))
        outs = []
        for lease in (a, b):
            # The SshTarget pins the image's host key to this port (pinned_known_hosts):
            # connecting at all proves the restored guest shows the same key.
            res = await lease.target.run("date +%s; hostname; head -c16 /dev/urandom | od -An -tx1", timeout=30, check=True)
            host_now = time.time()
            guest_now, hostname, rand = res.output.strip().splitlines()[:3]
            assert abs(int(guest_now) - host_now) <= 2, f"guest clock {guest_now} vs host {host_now:.0f}"
            assert hostname == lease.vm_name
            outs.append(rand)
            # Console lines arrive after the restore, and klog attribution works (sync markers).
            assert lease.klog is not None
            n = await lease.klog.sync(lease.target, "after-restore", timeout=15)
            assert n >= 0
            res = await lease.target.run("echo restored-console-check > /dev/kmsg", timeout=10, check=True)
            assert await lease.klog.wait_for_text("restored-console-check", 0, 15) is not None
        assert outs[0] != outs[1], "two restored copies produced the same random bytes"
        reasons = _state_reasons(events, a.vm_name)
        assert "ready: boot #1" in reasons, reasons
        assert any(r.startswith("running: restored from snapshot in ") for r in reasons), reasons


async def test_reset_after_restore_restores_again(provider) -> None:  # type: ignore[no-untyped-def]
    p, _bus, events = provider
    async with p.lease(f"snapreset{os.getpid()}", 0) as lease:
        assert lease.extra["boot"] == "restored"
        await lease.target.run("echo 1 > /tmp/marker", timeout=10, check=True)
        await lease.vm.reset("test")  # type: ignore[union-attr]
        res = await lease.target.run("test -e /tmp/marker && echo kept || echo fresh", timeout=10)
        assert res.output.strip() == "fresh"
        assert lease.vm.boot_kind == "restored"  # type: ignore[union-attr]
        reasons = _state_reasons(events, lease.vm_name)
        assert [r for r in reasons if r.startswith("ready")][-1] == "ready: boot #2", reasons
        assert sum(r.startswith("running: restored from snapshot") for r in reasons) == 2, reasons


def _private_snapshots(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Snapshots under ``tmp_path``: a test that breaks or deletes one must not break the
    shared one other cockpits on this host are restoring (it costs a golden build)."""
    from vexfs_cockpit.fleet import snapshot as snapmod

    monkeypatch.setattr(snapmod, "snapshot_root", lambda _image_dir: tmp_path / "snapshots")


async def test_truncated_snapshot_falls_back_to_cold_boot_and_says_so(provider, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    p, _bus, events = provider
    _private_snapshots(monkeypatch, tmp_path)
    snap = await p.golden_snapshot()
    assert snap is not None, p._golden_why
    # Truncate the saved RAM behind the manifest's back (after the check at lookup).
    with open(snap.path, "r+b") as f:
        f.truncate(snap.size // 2)
    async with p.lease(f"snapbad{os.getpid()}", 0) as lease:
        assert lease.extra["boot"] == "cold"
        reasons = _state_reasons(events, lease.vm_name)
        assert any("cold boot: snapshot restore failed" in r for r in reasons), reasons
        res = await lease.target.run("true", timeout=10)
        assert res.ok
    assert snap.broken and not snap.dir.exists()  # the next provider rebuilds it


async def test_missing_snapshot_is_rebuilt(provider, monkeypatch, tmp_path) -> None:  # type: ignore[no-untyped-def]
    p, _bus, events = provider
    _private_snapshots(monkeypatch, tmp_path)
    from vexfs_cockpit.fleet import snapshot as snapmod

    prep = await p._prepare()
    snapmod.prune_snapshots(snapmod.snapshot_root(prep.image.dir), keep=None)
    snap = await p.golden_snapshot()
    assert snap is not None and snap.path.is_file()
    assert any("golden snapshot: building" in f"{e.reason}" for e in events if isinstance(e, VmStateChanged))


async def test_next_domains_vm_is_restored_ahead_and_a_released_copy_is_destroyed(provider) -> None:  # type: ignore[no-untyped-def]
    """A run restores its next domain's VM while the current domain holds its lease, and
    a restored VM is destroyed at release, never powered off from inside (issue 15)."""
    from vexfs_cockpit.engine.events import RunFinished, RunStarted
    from vexfs_cockpit.fleet.libvirt import vm_name

    p, bus, events = provider
    assert await p.golden_snapshot() is not None, p._golden_why
    first, second = f"ahead{os.getpid()}a", f"ahead{os.getpid()}b"
    second_vm = vm_name(ENV, second, 0)
    second_ready = asyncio.create_task(
        first_event(bus, VmStateChanged, lambda e: e.vm == second_vm and e.state == "ready", 120))
    await asyncio.sleep(0)
    bus.publish(RunStarted(run_id="pytest-ahead", config_path="", profile="selftest", env=ENV, domains=(first, second)))
    async with p.lease(first, 0) as a:
        assert a.extra["boot"] == "restored"
        await second_ready  # restored while the first domain still holds its VM
        first_vm = a.vm_name
    async with p.lease(second, 0) as b:
        assert b.vm_name == second_vm and b.extra["boot"] == "restored"
        assert _state_reasons(events, second_vm).count("ready: boot #1") == 1  # the same VM, not a second restore
        assert (await b.target.run("hostname", timeout=10, check=True)).output.strip() == second_vm
    bus.publish(RunFinished(run_id="pytest-ahead", status="passed", counts={}))
    await asyncio.gather(*p._background)
    for name in (first_vm, second_vm):
        reasons = _state_reasons(events, name)
        assert "stopped: destroyed" in reasons and not any("asked to shut down" in r and "guest" in r for r in reasons), reasons
        assert await p.fleet.state(name) == "undefined"
