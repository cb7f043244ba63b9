"""Per-domain progress of the current run: bar, pass/fail counts, current test,
elapsed time and an ETA from historical test durations (``—`` when history has none,
``≥`` when some of the tests left never ran before)."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import DataTable

from vexfs_cockpit.tui.format import STATUS_STYLE, duration, progress_bar
from vexfs_cockpit.tui.state import DomainView, LiveState

BAR_CELLS = 8
CURRENT_CELLS = 22
COLUMNS = (("domain", "domain"), ("progress", "progress"), ("results", "✓ ✗ ⏭"), ("current", "current test"), ("elapsed", "elapsed"), ("eta", "ETA"))


class DomainProgress(DataTable[Text | str]):
    DEFAULT_CSS = """
    DomainProgress {
        height: auto;
        max-height: 8;
    }
    """

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)

    def selected_domain(self) -> str | None:
        if self.row_count == 0:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return None if key.value is None else str(key.value)

    def show(self, state: LiveState, now: float) -> None:
        wanted = list(state.domains)
        existing = [str(k.value) for k in self.rows]
        if existing != wanted[: len(existing)] or len(existing) > len(wanted):
            self.clear()  # a new run: different domains
            existing = []
        for name in wanted:
            cells = _cells(state.domains[name], state, now)
            if name in existing:
                for (key, _), value in zip(COLUMNS, cells):
                    self.update_cell(name, key, value, update_width=True)
            else:
                self.add_row(*cells, key=name)
        self.display = bool(wanted)


def _cells(dom: DomainView, state: LiveState, now: float) -> tuple[Text | str, ...]:
    total = len(dom.planned)
    bar = Text(progress_bar(dom.done, total, BAR_CELLS), style=STATUS_STYLE.get(dom.status, ""))
    bar.append(f" {dom.done}/{total}" if total else " —", style="")
    results = Text()
    results.append(f"{dom.passed}", style="green")
    results.append(" ")
    results.append(f"{dom.failed}", style="bold red" if dom.failed else "dim")
    results.append(" ")
    results.append(f"{dom.skipped}", style="dim")
    if dom.current is not None:
        name = dom.current if dom.current_attempt <= 1 else f"{dom.current} (try {dom.current_attempt})"
        current: Text | str = Text(_clip(name, CURRENT_CELLS), style="cyan")
        if over := _over_p95(dom, now):
            current.append(f" {over}", style="bold yellow")
    elif dom.finished_at is not None:
        current = Text(dom.status.upper() + (f": {dom.reason}" if dom.reason else ""), style=STATUS_STYLE.get(dom.status, ""))
        current.truncate(CURRENT_CELLS, overflow="ellipsis")
    else:
        current = Text(dom.status, style="dim")
    return (
        dom.domain,
        bar,
        results,
        current,
        duration(dom.elapsed(now)),
        _eta(dom, state, now),
    )


def _eta(dom: DomainView, state: LiveState, now: float) -> Text | str:
    """Time left from history: ``≥`` when some tests never ran before, ``—`` when none did."""
    if dom.finished_at is not None:
        return "—"
    if dom.domain not in state.expected_for:
        return Text("…", style="dim")  # history not read yet
    left, unknown = dom.remaining(now, state.expected)
    todo = sum(1 for t in dom.planned if t not in dom.results)
    if todo and unknown == todo:
        return Text("—", style="dim")
    return f"≥{duration(left)}" if unknown else duration(left)


def _over_p95(dom: DomainView, now: float) -> str:
    """``12s over its p95`` once the running test has taken a second longer than its p95
    in history (the p95 its deadline came from; "" without one)."""
    if dom.current_p95 <= 0 or dom.current_started is None:
        return ""
    over = now - dom.current_started - dom.current_p95
    return f"{duration(over)} over its p95" if over >= 1 else ""


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1] + "…"
