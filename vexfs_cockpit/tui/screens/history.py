"""Past runs: filters (env, domain, status, period), search, and the ways into
run detail, comparison, trends and crash signatures."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Input, Select, Static

from vexfs_cockpit.engine.results import TestStatus
from vexfs_cockpit.store.history import RunSummary
from vexfs_cockpit.tui.backend import HistoryCatalog, RunFilter
from vexfs_cockpit.tui.format import STATUS_STYLE, duration, timestamp

if TYPE_CHECKING:
    from vexfs_cockpit.tui.app import CockpitApp

STATUSES = ("passed", "failed", "errored", "aborted", "running")
PERIODS: tuple[tuple[str, float], ...] = (("24h", 86400.0), ("7d", 7 * 86400.0), ("30d", 30 * 86400.0), ("90d", 90 * 86400.0))
COLUMNS = (("mark", " "), ("run", "run"), ("started", "started"), ("env", "env"), ("status", "status"), ("results", "✓ ✗ ⏭"), ("time", "time"), ("profile", "profile"))


class HistoryScreen(Screen[None]):
    # The table, not the first filter: focusing a Select first and then the table costs
    # an extra focus change and Footer rebuild (~0.2 s of CPU here) on every open.
    AUTO_FOCUS = "#runs"
    BINDINGS = [
        Binding("escape", "back", "Back"),
        Binding("slash", "search", "Search"),
        Binding("space", "mark", "Mark"),
        Binding("c", "compare", "Compare"),
        Binding("g", "trends", "Trends"),
        Binding("x", "crashes", "Crashes"),
        Binding("ctrl+r", "reload", "Reload", show=False),
    ]

    def __init__(self) -> None:
        super().__init__()
        self.runs: list[RunSummary] = []
        self.marked: list[str] = []  # at most two run ids, in marking order
        self.catalog = HistoryCatalog()

    def compose(self) -> ComposeResult:
        yield Static(" History", id="history-title", classes="screen-title")
        with Horizontal(classes="filters"):
            yield Select[str]((), prompt="any env", id="f-env", compact=True)
            yield Select[str]((), prompt="any domain", id="f-domain", compact=True)
            yield Select[str](((s, s) for s in STATUSES), prompt="any status", id="f-status", compact=True)
            yield Select[str](((f"last {p}", p) for p, _ in PERIODS), prompt="all time", id="f-period", compact=True)
            yield Input(placeholder="search (/)", id="f-text", compact=True)
        table: DataTable[Text | str] = DataTable(id="runs", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static(id="history-status", classes="status-line")
        yield Footer()

    @property
    def cockpit(self) -> CockpitApp:
        return cast("CockpitApp", self.app)

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        table.focus()
        self.cockpit.query_history("history", self.cockpit.backend.history_catalog, then=self._got_catalog, group="catalog")
        # No reload here: pushing the screen posts ScreenResume, which loads the runs.

    def on_screen_resume(self) -> None:
        self.action_reload()  # first shown, or back from another screen: a run may have finished meanwhile

    # -- data ---------------------------------------------------------------------------
    def current_filter(self) -> RunFilter:
        def val(sel_id: str) -> str | None:
            v = self.query_one(sel_id, Select).value
            return None if v is Select.NULL else str(v)

        period = val("#f-period")
        since = None
        if period is not None:
            since = self.cockpit.clock() - dict(PERIODS)[period]
        return RunFilter(
            env=val("#f-env"),
            domain=val("#f-domain"),
            status=val("#f-status"),
            since=since,
            text=self.query_one("#f-text", Input).value.strip(),
        )

    def action_reload(self) -> None:
        flt = self.current_filter()
        self.cockpit.query_history("history", self.cockpit.backend.list_runs, flt, then=self._got_runs, group="runs")

    def _got_catalog(self, catalog: HistoryCatalog) -> None:
        self.catalog = catalog
        self.query_one("#f-env", Select).set_options((e, e) for e in catalog.envs)
        self.query_one("#f-domain", Select).set_options((d, d) for d in catalog.domains)

    def _got_runs(self, runs: list[RunSummary]) -> None:
        self.runs = runs
        table = self.query_one("#runs", DataTable)
        table.clear()
        now = self.cockpit.clock()
        for r in runs:
            table.add_row(*self._cells(r, now), key=r.run_id)
        title = self.query_one("#history-title", Static)
        flt = self.current_filter()
        active = [f"{k}={v}" for k, v in (("env", flt.env), ("domain", flt.domain), ("status", flt.status)) if v]
        if flt.text:
            active.append(f"“{flt.text}”")
        title.update(Text(f" History — {len(runs)} run{'s' if len(runs) != 1 else ''}" + (f" ({', '.join(active)})" if active else ""), style="bold"))
        self._show_status()

    def _cells(self, r: RunSummary, now: float) -> tuple[Text | str, ...]:
        mark = "●" if r.run_id in self.marked else " "
        results = Text()
        results.append(str(r.counts.get(TestStatus.PASSED.value, 0)), style="green")
        results.append(" ")
        results.append(str(r.bad), style="bold red" if r.bad else "dim")
        results.append(" ")
        results.append(str(r.counts.get(TestStatus.SKIPPED.value, 0)), style="dim")
        return (
            Text(mark, style="bold yellow"),
            r.run_id,
            timestamp(r.started_at, now),
            r.env,
            Text(r.status, style=STATUS_STYLE.get(r.status, "")),
            results,
            duration(r.duration_s),
            r.profile,
        )

    def _show_status(self) -> None:
        if not self.runs:
            msg = "no runs yet — start one with s" if not self.current_filter_active() else "no run matches these filters"
        else:
            msg = f"enter: open · space: mark ({len(self.marked)}/2) · c: compare marked · g: trends · x: crash signatures"
        self.query_one("#history-status", Static).update(msg)

    def current_filter_active(self) -> bool:
        f = self.current_filter()
        return any((f.env, f.domain, f.status, f.since, f.text))

    # -- filters ---------------------------------------------------------------------------
    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.action_reload()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.action_reload()
        self.query_one("#runs", DataTable).focus()

    def action_search(self) -> None:
        self.query_one("#f-text", Input).focus()

    # -- navigation --------------------------------------------------------------------------
    def selected_run(self) -> str | None:
        table = self.query_one("#runs", DataTable)
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key.value
        return None if key is None else str(key)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        from vexfs_cockpit.tui.screens.run_detail import RunDetailScreen

        if event.row_key.value is not None:
            self.app.push_screen(RunDetailScreen(str(event.row_key.value)))

    def action_mark(self) -> None:
        run_id = self.selected_run()
        if run_id is None:
            return
        if run_id in self.marked:
            self.marked.remove(run_id)
        else:
            self.marked.append(run_id)
            self.marked = self.marked[-2:]
        table = self.query_one("#runs", DataTable)
        now = self.cockpit.clock()
        for r in self.runs:
            table.update_cell(r.run_id, "mark", self._cells(r, now)[0])
        self._show_status()

    def action_compare(self) -> None:
        from vexfs_cockpit.tui.screens.compare import CompareScreen

        if len(self.marked) != 2:
            self.notify("mark two runs with space first", severity="warning")
            return
        started = {r.run_id: r.started_at for r in self.runs}
        a, b = sorted(self.marked, key=lambda rid: started.get(rid, 0.0))
        self.app.push_screen(CompareScreen(a, b))

    def action_trends(self) -> None:
        from vexfs_cockpit.tui.screens.trends import TrendsScreen

        self.app.push_screen(TrendsScreen())

    def action_crashes(self) -> None:
        from vexfs_cockpit.tui.screens.crashes import CrashesScreen

        self.app.push_screen(CrashesScreen())

    def action_back(self) -> None:
        focused: Any = self.focused
        if isinstance(focused, (Input, Select)):
            self.query_one("#runs", DataTable).focus()
        else:
            self.app.pop_screen()
