"""Per-test results (live from events, or a stored run): one row per test."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from rich.text import Text
from textual.widgets import DataTable

from vexfs_cockpit.engine.confirm import Verdict, badge
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

    def set_results(self, results: Iterable[TestResult], verdicts: Mapping[tuple[str, str], str] | None = None) -> None:
        """Show exactly ``results`` (order kept); existing rows update in place.
        ``verdicts``: (domain, test) -> the verdict of its confirmation reruns, a badge."""
        wanted = {row_key(r): r for r in results}
        for gone in set(self.results) - set(wanted):
            self.remove_row(gone)
        for key, r in wanted.items():
            cells = _cells(r, (verdicts or {}).get((r.domain, r.name), ""))
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


# The badge's colour: red for what the run broke, yellow for what needs a look, green for fixed.
VERDICT_STYLE: dict[str, str] = {
    Verdict.REGRESSION: "bold white on red",
    Verdict.FLAKY: "bold magenta",
    Verdict.FIXED: "bold green",
    Verdict.STILL_FAILING: "red",
    Verdict.KNOWN: "yellow",
    Verdict.KNOWN_FIXED: "bold yellow",
    Verdict.UNCONFIRMED: "dim yellow",
}


def _cells(r: TestResult, verdict: str = "") -> tuple[Text | str, ...]:
    tries = str(len(r.attempts)) if r.attempts else "1"
    status = Text(r.status.value, style=STATUS_STYLE.get(r.status.value, ""))
    if verdict:
        status.append(" ")
        status.append(badge(verdict), style=VERDICT_STYLE.get(verdict, "bold"))
    return (
        r.domain,
        r.name,
        status,
        duration(r.duration_s),
        tries,
        one_line(r.message, 80),
    )
