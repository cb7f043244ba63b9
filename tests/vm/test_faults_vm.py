"""Faults on a real guest: the SSH link dropped under a running test never reads as a
pass (issue 13's fault suite; the store's faults are in test_faults_store.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from tests.support.e2e import ROOT, LeaseProvider, cfg_with
from vexfs_cockpit import DomainBase, TestResult, TestStatus
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.provider import Lease
from vexfs_cockpit.engine.runner import RunRequest, Runner
from vexfs_cockpit.transport.local import LocalTarget

pytestmark = [pytest.mark.vm, pytest.mark.timeout(300)]


class SshDropDomain(DomainBase):
    """Kills every dropbear (its own session's too) in the middle of a command."""

    async def test_link_dropped_mid_command(self) -> TestResult:
        res = await self.target.run("sleep 1; kill -9 $(pidof dropbear); sleep 3; echo finished", timeout=60)
        if res.ok and "finished" in res.output:
            return TestResult(status=TestStatus.PASSED, message="the command finished")
        return TestResult(status=TestStatus.FAILED, message=f"exit {res.exit_code}: {res.first_line()}")

    async def test_after_the_drop(self) -> TestResult:
        res = await self.target.run("echo back", timeout=60)
        ok = res.ok and res.output.strip() == "back"
        return TestResult(status=TestStatus.PASSED if ok else TestStatus.FAILED, message=res.output.strip())


async def test_a_dropped_ssh_link_is_never_a_silent_pass(guest: Lease, tmp_path: Path) -> None:
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    runner = Runner(bus, LeaseProvider(guest), {"ssh_drop": SshDropDomain}, host=LocalTarget("host"))
    req = RunRequest(
        config=cfg_with(), domains=["ssh_drop"], run_id=f"faults-{time.strftime('%H%M%S')}",
        env="faults", artifacts_dir=tmp_path, project_root=ROOT,
    )
    summary = await runner.execute(req)
    by_name = {r.name: r for r in summary.results}
    dropped = by_name["link_dropped_mid_command"]
    assert dropped.status in (TestStatus.ERROR, TestStatus.FAILED), (dropped.status, dropped.message)
    assert dropped.status is not TestStatus.PASSED
    # The transport reconnects (busybox init respawns dropbear): the next test runs for real.
    assert by_name["after_the_drop"].status is TestStatus.PASSED, by_name["after_the_drop"].message
    assert summary.exit_code != 0
