"""The default screen: VMs, per-domain progress, the live kernel log, a run summary."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, cast

from textual.app import ComposeResult
from textual.binding import Binding
from textual.css.query import NoMatches
from textual.screen import Screen
from textual.widgets import DataTable

from vexfs_cockpit.tui.logmodel import LogInput
from vexfs_cockpit.tui.state import Part
from vexfs_cockpit.tui.widgets.domain_progress import DomainProgress
from vexfs_cockpit.tui.widgets.kernel_log_pane import KernelLogPane
from vexfs_cockpit.tui.widgets.key_bar import KeyBar
from vexfs_cockpit.tui.widgets.run_summary import RunSummary
from vexfs_cockpit.tui.widgets.session_header import SessionHeader
from vexfs_cockpit.tui.widgets.standing_table import StandingTable
from vexfs_cockpit.tui.widgets.vm_panel import VmPanel
from vexfs_cockpit.tui.widgets.watch_line import WatchLine

if TYPE_CHECKING:
    from vexfs_cockpit.analysis.standing import DomainStanding
    from vexfs_cockpit.tui.app import CockpitApp


class DashboardScreen(Screen[None]):
    KEY_BAR_APP_FIRST = True  # at 80 columns s a h r ? q stay; the log keys give way
    BINDINGS = [
        Binding("m", "vm_menu", "VM menu"),
        Binding("u", "vm('start')", "Start VM", show=False),
        Binding("x", "vm('stop')", "Stop VM", show=False),
        Binding("t", "vm('reset')", "Reset VM", show=False),
        Binding("o", "vm('console')", "Console", show=False),
        Binding("i", "vm('ssh')", "SSH shell", show=False),
        Binding("l", "vm('kload')", "Load module", show=False),
        Binding("L", "vm('kunload')", "Unload module", show=False),
        Binding("w", "watch", "Watch module source", show=False),
        Binding("d", "rerun_domain", "Re-run domain", show=False),
        Binding("p", "toggle_pause", "Pause/follow"),
        Binding("n", "next_event", "Next event"),
        Binding("b", "earlier_log", "Earlier log", show=False),
        Binding("N", "prev_event", "Prev event", show=False),
        Binding("slash", "search_log", "Filter log"),
        Binding("v", "cycle_vm", "Log VM filter", show=False),
        Binding("e", "cycle_severity", "Log severity filter", show=False),
        Binding("c", "clear_filter", "Clear log filters", show=False),
    ]

    def compose(self) -> ComposeResult:
        yield SessionHeader(id="session-header")
        yield RunSummary(id="summary")
        yield WatchLine(id="watch")
        yield VmPanel(id="vms")
        yield DomainProgress(id="domains")
        yield StandingTable(id="standing")
        yield KernelLogPane(retain=self.cockpit.log_retain, id="klog")
        yield KeyBar()

    @property
    def cockpit(self) -> CockpitApp:
        return cast("CockpitApp", self.app)

    @property
    def log_pane(self) -> KernelLogPane:
        return self.query_one(KernelLogPane)

    def on_mount(self) -> None:
        self._render_parts(set(Part))
        self.query_one("#log-view").focus()

    # -- fed by the app's pump ---------------------------------------------------------
    def on_live(self, changed: set[Part], log_events: Sequence[LogInput]) -> None:
        if log_events:
            self.log_pane.feed(log_events)
        if changed:
            self._render_parts(changed)

    def on_run_started(self, run_id: str) -> None:
        """Each run's log starts fresh and followed; what came before is one key away (b)."""
        self.log_pane.new_run(run_id)

    def on_standing(self, env: str, standing: Sequence[DomainStanding]) -> None:
        """Where each domain stands (read from history at start): shown until a run starts."""
        if self.cockpit.state.run is None:
            self.query_one(StandingTable).show(env, standing, self.cockpit.clock())

    def on_tick(self) -> None:
        self._render_parts({Part.VMS, Part.DOMAINS, Part.RUN})

    def _render_parts(self, changed: set[Part]) -> None:
        state, now = self.cockpit.state, self.cockpit.clock()
        try:
            if changed & {Part.VMS}:
                self.query_one(VmPanel).show(state, now)
            if changed & {Part.DOMAINS}:
                self.query_one(DomainProgress).show(state, now)
            if changed & {Part.RUN, Part.VMS, Part.DOMAINS, Part.EVENTS, Part.INFRA, Part.RESULTS}:
                self.query_one(RunSummary).show(state, now)
            if changed & {Part.RUN}:
                self.query_one(SessionHeader).show(state, self.cockpit.session_info)
                if state.run is not None:  # the run's progress takes the standing's place
                    self.query_one(StandingTable).display = False
        except NoMatches:
            pass  # being torn down at exit: nothing left to paint

    # -- VM actions --------------------------------------------------------------------
    def _selected_vm(self) -> str | None:
        vm = self.query_one(VmPanel).selected_vm()
        if vm is None:
            self.notify("no VM selected — start a run (s) or a VM first", severity="warning")
        return vm

    def action_vm(self, action: str) -> None:
        vm = self._selected_vm()
        if vm is not None:
            self.cockpit.vm_action(action, vm)

    def action_watch(self) -> None:
        """w: watch the module source for the selected dev VM (each save rebuilds, reloads
        and reruns, the result on the watch line); w again stops it."""
        from vexfs_cockpit.tui.vm_actions import why_not

        line = self.query_one(WatchLine)
        if line.vm:
            self.workers.cancel_group(self, "watch")
            line.stop()
            self.notify("stopped watching the module source")
            return
        vm = self._selected_vm()
        if vm is None:
            return
        view = self.cockpit.state.vms.get(vm)
        if view is not None and (reason := why_not("ssh", view)) is not None:  # watch attaches like ssh
            self.notify(f"cannot watch: {reason}", severity="warning")
            return
        line.start(vm)
        self.run_worker(self._watch(vm), group="watch", exclusive=True, exit_on_error=False)

    async def _watch(self, vm: str) -> None:
        line = self.query_one(WatchLine)
        try:
            async for text in self.cockpit.backend.watch(vm):
                line.feed(text)
        except Exception as err:  # noqa: BLE001 - one line, never a traceback
            line.feed(str(err))
        line.ended()  # not reached when w stopped it: the worker is cancelled
        self.notify(f"watch ended: {line.last}", severity="warning")

    def action_vm_menu(self) -> None:
        from vexfs_cockpit.tui.screens.vm_menu import VmMenuScreen

        vm = self._selected_vm()
        if vm is None:
            return

        def chosen(action: str | None) -> None:
            if action:
                self.cockpit.vm_action(action, vm)

        self.app.push_screen(VmMenuScreen(self.cockpit.state.vms[vm]), chosen)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "vm-table":
            event.stop()
            self.action_vm_menu()
        elif isinstance(event.data_table, DomainProgress):
            event.stop()
            self.cockpit.action_results()

    def action_rerun_domain(self) -> None:
        domain = self.query_one(DomainProgress).selected_domain()
        if domain is None:
            self.notify("no domain selected — run something first (s)", severity="warning")
            return
        self.cockpit.rerun(self.cockpit.current_env(), domain)

    # -- log pane ------------------------------------------------------------------------
    def action_toggle_pause(self) -> None:
        self.log_pane.toggle_pause()

    def action_next_event(self) -> None:
        if not self.log_pane.jump_event(forward=True):
            self.notify("no further kernel event in the log", severity="information")

    def action_prev_event(self) -> None:
        if not self.log_pane.jump_event(forward=False):
            self.notify("no earlier kernel event in the log", severity="information")

    def action_earlier_log(self) -> None:
        if not self.log_pane.show_earlier():
            self.notify("no earlier lines: this log began with this run", severity="information")

    def action_search_log(self) -> None:
        self.log_pane.open_search()

    def action_cycle_vm(self) -> None:
        self.log_pane.cycle_vm()

    def action_cycle_severity(self) -> None:
        self.log_pane.cycle_severity()

    def action_clear_filter(self) -> None:
        self.log_pane.clear_filter()
