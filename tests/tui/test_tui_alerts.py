"""A live alert (monitoring/live.py publishes AlertFired on the session's bus) shows as
a notification in the TUI."""

from __future__ import annotations

from tests.support.tui import cockpit, feed
from vexfs_cockpit.engine.events import AlertFired


async def test_a_fired_alert_is_a_notification() -> None:
    async with cockpit() as (app, pilot, notes):
        await feed(app, pilot, [
            AlertFired(run_id="r1", rule="KernelCrash", kind="kernel_crash", severity="critical",
                       summary="kernel oops in kernel_module/load: BUG: unable to handle page fault"),
            AlertFired(run_id="r1", rule="TestTimedOut", kind="test_timeout", severity="warning",
                       summary="kernel_module/stress timed out (300s) (env ci)"),
        ])
    assert ("kernel oops in kernel_module/load: BUG: unable to handle page fault", "error") in notes
    assert ("kernel_module/stress timed out (300s) (env ci)", "warning") in notes
