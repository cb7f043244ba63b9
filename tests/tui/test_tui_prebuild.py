"""The history and trends screens the app builds ahead, once the dashboard is up: they
read nothing until opened, and show exactly what screens built on the key press show;
so does the trends screen's first chart, read ahead as the history screen opens."""

from __future__ import annotations

from pathlib import Path

import pytest

from vexfs_cockpit.tui.app import CockpitApp
from vexfs_cockpit.tui.internals import screen_strips
from vexfs_cockpit.tui.screens.history import HistoryScreen
from vexfs_cockpit.tui.screens.trends import TrendsScreen
from vexfs_cockpit.tui.widgets.trend_chart import TrendChart

from tests.support.tui import cockpit, settle
from tests.support.tui import UiBackend, db, screen_text, utc  # noqa: F401 (fixtures)


def styled_frame(app) -> list[list[tuple[str, object]]]:
    return [[(seg.text, seg.style) for seg in strip] for strip in screen_strips(app.screen)]


def counting(be: UiBackend) -> list[str]:
    asked: list[str] = []
    for name in ("list_runs", "history_catalog", "domain_trend", "domain_pass_rate", "test_duration_trend", "metric_trend"):
        real = getattr(be, name)
        setattr(be, name, lambda *a, _n=name, _r=real: asked.append(_n) or _r(*a))
    return asked


async def h_then_g(app, pilot, asked: list[str] | None = None) -> tuple[list, list, HistoryScreen, TrendsScreen]:
    await pilot.press("h")
    await settle(app, pilot)
    history = app.screen
    assert isinstance(history, HistoryScreen) and "History — 3 runs" in screen_text(app)
    h_frame = styled_frame(app)
    if asked is not None:  # the kept trends screen's first chart was read ahead, once
        assert history._trend_ahead is not None and asked.count("domain_pass_rate") == 1
        n_asked = len(asked)
    await pilot.press("g")
    await settle(app, pilot)
    trends = app.screen
    assert isinstance(trends, TrendsScreen) and trends.series is not None
    assert trends.query_one(TrendChart).shown is trends.series
    if asked is not None:
        assert asked[n_asked:] == []  # g showed the chart read ahead
    return h_frame, styled_frame(app), history, trends


@pytest.mark.parametrize("size", [(80, 24), (120, 40)])
async def test_screens_built_ahead_show_what_screens_built_on_the_key_show(db, utc, monkeypatch, size):
    be = UiBackend(db_path=db)
    asked = counting(be)
    async with cockpit(be, size=size) as (app, pilot, _):
        assert app.screens_prebuilt.is_set()
        ahead = app._history
        assert isinstance(ahead, HistoryScreen) and isinstance(ahead.trends, TrendsScreen)
        assert ahead.is_mounted and ahead.trends.is_mounted and ahead not in app.screen_stack
        assert asked == []  # built ahead, nothing read: each open reads its own data
        ahead_h, ahead_g, history, trends = await h_then_g(app, pilot, asked)
        assert history is ahead and trends is ahead.trends
        assert len(trends.query(TrendChart)) == 1

    monkeypatch.setattr(CockpitApp, "_prebuild", lambda self: None)  # built on the key press
    async with cockpit(UiBackend(db_path=db), size=size) as (app, pilot, _):
        assert app._history is None
        on_key_h, on_key_g, _, _ = await h_then_g(app, pilot)

    assert ahead_h == on_key_h and ahead_g == on_key_g  # text and styles


async def test_h_at_once_opens_history_while_the_screens_are_being_built(db, utc):
    """A key before the build ahead is done: the screen it opens (whichever is under way)
    still shows its runs and chart."""
    app = CockpitApp(UiBackend(db_path=db), clock=lambda: 0.0)
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.press("h")
        await settle(app, pilot)
        history = app.screen
        assert isinstance(history, HistoryScreen) and "History — 3 runs" in screen_text(app)
        assert history is app._history and isinstance(history.trends, TrendsScreen)  # built by now, either way
        await pilot.press("g")
        await settle(app, pilot)
        assert app.screen is history.trends and app.screen.series is not None
        await app.screens_prebuilt.wait()
        await pilot.press("escape", "escape")
        await settle(app, pilot)
        await pilot.press("h")
        await settle(app, pilot)
        assert app.screen is app._history and "History — 3 runs" in screen_text(app)


async def test_history_opened_before_the_build_builds_its_trends_screen_once_its_runs_are_shown(db, utc, monkeypatch):
    monkeypatch.setattr(CockpitApp, "_prebuild", lambda self: None)  # as if h came before the build
    be = UiBackend(db_path=db)
    asked = counting(be)
    async with cockpit(be, size=(120, 40)) as (app, pilot, _):
        await pilot.press("h")
        await settle(app, pilot)
        history = app.screen
        assert isinstance(history, HistoryScreen) and isinstance(history.trends, TrendsScreen)
        assert history.trends not in app.screen_stack and history._trend_ahead is not None
        n_asked = len(asked)
        await pilot.press("g")
        await settle(app, pilot)
        assert app.screen is history.trends and app.screen.series is not None
        assert asked[n_asked:] == []  # the chart read ahead
