"""The results table shows each changed test's verdict after its confirmation reruns
(issue 16 item 2) as a badge beside its status, live and for an earlier run."""

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
