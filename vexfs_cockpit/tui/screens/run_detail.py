"""One stored run: per-test results with evidence, per-domain outcomes, kernel events,
VM failures and infrastructure problems."""

from __future__ import annotations

from typing import TYPE_CHECKING, cast

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Static, TabbedContent, TabPane

from vexfs_cockpit.store.render import provenance_line
from vexfs_cockpit.store.report import RunReport
from vexfs_cockpit.tui.format import SEVERITY_STYLE, STATUS_STYLE, duration, one_line, report_text, report_title, timestamp, vm_display_name
from vexfs_cockpit.tui.widgets.evidence_view import EvidenceView
from vexfs_cockpit.tui.widgets.key_bar import KeyBar
from vexfs_cockpit.tui.widgets.results_table import ResultsTable

if TYPE_CHECKING:
    from vexfs_cockpit.tui.app import CockpitApp


class RunDetailScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("1", "tab('tests')", "Tests"),
        Binding("2", "tab('domains')", "Domains"),
        Binding("3", "tab('events')", "Kernel events"),
        Binding("t", "rerun_test", "Re-run test"),
        Binding("d", "rerun_domain", "Re-run domain"),
        # Off the key bar (it is full at 80 columns); help (?) and the palette list them.
        Binding("l", "test_log", "Test's kernel log", show=False),
        Binding("L", "run_log", "Run's kernel log", show=False),
    ]

    def __init__(self, run_id: str, focus_test: tuple[str, str] | None = None):
        super().__init__()
        self.run_id = run_id
        self.focus_test = focus_test
        self.report: RunReport | None = None

    def compose(self) -> ComposeResult:
        yield Static(f" run {self.run_id} — loading…", id="detail-title", classes="screen-title")
        with TabbedContent(initial="tests", id="detail-tabs"):
            with TabPane("Tests [1]", id="tests"):
                yield ResultsTable(id="detail-results")
                yield EvidenceView(id="detail-evidence")
            with TabPane("Domains [2]", id="domains"):
                domains: DataTable[Text | str] = DataTable(id="detail-domains", cursor_type="row", zebra_stripes=True)
                yield domains
                yield Static(id="detail-infra")
            with TabPane("Kernel events [3]", id="events"):
                events: DataTable[Text | str] = DataTable(id="detail-events", cursor_type="row", zebra_stripes=True)
                yield events
                yield Static(id="detail-event-text", classes="event-text")
        yield KeyBar()

    @property
    def cockpit(self) -> CockpitApp:
        return cast("CockpitApp", self.app)

    def on_mount(self) -> None:
        dt = self.query_one("#detail-domains", DataTable)
        for key, label in (("domain", "domain"), ("status", "status"), ("results", "✓ ✗ ⏭"), ("time", "time"), ("vm", "VM"), ("reason", "reason")):
            dt.add_column(label, key=key)
        et = self.query_one("#detail-events", DataTable)
        for key, label in (("time", "time"), ("sev", "severity"), ("sig", "report"), ("where", "test"), ("vm", "VM")):
            et.add_column(label, key=key)
        self.query_one(ResultsTable).focus()
        self.cockpit.query_history("run detail", self.cockpit.backend.run_detail, self.run_id, then=self._got, group="detail")

    def _got(self, report: RunReport | None) -> None:
        title = self.query_one("#detail-title", Static)
        if report is None:
            title.update(Text(f" run {self.run_id} is not in the history DB", style="bold red"))
            return
        self.report = report
        run = report.run
        tally = report.tally()
        bad = tally["FAILED"] + tally["TIMEOUT"] + tally["ERROR"]
        now = self.cockpit.clock()
        title.update(
            Text.assemble(
                (f" run {run.run_id} ", "bold"),
                (run.status.upper(), "bold " + STATUS_STYLE.get(run.status, "")),
                f" · {run.env} · {run.profile} · {timestamp(run.started_at, now)} · {duration(run.duration_s)} · ",
                (f"{tally['PASSED']}✓", "green"),
                " ",
                (f"{bad}✗", "bold red" if bad else "dim"),
                (f" {tally['SKIPPED']}⏭", "dim"),
                (f" · {run.reason}", "dim") if run.reason else "",
            )
        )
        results = self.query_one(ResultsTable)
        results.set_results(report.tests(), {k: v.verdict for k, v in report.verdicts.items()})
        if self.focus_test is not None:
            key = f"{self.focus_test[0]}::{self.focus_test[1]}"
            if key in results.results:
                results.move_cursor(row=results.get_row_index(key))
        self._show_evidence()
        self._fill_domains(report)
        self._fill_events(report, now)

    def _fill_domains(self, report: RunReport) -> None:
        dt = self.query_one("#detail-domains", DataTable)
        dt.clear()
        for d in report.domains:
            tally = d.tally()
            bad = tally["FAILED"] + tally["TIMEOUT"] + tally["ERROR"]
            res = Text.assemble((str(tally["PASSED"]), "green"), " ", (str(bad), "bold red" if bad else "dim"), " ", (str(tally["SKIPPED"]), "dim"))
            missing = d.missing_tests()
            reason = d.reason + (f" (never ran: {', '.join(missing)})" if missing else "")
            dt.add_row(d.name, Text(d.status, style=STATUS_STYLE.get(d.status, "")), res, duration(d.duration_s), vm_display_name(d.vm) if d.vm else "—", one_line(reason, 100), key=d.name)
        lines: list[Text] = []
        if report.run.provenance:  # where the run came from: kernel, module commit, config
            lines.append(Text(f"from: {provenance_line(report.run.provenance)}", style="dim"))
        for s in report.vm_failures():
            lines.append(Text(f"VM {vm_display_name(s.vm)} {s.state}" + (f": {s.reason}" if s.reason else ""), style="bold red"))
        for p in report.infra_problems:
            lines.append(Text(f"infra: {(vm_display_name(p.vm) + ': ') if p.vm else ''}{p.message}", style="magenta"))
        if len(lines) == (1 if report.run.provenance else 0):
            lines.append(Text("no VM failures or infrastructure problems", style="dim"))
        self.query_one("#detail-infra", Static).update(Group(*lines))

    def _fill_events(self, report: RunReport, now: float) -> None:
        et = self.query_one("#detail-events", DataTable)
        et.clear()
        for i, k in enumerate(report.kernel_events):
            where = ".".join(p for p in (k.domain, k.test) if p) or "—"
            sev = Text(k.report.severity.name + (" (expected)" if k.expected else ""), style=SEVERITY_STYLE[k.report.severity])
            et.add_row(timestamp(k.ts, now), sev, one_line(report_title(k.report.kind, k.report.title), 70), where, vm_display_name(k.vm), key=str(i))
        if not report.kernel_events:
            self.query_one("#detail-event-text", Static).update(Text("no kernel reports in this run", style="dim"))
        else:
            self._show_event(0)

    def _show_event(self, index: int) -> None:
        if self.report is None or not (0 <= index < len(self.report.kernel_events)):
            return
        k = self.report.kernel_events[index]
        self.query_one("#detail-event-text", Static).update(
            Group(Text(f"{report_text(k.report, k.expected)} — line {k.report.line} on {vm_display_name(k.vm)} ({k.vm})", style=SEVERITY_STYLE[k.report.severity]), Text(k.report.text, style="dim"))
        )

    def _show_evidence(self) -> None:
        r = self.query_one(ResultsTable).selected()
        extra = []
        if r is not None and self.report is not None:
            extra = [k.report for k in self.report.kernel_events if k.domain == r.domain and k.test == r.name]
        self.query_one(EvidenceView).show(r, extra)

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.data_table.id == "detail-results":
            self._show_evidence()
        elif event.data_table.id == "detail-events" and event.row_key.value is not None:
            self._show_event(int(event.row_key.value))

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        if event.data_table.id == "detail-results":
            event.stop()
            self.query_one(EvidenceView).focus()

    def action_tab(self, tab: str) -> None:
        self.query_one(TabbedContent).active = tab
        target = {"tests": "#detail-results", "domains": "#detail-domains", "events": "#detail-events"}[tab]
        self.query_one(target).focus()

    def action_rerun_test(self) -> None:
        ref = self.query_one(ResultsTable).selected_ref()
        if ref is None or self.report is None:
            self.notify("no test selected", severity="warning")
            return
        self.cockpit.rerun(self.report.run.env, ref.domain, ref.test)

    def action_rerun_domain(self) -> None:
        ref = self.query_one(ResultsTable).selected_ref()
        if ref is None or self.report is None:
            self.notify("no test selected", severity="warning")
            return
        self.cockpit.rerun(self.report.run.env, ref.domain)

    def action_test_log(self) -> None:
        """The selected test's window of its VM's kernel log, stored with its result."""
        from vexfs_cockpit.tui.screens.output import OutputScreen

        r = self.query_one(ResultsTable).selected()
        if r is None:
            self.notify("no test selected", severity="warning")
            return
        lines = r.evidence.kernel_log
        self.app.push_screen(OutputScreen(f"kernel log of {r.domain}/{r.name} ({len(lines)} lines)",
                                          "\n".join(lines) or "(no kernel log lines in this test's window)"))

    def action_run_log(self) -> None:
        """The whole run's console logs, read in a worker (they can be megabytes)."""
        self.cockpit.query_history("run-log", self.cockpit.backend.run_console, self.run_id, then=self._got_log, group="run-log")

    def _got_log(self, text: str | None) -> None:
        from vexfs_cockpit.tui.screens.output import OutputScreen

        if text is None:
            self.notify(f"run {self.run_id}: its console logs are no longer kept (gc) or it ran elsewhere; "
                        "each test's window is kept: l", severity="warning")
            return
        self.app.push_screen(OutputScreen(f"kernel log of run {self.run_id}", text))
