"""Crash signatures (kind + title), newest first, with where they were last seen."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Static

from vexfs_cockpit.store.history import CrashSignature
from vexfs_cockpit.tui.format import SEVERITY_STYLE, one_line, report_title, timestamp
from vexfs_cockpit.tui.widgets.key_bar import KeyBar

if TYPE_CHECKING:
    from vexfs_cockpit.tui.app import CockpitApp


class CrashesScreen(Screen[None]):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self) -> None:
        super().__init__()
        self.signatures: list[CrashSignature] = []

    def compose(self) -> ComposeResult:
        yield Static(" crash signatures — loading…", id="crashes-title", classes="screen-title")
        table: DataTable[Text | str] = DataTable(id="crashes", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("enter: open the run where it was last seen", classes="status-line")
        yield KeyBar()

    @property
    def cockpit(self) -> CockpitApp:
        return cast("CockpitApp", self.app)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label in (("sev", "severity"), ("sig", "signature"), ("n", "seen"), ("first", "first"), ("last", "last"), ("run", "last run")):
            table.add_column(label, key=key)
        table.focus()
        self.cockpit.query_history("crash signatures", self.cockpit.backend.crash_signatures, then=self._got, group="crashes")

    def _got(self, sigs: list[CrashSignature]) -> None:
        self.signatures = sigs
        table = self.query_one(DataTable)
        table.clear()
        now = self.cockpit.clock()
        for i, s in enumerate(sigs):
            table.add_row(
                Text(s.severity.name, style=SEVERITY_STYLE[s.severity]),
                one_line(report_title(s.kind, s.title), 60),
                f"{s.count}×",
                timestamp(s.first_seen, now),
                timestamp(s.last_seen, now),
                s.last_run_id,
                key=str(i),
            )
        title = f" crash signatures — {len(sigs)}" if sigs else " crash signatures — none recorded yet"
        self.query_one("#crashes-title", Static).update(Text(title, style="bold"))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        from vexfs_cockpit.tui.screens.run_detail import RunDetailScreen

        event.stop()
        i = int(str(event.row_key.value))
        if 0 <= i < len(self.signatures) and self.signatures[i].last_run_id:
            self.app.push_screen(RunDetailScreen(self.signatures[i].last_run_id))
