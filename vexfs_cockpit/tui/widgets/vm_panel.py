"""VM table: name, domain, state, uptime, CPU %, memory and a one-minute CPU sparkline.

Everything comes from ``VmStateChanged`` / ``VmSample`` events (and the fleet listing at
start). When there is nothing to list, a one-line empty state says why and what to do.

Once a run has started, its VMs come first; the others (an earlier run's, a dev VM,
another cockpit's run) follow dim and say "not this run" in words, not only in colour.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from vexfs_cockpit.tui.format import VM_STATE_STYLE, duration, memory_kb, sparkline, vm_display_name
from vexfs_cockpit.tui.state import LiveState, VmView

SPARK_CELLS = 12
COLUMNS = (
    ("name", "VM"),
    ("state", "state"),
    ("up", "up"),
    ("cpu", "CPU%"),
    ("mem", "mem"),
    ("spark", "CPU 60s"),
    ("domain", "domain"),
)


class VmPanel(Vertical):
    DEFAULT_CSS = """
    VmPanel {
        height: auto;
        max-height: 7;
    }
    VmPanel > DataTable {
        height: auto;
        max-height: 6;
    }
    VmPanel > #vm-empty {
        height: 1;
        color: $text-muted;
        padding: 0 1;
    }
    """

    def compose(self) -> ComposeResult:
        table: DataTable[Text | str] = DataTable(id="vm-table", cursor_type="row", zebra_stripes=True)
        for key, label in COLUMNS:
            table.add_column(label, key=key)
        yield table
        yield Static("no VMs yet — press s to start a run", id="vm-empty")

    @property
    def table(self) -> DataTable[Text | str]:
        return self.query_one("#vm-table", DataTable)

    def selected_vm(self) -> str | None:
        table = self.table
        if table.row_count == 0:
            return None
        key = table.coordinate_to_cell_key(table.cursor_coordinate).row_key
        return None if key.value is None else str(key.value)

    def show(self, state: LiveState, now: float) -> None:
        table = self.table
        # This run's VMs first (False sorts before True), then the others, each by name.
        names = sorted(state.vms, key=lambda n: (state.in_this_run(n) is False, n))
        order = [str(k.value) for k in table.rows]
        kept = [n for n in order if n in state.vms]
        if kept != names[: len(kept)]:  # rows are only ever appended: a new one goes last
            selected = self.selected_vm()
            table.clear()  # the order changed (a run started, a VM joined it): add them again
            order = []
        else:
            selected = None
        existing = set(order)
        for gone in existing - set(names):
            table.remove_row(gone)
        for name in names:
            cells = _cells(state.vms[name], vm_display_name(name), now, other=state.in_this_run(name) is False)
            if name in existing:
                for (key, _), value in zip(COLUMNS, cells):
                    table.update_cell(name, key, value, update_width=True)
            else:
                table.add_row(*cells, key=name)
        if selected is not None and selected in state.vms:
            table.move_cursor(row=table.get_row_index(selected))
        empty = self.query_one("#vm-empty", Static)
        if state.fleet_error is not None:
            empty.update(Text(f"libvirt unreachable: {state.fleet_error}", style="bold red"))
            empty.display = True
        else:
            empty.update("no VMs yet — press s to start a run")
            empty.display = not names
        table.display = bool(names)


def _cells(vm: VmView, label: str, now: float, other: bool = False) -> tuple[Text | str, ...]:
    cpu = "—" if vm.cpu_pct is None else f"{vm.cpu_pct:5.1f}"
    cells: tuple[Text | str, ...] = (
        label,
        Text(vm.state, style=VM_STATE_STYLE.get(vm.state, "")),
        duration(vm.uptime(now)),
        cpu,
        memory_kb(vm.mem_kb),
        Text(sparkline(vm.cpu_history, SPARK_CELLS), style="green"),
        vm.domain or "—",
    )
    if not other:
        return cells
    # Not this run's: dim, and said in words (readable without colour).
    dimmed = [Text(c.plain if isinstance(c, Text) else c, style="dim") for c in cells]
    dimmed[-1] = Text(f"{vm.domain or '—'} · not this run", style="dim italic")
    return tuple(dimmed)
