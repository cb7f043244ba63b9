"""Line-per-event progress for CI logs. Colour only on a TTY (and never with NO_COLOR)."""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

from vexfs_cockpit.engine import events as ev
from vexfs_cockpit.engine.bus import Subscription
from vexfs_cockpit.engine.confirm import Verdict, badge
from vexfs_cockpit.engine.results import TestStatus
from vexfs_cockpit.klog.model import Severity

_COLOURS = {
    TestStatus.PASSED: "32",
    TestStatus.FAILED: "31",
    TestStatus.ERROR: "31;1",
    TestStatus.TIMEOUT: "35",
    TestStatus.SKIPPED: "33",
}
_VERDICT_COLOURS: dict[str, str] = {
    Verdict.REGRESSION: "31;1",
    Verdict.FLAKY: "35",
    Verdict.FIXED: "32",
    Verdict.STILL_FAILING: "31",
    Verdict.KNOWN: "33",
    Verdict.KNOWN_FIXED: "33;1",
    Verdict.UNCONFIRMED: "33",
}
# The run's closing verdict list, most urgent first.
_VERDICT_ORDER = {v.value: i for i, v in enumerate(Verdict)}


class ProgressPrinter:
    """Turns the event stream into plain lines. Kernel log lines are shown only with
    ``show_klog`` (CI logs get the classified reports, not 300 lines of boot chatter)."""

    def __init__(self, out: TextIO = sys.stdout, *, show_klog: bool = False, colour: bool | None = None):
        self.out = out
        self.show_klog = show_klog
        self.colour = colour if colour is not None else (out.isatty() and "NO_COLOR" not in os.environ)
        self.t0 = time.monotonic()
        self.crashes: list[str] = []
        # Lost guests (hung/crashed, then reset) whose cause no kernel report names:
        # a watchdog verdict such as "guest hung: no SSH answer for 31 s, ...".
        self.lost_guests: list[tuple[str, str, str]] = []
        self._titles: set[str] = set()
        self._infra: set[str] = set()  # printed once, then referred to
        # What the dashboard's VM table shows live, summarised per domain's VM for CI logs.
        self._vm_of: dict[str, str] = {}
        self._health: dict[str, list[float]] = {}  # vm -> [samples, cpu sum, cpu peak, mem peak kB]
        self.verdicts: list[ev.TestVerdict] = []
        # Set once the run's closing line is out: the VMs torn down after it (in the
        # background) are not news, and the closing line stays the last line CI reads.
        self.closed = False
        # Runs over several hosts (hosts:): each host's last HostStatus, the one printed (a
        # line only when its state or domains change, not at every refresh), its lowest free
        # memory, and where each domain runs now (its results count for that host).
        self._hosts: dict[str, ev.HostStatus] = {}
        self._host_shown: dict[str, tuple[str, tuple[str, ...]]] = {}
        self._host_low_free: dict[str, int] = {}
        self._host_of: dict[str, str] = {}
        self._host_counts: dict[str, dict[str, int]] = {}

    def _paint(self, text: str, code: str | None) -> str:
        return f"\x1b[{code}m{text}\x1b[0m" if self.colour and code else text

    def _emit(self, text: str) -> None:
        self.out.write(f"[{time.monotonic() - self.t0:7.1f}s] {text}\n")
        self.out.flush()

    async def consume(self, sub: Subscription) -> None:
        async for event in sub:
            self.handle(event)

    def handle(self, e: ev.Event) -> None:  # noqa: C901 - a flat dispatch table reads best here
        match e:
            case ev.RunStarted():
                self._emit(f"run {e.run_id} profile={e.profile} env={e.env} domains={','.join(e.domains)}")
            case ev.DomainStarted():
                self._vm_of[e.domain] = e.vm
                self._emit(f"{e.domain}: started on {e.vm or '-'} ({len(e.planned_tests)} tests)")
            case ev.VmSample():
                h = self._health.setdefault(e.vm, [0, 0.0, 0.0, 0])
                h[0] += 1
                h[1] += e.cpu_pct
                h[2] = max(h[2], e.cpu_pct)
                h[3] = max(h[3], e.mem_kb)
            case ev.TestStarted() if e.attempt > 1:
                self._emit(f"{e.domain}/{e.test}: retry, attempt {e.attempt}")
            case ev.HostStatus() if not self.closed:
                self._host_status(e)
            case ev.TestFinished():
                r = e.result
                if (host := self._host_of.get(r.domain)) is not None:
                    counts = self._host_counts.setdefault(host, {})
                    counts[r.status.value] = counts.get(r.status.value, 0) + 1
                word = self._paint(r.status.value, _COLOURS.get(r.status))
                msg = f" — {r.message}" if r.message and r.status is not TestStatus.PASSED else ""
                if r.message in self._infra:
                    msg = " — the infrastructure problem above"
                self._emit(f"{r.domain}/{r.name}: {word} ({r.duration_s:.2f}s){msg}")
            case ev.DomainFinished():
                counts = " ".join(f"{k.lower()}={v}" for k, v in e.counts.items() if v)
                self._emit(f"{e.domain}: {e.status} {counts}{' — ' + e.reason if e.reason else ''}")
                vm = self._vm_of.get(e.domain, "")
                if (h := self._health.get(vm)) and h[0]:
                    self._emit(
                        f"{e.domain}: vm {vm} cpu avg {h[1] / h[0]:.0f}% peak {h[2]:.0f}%, "
                        f"mem peak {h[3] / 1024:.0f} MB ({int(h[0])} samples)"
                    )
            case ev.KernelEventRaised():
                rep = e.report
                where = f"{e.domain}/{e.test}" if e.test else "no test running"
                if rep.severity >= Severity.WARNING:
                    tag = "expected" if e.expected else "KERNEL"
                    self._emit(self._paint(f"{tag} {rep.kind}: {rep.title} on {e.vm} during {where}", None if e.expected else "31"))
                    if rep.severity >= Severity.ERROR and not e.expected:
                        self.crashes.append(f"{rep.title} ({where})")
                        self._titles.add(rep.title)
            case ev.VmStateChanged() if not self.closed:
                self._emit(f"vm {e.vm}: {e.state}{' — ' + e.reason if e.reason else ''}")
                if e.state in ("hung", "crashed"):
                    self.lost_guests.append((e.vm, e.state, e.reason))
            case ev.AlertFired():
                code = "31;1" if e.severity == "critical" else "33"
                self._emit(self._paint(f"ALERT {e.rule} [{e.severity}] {e.summary}", code))
            case ev.InfraProblem():
                self._infra.add(e.message)
                self._emit(self._paint(f"INFRA {e.vm + ': ' if e.vm else ''}{e.message}", "31;1"))
            case ev.ConfirmStarted():
                many = len(e.tests) > 1
                self._emit(f"confirming {len(e.tests)} changed test{'s' if many else ''}, "
                           f"{e.reruns} rerun{'s' if e.reruns > 1 else ''} each on a fresh VM: {', '.join(e.tests)}")
            case ev.TestRerun():
                word = self._paint(e.status.value, _COLOURS.get(e.status))
                msg = f" — {e.message}" if e.message and e.status is not TestStatus.PASSED else ""
                self._emit(f"{e.domain}/{e.test}: rerun {e.number}/{e.of} {word} ({e.duration_s:.2f}s) on {e.vm or '-'}{msg}")
            case ev.TestVerdict():
                self.verdicts.append(e)
                self._emit(verdict_line(e, self._paint(f"[{badge(e.verdict)}]", _VERDICT_COLOURS.get(e.verdict))))
            case ev.KernelLogLine() if self.show_klog:
                self.out.write(f"  {e.vm}| {e.text}\n")
            case ev.RunFinished():
                counts = ", ".join(f"{v} {k.lower()}" for k, v in e.counts.items() if v) or "no tests"
                self._emit(f"run {e.run_id} {e.status.upper()}: {counts}{' — ' + e.reason if e.reason else ''}")
                for h in self._hosts.values():
                    self._emit(f"  {self._host_summary(h)}")
                for c in self.crashes:
                    self._emit(f"  kernel report: {c}")
                for vm, state, reason in self.lost_guests:
                    if not any(reason.startswith(f"{t} (during ") for t in self._titles):
                        self._emit(f"  VM {vm} {state}, reset: {reason}")
                passed, failed = e.counts.get("PASSED", 0), sum(
                    e.counts.get(s, 0) for s in ("FAILED", "ERROR", "TIMEOUT")
                )
                skipped = e.counts.get("SKIPPED", 0)
                for v in sorted(self.verdicts, key=lambda v: (_VERDICT_ORDER.get(v.verdict, 99), v.domain, v.test)):
                    self._emit(f"  {verdict_line(v, f'[{badge(v.verdict)}]')}")
                known = sum(v.verdict == Verdict.KNOWN for v in self.verdicts)
                # The plain closing line CI log readers look for (known failures do not fail the run).
                self.out.write(f"{passed} passed, {failed} failed{f' ({known} known)' if known else ''}, {skipped} skipped\n")
                self.out.flush()
                self.closed = True
            case _:
                pass

    def _host_status(self, e: ev.HostStatus) -> None:
        self._hosts[e.host] = e
        for d in e.domains:
            if e.state == "up" or d not in self._host_of:
                self._host_of[d] = e.host
        if e.free_memory_mb is not None:
            self._host_low_free[e.host] = min(self._host_low_free.get(e.host, e.free_memory_mb), e.free_memory_mb)
        shown = (e.state, e.domains if e.state == "up" else ())  # a lost host's domains moving off: no news
        if self._host_shown.get(e.host) == shown:
            return
        self._host_shown[e.host] = shown
        if e.state == "lost":
            self._emit(self._paint(f"host {e.host}: LOST — {e.reason}", "31;1"))
        else:
            self._emit(f"host {e.host}: {host_line(e)}")

    def _host_summary(self, h: ev.HostStatus) -> str:
        """``host big: up, kernel_module: 5 passed, 1 failed; free memory lowest 5900 MB``."""
        counts = self._host_counts.get(h.host, {})
        tests = ", ".join(f"{n} {k.lower()}" for k, n in counts.items() if n) or "no tests"
        low = self._host_low_free.get(h.host)
        state = "up" if h.state == "up" else f"LOST ({h.reason})"
        # a lost host's domains have moved on: what ran there is still counted for it
        doms = ", ".join(h.domains) or ("its domains moved" if h.state != "up" else "no domains")
        return f"host {h.host}: {state}, {doms}: {tests}{f'; free memory lowest {low} MB' if low is not None else ''}"


def host_line(e: ev.HostStatus) -> str:
    """``up, 4 CPUs, 8192 MB (6100 MB free): kernel_module, performance_metrics``."""
    free = f" ({e.free_memory_mb} MB free)" if e.free_memory_mb is not None else ""
    return f"{e.state}, {e.cpus} CPUs, {e.memory_mb} MB{free}: {', '.join(e.domains) or 'no domains'}"


def verdict_line(v: ev.TestVerdict, tag: str) -> str:
    """``domain/test: [BADGE] FAILED now, PASSED in baseline RUN — why``."""
    was = f"{v.before} in {v.reference}" if v.before else "not run before in this env"
    note = f" — {v.note}" if v.note else ""
    return f"{v.domain}/{v.test}: {tag} {v.now} now, {was}{note}"
