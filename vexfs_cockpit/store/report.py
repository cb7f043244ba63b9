"""``RunReport``: one run's results, the input of the JUnit and JSON writers.

Two producers, one shape: ``ReportBuilder`` folds the live event stream (the batch
front end, no DB needed) and ``History.run_detail`` reads it back from the store.
Both apply the same rules, so a report written from events and one written later
from the DB are the same document.
"""

from __future__ import annotations

import dataclasses
import json
import socket
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

from vexfs_cockpit.engine.events import (
    DomainFinished,
    DomainStarted,
    Event,
    InfraProblem,
    KernelEventRaised,
    KernelLogLine,
    MetricRecorded,
    RunFinished,
    RunStarted,
    TestFinished,
    TestStarted,
    TestVerdict,
    VmReady,
    VmSample,
    VmStateChanged,
)
from vexfs_cockpit.engine.results import TestResult
from vexfs_cockpit.klog.model import KernelReport

HANG_KINDS = frozenset({"hung_task", "soft_lockup", "hard_lockup", "rcu_stall"})
# Reports that mean kernel code crashed (the task or the whole guest died), whatever
# severity the classifier gave them; any fatal report counts too.
CRASH_KINDS = frozenset({"panic", "oops", "bug", "gpf", "kasan", "kfence"})
RUN_ENDED_EARLY = "run finished before this domain did"


@dataclass(slots=True)
class RunInfo:
    run_id: str
    started_at: float
    status: str = "running"  # running | passed | failed | errored | aborted
    finished_at: float | None = None
    env: str = ""
    profile: str = ""
    config_path: str = ""
    planned_domains: tuple[str, ...] = ()
    counts: dict[str, int] = field(default_factory=dict)  # as RunFinished reported them
    reason: str = ""
    host: str = ""
    provenance: dict[str, str] = field(default_factory=dict)  # app.provenance: kernel, module commit, ...

    @property
    def duration_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at


@dataclass(slots=True)
class DomainReport:
    name: str
    started_at: float
    vm: str = ""
    status: str = "running"  # running | passed | failed | errored | skipped | aborted
    finished_at: float | None = None
    reason: str = ""
    planned_tests: tuple[str, ...] = ()
    current_test: str = ""
    tests: list[TestResult] = field(default_factory=list)
    metrics: dict[str, float] = field(default_factory=dict)  # domain-level (test "")

    @property
    def duration_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at

    def tally(self) -> Counter[str]:
        return Counter(str(t.status) for t in self.tests)

    def missing_tests(self) -> list[str]:
        """Planned tests with no result (the domain or run ended before them)."""
        have = {t.name for t in self.tests}
        return [t for t in self.planned_tests if t not in have]

    def is_bad(self) -> bool:
        return self.status in ("failed", "errored", "aborted", "running")


@dataclass(slots=True)
class KernelEventRecord:
    report: KernelReport
    ts: float
    vm: str = ""
    domain: str = ""
    test: str = ""
    expected: bool = False


@dataclass(slots=True)
class VmStateRecord:
    vm: str
    state: str
    ts: float
    reason: str = ""


@dataclass(frozen=True, slots=True)
class VmReadyRecord:
    """A VM of the run came up: ``mode`` boot (cold) or restore (golden snapshot), in
    ``seconds`` until SSH answered; ``reset``: after a reset, not its first start."""

    vm: str
    mode: str
    seconds: float
    ts: float
    reset: bool = False


@dataclass(slots=True)
class InfraRecord:
    message: str
    ts: float
    vm: str = ""


@dataclass(frozen=True, slots=True)
class VerdictRecord:
    """A changed test's verdict after its confirmation reruns (engine/confirm.py)."""

    verdict: str
    now: str = ""
    before: str = ""
    reference: str = ""
    reruns: tuple[str, ...] = ()
    note: str = ""


