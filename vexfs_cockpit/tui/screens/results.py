"""The current run's test results, live, with the evidence of the selected test."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Static

from vexfs_cockpit.tui.logmodel import LogInput
from vexfs_cockpit.tui.state import Part
from vexfs_cockpit.tui.widgets.evidence_view import EvidenceView
from vexfs_cockpit.tui.widgets.key_bar import KeyBar
from vexfs_cockpit.tui.widgets.results_table import ResultsTable

if TYPE_CHECKING:
    from vexfs_cockpit.tui.app import CockpitApp


class ResultsScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("t", "rerun_test", "Re-run test"),
        Binding("d", "rerun_domain", "Re-run domain"),
        Binding("enter", "focus_evidence", "Evidence", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield Static(id="results-title", classes="screen-title")
        yield ResultsTable(id="results")
        yield EvidenceView(id="evidence-view")
        yield KeyBar()

    @property
    def cockpit(self) -> CockpitApp:
        return cast("CockpitApp", self.app)

    def on_mount(self) -> None:
        self._refresh()
        self.query_one(ResultsTable).focus()

    def on_live(self, changed: set[Part], log_events: Sequence[LogInput]) -> None:
        if changed & {Part.RESULTS, Part.RUN}:
            self._refresh()

    def _refresh(self) -> None:
        state = self.cockpit.state
        title = self.query_one("#results-title", Static)
        if state.run is None:
            title.update(Text(" no run yet — press s to start one; past runs are under h (history)", style="bold"))
        else:
            run = state.run
            title.update(Text(f" results of run {run.run_id} · {run.env} · {'running' if run.active else run.status}", style="bold"))
        table = self.query_one(ResultsTable)
        table.set_results(state.results)
        self._show_selected()

    def _show_selected(self) -> None:
        r = self.query_one(ResultsTable).selected()
        extra = []
        if r is not None:
            extra = [e.report for e in self.cockpit.state.kernel_events if e.domain == r.domain and e.test == r.name]
        self.query_one(EvidenceView).show(r, extra)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        self._show_selected()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        event.stop()
        self.action_focus_evidence()

    def action_focus_evidence(self) -> None:
        self.query_one(EvidenceView).focus()

    def action_rerun_test(self) -> None:
        ref = self.query_one(ResultsTable).selected_ref()
        if ref is None:
            self.notify("no test selected", severity="warning")
            return
        self.cockpit.rerun(self.cockpit.current_env(), ref.domain, ref.test)

    def action_rerun_domain(self) -> None:
        ref = self.query_one(ResultsTable).selected_ref()
        if ref is None:
            self.notify("no test selected", severity="warning")
            return
        self.cockpit.rerun(self.cockpit.current_env(), ref.domain)
