"""Trend charts: a domain's pass rate, a test's duration, or any stored metric, over runs.

Data is fetched in a thread worker; plotext draws it when the widget renders.
"""

from __future__ import annotations

import statistics
from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import Footer, Select, Static
from textual.worker import get_current_worker

from vexfs_cockpit.tui.backend import HistoryCatalog, MetricKey
from vexfs_cockpit.tui.format import duration, error_line
from vexfs_cockpit.tui.screens.history import PERIODS
from vexfs_cockpit.tui.widgets.trend_chart import TrendChart, TrendSeries

if TYPE_CHECKING:
    from vexfs_cockpit.tui.app import CockpitApp

KINDS = (("pass rate of a domain", "pass"), ("duration of a test", "duration"), ("a stored metric", "metric"))


class TrendsScreen(Screen[None]):
    BINDINGS = [Binding("escape", "back", "Back"), Binding("ctrl+r", "reload", "Reload")]

    def __init__(self) -> None:
        super().__init__()
        self.catalog = HistoryCatalog()
        self.series: TrendSeries | None = None
        self._requested: tuple[object, ...] | None = None  # what the last fetch was asked for

    def compose(self) -> ComposeResult:
        yield Static(" Trends", id="trends-title", classes="screen-title")
        with Horizontal(classes="filters"):
            yield Select[str](KINDS, value="pass", allow_blank=False, id="t-kind", compact=True)
            yield Select[str]((), prompt="domain", id="t-domain", compact=True)
            yield Select[str]((), prompt="test", id="t-test", compact=True)
            yield Select[str]((), prompt="metric", id="t-metric", compact=True)
            yield Select[str](((f"last {p}", p) for p, _ in PERIODS), prompt="all time", id="t-period", compact=True)
        yield TrendChart(id="chart")
        yield Static(id="trend-summary", classes="status-line")
        yield Footer()

    @property
    def cockpit(self) -> CockpitApp:
        return cast("CockpitApp", self.app)

    def on_mount(self) -> None:
        self._sync_visibility()
        self.query_one("#t-kind", Select).focus()
        self.cockpit.query_history("trends", self.cockpit.backend.history_catalog, then=self._got_catalog, group="catalog")

    def _got_catalog(self, catalog: HistoryCatalog) -> None:
        self.catalog = catalog
        dom = self.query_one("#t-domain", Select)
        dom.set_options((d, d) for d in catalog.domains)
        if catalog.domains:
            dom.value = catalog.domains[0]
        metric = self.query_one("#t-metric", Select)
        metric.set_options((m.label(), str(i)) for i, m in enumerate(catalog.metrics))
        if catalog.metrics:
            metric.value = "0"
        self._fill_tests()
        self.action_reload()

    def _fill_tests(self) -> None:
        domain = self._val("#t-domain")
        tests = self.catalog.tests.get(domain or "", ())
        sel = self.query_one("#t-test", Select)
        sel.set_options((t, t) for t in tests)
        if tests:
            sel.value = tests[0]

    def _val(self, sel_id: str) -> str | None:
        v = self.query_one(sel_id, Select).value
        return None if v is Select.NULL else str(v)

    def _sync_visibility(self) -> None:
        kind = self._val("#t-kind")
        self.query_one("#t-domain").display = kind in ("pass", "duration")
        self.query_one("#t-test").display = kind == "duration"
        self.query_one("#t-metric").display = kind == "metric"

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.select.id == "t-kind":
            self._sync_visibility()
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
        self._requested = key
        self.fetch(kind, domain, test, metric, since)

    @work(thread=True, exclusive=True, group="trend", exit_on_error=False)
    def fetch(self, kind: str, domain: str | None, test: str | None, metric: MetricKey | None, since: float | None) -> None:
        backend = self.cockpit.backend
        try:
            series: TrendSeries | None
            if kind == "pass":
                if domain is None:
                    series = None
                else:
                    pts = [p for p in backend.domain_trend(domain, since) if p.pass_rate is not None]
                    series = TrendSeries(
                        f"pass rate of {domain} per run (%)", "%",
                        tuple(p.started_at for p in pts), tuple(100.0 * (p.pass_rate or 0.0) for p in pts),
                        ylim=(0.0, 100.0), run_ids=tuple(p.run_id for p in pts),
                    )
            elif kind == "duration":
                if domain is None or test is None:
                    series = None
                else:
                    dpts = backend.test_duration_trend(domain, test, since)
                    series = TrendSeries(
                        f"duration of {domain}.{test} per run (s)", "s",
                        tuple(p.started_at for p in dpts), tuple(p.duration_s for p in dpts), run_ids=tuple(p.run_id for p in dpts),
                    )
            else:
                if metric is None:
                    series = None
                else:
                    mpts = backend.metric_trend(metric, since)
                    series = TrendSeries(
                        metric.label(), metric.name.rsplit("_", 1)[-1] if "_" in metric.name else "",
                        tuple(p.ts for p in mpts), tuple(p.value for p in mpts), run_ids=tuple(p.run_id for p in mpts),
                    )
        except Exception as err:
            self.app.call_from_thread(self.notify, f"trends: {error_line(err)}", severity="error", timeout=10)
            return
        if get_current_worker().is_cancelled:
            return  # superseded: a late answer must not replace the newer chart
        self.app.call_from_thread(self._show, series)

    def _show(self, series: TrendSeries | None) -> None:
        self.series = series
        self.query_one(TrendChart).show_series(series)
        summary = self.query_one("#trend-summary", Static)
        if series is None:
            summary.update("pick what to chart above (tab to move, enter to open a list)" if self.catalog.domains or self.catalog.metrics else "no history yet — finished runs appear here")
            return
        vals = series.values
        if not vals:
            summary.update(f"{series.title}: no data in this period")
            return
        fmt = (lambda v: duration(v)) if series.unit == "s" else (lambda v: f"{v:.4g}{series.unit}")
        summary.update(
            Text(
                f"{len(vals)} run{'s' if len(vals) != 1 else ''} · latest {fmt(vals[-1])} · min {fmt(min(vals))} · "
                f"median {fmt(statistics.median(vals))} · max {fmt(max(vals))}"
            )
        )
        self.query_one("#trends-title", Static).update(Text(f" Trends — {series.title}", style="bold"))

    def action_back(self) -> None:
        if isinstance(self.focused, Select) and self.focused.expanded:
            return
        self.app.pop_screen()
