"""Pilot tests of the history side against a real SQLite DB written by the store's
Recorder from real events (three runs over three days)."""

from __future__ import annotations

import gc
from pathlib import Path

import pytest
from textual.widgets import DataTable, Select

from vexfs_cockpit.store.history import History
from vexfs_cockpit.tui.backend import RunFilter, RunRequest, TestRef
from vexfs_cockpit.tui.internals import screen_strips
from vexfs_cockpit.tui.screens.compare import CompareScreen
from vexfs_cockpit.tui.screens.crashes import CrashesScreen
from vexfs_cockpit.tui.screens.history import PAGE, HistoryScreen
from vexfs_cockpit.tui.screens.run_detail import RunDetailScreen
from vexfs_cockpit.tui.screens.trends import TrendsScreen
from vexfs_cockpit.tui.widgets.key_bar import KeyBar
from vexfs_cockpit.tui.widgets.trend_chart import TrendChart

from tests.support.store import dbgen
from tests.support.tui import cells, cockpit, rendered, settle
from tests.support.tui import UiBackend, db, screen_text, utc  # noqa: F401 (fixtures)


def runs_table(app) -> DataTable:
    return app.screen.query_one("#runs", DataTable)


def styled_frame(app) -> list[list[tuple[str, object]]]:
    return [[(seg.text, seg.style) for seg in strip] for strip in screen_strips(app.screen)]


def run_ids(app) -> list[str]:
    t = runs_table(app)
    return [cells(t, i)[1] for i in range(t.row_count)]


async def test_history_lists_runs_and_filters(db, utc):
    async with cockpit(UiBackend(db_path=db)) as (app, pilot, _):
        await pilot.press("h")
        await settle(app, pilot)
        assert isinstance(app.screen, HistoryScreen)
        assert run_ids(app) == ["run-c", "run-b", "run-a"]
        row = cells(runs_table(app), 0)
        assert row[2:6] == ["2025-11-23 16:00", "ci", "failed", "2 1 0"]
        assert "History — 3 runs" in screen_text(app)

        app.screen.query_one("#f-env", Select).value = "dev"
        await settle(app, pilot)
        assert run_ids(app) == ["run-b", "run-a"]
        app.screen.query_one("#f-status", Select).value = "passed"
        await settle(app, pilot)
        assert run_ids(app) == ["run-a"]
        app.screen.query_one("#f-env", Select).clear()
        app.screen.query_one("#f-status", Select).clear()
        app.screen.query_one("#f-period", Select).value = "24h"  # clock is T0: run-c began T0-1d
        await settle(app, pilot)
        assert run_ids(app) == ["run-c"]
        app.screen.query_one("#f-period", Select).clear()
        await settle(app, pilot)

        await pilot.press("slash")
        await pilot.press(*"selftest_write", "enter")  # a kernel event title
        await settle(app, pilot)
        assert run_ids(app) == ["run-b"]
        assert "“selftest_write”" in screen_text(app)


async def test_run_detail_has_tests_evidence_domains_and_events(db, utc):
    be = UiBackend(db_path=db)
    async with cockpit(be) as (app, pilot, _):
        await pilot.press("h")
        await settle(app, pilot)
        await pilot.press("enter")  # newest: run-c
        await settle(app, pilot)
        assert isinstance(app.screen, RunDetailScreen)
        text = screen_text(app)
        assert "run run-c FAILED" in text and "ci" in text
        results = app.screen.query_one("#detail-results", DataTable)
        assert [cells(results, i)[1:3] for i in range(3)] == [["module_build", "PASSED"], ["module_load", "PASSED"], ["mount", "TIMEOUT"]]
        await pilot.press("down")
        await pilot.pause()
        body = rendered(app.screen.query_one("#detail-evidence #evidence").content)
        assert "attempts: #1 FAILED" in body and "load_time_ms=11" in body and "exit 0" in body

        await pilot.press("2")
        await pilot.pause()
        domains = app.screen.query_one("#detail-domains", DataTable)
        assert {cells(domains, i)[0]: cells(domains, i)[1] for i in range(domains.row_count)} == {
            "kernel_module": "passed",
            "filesystem_operations": "failed",
        }
        await pilot.press("3")
        await pilot.pause()
        events = app.screen.query_one("#detail-events", DataTable)
        assert events.row_count == 1 and cells(events, 0)[1] == "CRITICAL"
        assert "Kernel panic - not syncing" in screen_text(app)

        await pilot.press("1")
        results.move_cursor(row=2)
        await pilot.press("t", "y")  # a new run: confirmed first
        await settle(app, pilot)
        # a re-run from history uses that run's env
        assert be.called("start_run") == [(RunRequest(env="ci", domains=("filesystem_operations",), only=(TestRef("filesystem_operations", "mount"),)),)]
        await pilot.press("escape")
        assert isinstance(app.screen, HistoryScreen)


