"""Where each domain stands before a run: what the dashboard shows while no run is on.

One row per domain the next run will run: its last result in this environment and
when, its pass rate over the last runs as a sparkline, and its open regressions (the
newest run against the baseline, as ``vexfs-cockpit analyze`` judges them). The
per-domain progress of a run takes this place once a run starts.
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.widgets import DataTable

from vexfs_cockpit.analysis.standing import TREND_RUNS, DomainStanding
from vexfs_cockpit.tui.format import duration, sparkline

COLUMNS = (("domain", "domain"), ("last", "last run"), ("trend", "pass rate"), ("open", "open regressions"))
OPEN_CELLS = 34


class StandingTable(DataTable[Text | str]):
    DEFAULT_CSS = """
    StandingTable {
        height: auto;
        max-height: 9;
    }
    """

    def __init__(self, *, id: str | None = None):
        super().__init__(id=id, cursor_type="row", zebra_stripes=True)

    def on_mount(self) -> None:
        for key, label in COLUMNS:
            self.add_column(label, key=key)
        self.display = False  # until there is a standing to show

    def show(self, env: str, standing: Sequence[DomainStanding], now: float) -> None:
        self.clear()
        for st in standing:
            self.add_row(*standing_cells(st, now), key=st.domain)
        reference = next((s.reference for s in standing if s.reference), "")
        self.border_title = f"where you stand in {env}" + (f" · vs {reference}" if reference else "")
        # Nothing to say on an empty history: the summary line already says "no run yet".
        self.display = any(s.runs for s in standing)

    def selected_domain(self) -> str | None:
        if self.row_count == 0:
            return None
        key = self.coordinate_to_cell_key(self.cursor_coordinate).row_key
        return None if key.value is None else str(key.value)


def standing_cells(st: DomainStanding, now: float) -> tuple[Text | str, ...]:
    if st.last_status is None:
        return (st.domain, Text("never run here", style="dim"), "", Text("—", style="dim"))
    total = st.last_passed + st.last_bad
    ago = duration(now - st.last_at) + " ago" if st.last_at is not None else ""
    if st.last_bad:
        last = Text(f"✗ {st.last_bad}/{total} bad", style="bold red")
    else:
        last = Text(f"✓ {total}/{total}", style="green")
    last.append(f" · {ago}", style="dim")
    rates = st.pass_rates[-TREND_RUNS:]
    trend = Text(sparkline(rates, TREND_RUNS, top=1.0), style="green" if all(r == 1.0 for r in rates) else "yellow")
    trend.append(f" {rates[-1]:.0%}" if rates else "", style="")
    if st.regressions:
        n = len(st.regressions)
        opened = Text(f"{n} regression{'s' if n != 1 else ''}: " + ", ".join(st.regressions), style="bold red")
    elif st.last_bad > st.known:
        opened = Text("none new: failing before too", style="yellow")
    else:
        opened = Text("none", style="green")
    if st.known:
        opened.append(f" · {st.known} known", style="dim")
    opened.truncate(OPEN_CELLS, overflow="ellipsis")
    return (st.domain, last, trend, opened)
