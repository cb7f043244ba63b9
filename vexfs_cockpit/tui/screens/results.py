"""The current run's test results, live, with the evidence of the selected test.

Earlier runs of this session stay one key away (b cycles through them, newest first):
a re-run starts a new run, and the results it replaced must not vanish from view.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.reactive import var
from textual.screen import Screen
from textual.widgets import DataTable, Static

from vexfs_cockpit.tui.logmodel import LogInput
from vexfs_cockpit.tui.state import Part, RunRecord
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
        Binding("b", "earlier_run", "Earlier run"),
        Binding("enter", "focus_evidence", "Evidence", show=False),
    ]

    shown_run: var[int] = var(0)
    """0: the current run; n: the n-th earlier run of this session (newest first)."""

    _seen_run = ""  # the current run when this screen last drew

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
            if self.shown_run and self._current != self._seen_run:
                self.shown_run = 0  # a new run began (a re-run): show it; b goes back (and refreshes)
            self._refresh()

    def watch_shown_run(self) -> None:
        if self.is_mounted:
            self._refresh()

    def _record(self) -> RunRecord | None:
        """The run on screen: the current one, or an earlier one of this session."""
        state = self.cockpit.state
        if self.shown_run and self.shown_run <= len(state.earlier_runs):
            return state.earlier_runs[self.shown_run - 1]
        if state.run is None:
            return None
        return RunRecord(state.run, state.results, tuple(state.kernel_events), state.verdicts)

    @property
    def _current(self) -> str:
        return self.cockpit.state.run.run_id if self.cockpit.state.run is not None else ""

    def _refresh(self) -> None:
        state = self.cockpit.state
        self._seen_run = self._current
        title = self.query_one("#results-title", Static)
        rec = self._record()
        earlier = len(state.earlier_runs)
        if rec is None:
            title.update(Text(" no run yet — press s to start one; past runs are under h (history)", style="bold"))
        else:
            run = rec.run
            text = Text(f" results of run {run.run_id} · {run.env} · {'running' if run.active else run.status}", style="bold")
            if self.shown_run:
                text.append(f" · earlier run {self.shown_run} of {earlier} · b: next", style="yellow")
            elif earlier:
                if not rec.results:
                    text.append(" · no results yet", style="dim")
                text.append(f" · b: {earlier} earlier run{'s' if earlier != 1 else ''} of this session", style="dim")
            title.update(text)
        table = self.query_one(ResultsTable)
        table.set_results(rec.results if rec is not None else [], rec.verdicts if rec is not None else None)
        self._show_selected()

    def _show_selected(self) -> None:
        r = self.query_one(ResultsTable).selected()
        extra = []
        rec = self._record()
        if r is not None and rec is not None:
            extra = [e.report for e in rec.kernel_events if e.domain == r.domain and e.test == r.name]
        self.query_one(EvidenceView).show(r, extra)

    def action_earlier_run(self) -> None:
        earlier = len(self.cockpit.state.earlier_runs)
        if not earlier:
            self.notify("no earlier run in this session — h (history) has every run", severity="information")
            return
        self.shown_run = (self.shown_run + 1) % (earlier + 1)

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
        self.cockpit.rerun(self._env(), ref.domain, ref.test)

    def action_rerun_domain(self) -> None:
        ref = self.query_one(ResultsTable).selected_ref()
        if ref is None:
            self.notify("no test selected", severity="warning")
            return
        self.cockpit.rerun(self._env(), ref.domain)

    def _env(self) -> str:
        rec = self._record()
        return rec.run.env if rec is not None and rec.run.env else self.cockpit.current_env()
