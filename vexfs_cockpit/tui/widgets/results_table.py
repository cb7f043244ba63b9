"""Per-test results (live from events, or a stored run): one row per test."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.widgets import DataTable

from vexfs_cockpit.engine.results import TestResult
from vexfs_cockpit.tui.backend import TestRef
from vexfs_cockpit.tui.format import STATUS_STYLE, duration, one_line

COLUMNS = (("domain", "domain"), ("test", "test"), ("status", "status"), ("time", "time"), ("tries", "tries"), ("message", "message"))


def row_key(r: TestResult) -> str:
    return f"{r.domain}::{r.name}"


class ResultsTable(DataTable[Text | str]):
    DEFAULT_CSS = """
    ResultsTable {
        height: 1fr;
        min-height: 4;
    }
    """

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)
        self.results: dict[str, TestResult] = {}

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def set_results(self, results: Iterable[TestResult]) -> None:
        """Show exactly ``results`` (order kept); existing rows update in place."""
        wanted = {row_key(r): r for r in results}
        for gone in set(self.results) - set(wanted):
            self.remove_row(gone)
        for key, r in wanted.items():
            cells = _cells(r)
            if key in self.results:
                for (col, _), value in zip(COLUMNS, cells):
                    self.update_cell(key, col, value, update_width=True)
            else:
                self.add_row(*cells, key=key)
        self.results = wanted

    def selected(self) -> TestResult | None:
        if self.row_count == 0:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value
        return self.results.get(str(key)) if key is not None else None

    def selected_ref(self) -> TestRef | None:
        r = self.selected()
        return None if r is None else TestRef(r.domain, r.name)


def _cells(r: TestResult) -> tuple[Text | str, ...]:
    tries = str(len(r.attempts)) if r.attempts else "1"
    return (
        r.domain,
        r.name,
        Text(r.status.value, style=STATUS_STYLE.get(r.status.value, "")),
        duration(r.duration_s),
        tries,
        one_line(r.message, 80),
    )
