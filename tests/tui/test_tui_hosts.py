"""Issue 18 item 3: a run over several libvirt hosts groups the VM table by host, a
header row per host with its health (HostStatus events: state, CPUs, free memory);
a run on one host looks as before."""

from __future__ import annotations

from textual.widgets import DataTable

from tests.support.tui import T0, VM_A, VM_B, cells, cockpit, feed, mid_run_events
from vexfs_cockpit.engine.events import HostStatus, VmStateChanged
from vexfs_cockpit.tui.widgets.vm_panel import VmPanel

LOST = "hosts[small]: cannot reach libvirt at qemu+ssh://root@small/system: connection closed"


def host(name: str, state: str, domains: tuple[str, ...], free: int | None = 6000, reason: str = "") -> HostStatus:
    return HostStatus(host=name, uri=f"qemu+ssh://root@{name}/system", state=state, cpus=4 if name == "big" else 2,
                      memory_mb=8192, free_memory_mb=free, domains=domains, reason=reason, run_id="run-1", ts=T0)


def rows(table: DataTable) -> list[list[str]]:
    return [cells(table, i) for i in range(table.row_count)]


async def test_vms_are_grouped_by_host_with_its_health_and_a_lost_host_says_why():
    async with cockpit(size=(100, 30)) as (app, pilot, _):
        await feed(app, pilot, [*mid_run_events(), host("big", "up", ("kernel_module",)),
                                host("small", "up", ("filesystem_operations",), free=None)])
        table = app.screen.query_one("#vm-table", DataTable)
        got = rows(table)
        assert [r[0] for r in got] == ["host big", "dev/kmod-0", "host small", "dev/fsops-0"]
        assert got[0][1:5] == ["up", "", "4 CPUs", "5.9G free"] and got[0][6] == "kernel_module"
        assert got[2][1:5] == ["up", "", "2 CPUs", "—"] and got[1][1] == "ready"
        # The cursor on a header row selects no VM.
        table.move_cursor(row=0)
        assert app.screen.query_one(VmPanel).selected_vm() is None
        table.move_cursor(row=1)
        assert app.screen.query_one(VmPanel).selected_vm() == VM_A

        await feed(app, pilot, [host("small", "lost", ("filesystem_operations",), reason=LOST),
                                VmStateChanged(vm=VM_B, state="crashed", ts=T0)])
        got = rows(table)
        assert got[2][0] == "host small" and got[2][1] == "lost" and got[2][6] == LOST
        assert got[3][0] == "dev/fsops-0" and got[3][1] == "crashed"
        # Its domain moved: its VM is shown under the host it moved to (rows by VM name).
        await feed(app, pilot, [host("small", "lost", (), reason=LOST),
                                host("big", "up", ("kernel_module", "filesystem_operations"), free=5000)])
        assert [r[0] for r in rows(table)] == ["host big", "dev/fsops-0", "dev/kmod-0", "host small"]
        assert rows(table)[0][4] == "4.9G free"
        # A lost host still naming it (its status before the move reached us late) does not take it back.
        await feed(app, pilot, [host("small", "lost", ("filesystem_operations",), reason=LOST)])
        assert [r[0] for r in rows(table)] == ["host big", "dev/fsops-0", "dev/kmod-0", "host small"]


async def test_one_host_is_not_grouped():
    async with cockpit(size=(100, 30)) as (app, pilot, _):
        await feed(app, pilot, [*mid_run_events(), host("big", "up", ("kernel_module", "filesystem_operations"))])
        table = app.screen.query_one("#vm-table", DataTable)
        assert [r[0] for r in rows(table)] == ["dev/fsops-0", "dev/kmod-0"]  # as without hosts
