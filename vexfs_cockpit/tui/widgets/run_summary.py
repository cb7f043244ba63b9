"""The one-line run summary at the top of the dashboard."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

from vexfs_cockpit.engine.results import TestStatus
from vexfs_cockpit.klog.model import Severity
from vexfs_cockpit.tui.format import STATUS_STYLE, duration
from vexfs_cockpit.tui.state import ALIVE_STATES, LiveState


class RunSummary(Static):
    DEFAULT_CSS = """
    RunSummary {
        height: auto;
        max-height: 2;
        width: 1fr;
        background: $panel;
        text-overflow: ellipsis;
    }
    """

    def show(self, state: LiveState, now: float) -> None:
        # One row, two when it does not fit (at 80 columns): a relayout only when that changes.
        text = summary_text(state, now)
        rows = 1 if text.cell_len <= self.size.width else 2
        self.update(text, layout=rows != self.size.height)


def summary_text(state: LiveState, now: float) -> Text:
    up = sum(1 for vm in state.vms.values() if vm.state in ALIVE_STATES)
    vms = Text(f" · VMs {up}/{len(state.vms)} up", style="") if state.vms else Text("")
    run = state.run
    infra = Text(f" · {len(state.infra)} infra problem{'s' if len(state.infra) != 1 else ''}", style="magenta") if state.infra else Text("")
    if run is None:
        return Text.assemble((" no run yet — press s to start a run", "bold"), infra, vms)
    counts = state.status_counts()
    bad = sum(counts[s.value] for s in TestStatus if s.bad)
    head = (
        Text(" ▶ RUNNING ", style="bold black on cyan")
        if run.active
        else Text(f" ■ {run.status.upper()} ", style="bold reverse " + STATUS_STYLE.get(run.status, ""))
    )
    out = Text.assemble(
        head,
        f" {run.run_id}",  # its env is on the header line above
        f" · {duration(run.elapsed(now))}",
        " · ",
        (f"{counts[TestStatus.PASSED.value]}✓", "green"),
        " ",
        (f"{bad}✗", "bold red" if bad else "dim"),
    )
    if counts[TestStatus.SKIPPED.value]:
        out.append(f" {counts[TestStatus.SKIPPED.value]}⏭", style="dim")
    # Kernel trouble before the progress: the one thing that must not be cut off.
    unexpected = [e for e in state.kernel_events if not e.expected]
    events = [e for e in unexpected if e.report.severity >= Severity.WARNING]
    if events:
        critical = sum(1 for e in events if e.report.severity >= Severity.CRITICAL)
        style = "bold red" if critical else "yellow"
        out.append(f" · ⚠ {len(events)} kernel event{'s' if len(events) != 1 else ''}", style=style)
        if critical:
            out.append(f" ({critical} critical)", style=style)
    planned = state.planned_total()
    if run.active and planned:
        done = sum(d.done for d in state.domains.values())
        out.append(f" · {done}/{planned} done")
        out.append_text(eta_text(state, now))
        running = state.running_tests()
        if running:
            out.append(f" · {running} running", style="cyan")
    if run.active and run.confirming:  # the tests are done; what changed is rerun on fresh VMs
        n = len(run.confirming)
        out.append(f" · confirming {n} changed test{'s' if n != 1 else ''} on fresh VMs"
                   + (f": rerun {run.rerun}" if run.rerun else ""), style="cyan")
    infos = [e for e in unexpected if e.report.severity < Severity.WARNING]
    if infos:  # e.g. the taint notices of an out-of-tree module: say what they are
        kinds = ", ".join(dict.fromkeys(e.report.kind.replace("_", " ") for e in infos))
        n = len(infos)
        out.append(f" · {n} info report{'s' if n != 1 else ''} (not failures: {kinds}; n shows them)", style="dim")
    expected = len(state.kernel_events) - len(unexpected)
    if expected:
        out.append(f" · {expected} expected", style="dim")
    out.append_text(infra)
    if run.reason and not run.active:
        out.append(f" · {run.reason}", style="dim")
    out.append_text(vms)
    return out


def eta_text(state: LiveState, now: float) -> Text:
    """`` · ETA 1m20s``, or why there is none (history not read yet, no earlier runs)."""
    eta = state.run_eta(now)
    if eta is None:
        return Text(" · ETA …", style="dim")  # history not answered yet
    if eta.total and eta.unknown == eta.total:
        return Text(" · ETA: no earlier runs of these tests", style="dim")
    if eta.unknown:
        return Text(f" · ETA ≥{duration(eta.seconds)} ({eta.unknown} test{'s' if eta.unknown != 1 else ''} never ran)")
    return Text(f" · ETA {duration(eta.seconds)}")
