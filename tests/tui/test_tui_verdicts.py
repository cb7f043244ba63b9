"""Issue 16 in the TUI: the results table shows each changed test's verdict after its
confirmation reruns (item 2) as a badge beside its status, live and for an earlier run;
the domain table says how far a running test is past its p95 in history (item 6)."""

from __future__ import annotations

from textual.widgets import DataTable

from tests.support.tui import T0, UiBackend, cells, cockpit, feed, mid_run_events
from vexfs_cockpit.engine.events import RunFinished, RunStarted, TestVerdict
from vexfs_cockpit.tui.screens.results import ResultsScreen


async def test_results_table_shows_the_verdict_badge_of_a_confirmed_regression():
    async with cockpit(UiBackend(), size=(120, 30)) as (app, pilot, _):
        await feed(app, pilot, mid_run_events())
        await pilot.press("r")
        assert isinstance(app.screen, ResultsScreen)
        table = app.screen.query_one("#results", DataTable)
        assert cells(table, 1)[2] == "FAILED"  # no verdict yet: the run is still running
        await feed(app, pilot, [
            TestVerdict(run_id="run-1", domain="kernel_module", test="module_load", verdict="regression", now="FAILED",
                        before="PASSED", reference="baseline run-0", reruns=("FAILED",) * 3, ts=T0),
            RunFinished(run_id="run-1", status="failed", counts={}, ts=T0 + 1),
        ])
        assert cells(table, 1)[1:3] == ["module_load", "FAILED NEW REGRESSION"]
        assert cells(table, 0)[2] == "PASSED"  # module_build did not change: no badge
        # A new run starts: the earlier run keeps its badges one key (b) away.
        await feed(app, pilot, [RunStarted(run_id="run-2", config_path="c", profile="selftest", env="dev",
                                           domains=("kernel_module",), ts=T0 + 2)])
        assert table.row_count == 0
        await pilot.press("b")
        await pilot.pause()
        assert cells(table, 1)[2] == "FAILED NEW REGRESSION"


async def test_a_running_test_past_its_p95_says_by_how_much_live():
    from tests.support.tui import VM_A
    from vexfs_cockpit.engine.events import DomainStarted, TestStarted

    async with cockpit(UiBackend(), size=(120, 30)) as (app, pilot, _):
        await feed(app, pilot, [
            RunStarted(run_id="run-1", config_path="c", profile="selftest", env="dev", domains=("kernel_module",), ts=T0 - 30),
            DomainStarted(run_id="run-1", domain="kernel_module", vm=VM_A, planned_tests=("module_build", "stress"), ts=T0 - 30),
            # deadline from history: p95 3 s; it started 15 s ago (the clock is T0)
            TestStarted(run_id="run-1", domain="kernel_module", test="module_build", attempt=1, vm=VM_A,
                        deadline_s=60.0, p95_s=3.0, ts=T0 - 15),
        ])
        doms = app.screen.query_one("#domains", DataTable)
        assert cells(doms, 0)[3] == "module_build 12s over its p95"
        # A test whose deadline is not from history, or still within its p95, shows its name only.
        await feed(app, pilot, [TestStarted(run_id="run-1", domain="kernel_module", test="stress", attempt=1, vm=VM_A,
                                            deadline_s=300.0, ts=T0 - 15)])
        assert cells(doms, 0)[3] == "stress"
        await feed(app, pilot, [TestStarted(run_id="run-1", domain="kernel_module", test="stress", attempt=2, vm=VM_A,
                                            deadline_s=60.0, p95_s=20.0, ts=T0 - 15)])
        assert cells(doms, 0)[3] == "stress (try 2)"


async def test_the_run_summary_says_the_changed_tests_are_being_confirmed():
    from vexfs_cockpit.engine.events import ConfirmStarted, TestRerun
    from vexfs_cockpit.engine.results import TestStatus

    async with cockpit(UiBackend(), size=(160, 30)) as (app, pilot, _):
        await feed(app, pilot, mid_run_events())
        await feed(app, pilot, [
            ConfirmStarted(run_id="run-1", tests=("kernel_module/module_load",), reruns=3, ts=T0),
            TestRerun(run_id="run-1", domain="kernel_module", test="module_load", number=2, of=3,
                      status=TestStatus.FAILED, ts=T0),
        ])
        summary = app.screen.query_one("#summary").render()
        assert "confirming 1 changed test on fresh VMs: rerun kernel_module/module_load 2/3" in str(summary)
        await feed(app, pilot, [RunFinished(run_id="run-1", status="failed", counts={}, ts=T0 + 1)])
        assert "confirming" not in str(app.screen.query_one("#summary").render())
