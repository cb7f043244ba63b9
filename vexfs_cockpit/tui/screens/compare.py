"""Two runs side by side: new failures, fixed, still failing, flaky, tests only one run has,
and durations or metrics that moved (store's definitions)."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Static

from vexfs_cockpit.store.history import RunComparison, TestDelta
from vexfs_cockpit.tui.format import STATUS_STYLE, one_line
from vexfs_cockpit.tui.widgets.key_bar import KeyBar

if TYPE_CHECKING:
    from vexfs_cockpit.tui.app import CockpitApp

SECTIONS: tuple[tuple[str, str, str, str], ...] = (
    ("new_failures", "new failure", "new failures", "bold red"),
    ("fixed", "fixed", "fixed", "green"),
    ("still_failing", "still failing", "still failing", "red"),
    ("flaky", "flaky", "flaky", "yellow"),
    ("only_before", "only in older", "only in older", "magenta"),
    ("only_after", "only in newer", "only in newer", "magenta"),
    ("changed", "changed", "changed", "cyan"),
)


class CompareScreen(Screen[None]):
    BINDINGS = [Binding("escape", "app.pop_screen", "Back")]

    def __init__(self, a: str, b: str):
        super().__init__()
        self.a = a
        self.b = b
        self.rows: dict[str, TestDelta] = {}

    def compose(self) -> ComposeResult:
        yield Static(f" compare {self.a} → {self.b} — loading…", id="compare-title", classes="screen-title")
        table: DataTable[Text | str] = DataTable(id="compare", cursor_type="row", zebra_stripes=True)
        yield table
        yield Static("enter: open the newer run at that test", classes="status-line")
        yield KeyBar()

    @property
    def cockpit(self) -> CockpitApp:
        return cast("CockpitApp", self.app)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for key, label in (("what", "change"), ("domain", "domain"), ("test", "test"), ("before", "before"), ("after", "after"), ("message", "message")):
            table.add_column(label, key=key)
        table.focus()
        self.cockpit.query_history("compare", self.cockpit.backend.compare_runs, self.a, self.b, then=self._got, group="compare")

    def _got(self, comp: RunComparison) -> None:
        table = self.query_one(DataTable)
        table.clear()
        self.rows.clear()
        counts = []
        for attr, label, plural, style in SECTIONS:
            deltas: list[TestDelta] = getattr(comp, attr)
            if deltas:  # only what differs: the title must fit 80 columns
                counts.append(Text(f"{len(deltas)} {label if len(deltas) == 1 else plural}", style=style))
            for i, d in enumerate(deltas):
                key = f"{attr}:{i}"
                self.rows[key] = d
                table.add_row(
                    Text(label, style=style),
                    d.domain,
                    d.test,
                    _status(d.before),
                    _status(d.after),
                    one_line(d.message, 60),
                    key=key,
                )
        title = Text(f" compare {comp.a} → {comp.b}: ", style="bold")
        title.append_text(Text(" · ").join(counts) if counts else Text("no differences", style="dim"))
        self.query_one("#compare-title", Static).update(title)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        from vexfs_cockpit.tui.screens.run_detail import RunDetailScreen

        event.stop()
        d = self.rows.get(str(event.row_key.value))
        if d is not None:
            self.app.push_screen(RunDetailScreen(self.b, focus_test=(d.domain, d.test)))


def _status(s: str | None) -> Text:
    return Text("—", style="dim") if s is None else Text(s, style=STATUS_STYLE.get(s, ""))
