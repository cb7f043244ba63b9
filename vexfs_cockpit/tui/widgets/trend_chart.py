"""A trend over runs (textual-plotext). X is the run sequence, labelled with dates,
so runs close in time do not pile up on one column."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from textual_plotext import PlotextPlot

MAX_TICKS = 6
DOTS_PER_CELL = 2  # braille: two dot columns per character cell
MIN_WIDTH = 80  # assumed until the widget has been laid out


def envelope(xs: list[int], ys: list[float], buckets: int) -> tuple[list[int], list[float]]:
    """The min and max of each of ``buckets`` runs of consecutive points, in x order.

    A terminal chart cannot show more than a few points per dot column, and plotext's
    cost grows with the points it is given (10,000 runs: ~0.2–0.8 s per draw). The
    envelope draws the same picture: every dip and spike (one failed run among
    thousands) stays, as the extreme of its bucket.
    """
    n = len(ys)
    if n <= 2 * buckets:
        return xs, ys
    out_x: list[int] = []
    out_y: list[float] = []
    for b in range(buckets):
        lo, hi = b * n // buckets, (b + 1) * n // buckets
        seg = range(lo, hi)
        i_min = min(seg, key=ys.__getitem__)
        i_max = max(seg, key=ys.__getitem__)
        for i in sorted({i_min, i_max}):
            out_x.append(xs[i])
            out_y.append(ys[i])
    return out_x, out_y


@dataclass(frozen=True, slots=True)
class TrendSeries:
    title: str
    unit: str
    ts: tuple[float, ...] = ()
    values: tuple[float, ...] = ()
    ylim: tuple[float, float] | None = None
    run_ids: tuple[str, ...] = field(default=())


class TrendChart(PlotextPlot):
    DEFAULT_CSS = """
    TrendChart {
        height: 1fr;
        min-height: 8;
    }
    """

    def show_series(self, series: TrendSeries | None) -> None:
        plt = self.plt
        plt.clear_figure()
        if series is None or not series.values:
            plt.title("no data for this selection yet" if series is None else f"{series.title}: no data yet")
            self.refresh()
            return
        xs = list(range(1, len(series.values) + 1))
        px, py = envelope(xs, list(series.values), DOTS_PER_CELL * max(self.size.width, MIN_WIDTH))
        plt.plot(px, py, marker="braille")
        plt.scatter(px, py, marker="dot")
        step = max(1, -(-len(xs) // MAX_TICKS))
        ticks = xs[::step]
        plt.xticks(ticks, [time.strftime("%m-%d %H:%M", time.localtime(series.ts[i - 1])) for i in ticks])
        plt.title(series.title)
        if series.ylim is not None:
            plt.ylim(*series.ylim)
        self.refresh()
