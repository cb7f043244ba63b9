"""Trend charts: a domain's pass rate, a test's duration, or any stored metric, over runs.

Data is fetched in a thread worker; plotext draws it when the widget renders.
"""

from __future__ import annotations

import statistics
import weakref
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from rich.text import Text
from textual import events, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.await_remove import AwaitRemove
from textual.containers import Horizontal
from textual.geometry import Size
from textual.screen import Screen
from textual.widgets import Select, Static
from textual.widgets.select import NoSelection
from textual.worker import get_current_worker

from vexfs_cockpit.tui.backend import HistoryCatalog, MetricKey
from vexfs_cockpit.tui.format import duration, error_line
from vexfs_cockpit.tui.gc_pause import GcPause
from vexfs_cockpit.tui.internals import clear_layout_caches, lay_out
from vexfs_cockpit.tui.screen_styles import ResumeStyles
from vexfs_cockpit.tui.format import PERIODS
from vexfs_cockpit.tui.widgets.key_bar import KeyBar
from vexfs_cockpit.tui.widgets.trend_chart import Drawing, TrendChart, TrendSeries, draw

if TYPE_CHECKING:
    from vexfs_cockpit.tui.app import CockpitApp

KINDS = (("pass rate of a domain", "pass"), ("duration of a test", "duration"), ("a stored metric", "metric"))
ChartKey = tuple[str, str | None, str | None, str | None, MetricKey | None]  # kind, period, domain, test, metric


def first_key(catalog: HistoryCatalog) -> ChartKey:
    """The chart the screen opens on: the first domain's pass rate, all time."""
    return ("pass", None, catalog.domains[0] if catalog.domains else None, None, None)


@dataclass(frozen=True, slots=True)
class ChartAhead:
    """A screen's first chart, read and drawn before the screen opened (see
    HistoryScreen._read_trend_ahead)."""

    key: ChartKey
    series: TrendSeries | None
    drawing: Drawing | None


def read_series(backend: Any, kind: str, domain: str | None, test: str | None, metric: MetricKey | None,
                since: float | None) -> TrendSeries | None:
    """The series of one chart (blocking: SQLite; from a thread worker)."""
    if kind == "pass":
        if domain is None:
            return None
        pts = backend.domain_pass_rate(domain, since)  # runs that ran a test
        return TrendSeries(
            f"pass rate of {domain} per run (%)", "%",
            tuple(p.started_at for p in pts), tuple(100.0 * p.pass_rate for p in pts),
            ylim=(0.0, 100.0), run_ids=tuple(p.run_id for p in pts),
        )
    if kind == "duration":
        if domain is None or test is None:
            return None
        dpts = backend.test_duration_trend(domain, test, since)
        return TrendSeries(
            f"duration of {domain}.{test} per run (s)", "s",
            tuple(p.started_at for p in dpts), tuple(p.duration_s for p in dpts), run_ids=tuple(p.run_id for p in dpts),
        )
    if metric is None:
        return None
    mpts = backend.metric_trend(metric, since)
    return TrendSeries(
        metric.label(), metric.name.rsplit("_", 1)[-1] if "_" in metric.name else "",
        tuple(p.ts for p in mpts), tuple(p.value for p in mpts), run_ids=tuple(p.run_id for p in mpts),
    )


