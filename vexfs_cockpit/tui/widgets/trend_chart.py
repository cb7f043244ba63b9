"""A trend over runs (textual-plotext). X is the run sequence, labelled with dates,
so runs close in time do not pile up on one column."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import lru_cache

from plotext._utility import colors_to_ansi
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.geometry import Size
from textual.strip import Strip
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot

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


def draw(series: TrendSeries | None, size: Size, theme: str) -> list[Strip]:
    """The chart of ``series`` at ``size`` in plotext theme ``theme``, as screen lines:
    a fresh plotext figure each time (no shared state), so a thread worker may draw it
    while the screen is still being built."""
    plt = Plot()
    if series is None or not series.values:
        plt.title("no data for this selection yet" if series is None else f"{series.title}: no data yet")
    else:
        xs = list(range(1, len(series.values) + 1))
        px, py = envelope(xs, list(series.values), DOTS_PER_CELL * max(size.width, MIN_WIDTH))
        plt.plot(px, py, marker="braille")
        plt.scatter(px, py, marker="dot")
        step = max(1, -(-len(xs) // MAX_TICKS))
        ticks = xs[::step]
        plt.xticks(ticks, [time.strftime("%m-%d %H:%M", time.localtime(series.ts[i - 1])) for i in ticks])
        plt.title(series.title)
        if series.ylim is not None:
            plt.ylim(*series.ylim)
    # As PlotextPlot.render sizes its figure (plotsize alone does not resize it).
    plt.plotsize(size.width, size.height)
    plt._set_size(size.width, size.height)
    plt.theme(theme)
    # Plot.build() without its last step: it writes the figure's cells out as an ANSI
    # string, which Text.from_ansi parses back and Textual turns into lines again (~25 ms
    # of a ~45 ms draw at 120x36). The cells go straight into lines here instead.
    plt._set_sizes()
    plt._build_matrix()
    m = plt.monitor.matrix
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


def _key(color: object) -> object:
    return tuple(color) if isinstance(color, list) else color  # rgb colours come as lists


@lru_cache(maxsize=64)
def _style(fg: object, style: object, bg: object) -> Style:
    """The style plotext's ANSI for these colours parses to: the same cells as before."""
    text = Text.from_ansi(colors_to_ansi(fg, style, bg) + "x")
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
        return self._get_plotext_theme_name(self.app.theme)

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