@dataclass(slots=True)
class RunReport:
    run: RunInfo
    domains: list[DomainReport] = field(default_factory=list)
    kernel_events: list[KernelEventRecord] = field(default_factory=list)
    vm_states: list[VmStateRecord] = field(default_factory=list)
    vm_ready: list[VmReadyRecord] = field(default_factory=list)  # schema v7 on
    infra_problems: list[InfraRecord] = field(default_factory=list)
    verdicts: dict[tuple[str, str], VerdictRecord] = field(default_factory=dict)  # (domain, test) ->

    def domain(self, name: str) -> DomainReport | None:
        return next((d for d in self.domains if d.name == name), None)

    def tests(self) -> list[TestResult]:
        return [t for d in self.domains for t in d.tests]

    def tally(self) -> Counter[str]:
        """Counts by TestStatus value, from the results themselves."""
        return Counter(str(t.status) for t in self.tests())

    def crashes(self) -> list[KernelEventRecord]:
        """Unexpected crash reports: panic, oops, BUG, GPF, KASAN/KFENCE, or anything fatal."""
        return [
            k for k in self.kernel_events
            if not k.expected and (k.report.kind in CRASH_KINDS or k.report.fatal)
        ]

    def hangs(self) -> list[KernelEventRecord]:
        return [k for k in self.kernel_events if k.report.kind in HANG_KINDS and not k.expected]

    def run_vms(self) -> set[str]:
        """The VMs this run's domains ran on (vm_states also holds other cockpit VMs)."""
        return {vm for d in self.domains for vm in d.vm.split(", ") if vm}

    def vm_failures(self) -> list[VmStateRecord]:
        """Hangs/crashes of this run's VMs (a dev VM dying meanwhile is not ours)."""
        mine = self.run_vms()
        return [s for s in self.vm_states if s.state in ("hung", "crashed") and s.vm in mine]


def kernel_record(ev: KernelEventRaised) -> KernelEventRecord:
    """The stored form: one VM name, on the record and its report alike."""
    vm = ev.vm or ev.report.vm
    report = ev.report if ev.report.vm == vm else dataclasses.replace(ev.report, vm=vm)
    return KernelEventRecord(report, ev.ts, vm, ev.domain, ev.test, ev.expected)


def verdict_record(ev: TestVerdict) -> VerdictRecord:
    return VerdictRecord(ev.verdict, ev.now, ev.before, ev.reference, tuple(ev.reruns), ev.note)


def join_vm(existing: str, vm: str) -> str:
    """A domain spread over several VMs lists them all: "vm-a, vm-b"."""
    names = [v for v in existing.split(", ") if v]
    if vm and vm not in names:
        names.append(vm)
    return ", ".join(names)


def merge_metrics(result: TestResult, earlier: dict[str, float]) -> TestResult:
    """The result's metrics over ``earlier`` MetricRecorded values: the later arrival wins."""
    if not earlier:
        return result
    return dataclasses.replace(result, metrics={**earlier, **result.metrics})


class Attribution:
    """Who a VM-level event belongs to: the one rule the Recorder and ReportBuilder share.

    An event without a run goes to the current run (the last RunStarted not yet
    finished); a kernel event with neither domain nor test gets the domain and the
    running test of its VM (from DomainStarted/TestStarted).
    """

    def __init__(self) -> None:
        self.current_run = ""
        self._vm_domain: dict[str, str] = {}
        self._vm_test: dict[str, str] = {}

    def observe(self, ev: Event) -> None:
        match ev:
            case RunStarted():
                self.current_run = ev.run_id
                self._vm_domain.clear()
                self._vm_test.clear()
            case RunFinished() if ev.run_id == self.current_run:
                self.current_run = ""
            case DomainStarted() if ev.vm:
                self._vm_domain[ev.vm] = ev.domain
            case TestStarted() if ev.vm:
                self._vm_domain[ev.vm] = ev.domain
                self._vm_test[ev.vm] = ev.test
            case TestFinished():
                r = ev.result
                for vm, test in list(self._vm_test.items()):
                    if test == r.name and self._vm_domain.get(vm) == r.domain:
                        del self._vm_test[vm]
            case _:
                pass

    def run_of(self, run_id: str) -> str:
        return run_id or self.current_run

    def kernel_event(self, ev: KernelEventRaised) -> tuple[str, str, str]:
        """(run_id, domain, test) for a kernel event."""
        if ev.domain or ev.test:
            return self.run_of(ev.run_id), ev.domain, ev.test
        return self.run_of(ev.run_id), self._vm_domain.get(ev.vm, ""), self._vm_test.get(ev.vm, "")

    def fill(self, ev: Event) -> Event:
        """Observe ``ev`` and return it with run/domain/test filled in where missing."""
        self.observe(ev)
        match ev:
            case KernelEventRaised():
                run_id, domain, test = self.kernel_event(ev)
                if (run_id, domain, test) != (ev.run_id, ev.domain, ev.test):
                    return dataclasses.replace(ev, run_id=run_id, domain=domain, test=test)
            case VmSample() | InfraProblem() if not ev.run_id and self.current_run:
                return dataclasses.replace(ev, run_id=self.current_run)
            case _:
                pass
        return ev


