"""The TUI's history side on a team's PostgreSQL history (issue 19 item 3): the same
seeded runs as tests/tui/test_tui_history.py, recorded by the store's Recorder into a
real PostgreSQL (the ``pg_server`` fixture), read by the screens through History."""

from __future__ import annotations

import socket

from textual.widgets import DataTable, Select

from tests.support.tui import UiBackend, cells, cockpit, screen_text, seed_history, settle, utc  # noqa: F401 (fixture)
from vexfs_cockpit.store.location import PgUrl
from vexfs_cockpit.tui.screens.compare import CompareScreen
from vexfs_cockpit.tui.screens.crashes import CrashesScreen
from vexfs_cockpit.tui.screens.history import HistoryScreen
from vexfs_cockpit.tui.screens.run_detail import RunDetailScreen


def run_ids(app) -> list[str]:
    t = app.screen.query_one("#runs", DataTable)
    return [cells(t, i)[1] for i in range(t.row_count)]


async def test_history_run_detail_compare_and_crashes_on_postgresql(pg_server, utc):
    db = PgUrl(pg_server.new_database())
    await seed_history(db)
    async with cockpit(UiBackend(db_path=db)) as (app, pilot, notes):
        await pilot.press("h")
        await settle(app, pilot)
        assert isinstance(app.screen, HistoryScreen)
        assert run_ids(app) == ["run-c", "run-b", "run-a"]
        assert cells(app.screen.query_one("#runs", DataTable), 0)[2:6] == ["2025-11-23 16:00", "ci", "failed", "2 1 0"]
        app.screen.query_one("#f-env", Select).value = "dev"
        await settle(app, pilot)
        assert run_ids(app) == ["run-b", "run-a"]
        app.screen.query_one("#f-env", Select).clear()
        await settle(app, pilot)
        await pilot.press("slash")
        await pilot.press(*"selftest_write", "enter")  # a kernel event title: lower() LIKE on both
        await settle(app, pilot)
        assert run_ids(app) == ["run-b"]
        await pilot.press("escape")
        await settle(app, pilot)

        await pilot.press("h")
        await settle(app, pilot)
        await pilot.press("enter")  # newest: run-c
        await settle(app, pilot)
        assert isinstance(app.screen, RunDetailScreen) and "run run-c FAILED" in screen_text(app)
        results = app.screen.query_one("#detail-results", DataTable)
        assert [cells(results, i)[1:3] for i in range(3)] == [
            ["module_build", "PASSED"], ["module_load", "PASSED"], ["mount", "TIMEOUT"]]
        await pilot.press("escape")
        await settle(app, pilot)

        app.push_screen(CompareScreen("run-a", "run-b"))
        await settle(app, pilot)
        table = app.screen.query_one("#compare", DataTable)
        assert [cells(table, i)[:5] for i in range(table.row_count)] == [
            ["new failure", "kernel_module", "module_load", "PASSED", "FAILED"]]
        await pilot.press("escape")
        await settle(app, pilot)

        await pilot.press("x")
        await settle(app, pilot)
        assert isinstance(app.screen, CrashesScreen)
        crashes = app.screen.query_one("#crashes", DataTable)
        assert [cells(crashes, i)[1] for i in range(crashes.row_count)] == [
            "Kernel panic - not syncing: Fatal exception", "WARNING in selftest_write"]
        assert not [m for m, s in notes if s == "error"]


async def test_an_unreachable_server_is_a_one_line_notification(utc):
    with socket.socket() as s:  # bound, never listening: connections are refused
        s.bind(("127.0.0.1", 0))
        url = f"postgresql://cockpit@127.0.0.1:{s.getsockname()[1]}/team"
        async with cockpit(UiBackend(db_path=PgUrl(url))) as (app, pilot, notes):
            await pilot.press("h")
            await settle(app, pilot)
            errors = [m for m, sev in notes if sev == "error"]
            assert errors and all("\n" not in m for m in errors)
            assert any(f"cannot connect to history DB {url}" in m for m in errors), errors
            assert isinstance(app.screen, HistoryScreen)
