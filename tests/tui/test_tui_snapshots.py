"""Snapshot tests (pytest-textual-snapshot): dashboard mid-run, history, run detail and a
trend chart, at 80x24 and 120x40. Deterministic: fixed clock, fixed event timestamps,
UTC. Update with `pytest tests/tui/test_tui_snapshots.py --snapshot-update` and review the SVGs.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable, Select

from vexfs_cockpit.tui.app import CockpitApp
from vexfs_cockpit.tui.internals import table_settling
from vexfs_cockpit.tui.screens.run_detail import RunDetailScreen
from vexfs_cockpit.tui.screens.trends import TrendsScreen

from tests.support.tui import T0, UiBackend, mid_run_events, seed_history, utc  # noqa: F401 (fixture)

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((120, 40), id="120x40")]


@pytest.fixture(autouse=True)
def _in_utc(utc):  # snapshots show times: the same in every time zone
    yield


@pytest.fixture(scope="module")
def seeded_db(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("snap") / "history.db"
    asyncio.run(seed_history(path))
    return path


def make_app(db: Path | None = None) -> CockpitApp:
    # Built, never run() here: snap_compare runs it headless.
    backend = UiBackend(db_path=db) if db is not None else UiBackend()
    return CockpitApp(backend, clock=lambda: T0)


async def settle(pilot: Pilot) -> None:
    """Workers done, and every DataTable has re-measured its columns (it does so when
    its message queue goes idle; a screenshot taken before that shows old widths)."""
    app = pilot.app
    previous = None
    for _ in range(50):  # bounded: a handful of idle rounds is always enough
        await app.workers.wait_for_complete()
        await pilot.pause()
        tables = app.screen.query(DataTable)
        busy = not all(w.is_finished for w in app.workers)
        if busy or any(table_settling(t) for t in tables):
            continue
        # Idle is not enough: a header re-measured on the last message paints a frame
        # later. Done when two consecutive frames are the same.
        frame = app.export_screenshot()
        if frame == previous:
            break
        previous = frame
    await pilot.pause()


@pytest.mark.parametrize("size", SIZES)
def test_dashboard_mid_run(snap_compare, size):
    async def run_before(pilot: Pilot) -> None:
        app = pilot.app
        assert isinstance(app, CockpitApp)
        for ev in mid_run_events():
            app.backend.bus.publish(ev)
        app.pump_now()
        await settle(pilot)

    assert snap_compare(make_app(), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_history(snap_compare, seeded_db, size):
    async def run_before(pilot: Pilot) -> None:
        await pilot.press("h")
        await settle(pilot)

    assert snap_compare(make_app(seeded_db), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_run_detail(snap_compare, seeded_db, size):
    async def run_before(pilot: Pilot) -> None:
        pilot.app.push_screen(RunDetailScreen("run-b"))
        await settle(pilot)
        await pilot.press("down")  # the failed module_load and its evidence
        await settle(pilot)

    assert snap_compare(make_app(seeded_db), terminal_size=size, run_before=run_before)


@pytest.mark.parametrize("size", SIZES)
def test_trend_chart(snap_compare, seeded_db, size):
    async def run_before(pilot: Pilot) -> None:
        pilot.app.push_screen(TrendsScreen())
        await settle(pilot)
        pilot.app.screen.query_one("#t-domain", Select).value = "kernel_module"
        await settle(pilot)

    assert snap_compare(make_app(seeded_db), terminal_size=size, run_before=run_before)
