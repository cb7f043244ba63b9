"""The trend chart's direct braille path draws what plotext's own pipeline draws.

``draw(..., direct=True)`` (what the TUI uses) computes the data's cells itself;
``direct=False`` lets plotext do every step. Both are compared segment by segment
(text and style) on real series from a generated history DB (the bench's generator),
on the seeded DB the pilot tests use, and on edge-case series, at several sizes.
"""

from __future__ import annotations

import math
import random
from pathlib import Path

import pytest
from textual.geometry import Size

from vexfs_cockpit.store.history import History
from vexfs_cockpit.tui.widgets import trend_chart
from vexfs_cockpit.tui.widgets.trend_chart import DirectData, TrendSeries, draw

from tests.support.store import dbgen

SIZES = (Size(120, 36), Size(80, 20), Size(200, 50), Size(41, 9), Size(12, 5))
THEMES = ("textual-dark", "textual-light")


def cells(lines: list) -> list[list[tuple[str, object]]]:
    return [[(seg.text, seg.style) for seg in strip] for strip in lines]


def same(series: TrendSeries, size: Size, theme: str = "textual-dark") -> bool:
    return cells(draw(series, size, theme)) == cells(draw(series, size, theme, direct=False))


def series(title: str, values: list[float], ylim: tuple[float, float] | None = None) -> TrendSeries:
    return TrendSeries(title, "%" if ylim else "s", tuple(1.7e9 + 3600.0 * i for i in range(len(values))),
                       tuple(values), ylim=ylim)


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> History:
    """A history with ~600 runs from the bench's generator: its failures, skips and
    duration noise are what the charts show on a real history."""
    path: Path = dbgen().generate(tmp_path_factory.mktemp("trend") / "gen.db", 600).path
    return History(path)


def real_series(h: History) -> list[TrendSeries]:
    out = []
    cat = h.recent_catalog(env_runs=1000, test_runs=8)
    for domain in sorted(cat.tests)[:3]:
        pts = [p for p in h.domain_trend(domain) if p.pass_rate is not None]
        out.append(TrendSeries(f"pass rate of {domain}", "%", tuple(p.started_at for p in pts),
                               tuple(100.0 * (p.pass_rate or 0.0) for p in pts), ylim=(0.0, 100.0)))
        for test in sorted(cat.tests[domain])[:2]:
            d = h.test_duration_trend(domain, test)
            out.append(TrendSeries(f"duration of {domain}.{test}", "s", tuple(p.started_at for p in d),
                                   tuple(p.duration_s for p in d)))
    for domain, test, name in cat.metrics[:3]:
        m = h.metric_trend(name, domain or None, test or None)
        out.append(TrendSeries(name, "", tuple(p.ts for p in m), tuple(p.value for p in m)))
    return out


def test_generated_history_charts_are_the_same(generated: History) -> None:
    found = real_series(generated)
    assert len(found) >= 6 and all(len(s.values) > 100 for s in found[:3])
    assert all(DirectData.of([1, 2], list(s.values[:2]), s.ylim) is not None for s in found)  # the fast path runs
    for s in found:
        for size in SIZES:
            assert same(s, size), (s.title, size)
    for theme in THEMES:
        assert same(found[0], SIZES[0], theme)


def test_seeded_history_charts_are_the_same(tmp_path: Path) -> None:
    import asyncio

    from tests.support.tui import seed_history

    path = tmp_path / "seeded.db"
    asyncio.run(seed_history(path))
    h = History(path)
    pts = [p for p in h.domain_trend("kernel_module") if p.pass_rate is not None]
    s = TrendSeries("pass", "%", tuple(p.started_at for p in pts), tuple(100.0 * (p.pass_rate or 0.0) for p in pts),
                    ylim=(0.0, 100.0))
    for size in SIZES:
        assert same(s, size)


@pytest.mark.parametrize("values,ylim", [
    ([100.0], (0.0, 100.0)),  # one point
    ([3.0, 3.0, 3.0], None),  # flat: plotext widens the limits itself
    ([0.0, 0.0], None),
    ([0.0, 100.0, 0.0, 100.0, 50.0], (0.0, 100.0)),  # full-height jumps
    ([-5.0, 2.5, -1.25, 7.0], None),  # negative values
    ([1e-6, 3e-6, 2e-6], None),  # tiny
    ([1e9, 3e9, 2e9, 5e9], None),  # huge
    ([120.0, -20.0, 50.0], (0.0, 100.0)),  # outside fixed limits: clipped, as plotext does
])
def test_edge_series_are_the_same(values: list[float], ylim: tuple[float, float] | None) -> None:
    for size in SIZES:
        assert same(series("edge", values, ylim), size), size


def test_random_walks_are_the_same() -> None:
    rnd = random.Random(7)
    for n in (2, 7, 60, 479, 481, 2_000, 12_000):
        walk, v = [], 50.0
        for _ in range(n):
            v = min(100.0, max(0.0, v + rnd.gauss(0, 8)))
            walk.append(v)
        noise = [abs(rnd.gauss(3, 1.5)) + (9.0 if rnd.random() < 0.01 else 0.0) for _ in range(n)]
        for size in SIZES[:3]:
            assert same(series("walk", walk, (0.0, 100.0)), size), (n, size)
            assert same(series("noise", noise), size), (n, size)


def test_plotext_keeps_what_the_fast_path_does_not_cover() -> None:
    assert DirectData.of([1, 2], [1.0, math.nan], None) is None
    assert DirectData.of([1, 2], [1.0, 2.0], (5.0, 5.0)) is None
    assert same(series("nan", [1.0, math.nan, 2.0]), SIZES[0])


def test_the_comparison_sees_a_broken_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """The tests above would go red: one braille dot row off, or the dots left out."""
    rnd = random.Random(3)
    s = series("walk", [rnd.uniform(0.0, 100.0) for _ in range(2_000)], (0.0, 100.0))
    assert same(s, SIZES[0])
    bits = trend_chart._COLUMN_BITS
    monkeypatch.setattr(trend_chart, "_COLUMN_BITS", [[[m << 2 & 0xFF for m in row] for row in b] for b in bits])
    assert not same(s, SIZES[0])
    monkeypatch.undo()
    real_insert = DirectData.insert

    def no_dots(self: DirectData, mon: object) -> None:
        self.px, self.py = self.px[:1], self.py[:1]
        real_insert(self, mon)

    monkeypatch.setattr(DirectData, "insert", no_dots)
    assert not same(s, SIZES[0])