async def test_compare_two_marked_runs(db, utc):
    async with cockpit(UiBackend(db_path=db)) as (app, pilot, notes):
        await pilot.press("h")
        await settle(app, pilot)
        await pilot.press("c")
        assert ("mark two runs with space first", "warning") in notes
        # mark run-b and run-a (cursor on run-c first)
        await pilot.press("down", "space", "down", "space")
        assert "mark (2/2)" in screen_text(app)
        await pilot.press("c")
        await settle(app, pilot)
        assert isinstance(app.screen, CompareScreen)
        assert (app.screen.a, app.screen.b) == ("run-a", "run-b")  # older first, whatever the marking order
        table = app.screen.query_one("#compare", DataTable)
        assert [cells(table, i)[:5] for i in range(table.row_count)] == [["new failure", "kernel_module", "module_load", "PASSED", "FAILED"]]
        assert "1 new failure" in screen_text(app)
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, RunDetailScreen) and app.screen.run_id == "run-b"
        results = app.screen.query_one("#detail-results", DataTable)
        assert cells(results, results.cursor_row)[1] == "module_load"


async def test_compare_flaky_and_fixed(db, utc):
    async with cockpit(UiBackend(db_path=db)) as (app, pilot, _):
        app.push_screen(CompareScreen("run-b", "run-c"))
        await settle(app, pilot)
        table = app.screen.query_one("#compare", DataTable)
        kinds = sorted((cells(table, i)[0], cells(table, i)[2]) for i in range(table.row_count))
        assert kinds == [("fixed", "module_load"), ("flaky", "module_load"), ("new failure", "mount")]


async def test_crash_signatures_newest_first(db, utc):
    async with cockpit(UiBackend(db_path=db)) as (app, pilot, _):
        await pilot.press("h")
        await settle(app, pilot)
        await pilot.press("x")
        await settle(app, pilot)
        assert isinstance(app.screen, CrashesScreen)
        table = app.screen.query_one("#crashes", DataTable)
        assert [cells(table, i)[:3] for i in range(table.row_count)] == [
            ["CRITICAL", "Kernel panic - not syncing: Fatal exception", "1×"],  # the kind once
            ["WARNING", "WARNING in selftest_write", "1×"],
        ]
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, RunDetailScreen) and app.screen.run_id == "run-c"


async def test_trends_pass_rate_duration_and_metric(db, utc):
    async with cockpit(UiBackend(db_path=db)) as (app, pilot, _):
        await pilot.press("h")
        await settle(app, pilot)
        await pilot.press("g")
        await settle(app, pilot)
        scr = app.screen
        assert isinstance(scr, TrendsScreen)
        scr.query_one("#t-domain", Select).value = "kernel_module"
        await settle(app, pilot)
        assert scr.series is not None and scr.series.values == (100.0, 50.0, 100.0)
        assert scr.series.run_ids == ("run-a", "run-b", "run-c")
        assert "3 runs · latest 100% · min 50%" in screen_text(app)

        scr.query_one("#t-kind", Select).value = "duration"
        await settle(app, pilot)
        scr.query_one("#t-test", Select).value = "module_load"
        await settle(app, pilot)
        assert scr.series is not None and scr.series.values == (2.0, 2.6, 2.2)

        scr.query_one("#t-kind", Select).value = "metric"
        await settle(app, pilot)
        scr.query_one("#t-metric", Select).value = "0"
        await settle(app, pilot)
        assert scr.series is not None and scr.series.values == (12.0, 15.5, 11.0)
        assert "load_time_ms" in scr.series.title
        text = screen_text(app)
        assert "⠉" in text or "•" in text  # plotext drew something

        scr.query_one("#t-period", Select).value = "24h"
        await settle(app, pilot)
        assert scr.series is not None and scr.series.values == (11.0,)


