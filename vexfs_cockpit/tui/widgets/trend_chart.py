"""A trend over runs (textual-plotext). X is the run sequence, labelled with dates,
so runs close in time do not pile up on one column."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from textual_plotext import PlotextPlot

MAX_TICKS = 6


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
        plt.plot(xs, list(series.values), marker="braille")
        plt.scatter(xs, list(series.values), marker="dot")
        step = max(1, -(-len(xs) // MAX_TICKS))
        ticks = xs[::step]
        plt.xticks(ticks, [time.strftime("%m-%d %H:%M", time.localtime(series.ts[i - 1])) for i in ticks])
        plt.title(series.title)
        if series.ylim is not None:
            plt.ylim(*series.ylim)
        self.refresh()
