"""VM table: name, domain, state, uptime, CPU %, memory and a one-minute CPU sparkline.

Everything comes from ``VmStateChanged`` / ``VmSample`` events (and the fleet listing at
start). When there is nothing to list, a one-line empty state says why and what to do.

Once a run has started, its VMs come first; the others (an earlier run's, a dev VM,
another cockpit's run) follow dim and say "not this run" in words, not only in colour.

A run over several libvirt hosts (HostStatus events) groups the rows by host: a header
row per host with its health (up or lost, CPUs, free memory, its domains or why it is
lost), then the VMs of that host's domains; VMs of no host follow.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from vexfs_cockpit.engine.events import HostStatus
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
HOST_KEY = "/host/"  # header rows' keys: "/" is never in a libvirt domain name


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
        return None if key.value is None or key.value.startswith(HOST_KEY) else str(key.value)

    def show(self, state: LiveState, now: float) -> None:
        table = self.table
        # This run's VMs first (False sorts before True), then the others, each by name.
        names = sorted(state.vms, key=lambda n: (state.in_this_run(n) is False, n))
        rows: dict[str, tuple[Text | str, ...]] = {}
        if len(state.hosts) > 1:  # several hosts: each one's header, then its VMs
            where = {n: state.host_of(n) for n in names}
            for host in state.hosts.values():
                rows[HOST_KEY + host.host] = _host_cells(host)
                rows.update((n, self._vm_cells(state, n, now)) for n in names if where[n] == host.host)
            rows.update((n, self._vm_cells(state, n, now)) for n in names if where[n] not in state.hosts)
        else:
            rows = {n: self._vm_cells(state, n, now) for n in names}
        keys = list(rows)
        order = [str(k.value) for k in table.rows]
        kept = [n for n in order if n in rows]
        if kept != keys[: len(kept)]:  # rows are only ever appended: a new one goes last
            selected = self.selected_vm()
            table.clear()  # the order changed (a run started, a VM joined it): add them again
            order = []
        else:
            selected = None
        existing = set(order)
        for gone in existing - set(keys):
            table.remove_row(gone)
        for name, cells in rows.items():
            if name in existing:
                for (key, _), value in zip(COLUMNS, cells):
                    table.update_cell(name, key, value, update_width=True)
            else:
                table.add_row(*cells, key=name)
        if selected is not None and selected in rows:
            table.move_cursor(row=table.get_row_index(selected))
        empty = self.query_one("#vm-empty", Static)
        if state.fleet_error is not None:
            empty.update(Text(f"libvirt unreachable: {state.fleet_error}", style="bold red"))
            empty.display = True
        else:
            empty.update("no VMs yet — press s to start a run")
            empty.display = not names
        table.display = bool(names)

    @staticmethod
    def _vm_cells(state: LiveState, name: str, now: float) -> tuple[Text | str, ...]:
        return _cells(state.vms[name], vm_display_name(name), now, other=state.in_this_run(name) is False)


def _host_cells(h: HostStatus) -> tuple[Text | str, ...]:
    """A host's header row: its name, up or lost, CPUs, free memory, its domains or why it is lost."""
    up = h.state == "up"
    free = "—" if h.free_memory_mb is None else f"{memory_kb(h.free_memory_mb * 1024)} free"
    return (
        Text(f"host {h.host}", style="bold"),
        Text(h.state, style="green" if up else "bold red"),
        "",
        f"{h.cpus} CPUs",
        free,
        "",
        Text(", ".join(h.domains) or "—") if up else Text(h.reason, style="red"),
    )


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