async def test_empty_history_says_so():
    async with cockpit(UiBackend()) as (app, pilot, _):
        await pilot.press("h")
        await settle(app, pilot)
        assert "no runs yet — start one with s" in screen_text(app)
        await pilot.press("g")
        await settle(app, pilot)
        assert "no history yet" in screen_text(app)
        await pilot.press("escape", "x")
        await settle(app, pilot)
        assert "none recorded yet" in screen_text(app)


async def test_a_foreign_db_is_a_one_line_notification(tmp_path):
    bad = tmp_path / "not-ours.db"
    bad.write_bytes(b"this is not an sqlite file at all" * 100)
    async with cockpit(UiBackend(db_path=bad)) as (app, pilot, notes):
        await pilot.press("h")
        await settle(app, pilot)
        errors = [m for m, s in notes if s == "error"]
        assert errors and all("\n" not in m for m in errors)
        assert any(str(bad) in m for m in errors)
        assert isinstance(app.screen, HistoryScreen)
        assert bad.read_bytes().startswith(b"this is not")  # never touched


async def test_history_reloads_when_a_run_finishes_and_we_come_back(db, utc):
    async with cockpit(UiBackend(db_path=db)) as (app, pilot, _):
        await pilot.press("h")
        await settle(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        await pilot.press("escape")
        await settle(app, pilot)
        assert run_ids(app) == ["run-c", "run-b", "run-a"]


async def test_runs_columns_are_final_when_filled(db, utc, monkeypatch):
    """DataTable re-measures auto-width columns when idle, and a frame painted before
    that kept its header at the old widths for good (the 120x40 snapshot flake, ~1 run
    in 6): Textual 8.2 keys its line cache by an update count the re-measure does not
    bump. The runs table's widths must be final the moment it is filled."""
    real = HistoryScreen._got_runs
    at_fill: list[list[int]] = []

    def fill(self, flt, runs):  # type: ignore[no-untyped-def]
        real(self, flt, runs)
        table = self.query_one("#runs", DataTable)
        at_fill.append([c.get_render_width(table) for c in table.ordered_columns])

    monkeypatch.setattr(HistoryScreen, "_got_runs", fill)
    async with cockpit(UiBackend(db_path=db), size=(120, 40)) as (app, pilot, _):
        await pilot.press("h")
        await settle(app, pilot)
        table = runs_table(app)
        assert at_fill == [[c.get_render_width(table) for c in table.ordered_columns]]
        header, first = table.render_line(0).text, table.render_line(1).text
        assert run_ids(app)[0] == "run-c"
        for label, cell in (("run", "run-c"), ("started", "2025-11-23 16:00"), ("env", "ci"), ("status", "failed"),
                            ("time", "34s"), ("profile", "selftest")):
            assert header.index(f" {label} ") == first.index(f" {cell} "), (header, first)


async def test_older_runs_load_as_the_end_nears(tmp_path, utc):
    from tests.support.store import dbgen

    path = dbgen().generate(tmp_path / "many.db", 2 * PAGE + 13).path
    want = [r.run_id for r in History(path).list_runs(limit=1000)]
    async with cockpit(UiBackend(db_path=path), size=(120, 40)) as (app, pilot, _):
        await pilot.press("h")
        await settle(app, pilot)
        assert run_ids(app) == want[:PAGE]  # a first page, not all of them
        assert f"History — {PAGE}+ runs" in screen_text(app)
        await pilot.press("pagedown", "pagedown")  # the cursor near the last run shown: the next page
        await settle(app, pilot)
        assert run_ids(app) == want[: 2 * PAGE]
        runs_table(app).scroll_end(animate=False, immediate=True)  # scrolling there does too
        await settle(app, pilot)
        assert run_ids(app) == want and f"History — {len(want)} runs" in screen_text(app)
        await pilot.press("ctrl+end")  # nothing older: nothing more asked
        await settle(app, pilot)
        assert run_ids(app) == want


async def test_closed_trend_charts_are_freed(db, utc):
    async with cockpit(UiBackend(db_path=db)) as (app, pilot, _):
        await pilot.press("h")
        await settle(app, pilot)
        for _ in range(3):
            await pilot.press("g")
            await settle(app, pilot)
            assert app.screen.query_one(TrendChart).shown is not None
            await pilot.press("escape")
            await settle(app, pilot)
        gc.collect()
        assert [c for c in gc.get_objects() if isinstance(c, TrendChart)] == []


async def test_key_bar_shows_the_screen_keys_and_a_click_presses_one(db, utc):
    async with cockpit(UiBackend(db_path=db), size=(120, 40)) as (app, pilot, _):
        await pilot.press("h")
        await settle(app, pilot)
        bar = app.screen.query_one(KeyBar)
        line = bar.render_line(0).text
        assert line.startswith(" esc Back  / Search ") and line.rstrip().endswith("^p palette")
        await pilot.click(KeyBar, offset=(line.index(" g Trends") + 2, 0))
        await settle(app, pilot)
        assert isinstance(app.screen, TrendsScreen)


async def test_history_reopens_as_a_fresh_open_shows_it(db, utc):
    """The app keeps one history screen; closing it resets filters, search, marks and the
    cursor, so the next open shows what a first open shows (and reads the runs again)."""
    be = UiBackend(db_path=db)
    asked: list[RunFilter] = []
    real_list_runs = be.list_runs
    be.list_runs = lambda flt: asked.append(flt) or real_list_runs(flt)  # type: ignore[method-assign]
    async with cockpit(be, size=(120, 40)) as (app, pilot, _):
        await pilot.press("h")
        await settle(app, pilot)
        first = app.screen
        first_frame = styled_frame(app)
        assert "History — 3 runs" in screen_text(app)
        await pilot.press("down", "space")  # mark run-b
        first.query_one("#f-env", Select).value = "dev"
        await settle(app, pilot)
        await pilot.press("slash", *"run", "enter")
        await settle(app, pilot)
        assert run_ids(app) == ["run-b", "run-a"] and first.marked == ["run-b"]
        await pilot.press("escape")
        await settle(app, pilot)
        assert not isinstance(app.screen, HistoryScreen)
        n_asked = len(asked)

        await pilot.press("h")
        await settle(app, pilot)
        assert app.screen is first
        assert asked[n_asked:] == [RunFilter(text="", limit=PAGE)]  # one fresh read per open
        assert run_ids(app) == ["run-c", "run-b", "run-a"] and first.marked == []
        assert first.current_filter() == RunFilter(text="")
        assert runs_table(app).cursor_row == 0 and app.screen.focused is runs_table(app)
        assert styled_frame(app) == first_frame  # text and styles

        # Restyled on reopen when the CSS changed meanwhile (a theme switch):
        await pilot.press("escape")
        await settle(app, pilot)
        app.theme = "textual-light"
        await settle(app, pilot)
        await pilot.press("h")
        await settle(app, pilot)
        reopened = styled_frame(app)
        assert reopened != first_frame
        app.screen.update_node_styles(animate=False)  # what Textual's resume would have done
        await settle(app, pilot)
        app.screen.refresh(repaint=True)
        await settle(app, pilot)
        assert styled_frame(app) == reopened


async def test_history_asked_for_from_above_itself_opens_another(db, utc):
    async with cockpit(UiBackend(db_path=db)) as (app, pilot, _):
        await pilot.press("h")
        await settle(app, pilot)
        kept = app.screen
        await pilot.press("g")
        await settle(app, pilot)
        await pilot.press("h")  # the app's key, from the trends screen
        await settle(app, pilot)
        assert isinstance(app.screen, HistoryScreen) and app.screen is not kept
        assert run_ids(app) == ["run-c", "run-b", "run-a"]
        await pilot.press("escape", "escape", "escape")
        await settle(app, pilot)
        await pilot.press("h")
        await settle(app, pilot)
        assert app.screen is kept and run_ids(app) == ["run-c", "run-b", "run-a"]


async def test_trends_reopen_as_a_fresh_open_shows_them(db, utc):
    """The kept history screen keeps its trends screen: closing resets the kind, domain,
    period and pickers, and the chart widget is made anew."""
    async with cockpit(UiBackend(db_path=db), size=(120, 40)) as (app, pilot, _):
        await pilot.press("h")
        await settle(app, pilot)
        await pilot.press("g")
        await settle(app, pilot)
        trends = app.screen
        assert isinstance(trends, TrendsScreen)
        first_frame, first_series = styled_frame(app), trends.series
        assert first_series is not None and first_series.title.startswith("pass rate of")
        first_chart = trends.query_one(TrendChart)
        trends.query_one("#t-kind", Select).value = "duration"
        await settle(app, pilot)
        trends.query_one("#t-period", Select).value = "24h"
        await settle(app, pilot)
        assert trends.series is not None and trends.series.title.startswith("duration of")
        await pilot.press("escape")
        await settle(app, pilot)
        assert isinstance(app.screen, HistoryScreen)

        await pilot.press("g")
        await settle(app, pilot)
        assert app.screen is trends
        assert trends.series is not None and trends.series.values == first_series.values
        assert trends.query_one(TrendChart) is not first_chart and not trends.query("#t-test")
        assert styled_frame(app) == first_frame


async def test_history_reopened_after_a_terminal_resize_fits_the_new_size(tmp_path, utc):
    path = dbgen().generate(tmp_path / "many.db", PAGE + 5).path
    async with cockpit(UiBackend(db_path=path), size=(80, 24)) as (app, pilot, _):
        await pilot.press("h")
        await settle(app, pilot)
        await pilot.press("escape")
        await settle(app, pilot)
        await pilot.resize_terminal(120, 40)
        await settle(app, pilot)
        await pilot.press("h")
        await settle(app, pilot)
        lines = screen_text(app).splitlines()
        assert len(lines) == 40 and "History — 50+ runs" in lines[0]
        assert lines[-2].startswith("enter: open") and runs_table(app).size.height == 40 - 4


async def test_compare_lists_tests_one_run_lacks(tmp_path, utc):
    """Issue 20 item 8: a 2-domain run against a 1-domain one shows the missing domain's tests."""
    from tests.support.store import DAY, FS, KM, T0, P, RunSpec, record, run_events

    path = tmp_path / "c.db"
    for spec in (RunSpec("two", T0, outcomes={(KM, "load"): P, (FS, "mount"): P}),
                 RunSpec("one", T0 + DAY, outcomes={(KM, "load"): P})):
        await record(path, run_events(spec))
    async with cockpit(UiBackend(db_path=path)) as (app, pilot, notes):
        app.push_screen(CompareScreen("two", "one"))
        await settle(app, pilot)
        table = app.screen.query_one("#compare", DataTable)
        assert [cells(table, i)[:5] for i in range(table.row_count)] == [["only in older", "filesystem_operations", "mount", "PASSED", "—"]]
        assert "1 only in older" in screen_text(app)


async def test_run_detail_opens_a_tests_window_and_the_runs_kernel_log(db, utc, tmp_path, monkeypatch):
    """Issue 20 item 12: a past run's kernel log, and one test's window of it, from run detail."""
    from textual.widgets import Log

    from vexfs_cockpit.tui.screens.output import OutputScreen

    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    async with cockpit(UiBackend(db_path=db), size=(120, 40)) as (app, pilot, notes):
        app.push_screen(RunDetailScreen("run-b"))
        await settle(app, pilot)
        await pilot.press("L")  # nothing kept for this run: said, not an empty screen
        await settle(app, pilot)
        assert any("no longer kept" in m for m, _ in notes) and isinstance(app.screen, RunDetailScreen)
        console = tmp_path / "xdg" / "vexfs-cockpit" / "runs" / "run-b" / "console"
        console.mkdir(parents=True)
        (console / "vexfs-dev-kernel_module-0.log").write_text("[    0.0] Linux version 6.1.0\n[    9.9] vexfs: hello\n")
        await pilot.press("L")
        await settle(app, pilot)
        assert isinstance(app.screen, OutputScreen)
        log = app.screen.query_one(Log)
        assert "vexfs: hello" in "\n".join(log.lines) and "==> vexfs-dev-kernel_module-0.log <==" in log.lines[0]
        await pilot.press("escape")
        await settle(app, pilot)
        await pilot.press("l")  # the selected test's window, stored with its result
        await settle(app, pilot)
        assert isinstance(app.screen, OutputScreen) and "kernel log of " in app.screen.title_text
