"""Past runs: filters (env, domain, status, period), search, and the ways into
run detail, comparison, trends and crash signatures."""

from __future__ import annotations

from dataclasses import replace
from typing import TYPE_CHECKING, Any, cast

from rich.cells import cell_len
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal
from textual.geometry import Size
from textual.screen import Screen
from textual.widgets import DataTable, Input, Select, Static

from vexfs_cockpit.engine.results import TestStatus
from vexfs_cockpit.store.history import RunSummary
from vexfs_cockpit.tui.backend import HistoryCatalog, RunFilter
from vexfs_cockpit.tui.format import PERIODS, STATUS_STYLE, duration, timestamp
from vexfs_cockpit.tui.gc_pause import GcPause
from vexfs_cockpit.tui.internals import lay_out, mount_screen
from vexfs_cockpit.tui.screen_styles import ResumeStyles
from vexfs_cockpit.tui.widgets.key_bar import KeyBar
from vexfs_cockpit.tui.widgets.text_table import TextTable

if TYPE_CHECKING:
    from vexfs_cockpit.tui.app import CockpitApp
    from vexfs_cockpit.tui.screens.trends import ChartAhead, TrendsScreen

STATUSES = ("passed", "failed", "errored", "aborted", "running")
PAGE = 50  # runs per read: a screenful and more; the next page loads as the end nears
LOAD_AHEAD = 10  # rows before the last one shown
# Title, filters, status line and key bar: one row each (app.tcss, KeyBar); the runs
# table has the rest.
FIXED_ROWS = 4
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

    def __init__(self, *, ahead: bool = False) -> None:
        """``ahead``: built before it is opened (the app builds its history screen once
        the dashboard is up): the first page is asked for by ``reopen``, as it opens."""
        super().__init__()
        self._ahead = ahead
        self.runs: list[RunSummary] = []
        self.marked: list[str] = []  # at most two run ids, in marking order
        self.catalog: HistoryCatalog | None = None  # None until its read answers
        self._gc = GcPause()
        self._shown_filter: RunFilter | None = None  # the filter of the runs shown (first page)
        self._more = False  # the last page was full: older runs may follow
        self._loading_more = False
        self._catalog_asked = False
        # The first page is asked for before the widgets are built: its SQL (no GIL) runs
        # while they compose, and the first frame may already hold the runs.
        self._first_asked = False
        self._first: tuple[RunFilter, list[RunSummary]] | None = None  # answered before on_mount
        self._table_ready = False  # on_mount ran: the table has its columns
        # Bumped when the screen is closed (reset for its next open): an answer asked for
        # before that is for a list no longer wanted.
        self._opening = 0
        self._fresh = True  # as a fresh open shows it: nothing to reset
        self._styles = ResumeStyles()
        self._trends: TrendsScreen | None = None  # see action_trends
        self._building_trends = False  # build_trends under way
        self._trend_ahead: ChartAhead | None = None  # its first chart, read ahead for this open

    def compose(self) -> ComposeResult:
        if not self._ahead:
            self._ask_first_page()
        self._styles.styled(self.app)
        yield Static(" History", id="history-title", classes="screen-title")
        with Horizontal(classes="filters"):
            yield Select[str]((), prompt="any env", id="f-env", compact=True)
            yield Select[str]((), prompt="any domain", id="f-domain", compact=True)
            yield Select[str](((s, s) for s in STATUSES), prompt="any status", id="f-status", compact=True)
            yield Select[str](((f"last {p}", p) for p, _ in PERIODS), prompt="all time", id="f-period", compact=True)
            yield Input(placeholder="search (/)", id="f-text", compact=True)
        table = TextTable(id="runs", cursor_type="row", zebra_stripes=True)
        table.styles.max_height = self._table_rows(self.app.size.height)
        yield table
        yield Static(id="history-status", classes="status-line")
        yield KeyBar()

    @property
    def cockpit(self) -> CockpitApp:
        return cast("CockpitApp", self.app)

    def on_mount(self) -> None:
        table = self.query_one("#runs", DataTable)
        self._set_columns(table, [])
        table.focus()
        self.watch(table, "scroll_y", self._more_if_near_end, init=False)
        self._table_ready = True
        if self._first is not None:  # answered while the screen was built
            self._got_runs(*self._first)
            self._first = None
        # The filters' names are read once the runs are on screen: not in their way.

    def on_unmount(self) -> None:
        self._gc.release()

    def on_resize(self, event: events.Resize) -> None:
        self.query_one("#runs").styles.max_height = self._table_rows(event.size.height)

    @staticmethod
    def _table_rows(height: int) -> int:
        """The table grows with its rows (DataTable: height auto) up to the rows the screen
        has left. At DataTable's own max-height (100%) a page of 50 runs made the screen
        taller than the terminal, and focusing the table scrolled the title and filters
        out of sight (the status line was below the key bar)."""
        return max(1, height - FIXED_ROWS)

    def _ask_first_page(self) -> None:
        """Ask for the newest runs under the fresh filters, as the screen opens."""
        self._gc.hold()  # until the runs are on screen
        self._first_asked = True
        flt = RunFilter(text="", limit=PAGE)  # what current_filter() reads from the fresh filters
        opening = self._opening
        self.cockpit.query_history("history", self.cockpit.backend.list_runs, flt,
                                   then=lambda runs: opening == self._opening and self._got_first(flt, runs),
                                   group="runs")

    def reopen(self) -> None:
        """Before the app pushes this screen again, or first if built ahead (it keeps one
        history screen: building one costs ~90 ms of widgets per open). Closing reset it
        to a fresh open's state (here if a quick key came first); the first page is asked
        for now, before the push."""
        self._reset()
        self._ask_first_page()

    @property
    def trends(self) -> TrendsScreen | None:
        """The trends screen this screen keeps, once built."""
        return self._trends

    async def build_trends(self) -> None:
        """Build the trends screen ahead, off the screen stack (see CockpitApp._prebuild).
        Kept once mounted; if a 'g' built one meanwhile, that one is kept instead."""
        from vexfs_cockpit.tui.screens.trends import TrendsScreen

        if self._trends is not None or self._building_trends:
            return
        self._building_trends = True
        try:
            trends = TrendsScreen(ahead=True)
            await mount_screen(self.app, trends)
        finally:
            self._building_trends = False
        if self._trends is None:
            self._trends = trends
            self.app.install_screen(trends, "trends")
        else:
            await trends.remove()

    def lay_out_ahead(self, size: Size) -> None:
        """Lay the screen out at ``size`` while off the stack (built ahead): its first
        push then finds its layout done."""
        lay_out(self, size)

    def on_screen_resume(self, event: events.ScreenResume) -> None:
        self._styles.resume(self.app, event)
        self._fresh = False
        if self._first_asked:  # just opened: compose or reopen asked for the first page
            self._first_asked = False
            return
        self.action_reload()  # back from another screen: a run may have finished meanwhile

    def on_screen_suspend(self) -> None:
        if self not in self.app.screen_stack:  # closed, not covered by a screen of its own
            self._reset()

    def _reset(self) -> None:
        """Back to what a fresh open shows before its runs arrive: no runs, no marks, no
        filters or search, the table at the top and focused. Done as the screen closes,
        so the next open pays nothing for it."""
        if self._fresh:
            return
        self._fresh = True
        self._opening += 1
        self._gc.release()
        self._trend_ahead = None
        self.runs, self.marked, self._shown_filter, self._more, self._loading_more = [], [], None, False, False
        self._first_asked, self._first, self._catalog_asked = False, None, False
        for sel in self.query(Select).results(Select):
            if sel.value is not Select.NULL:
                with self.prevent(Select.Changed):
                    sel.clear()
        search = self.query_one("#f-text", Input)
        if search.value:
            with self.prevent(Input.Changed):
                search.value = ""
        table = self.query_one("#runs", DataTable)
        self._fill(table, [])
        self.set_focus(table, scroll_visible=False)
        self.query_one("#history-title", Static).update(" History", layout=False)
        self.query_one("#history-status", Static).update("", layout=False)

    def _got_first(self, flt: RunFilter, runs: list[RunSummary]) -> None:
        if self._table_ready:
            self._got_runs(flt, runs)
        else:
            self._first = (flt, runs)  # on_mount shows them

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
        self._trend_ahead = None  # read before this reload: the trends screen reads again
        flt = replace(self.current_filter(), limit=PAGE)
        opening = self._opening
        self.cockpit.query_history("history", self.cockpit.backend.list_runs, flt,
                                   then=lambda runs: opening == self._opening and self._got_runs(flt, runs),
                                   group="runs")

    def _got_catalog(self, catalog: HistoryCatalog) -> None:
        # The trends screen's module (with plotext: ~60 ms of imports on the UI thread) is
        # loaded here, after the runs are on screen, instead of on the first 'g'.
        import vexfs_cockpit.tui.screens.trends  # noqa: F401

        old, self.catalog = self.catalog, catalog
        # A reopened screen has the names of its last open: set again only if they changed.
        if old is None or old.envs != catalog.envs:
            self.query_one("#f-env", Select).set_options((e, e) for e in catalog.envs)
        if old is None or old.domains != catalog.domains:
            self.query_one("#f-domain", Select).set_options((d, d) for d in catalog.domains)
        if self._trends is None and self.app.is_screen_installed(self):
            # The app had not built the trends screen ahead (this screen was opened
            # before its build): built now, the runs being on screen.
            self.run_worker(self._trends_ahead(catalog), group="trends-ahead", exclusive=True, exit_on_error=False)
        else:
            self._read_trend_ahead(catalog)

    async def _trends_ahead(self, catalog: HistoryCatalog) -> None:
        await self.build_trends()
        trends = self._trends
        if trends is not None and trends not in self.app.screen_stack and trends._fresh:
            trends.lay_out_ahead(self.app.size)
        if self.catalog is catalog and self in self.app.screen_stack:
            self._read_trend_ahead(catalog)

    def _read_trend_ahead(self, catalog: HistoryCatalog) -> None:
        """The kept trends screen's first chart (the first domain's pass rate), read and
        drawn in a thread now that the runs are on screen: on 'g' it is shown as the screen
        opens. Read on 'g', its 10k-row query and draw ran in a thread while the UI thread
        built the screen's frame, and each row's step waited for the GIL (~120 ms for an
        ~11 ms query). Dropped as this screen reloads or closes: a chart is never older
        than the runs listed here."""
        from vexfs_cockpit.tui.screens.trends import ChartAhead, first_key, read_series
        from vexfs_cockpit.tui.widgets.trend_chart import Drawing, TrendChart, draw

        self._trend_ahead = None
        theme, size = TrendChart.theme_for(self.app.theme), TrendChart.size_for(self.app.size)
        if self._trends is None or not catalog.domains or theme is None or not size.area:
            return  # no kept trends screen to show it, or the chart's size or theme not known
        key, opening, backend = first_key(catalog), self._opening, self.cockpit.backend

        def read() -> ChartAhead:
            series = read_series(backend, key[0], key[2], None, None, None)
            return ChartAhead(key, series, Drawing(series, size, theme, draw(series, size, theme)))

        def got(ahead: ChartAhead) -> None:
            if opening == self._opening and self.catalog is catalog:
                self._trend_ahead = ahead

        self.cockpit.query_history("trends", read, then=got, group="trend-ahead")

    def _got_runs(self, flt: RunFilter, runs: list[RunSummary]) -> None:
        self.runs, self._shown_filter, self._more, self._loading_more = runs, flt, len(runs) >= flt.limit, False
        table = self.query_one("#runs", DataTable)
        now = self.cockpit.clock()
        self._fill(table, [self._cells(r, now) for r in runs])
        self._show_title()
        self._show_status()
        self._gc.release_after_paint(self)
        # A page shorter than the screen is tall; after a refresh, as the table may not be
        # laid out yet (filled as the screen mounts).
        self.call_after_refresh(self._more_if_near_end)
        if not self._catalog_asked:
            self._catalog_asked = True
            self.call_after_refresh(self.cockpit.query_history, "history", self.cockpit.backend.history_catalog,
                                    then=self._got_catalog, group="catalog")

    def _more_if_near_end(self) -> None:
        """The next page, once the view nears the last run shown (the cursor moving down
        scrolls the view too)."""
        table = self.query_one("#runs", DataTable)
        last_in_view = round(table.scroll_y) + table.size.height - 2  # less the header row
        near = max(table.cursor_row, last_in_view) >= table.row_count - LOAD_AHEAD
        if not near or not self._more or self._loading_more or self._shown_filter is None or not self.runs:
            return
        last = self.runs[-1]
        flt = replace(self._shown_filter, before=(last.started_at, last.run_id))
        self._loading_more = True
        self.cockpit.query_history("more history", self.cockpit.backend.list_runs, flt,
                                   then=lambda runs: self._got_more(flt, runs), group="runs-more")

    def _got_more(self, flt: RunFilter, runs: list[RunSummary]) -> None:
        if self._shown_filter is None or replace(flt, before=None) != self._shown_filter:
            return  # the table was reloaded meanwhile: this page continues a list no longer shown
        self._loading_more, self._more = False, len(runs) >= flt.limit
        table = self.query_one("#runs", DataTable)
        now = self.cockpit.clock()
        rows = [self._cells(r, now) for r in runs]
        self.runs = self.runs + runs
        if any(w > table.columns[key].width for w, (key, _) in zip(_widths(rows), COLUMNS)):
            cursor = table.cursor_row  # a wider cell: the columns are set again, from every row
            self._fill(table, [self._cells(r, now) for r in self.runs])
            table.move_cursor(row=cursor, animate=False)
        else:
            for r, cells in zip(runs, rows):
                table.add_row(*cells, key=r.run_id)
        self._show_title()
        self._more_if_near_end()  # still short of the screen's height

    def _fill(self, table: DataTable[Text], rows: list[tuple[Text, ...]]) -> None:
        table.clear(columns=True)
        self._set_columns(table, rows)
        for r, cells in zip(self.runs, rows):
            table.add_row(*cells, key=r.run_id)

    def _show_title(self) -> None:
        flt = self.current_filter()
        active = [f"{k}={v}" for k, v in (("env", flt.env), ("domain", flt.domain), ("status", flt.status)) if v]
        if flt.text:
            active.append(f"“{flt.text}”")
        n = len(self.runs)
        count = f"{n}{'+' if self._more else ''} run{'s' if n != 1 or self._more else ''}"
        self.query_one("#history-title", Static).update(
            Text(f" History — {count}" + (f" ({', '.join(active)})" if active else ""), style="bold"), layout=False)

    @staticmethod
    def _set_columns(table: DataTable[Text], rows: list[tuple[Text, ...]]) -> None:
        """Columns as wide as their widest cell, fixed before any row is added.

        Auto-width columns are re-measured when the table goes idle, and a frame painted
        between add_row and that pass keeps its header at the old widths for good: Textual
        8.2's DataTable keys its line cache by an update count the re-measure does not bump
        (the 120x40 history snapshot flake).
        """
        for (key, label), width in zip(COLUMNS, _widths(rows)):
            table.add_column(label, key=key, width=width)

    def _cells(self, r: RunSummary, now: float) -> tuple[Text, ...]:
        """All Text: DataTable parses a str cell as markup each time it draws it (slower,
        and a profile named "[x]" would lose its brackets)."""
        mark = "●" if r.run_id in self.marked else " "
        results = Text()
        results.append(str(r.counts.get(TestStatus.PASSED.value, 0)), style="green")
        results.append(" ")
        results.append(str(r.bad), style="bold red" if r.bad else "dim")
        results.append(" ")
        results.append(str(r.counts.get(TestStatus.SKIPPED.value, 0)), style="dim")
        return (
            Text(mark, style="bold yellow"),
            Text(r.run_id),
            Text(timestamp(r.started_at, now)),
            Text(r.env),
            Text(r.status, style=STATUS_STYLE.get(r.status, "")),
            results,
            Text(duration(r.duration_s)),
            Text(r.profile),
        )

    def _show_status(self) -> None:
        if not self.runs:
            msg = "no runs yet — start one with s" if not self.current_filter_active() else "no run matches these filters"
        else:
            msg = f"enter: open · space: mark ({len(self.marked)}/2) · c: compare marked · g: trends · x: crash signatures"
        self.query_one("#history-status", Static).update(msg, layout=False)  # one fixed row: no relayout

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

        # Its pickers' names: read once, here. The history screen the app keeps keeps its
        # trends screen too (reset as it closes, like this one).
        if not self.app.is_screen_installed(self):
            self.app.push_screen(TrendsScreen(self.catalog))
        elif self._trends is None:
            self._trends = TrendsScreen(self.catalog)
            self.app.install_screen(self._trends, "trends")
            self.app.push_screen(self._trends)
        else:
            ahead, self._trend_ahead = self._trend_ahead, None
            self._trends.reopen(self.catalog, ahead)
            self.app.push_screen(self._trends)

    def action_crashes(self) -> None:
        from vexfs_cockpit.tui.screens.crashes import CrashesScreen

        self.app.push_screen(CrashesScreen())

    def action_back(self) -> None:
        focused: Any = self.focused
        if isinstance(focused, (Input, Select)):
            self.query_one("#runs", DataTable).focus()
        else:
            self.app.pop_screen()


def _widths(rows: list[tuple[Text, ...]]) -> list[int]:
    """Per column: its label's width or its widest cell's, whichever is wider."""
    return [max([cell_len(label), *(r[i].cell_len for r in rows)])
            for i, (_, label) in enumerate(COLUMNS)]
