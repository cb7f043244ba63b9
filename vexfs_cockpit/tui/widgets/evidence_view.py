"""What backs one test result: commands with exit codes and output, kernel reports,
the test's window of the kernel log, metrics, attempts and notes."""

from __future__ import annotations

from collections.abc import Sequence

from rich.console import Group, RenderableType
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from vexfs_cockpit.engine.results import TestResult
from vexfs_cockpit.klog.model import KernelReport
from vexfs_cockpit.tui.format import SEVERITY_STYLE, STATUS_STYLE, duration, report_text, vm_display_name

LOG_WINDOW_LINES = 60  # the newest lines of the test's kernel-log window


class EvidenceView(VerticalScroll):
    DEFAULT_CSS = """
    EvidenceView {
        height: 1fr;
        border-top: solid $primary-darken-2;
        padding: 0 1;
    }
    """

    def compose(self):  # type: ignore[no-untyped-def]
        yield Static("select a test to see its evidence", id="evidence")

    def show(self, result: TestResult | None, extra_events: Sequence[KernelReport] = ()) -> None:
        body = self.query_one("#evidence", Static)
        body.update(Text("select a test to see its evidence", style="dim") if result is None else render_evidence(result, extra_events))
        self.scroll_home(animate=False)


def render_evidence(r: TestResult, extra_events: Sequence[KernelReport] = ()) -> RenderableType:
    parts: list[RenderableType] = []
    head = Text.assemble(
        (f"{r.domain}.{r.name} ", "bold"),
        (r.status.value, STATUS_STYLE.get(r.status.value, "")),
        f"  {duration(r.duration_s)}",
    )
    if r.message:
        head.append(f"  {r.message}")
    parts.append(head)
    if len(r.attempts) > 1:
        tries = ", ".join(f"#{a.number} {a.status.value} {duration(a.duration_s)}" + (f" ({a.message})" if a.message else "") for a in r.attempts)
        parts.append(Text(f"attempts: {tries}", style="yellow"))
    if r.metrics:
        parts.append(Text("metrics: " + ", ".join(f"{k}={v:g}" for k, v in sorted(r.metrics.items())), style="cyan"))
    ev = r.evidence
    if ev.commands:
        parts.append(Text(f"\ncommands ({len(ev.commands)})", style="bold underline"))
        for c in ev.commands:
            if c.timed_out:
                code = Text("timed out", style="bold red")
            elif c.exit_code is None:
                code = Text("no exit code (link lost)", style="bold red")
            else:
                code = Text(f"exit {c.exit_code}", style="green" if c.exit_code == 0 else "bold red")
            where = f"{c.target}$ " if c.target else "$ "
            parts.append(Text.assemble((where, "dim"), (c.cmd, "bold"), "  ", code, (f"  {duration(c.duration_s)}", "dim")))
            if c.output_tail.strip():
                parts.append(Text(_indent(c.output_tail.rstrip()), style=""))
    events = list(ev.kernel_events) + [e for e in extra_events if e not in ev.kernel_events]
    if events:
        parts.append(Text(f"\nkernel reports ({len(events)})", style="bold underline"))
        for rep in events:
            parts.append(Text(f"{report_text(rep)}  (line {rep.line}{', ' + vm_display_name(rep.vm) if rep.vm else ''})", style=SEVERITY_STYLE[rep.severity]))
            parts.append(Text(_indent(rep.text.rstrip()), style="dim"))
    if ev.kernel_log:
        window = ev.kernel_log[-LOG_WINDOW_LINES:]
        skipped = len(ev.kernel_log) - len(window)
        title = f"\nkernel log during the test ({len(ev.kernel_log)} lines" + (f", last {len(window)} shown)" if skipped else ")")
        parts.append(Text(title, style="bold underline"))
        parts.append(Text("\n".join(window), style="dim"))
    if ev.notes:
        parts.append(Text("\nnotes", style="bold underline"))
        parts.extend(Text(f"• {n}") for n in ev.notes)
    if r.artifacts:
        parts.append(Text("\nartifacts", style="bold underline"))
        parts.extend(Text(f"{k}: {v}") for k, v in sorted(r.artifacts.items()))
    if len(parts) == 1:
        parts.append(Text("no evidence recorded", style="dim"))
    return Group(*parts)


def _indent(text: str) -> str:
    return "\n".join("  " + line for line in text.splitlines())