class ReportBuilder:
    """Folds events into a RunReport (the batch front end's view of one run)."""

    def __init__(self) -> None:
        self.report: RunReport | None = None
        self._attr = Attribution()
        self._pending_metrics: dict[tuple[str, str], dict[str, float]] = {}

    def feed(self, ev: Event) -> None:
        in_run = self._attr.current_run  # VmStateChanged has no run_id: it is the current run's
        ev = self._attr.fill(ev)
        if isinstance(ev, RunStarted):
            self.report = RunReport(
                run=RunInfo(
                    run_id=ev.run_id,
                    started_at=ev.ts,
                    env=ev.env,
                    profile=ev.profile,
                    config_path=ev.config_path,
                    planned_domains=tuple(ev.domains),
                    host=socket.gethostname(),
                    provenance=json.loads(ev.provenance_json or "{}"),
                )
            )
            self._pending_metrics.clear()
            return
        rep = self.report
        if rep is None:
            return
        run_id = rep.run.run_id
        match ev:
            case VmStateChanged():
                if in_run == run_id:
                    rep.vm_states.append(VmStateRecord(ev.vm, ev.state, ev.ts, ev.reason))
            case VmReady():
                if in_run == run_id:
                    rep.vm_ready.append(VmReadyRecord(ev.vm, ev.mode, ev.seconds, ev.ts, ev.reset))
            case VmSample() | KernelLogLine():
                pass
            case _ if getattr(ev, "run_id", None) != run_id:
                pass
            case RunFinished():
                rep.run.status = ev.status
                rep.run.finished_at = ev.ts
                rep.run.counts = dict(ev.counts)
                rep.run.reason = ev.reason
                for d in rep.domains:
                    if d.status == "running":
                        d.status, d.reason = "aborted", RUN_ENDED_EARLY
            case DomainStarted():
                d = self._domain(ev.domain, ev.ts)
                d.vm = join_vm(d.vm, ev.vm)
                d.planned_tests = tuple(ev.planned_tests)
                d.status = "running"
            case DomainFinished():
                d = self._domain(ev.domain, ev.ts)
                d.status, d.reason, d.finished_at = ev.status, ev.reason, ev.ts
            case TestStarted():
                self._domain(ev.domain, ev.ts).current_test = ev.test
            case TestFinished():
                r = ev.result
                extra = self._pending_metrics.pop((r.domain, r.name), {})
                d = self._domain(r.domain, ev.ts)
                d.tests.append(merge_metrics(r, extra))
                if d.current_test == r.name:
                    d.current_test = ""
            case MetricRecorded():
                self._metric(rep, ev)
            case KernelEventRaised():
                rep.kernel_events.append(kernel_record(ev))
            case InfraProblem():
                rep.infra_problems.append(InfraRecord(ev.message, ev.ts, ev.vm))
            case TestVerdict():
                rep.verdicts[(ev.domain, ev.test)] = verdict_record(ev)
            case _:
                pass

    def feed_all(self, events: Iterable[Event]) -> RunReport | None:
        for ev in events:
            self.feed(ev)
        return self.report

    def _domain(self, name: str, ts: float) -> DomainReport:
        assert self.report is not None
        d = self.report.domain(name)
        if d is None:
            d = DomainReport(name=name, started_at=ts)
            self.report.domains.append(d)
        return d

    def _metric(self, rep: RunReport, ev: MetricRecorded) -> None:
        if not ev.test:
            self._domain(ev.domain, ev.ts).metrics[ev.name] = ev.value
            return
        d = rep.domain(ev.domain)
        if d is not None:
            for i in range(len(d.tests) - 1, -1, -1):
                if d.tests[i].name == ev.test:
                    d.tests[i] = dataclasses.replace(d.tests[i], metrics={**d.tests[i].metrics, ev.name: ev.value})
                    return
        self._pending_metrics.setdefault((ev.domain, ev.test), {})[ev.name] = ev.value