class TrendsScreen(Screen[None]):
    BINDINGS = [Binding("escape", "back", "Back"), Binding("ctrl+r", "reload", "Reload")]

    def __init__(self, catalog: HistoryCatalog | None = None, *, ahead: bool = False) -> None:
        """``catalog``: the pickers' names, when the opener has them (history does):
        the first chart is then fetched as the screen mounts, not after a catalog read.
        ``ahead``: built before it is opened (see CockpitApp._prebuild): nothing is read
        until ``reopen``, as it opens."""
        super().__init__()
        self._ahead = ahead
        self._given = catalog is not None
        self.catalog = catalog or HistoryCatalog()
        self.series: TrendSeries | None = None
        self._requested: tuple[object, ...] | None = None  # what the last fetch was asked for
        self._tests_of: str | None = None  # the domain whose tests #t-test offers
        self._gc = GcPause()
        self._styles = ResumeStyles()
        self._chart: TrendChart | None = TrendChart()  # None while closed: a closed chart is freed
        self._pending: ChartAhead | None = None  # a first chart read ahead, shown as the screen opens
        self._opening = 0  # bumped as the screen closes: a fetch asked for before is not shown
        self._fresh = True  # as a fresh open shows it: nothing to reset

    def compose(self) -> ComposeResult:
        # The test and metric pickers are built when their kind of chart is first picked:
        # a Select costs ~12 ms to mount, and the screen opens on a pass-rate chart.
        cat = self.catalog
        if not self._ahead:
            self._gc.hold()  # from the start of the screen to its first chart
        self._styles.styled(self.app)
        chart = self._chart = self._chart or TrendChart()
        if self._given:
            # The pickers will hold their first values (a Select shows its value only once
            # mounted): the chart they show is asked for now, so its query and drawing run
            # while the widgets are built (~0.1 s each at 10k runs).
            self._fetch_once(("pass", None, cat.domains[0] if cat.domains else None, None, None), None, chart)
        yield Static(" Trends", id="trends-title", classes="screen-title")
        with Horizontal(classes="filters"):
            yield Select[str](KINDS, value="pass", allow_blank=False, id="t-kind", compact=True)
            yield Select[str](((d, d) for d in cat.domains), prompt="domain", value=_first(cat.domains), id="t-domain", compact=True)
            yield Select[str](((f"last {p}", p) for p, _ in PERIODS), prompt="all time", id="t-period", compact=True)
        yield chart
        yield Static(id="trend-summary", classes="status-line")
        yield KeyBar()

    @property
    def cockpit(self) -> CockpitApp:
        return cast("CockpitApp", self.app)

    def on_mount(self) -> None:
        self.query_one("#t-kind", Select).focus()
        if not self._given and not self._ahead:  # given: compose asked for the first chart
            self.cockpit.query_history("trends", self.cockpit.backend.history_catalog, then=self._got_catalog, group="catalog")

    def reopen(self, catalog: HistoryCatalog | None, ahead: ChartAhead | None = None) -> None:
        """Before the history screen pushes this screen again, or first if built ahead (it
        keeps one: building these widgets was ~150 ms of every 'g'). Closing reset it to a
        fresh open's state (here if a quick key came first); the chart widget is made anew
        (a closed chart, with its drawing, is freed; one built ahead is blank and kept)
        and its first chart asked for now, or shown as it opens if read ahead (``ahead``)."""
        self._close()
        self._ahead = False
        self._given = catalog is not None
        if catalog is not None and catalog != self.catalog:
            self.catalog = catalog
            dom = self.query_one("#t-domain", Select)
            with self.prevent(Select.Changed):
                dom.set_options((d, d) for d in catalog.domains)
                dom.value = _first(catalog.domains)
        self._gc.hold()
        chart = self._chart
        if chart is None:
            self._chart = chart = TrendChart()
            self.mount(chart, before="#trend-summary")
        if catalog is not None and ahead is not None and ahead.key == first_key(catalog):
            self._requested, self._pending = ahead.key, ahead  # shown on resume (see there)
        elif catalog is not None:
            self._fetch_once(first_key(catalog), None, chart)
        else:
            self.cockpit.query_history("trends", self.cockpit.backend.history_catalog, then=self._got_catalog, group="catalog")

    async def on_screen_suspend(self) -> None:
        if self not in self.app.screen_stack:  # closed, not covered by a screen of its own
            removed = self._close()
            if removed is not None:
                await removed
                # A screen out of the stack is not laid out: its compositor's map, cached
                # arrangements, child lists and query_one results kept the removed chart
                # (and its drawing) alive until the next open.
                clear_layout_caches(self)

    def lay_out_ahead(self, size: Size) -> None:
        """Lay the screen out at ``size`` while off the stack (built ahead): the chart's
        size is then known to the first chart's worker, which draws it at that size."""
        lay_out(self, size)

    def _close(self) -> AwaitRemove | None:
        """Back to what a fresh open shows before its chart arrives, as the screen closes:
        the pass-rate kind, the first domain, all time; the test and metric pickers and
        the chart itself gone."""
        if self._fresh:
            return None
        self._fresh = True
        self._opening += 1
        self._gc.release()
        self._pending = None
        self.workers.cancel_group(self, "trend")
        self.series, self._requested, self._tests_of = None, None, None
        with self.prevent(Select.Changed):
            self.query_one("#t-kind", Select).value = "pass"
            dom = self.query_one("#t-domain", Select)
            dom.display = True
            dom.value = _first(self.catalog.domains)
            self.query_one("#t-period", Select).clear()
        self.query_one("#t-kind", Select).focus(scroll_visible=False)
        self.query_one("#trends-title", Static).update(" Trends", layout=False)
        self.query_one("#trend-summary", Static).update("", layout=False)
        gone = [*self.query("#t-test, #t-metric"), *([self._chart] if self._chart is not None else [])]
        self._chart = None
        return self.remove_children(gone) if gone else None

    def _got_catalog(self, catalog: HistoryCatalog) -> None:
        self.catalog = catalog
        dom = self.query_one("#t-domain", Select)
        dom.set_options((d, d) for d in catalog.domains)
        if catalog.domains:
            dom.value = catalog.domains[0]
        for metric in self.query("#t-metric").results(Select):
            metric.set_options(_metric_options(catalog))
            if catalog.metrics:
                metric.value = "0"
        self._tests_of = None
        self._fill_tests()
        self.action_reload()

    def _fill_tests(self) -> None:
        domain = self._val("#t-domain")
        if domain == self._tests_of:
            return  # the picker's echo of a value we set: its tests are already there
        for sel in self.query("#t-test").results(Select):  # none yet: built with the right tests
            self._tests_of = domain
            tests = self.catalog.tests.get(domain or "", ())
            sel.set_options((t, t) for t in tests)
            if tests:
                sel.value = tests[0]

    def _val(self, sel_id: str) -> str | None:
        found = list(self.query(sel_id).results(Select))  # a picker not built yet: no value
        v = found[0].value if found else Select.NULL
        return None if v is Select.NULL else str(v)

    async def _sync_pickers(self) -> None:
        """Show the pickers the chosen kind of chart needs, building one the first time."""
        kind = self._val("#t-kind")
        self.query_one("#t-domain").display = kind in ("pass", "duration")
        for picker_id, wanted in (("t-test", kind == "duration"), ("t-metric", kind == "metric")):
            found = list(self.query(f"#{picker_id}"))
            if found:
                found[0].display = wanted
            elif wanted:
                # Mounted before asking for the chart: a Select has its value once mounted.
                await self.query_one(".filters").mount(self._picker(picker_id), before="#t-period")

    def _picker(self, picker_id: str) -> Select[str]:
        if picker_id == "t-metric":
            return Select[str](_metric_options(self.catalog), prompt="metric",
                               value=_first(("0",) if self.catalog.metrics else ()), id="t-metric", compact=True)
        self._tests_of = domain = self._val("#t-domain")
        tests = self.catalog.tests.get(domain or "", ())
        return Select[str](((t, t) for t in tests), prompt="test", value=_first(tests), id="t-test", compact=True)

    async def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if self._ahead:  # the pickers' first values, echoed as the screen is built ahead
            return
        if event.select.id == "t-kind":
            await self._sync_pickers()
        if event.select.id == "t-domain":
            self._fill_tests()
        self._reload()

    def action_reload(self) -> None:
        self._reload(force=True)

    def _reload(self, force: bool = False) -> None:
        kind = self._val("#t-kind") or "pass"
        period = self._val("#t-period")
        since = None if period is None else self.cockpit.clock() - dict(PERIODS)[period]
        metric_i = self._val("#t-metric")
        metric = self.catalog.metrics[int(metric_i)] if metric_i is not None and int(metric_i) < len(self.catalog.metrics) else None
        domain, test = self._val("#t-domain"), self._val("#t-test")
        # Filling the pickers echoes back as several Select.Changed: one query per chart,
        # not one per echo (at 10k runs each is ~0.1 s of SQLite, and they contend).
        key = (kind, period, domain if kind in ("pass", "duration") else None,
               test if kind == "duration" else None, metric if kind == "metric" else None)
        if key == self._requested and not force:
            return
        self._fetch_once(key, since)

    def _fetch_once(self, key: ChartKey, since: float | None,
                    chart: TrendChart | None = None) -> None:
        self._requested = key
        self._gc.hold()  # until this chart is on screen
        kind, _period, domain, test, metric = key
        chart = chart or self._chart
        if chart is None:
            return
        # The chart weakly: a finished thread worker can stay referenced by the executor
        # thread that ran it (Textual's active_worker context variable) until that thread
        # runs another worker, and would keep a closed chart alive.
        self.fetch(kind, domain, test, metric, since, weakref.ref(chart), chart.plot_theme(), self.app.size, self._opening)

    @work(thread=True, exclusive=True, group="trend", exit_on_error=False)
    def fetch(self, kind: str, domain: str | None, test: str | None, metric: MetricKey | None, since: float | None,
              chart_ref: weakref.ref[TrendChart], theme: str, app_size: Size, opening: int) -> None:
        try:
            series = read_series(self.cockpit.backend, kind, domain, test, metric, since)
            # Drawn here, at the size the chart has by now (or, not laid out yet, the size
            # it had at this terminal size before), while the UI thread lays out the
            # screen; the chart draws again itself if its size turns out different.
            chart = chart_ref()
            size = chart.size if chart is not None and chart.size.area else TrendChart.size_for(app_size)
            del chart
            drawing = Drawing(series, size, theme, draw(series, size, theme)) if size.area else None
        except Exception as err:
            self.app.call_from_thread(self.notify, f"trends: {error_line(err)}", severity="error", timeout=10)
            return
        if get_current_worker().is_cancelled:
            return  # superseded: a late answer must not replace the newer chart
        self.app.call_from_thread(self._show, series, drawing, opening)

    def on_unmount(self) -> None:
        self._gc.release()

    def on_screen_resume(self, event: events.ScreenResume) -> None:
        self._styles.resume(self.app, event)
        self._fresh = False
        if self._pending is not None:  # on screen now: its data frame is the next one
            ahead, self._pending = self._pending, None
            self._show(ahead.series, ahead.drawing, self._opening)

    def _show(self, series: TrendSeries | None, drawing: Drawing | None = None, opening: int | None = None) -> None:
        if opening is not None and opening != self._opening:
            return  # asked for before the screen closed
        self.series = series
        if self._chart is not None:
            self._chart.show_series(series, drawing)
        self._gc.release_after_paint(self)
        summary = self.query_one("#trend-summary", Static)
        if series is None:
            summary.update("pick what to chart above (tab to move, enter to open a list)" if self.catalog.domains or self.catalog.metrics else "no history yet — finished runs appear here", layout=False)
            return
        vals = series.values
        if not vals:
            summary.update(f"{series.title}: no data in this period", layout=False)
            return
        fmt = (lambda v: duration(v)) if series.unit == "s" else (lambda v: f"{v:.4g}{series.unit}")
        summary.update(
            Text(
                f"{len(vals)} run{'s' if len(vals) != 1 else ''} · latest {fmt(vals[-1])} · min {fmt(min(vals))} · "
                f"median {fmt(statistics.median(vals))} · max {fmt(max(vals))}"
            ),
            layout=False,  # one fixed row: no relayout
        )
        self.query_one("#trends-title", Static).update(Text(f" Trends — {series.title}", style="bold"), layout=False)

    def action_back(self) -> None:
        if isinstance(self.focused, Select) and self.focused.expanded:
            return
        self.app.pop_screen()


def _metric_options(catalog: HistoryCatalog) -> list[tuple[str, str]]:
    return [(m.label(), str(i)) for i, m in enumerate(catalog.metrics)]


def _first(values: tuple[str, ...]) -> str | NoSelection:
    return values[0] if values else Select.NULL
