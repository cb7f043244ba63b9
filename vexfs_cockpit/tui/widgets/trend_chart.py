"""A trend over runs (textual-plotext). X is the run sequence, labelled with dates,
so runs close in time do not pile up on one column."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.strip import Strip
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot

from vexfs_cockpit.tui.internals import (
    auto_theme_name,
    plotext_braille_codes,
    plotext_build_matrix,
    plotext_colors_to_ansi,
    plotext_lim,
    plotext_matrix_data,
    plotext_monitor,
    plotext_set_size,
    plotext_theme_name,
    plotext_themes,
)

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


def draw(series: TrendSeries | None, size: Size, theme: str, *, direct: bool = True) -> list[Strip]:
    """The chart of ``series`` at ``size`` in plotext theme ``theme``, as screen lines:
    a fresh plotext figure each time (no shared state), so a thread worker may draw it
    while the screen is still being built.

    ``direct``: the data's cells are computed here (DirectData) instead of by plotext's
    per-point pipeline; the same cells (tests compare both on real series)."""
    plt = Plot()
    data: DirectData | None = None
    if series is None or not series.values:
        plt.title("no data for this selection yet" if series is None else f"{series.title}: no data yet")
    else:
        xs = list(range(1, len(series.values) + 1))
        px, py = envelope(xs, list(series.values), DOTS_PER_CELL * max(size.width, MIN_WIDTH))
        data = DirectData.of(px, py, series.ylim) if direct else None
        if data is None:
            plt.plot(px, py, marker="braille")
            plt.scatter(px, py, marker="dot")
        else:
            data.stand_ins(plt)
        step = max(1, -(-len(xs) // MAX_TICKS))
        ticks = xs[::step]
        plt.xticks(ticks, [time.strftime("%m-%d %H:%M", time.localtime(series.ts[i - 1])) for i in ticks])
        plt.title(series.title)
        if series.ylim is not None:
            plt.ylim(*series.ylim)
    # As PlotextPlot.render sizes its figure (plotsize alone does not resize it).
    plt.plotsize(size.width, size.height)
    plotext_set_size(plt, size.width, size.height)
    plt.theme(theme)
    # Plot.build() without its last step: it writes the figure's cells out as an ANSI
    # string, which Text.from_ansi parses back and Textual turns into lines again (~25 ms
    # of a ~45 ms draw at 120x36). The cells go straight into lines here instead.
    plotext_build_matrix(plt)
    mon = plotext_monitor(plt)
    if data is not None:
        data.insert(mon)
    m = mon.matrix
    lines = []
    for row in reversed(m.Rows):
        chars, fg, st, bg = m.marker[row], m.fullground[row], m.style[row], m.background[row]
        segments: list[Segment] = []
        start = 0
        for col in range(1, m.cols + 1):
            if col == m.cols or (fg[col], st[col], bg[col]) != (fg[start], st[start], bg[start]):
                segments.append(Segment("".join(chars[start:col]), _style(_key(fg[start]), _key(st[start]), _key(bg[start]))))
                start = col
        lines.append(Strip(segments, m.cols))
    return lines


class DirectData:
    """The cells of the trend's two signals (a braille line through the points, a dot on
    each) computed as plotext's build_plot computes them, without its per-point lists.

    plotext turns every dot of every line segment into 5-element rows that it transposes,
    de-duplicates through sets and groups into braille cells one list at a time: ~40 ms
    of a ~50 ms draw of a 10k-run pass rate at 120x36 and ~0.4 s for a noisy duration
    trend (the draw thread competes with the UI thread for the GIL). Here: the same
    canvas coordinates (plotext's own get_matrix_data), the same line points (its
    get_line arithmetic), a set of dots, one bit mask per cell, plotext's braille table.

    plotext still draws the rest (axes, ticks, labels, title) from two stand-in signals:
    one point each, outside the canvas (dropped by its remove_outsiders), with the same
    markers, so they get the same colours, and with the axis limits plotext would take
    from the data set explicitly.
    """

    def __init__(self, px: list[int], py: list[float], xlim: list[float], ylim: list[float]) -> None:
        self.px, self.py, self.xlim, self.ylim = px, py, xlim, ylim

    @classmethod
    def of(cls, px: list[int], py: list[float], ylim: tuple[float, float] | None) -> DirectData | None:
        """None where plotext's own path is kept: values that are not plain numbers, or
        limits of zero width (plotext divides by them)."""
        if not px or not all(type(v) in (int, float) and math.isfinite(v) for v in py):
            return None
        xl = plotext_lim(px)
        yl = list(ylim) if ylim is not None else plotext_lim(py)
        if xl[0] == xl[1] or yl[0] == yl[1]:
            return None
        return cls(px, py, xl, yl)

    def stand_ins(self, plt: Plot) -> None:
        far_x = self.xlim[1] + 4 * (self.xlim[1] - self.xlim[0]) + 1
        far_y = self.ylim[1] + 4 * (self.ylim[1] - self.ylim[0]) + 1
        plt.plot([far_x], [far_y], marker="braille")
        plt.scatter([far_x], [far_y], marker="dot")
        plt.xlim(*self.xlim)
        plt.ylim(*self.ylim)

    def insert(self, mon: Any) -> None:
        """Into the built matrix, as build_plot's last step would: the line's cells, then
        the dots over them."""
        m = mon.matrix
        col0, row0 = m.Cols_canvas.start, m.Rows_canvas.start
        width, height = len(m.Cols_canvas), len(m.Rows_canvas)
        if width <= 0 or height <= 0:
            return
        fg0, st0 = mon.color[0][0], mon.style[0][0]
        fg1, st1, dot = mon.color[1][0], mon.style[1][0], mon.marker[1][0]
        for (cx, cy), char in self._line_cells(width, height).items():
            m.insert_element(col0 + cx, row0 + cy, char, fg0, st0)
        xs = plotext_matrix_data(self.px, self.xlim, width)
        ys = plotext_matrix_data(self.py, self.ylim, height)
        for cx, cy in set(zip(xs, ys)):
            if 0 <= cx < width and 0 <= cy < height:
                m.insert_element(col0 + cx, row0 + cy, dot, fg1, st1)

    def _line_cells(self, width: int, height: int) -> dict[tuple[int, int], str]:
        """Braille cells of the line through the points on a canvas of 2x4 dots per cell."""
        xs = plotext_matrix_data(self.px, self.xlim, 2 * width)
        ys = plotext_matrix_data(self.py, self.ylim, 4 * height)
        cells: dict[tuple[int, int], int] = {}
        dots: set[tuple[int, int]] = set()
        for n in range(len(xs) - 1):
            # plotext's get_line: a = max(|dx|, |dy|) + 1 points by linspace, truncated
            # to int, the segment's last point left to the next segment.
            x0, x1, y0, y1 = xs[n], xs[n + 1], ys[n], ys[n + 1]
            a = max(abs(x1 - x0), abs(y1 - y0)) + 1
            if a == 1:
                continue
            if x0 == x1:  # a run of one dot column (most of an envelope): y0, y0 ± 1, ... exactly
                lo, hi = (y0, y1 - 1) if y1 > y0 else (y1 + 1, y0)
                _column(cells, x0, lo, hi)
            else:
                sx, sy = (x1 - x0) / (a - 1), (y1 - y0) / (a - 1)
                r = range(a - 1)
                dots.update(zip([int(x0 + i * sx) for i in r], [int(y0 + i * sy) for i in r]))
        dots.add((xs[-1], ys[-1]))
        for x, y in dots:
            cell = (x // 2, y // 4)
            # hd_group's code: rows top (y % 4 == 3) to bottom, two dots each, left first
            cells[cell] = cells.get(cell, 0) | 1 << ((3 - y % 4) * 2 + x % 2)
        return {cell: _BRAILLE[mask] for cell, mask in cells.items()
                if 0 <= cell[0] < width and 0 <= cell[1] < height}


def _column(cells: dict[tuple[int, int], int], x: int, lo: int, hi: int) -> None:
    """The dots (x, lo..hi) into their cells' masks, a cell at a time."""
    cx, bit = x // 2, x % 2
    for cy in range(lo // 4, hi // 4 + 1):
        first, last = max(lo, 4 * cy) - 4 * cy, min(hi, 4 * cy + 3) - 4 * cy
        cells[(cx, cy)] = cells.get((cx, cy), 0) | _COLUMN_BITS[bit][first][last]


# plotext's braille table by bit mask (bit i: element i of its 8-tuple code)
_CODES = plotext_braille_codes()
_BRAILLE = [_CODES[tuple((mask >> i) & 1 for i in range(8))] for mask in range(256)]
# The mask of dot column ``bit``'s rows first..last of a cell (row 0 at the bottom).
_COLUMN_BITS = [[[sum(1 << ((3 - r) * 2 + bit) for r in range(first, last + 1)) for last in range(4)]
                 for first in range(4)] for bit in range(2)]


def _key(color: object) -> object:
    return tuple(color) if isinstance(color, list) else color  # rgb colours come as lists


@lru_cache(maxsize=64)
def _style(fg: object, style: object, bg: object) -> Style:
    """The style plotext's ANSI for these colours parses to: the same cells as before."""
    text = Text.from_ansi(plotext_colors_to_ansi(fg, style, bg) + "x")
    return text.spans[0].style if text.spans else Style.null()  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Drawing:
    """A chart drawn ahead of time (by the worker that fetched its series)."""

    series: TrendSeries | None
    size: Size
    theme: str
    lines: list[Strip]


class TrendChart(PlotextPlot):
    """Draws its series only when the series, its size or the theme changed (PlotextPlot
    rebuilds on every render: ~40 ms of plotext and ANSI parsing for a 10k-run trend,
    and the screen re-renders the chart on layout changes around it). Blank until the
    first series is shown."""

    DEFAULT_CSS = """
    TrendChart {
        height: 1fr;
        min-height: 8;
    }
    """

    # The size a chart was laid out at, per terminal size: a chart drawn ahead (before the
    # screen's first layout) is drawn at it.
    _laid_out: dict[Size, Size] = {}

    @classmethod
    def size_for(cls, app_size: Size) -> Size:
        """The chart's size at this terminal size, as last laid out (0x0: not seen yet)."""
        return cls._laid_out.get(app_size, Size(0, 0))

    def on_resize(self, event: object) -> None:
        if self.size.area:
            if len(TrendChart._laid_out) > 16:  # a terminal resized many times
                TrendChart._laid_out.clear()
            TrendChart._laid_out[self.app.size] = self.size

    def __init__(self, *, id: str | None = None) -> None:  # noqa: A002 (Textual's name)
        super().__init__(id=id)
        self._series: TrendSeries | None = None
        self._shown_any = False
        self._drawing: Drawing | None = None
        self.shown: TrendSeries | None = None  # the series of the lines last handed out

    def on_unmount(self) -> None:
        # PlotextPlot subscribes a lambda holding the widget to the app's theme signal and
        # never unsubscribes; the signal keeps its subscribers' callbacks, so every chart
        # ever shown (with its drawing) stayed alive.
        self.app.theme_changed_signal.unsubscribe(self)

    def plot_theme(self) -> str:
        return plotext_theme_name(self, self.app.theme)

    @staticmethod
    def theme_for(app_theme: str) -> str | None:
        """plot_theme() of a chart (theme "auto", as all of ours) under ``app_theme``, if
        a chart has registered it with plotext yet; else None."""
        name = auto_theme_name(app_theme)
        return name if name in plotext_themes() else None

    def show_series(self, series: TrendSeries | None, drawing: Drawing | None = None) -> None:
        """Show ``series``; ``drawing``: the same, drawn ahead (used if still the right size)."""
        self._series, self._shown_any = series, True
        self._drawing = drawing if drawing is not None and drawing.series is series else None
        self.refresh()

    def render_line(self, y: int) -> Strip:
        size, theme = self.size, self.plot_theme()
        if not self._shown_any or not size.area:
            return Strip.blank(size.width, self.rich_style)
        d = self._drawing
        if d is None or d.series is not self._series or d.size != size or d.theme != theme:
            d = self._drawing = Drawing(self._series, size, theme, draw(self._series, size, theme))
        self.shown = self._series
        return d.lines[y] if y < len(d.lines) else Strip.blank(size.width, self.rich_style)
