"""VM table: name, domain, state, uptime, CPU %, memory and a one-minute CPU sparkline.

Everything comes from ``VmStateChanged`` / ``VmSample`` events (and the fleet listing at
start). When there is nothing to list, a one-line empty state says why and what to do.
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
        names = sorted(state.vms)
        existing = {str(k.value) for k in table.rows}
        for gone in existing - set(names):
            table.remove_row(gone)
        for name in names:
            cells = _cells(state.vms[name], vm_display_name(name), now)
            if name in existing:
                for (key, _), value in zip(COLUMNS, cells):
                    table.update_cell(name, key, value, update_width=True)
            else:
                table.add_row(*cells, key=name)
        empty = self.query_one("#vm-empty", Static)
        if state.fleet_error is not None:
            empty.update(Text(f"libvirt unreachable: {state.fleet_error}", style="bold red"))
            empty.display = True
        else:
            empty.update("no VMs yet — press s to start a run")
            empty.display = not names
        table.display = bool(names)


def _cells(vm: VmView, label: str, now: float) -> tuple[Text | str, ...]:
    cpu = "—" if vm.cpu_pct is None else f"{vm.cpu_pct:5.1f}"
    return (
        label,
        Text(vm.state, style=VM_STATE_STYLE.get(vm.state, "")),
        duration(vm.uptime(now)),
        cpu,
        memory_kb(vm.mem_kb),
        Text(sparkline(vm.cpu_history, SPARK_CELLS), style="green"),
        vm.domain or "—",
    )
