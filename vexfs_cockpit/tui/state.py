"""The dashboard's view of the engine: engine events folded into small view models.

Pure Python (no Textual), so it is tested without a terminal. ``apply`` returns which
parts changed so widgets repaint only those. Kernel log lines are not folded here:
the log pane keeps its own bounded buffer (``logmodel.py``).
"""

from __future__ import annotations

import re
from collections import Counter, deque
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from enum import StrEnum

from vexfs_cockpit.engine.events import (
    ConfirmStarted,
    DomainFinished,
    DomainStarted,
    Event,
    HostStatus,
    InfraProblem,
    KernelEventRaised,
    KernelLogLine,
    MetricRecorded,
    RunFinished,
    RunStarted,
    TestFinished,
    TestRerun,
    TestStarted,
    TestVerdict,
    VmSample,
    VmStateChanged,
)
from vexfs_cockpit.engine.results import TestResult, TestStatus
from vexfs_cockpit.tui.backend import TestRef, VmInfo
from vexfs_cockpit.tui.format import parse_vm_name

_LINUX_VERSION = re.compile(r"Linux version (\S+)")

SPARK_SECONDS = 60  # VmSample is 1 Hz: the sparkline shows the last minute
KEEP_KERNEL_EVENTS = 500
KEEP_INFRA = 50

# A VM in one of these states has an uptime; leaving them resets it.
ALIVE_STATES = frozenset({"booting", "running", "ready", "paused", "hung"})


class Part(StrEnum):
    VMS = "vms"
    DOMAINS = "domains"
    RUN = "run"
    RESULTS = "results"
    EVENTS = "events"
    INFRA = "infra"


@dataclass(slots=True)
class VmView:
    name: str
    state: str = "unknown"
    domain: str = ""
    up_since: float | None = None
    cpu_pct: float | None = None
    mem_kb: int | None = None
    cpu_history: deque[float] = field(default_factory=lambda: deque(maxlen=SPARK_SECONDS))
    reason: str = ""
    dev_vm: bool = False  # started by `vm start`: its SSH details are recorded

    def uptime(self, now: float) -> float | None:
        return None if self.up_since is None else max(0.0, now - self.up_since)


@dataclass(slots=True)
class DomainView:
    domain: str
    vm: str = ""
    planned: tuple[str, ...] = ()
    status: str = "pending"  # pending | running | passed | failed | errored | skipped
    counts: Counter[str] = field(default_factory=Counter)  # TestStatus value -> n
    current: str | None = None
    current_attempt: int = 1
    current_started: float | None = None
    current_p95: float = 0.0  # the running test's p95 duration in history (0: its deadline is not from history)
    started_at: float | None = None
    finished_at: float | None = None
    reason: str = ""
    results: dict[str, TestResult] = field(default_factory=dict)

    @property
    def done(self) -> int:
        return len(self.results)

    @property
    def passed(self) -> int:
        return self.counts[TestStatus.PASSED.value]

    @property
    def failed(self) -> int:
        return sum(self.counts[s.value] for s in TestStatus if s.bad)

    @property
    def skipped(self) -> int:
        return self.counts[TestStatus.SKIPPED.value]

    def elapsed(self, now: float) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or now) - self.started_at

    def remaining(self, now: float, expected: Mapping[TestRef, float]) -> tuple[float, int]:
        """Seconds of the tests still to run that history knows, and how many it does not."""
        if self.finished_at is not None:
            return 0.0, 0
        left, unknown = 0.0, 0
        for test in self.planned:
            if test in self.results:
                continue
            typical = expected.get(TestRef(self.domain, test))
            if typical is None:
                unknown += 1
                continue
            if test == self.current and self.current_started is not None:
                typical = max(0.0, typical - (now - self.current_started))
            left += typical
        return left, unknown

    def eta(self, now: float, expected: Mapping[TestRef, float]) -> float | None:
        """Seconds left from historical durations; None if any remaining test has none."""
        if self.finished_at is not None:
            return 0.0
        if self.started_at is None:
            return None
        left = 0.0
        for test in self.planned:
            if test in self.results:
                continue
            typical = expected.get(TestRef(self.domain, test))
            if typical is None:
                return None
            if test == self.current and self.current_started is not None:
                typical = max(0.0, typical - (now - self.current_started))
            left += typical
        return left


@dataclass(slots=True)
class RunView:
    run_id: str
    env: str = ""
    profile: str = ""
    domains: tuple[str, ...] = ()
    started_at: float | None = None
    finished_at: float | None = None
    status: str = "running"
    counts: dict[str, int] = field(default_factory=dict)
    reason: str = ""
    parallel: int = 1  # domains side by side at most
    confirming: tuple[str, ...] = ()  # "domain/test" rerun on fresh VMs at the run's end (engine/confirm.py)
    rerun: str = ""  # the latest of those reruns: "domain/test 2/3"

    def elapsed(self, now: float) -> float | None:
        if self.started_at is None:
            return None
        return (self.finished_at or now) - self.started_at

    @property
    def active(self) -> bool:
        return self.finished_at is None


@dataclass(frozen=True, slots=True)
class RunRecord:
    """An earlier run of this session as the dashboard last showed it."""

    run: RunView
    results: list[TestResult]
    kernel_events: tuple[KernelEventRaised, ...]
    verdicts: Mapping[tuple[str, str], str] = field(default_factory=dict)  # (domain, test) -> Verdict


KEEP_EARLIER_RUNS = 5  # earlier runs whose results stay one key away (b on the results screen)


@dataclass(frozen=True, slots=True)
class RunEta:
    """The whole run's time left, from history: ``seconds`` covers the tests history
    knows; ``unknown`` tests have never run before (so the run takes longer)."""

    seconds: float
    unknown: int
    total: int  # tests still to run


@dataclass(slots=True)
class LiveState:
    run: RunView | None = None
    vms: dict[str, VmView] = field(default_factory=dict)
    domains: dict[str, DomainView] = field(default_factory=dict)
    results: list[TestResult] = field(default_factory=list)  # finish order, current run
    # (domain, test) -> the verdict of its confirmation reruns (engine/confirm.py), current run
    verdicts: dict[tuple[str, str], str] = field(default_factory=dict)
    metrics: dict[TestRef, dict[str, float]] = field(default_factory=dict)
    kernel_events: deque[KernelEventRaised] = field(default_factory=lambda: deque(maxlen=KEEP_KERNEL_EVENTS))
    infra: deque[InfraProblem] = field(default_factory=lambda: deque(maxlen=KEEP_INFRA))
    expected: dict[TestRef, float] = field(default_factory=dict)
    expected_for: set[str] = field(default_factory=set)  # domains whose durations history answered
    earlier_runs: deque[RunRecord] = field(default_factory=lambda: deque(maxlen=KEEP_EARLIER_RUNS))  # newest first
    fleet_error: str | None = None  # vm_list failed: shown as the VM table's empty state
    # VMs of the current run: its domains' VMs, and those that began booting for it (a VM
    # named for one of its domains in its environment) until the domain names its own.
    kernel: str | None = None  # the guest kernel, from the first boot's "Linux version" line
    run_vms: set[str] = field(default_factory=set)
    _booted_for: dict[str, str] = field(default_factory=dict)  # VM -> domain, by its name
    # A run over several libvirt hosts (hosts:): each host's last HostStatus, in the order
    # they came, and which host each domain runs on now (a lost host's domain moves).
    hosts: dict[str, HostStatus] = field(default_factory=dict)
    host_of_domain: dict[str, str] = field(default_factory=dict)

    # -- inputs ------------------------------------------------------------------
    def apply_all(self, events: Iterable[Event]) -> set[Part]:
        changed: set[Part] = set()
        for ev in events:
            changed |= self.apply(ev)
        return changed

    def apply(self, ev: Event) -> set[Part]:
        match ev:
            case KernelLogLine():
                return set()
            case VmSample():
                vm = self._vm(ev.vm)
                vm.cpu_pct = ev.cpu_pct
                vm.mem_kb = ev.mem_kb
                vm.cpu_history.append(ev.cpu_pct)
                self._set_vm_state(vm, ev.state, ev.ts)
                return {Part.VMS}
            case VmStateChanged():
                vm = self._vm(ev.vm)
                self._set_vm_state(vm, ev.state, ev.ts)
                vm.reason = ev.reason
                if ev.state == "booting":
                    self._maybe_booted_for_run(ev.vm, ev.ts)
                return {Part.VMS, Part.RUN}
            case RunStarted():
                if self.run is not None:  # a re-run must not take the last run's results from view
                    self.earlier_runs.appendleft(
                        RunRecord(self.run, self.results, tuple(self.kernel_events), self.verdicts))
                self.run = RunView(
                    run_id=ev.run_id, env=ev.env, profile=ev.profile, domains=ev.domains, started_at=ev.ts,
                    parallel=max(1, ev.parallel),
                )
                # Every domain's tests from the start: totals never count only the started ones.
                self.domains = {d: DomainView(domain=d, planned=tuple(ev.planned.get(d, ()))) for d in ev.domains}
                self.expected_for = set()
                self.run_vms = set()
                self._booted_for = {}
                self.hosts = {}
                self.host_of_domain = {}
                for gone in [n for n, v in self.vms.items() if v.state == "undefined"]:
                    del self.vms[gone]  # destroyed with an earlier run: nothing left to show

                self.results = []
                self.verdicts = {}
                self.metrics = {}
                self.kernel_events.clear()
                return {Part.RUN, Part.DOMAINS, Part.RESULTS, Part.EVENTS}
            case RunFinished():
                run = self._run(ev.run_id)
                run.finished_at = ev.ts
                run.status = ev.status
                run.counts = dict(ev.counts)
                run.reason = ev.reason
                for dom in self.domains.values():
                    dom.current = None
                return {Part.RUN, Part.DOMAINS}
            case DomainStarted():
                self._run(ev.run_id)
                dom = self._domain(ev.domain)
                dom.vm = ev.vm
                dom.planned = ev.planned_tests
                dom.status = "running"
                dom.started_at = ev.ts
                if ev.vm:
                    self._vm(ev.vm).domain = ev.domain
                    # The domain's own VM: another that booted under a name like it is not ours.
                    for other, domain in list(self._booted_for.items()):
                        if domain == ev.domain and other != ev.vm:
                            self.run_vms.discard(other)
                            del self._booted_for[other]
                    self.run_vms.add(ev.vm)
                return {Part.DOMAINS, Part.VMS, Part.RUN}
            case DomainFinished():
                dom = self._domain(ev.domain)
                dom.status = ev.status
                dom.finished_at = ev.ts
                dom.reason = ev.reason
                dom.current = None
                return {Part.DOMAINS, Part.RUN}
            case TestStarted():
                dom = self._domain(ev.domain)
                if dom.started_at is None:
                    dom.started_at = ev.ts
                    dom.status = "running"
                dom.current = ev.test
                dom.current_attempt = ev.attempt
                dom.current_started = ev.ts
                dom.current_p95 = ev.p95_s
                if ev.vm and not dom.vm:
                    dom.vm = ev.vm
                if ev.vm and ev.vm not in self.run_vms:
                    self.run_vms.add(ev.vm)
                    return {Part.DOMAINS, Part.VMS}
                return {Part.DOMAINS}
            case TestFinished():
                res = ev.result
                dom = self._domain(res.domain)
                previous = dom.results.get(res.name)
                if previous is not None:  # a re-run of the same test in this run
                    dom.counts[previous.status.value] -= 1
                    self.results.remove(previous)
                dom.results[res.name] = res
                dom.counts[res.status.value] += 1
                if dom.current == res.name:
                    dom.current = None
                self.results.append(res)
                return {Part.DOMAINS, Part.RESULTS, Part.RUN}
            case TestVerdict():
                self.verdicts[(ev.domain, ev.test)] = ev.verdict
                return {Part.RESULTS}
            case ConfirmStarted():
                self._run(ev.run_id).confirming = tuple(ev.tests)
                return {Part.RUN}
            case TestRerun():
                self._run(ev.run_id).rerun = f"{ev.domain}/{ev.test} {ev.number}/{ev.of}"
                return {Part.RUN}
            case MetricRecorded():
                self.metrics.setdefault(TestRef(ev.domain, ev.test), {})[ev.name] = ev.value
                return {Part.RESULTS}
            case KernelEventRaised():
                self.kernel_events.append(ev)
                return {Part.EVENTS, Part.RUN}
            case InfraProblem():
                self.infra.append(ev)
                return {Part.INFRA, Part.RUN}
            case HostStatus():
                self.hosts[ev.host] = ev
                for d in ev.domains:  # a lost host still lists a domain until it has moved
                    if ev.state == "up" or d not in self.host_of_domain:
                        self.host_of_domain[d] = ev.host
                return {Part.VMS}
        return set()

    def seed_vms(self, vms: Iterable[VmInfo]) -> set[Part]:
        """Merge the fleet's listing (at start, after a VM action)."""
        self.fleet_error = None
        for info in vms:
            vm = self._vm(info.name)
            vm.state = info.state
            vm.dev_vm = info.dev_vm
            if info.domain:
                vm.domain = info.domain
            if info.state in ALIVE_STATES:
                if info.started_at is not None:
                    vm.up_since = info.started_at
            else:
                vm.up_since = None
        return {Part.VMS}

    def set_fleet_error(self, message: str) -> set[Part]:
        self.fleet_error = message
        return {Part.VMS}

    def set_expected(self, domain: str, expected: Mapping[str, float]) -> set[Part]:
        """Typical test durations from history, for ETAs."""
        self.expected.update({TestRef(domain, test): secs for test, secs in expected.items()})
        self.expected_for.add(domain)
        return {Part.DOMAINS, Part.RUN}

    # -- derived -----------------------------------------------------------------
    def status_counts(self) -> Counter[str]:
        total: Counter[str] = Counter()
        for dom in self.domains.values():
            total.update(dom.counts)
        return total

    def running_tests(self) -> int:
        return sum(1 for d in self.domains.values() if d.current is not None)

    def planned_total(self) -> int:
        return sum(len(d.planned) for d in self.domains.values())

    def run_eta(self, now: float) -> RunEta | None:
        """Time left in the run; None until history has answered for every domain.

        Domains run ``parallel`` at a time in their order: the running ones keep their
        slots, each pending one takes the slot that frees first."""
        run = self.run
        if run is None or not run.active or not self.domains or not self.expected_for >= self.domains.keys():
            return None
        slots: list[float] = []
        pending: list[float] = []
        unknown = total = 0
        for dom in self.domains.values():
            if dom.finished_at is not None:
                continue
            left, missing = dom.remaining(now, self.expected)
            unknown += missing
            total += len([t for t in dom.planned if t not in dom.results])
            (slots if dom.started_at is not None else pending).append(left)
        slots += [0.0] * max(0, run.parallel - len(slots))
        for left in pending:
            i = slots.index(min(slots))
            slots[i] += left
        return RunEta(max(slots, default=0.0), unknown, total)

    def see_kernel_lines(self, texts: Iterable[str]) -> set[Part]:
        """Until the guest kernel is known: look for a boot's ``Linux version X`` line."""
        for text in texts:
            if "Linux version " in text:
                m = _LINUX_VERSION.search(text)
                if m is not None:
                    self.kernel = m.group(1)
                    return {Part.RUN}
        return set()

    def host_of(self, vm: str) -> str | None:
        """The host ``vm`` runs on, through its domain: the one it serves in this run, or
        the one its name says in the run's environment (None for other VMs)."""
        view, parts = self.vms.get(vm), parse_vm_name(vm)
        if self.run is None:
            return None
        if view is not None and view.domain and vm in self.run_vms:
            return self.host_of_domain.get(view.domain)
        if parts is not None and parts[0] == self.run.env:
            return self.host_of_domain.get(parts[1])
        return None

    def in_this_run(self, vm: str) -> bool | None:
        """Whether ``vm`` serves the current run; None when there is no run yet."""
        return None if self.run is None else vm in self.run_vms

    # -- helpers ------------------------------------------------------------------
    def _maybe_booted_for_run(self, name: str, ts: float) -> None:
        run = self.run
        parts = parse_vm_name(name)
        if run is None or not run.active or parts is None or run.started_at is None or ts < run.started_at:
            return
        env, domain, _ = parts
        if env == run.env and domain in self.domains and not self.domains[domain].vm:
            self._booted_for[name] = domain
            self.run_vms.add(name)

    def _vm(self, name: str) -> VmView:
        vm = self.vms.get(name)
        if vm is None:
            vm = self.vms[name] = VmView(name=name)
        return vm

    def _domain(self, name: str) -> DomainView:
        dom = self.domains.get(name)
        if dom is None:
            dom = self.domains[name] = DomainView(domain=name)
        return dom

    def _run(self, run_id: str) -> RunView:
        # The TUI may attach mid-run and miss RunStarted: create the run lazily.
        if self.run is None or self.run.run_id != run_id:
            self.run = RunView(run_id=run_id)
        return self.run

    @staticmethod
    def _set_vm_state(vm: VmView, state: str, ts: float) -> None:
        if state not in ALIVE_STATES:
            vm.up_since = None
            vm.cpu_pct = vm.mem_kb = None  # a stopped VM uses nothing: its last sample is history
        elif state == "booting" and vm.state != "booting":
            vm.up_since = ts  # a boot (or reset) we saw begin
        elif vm.state not in ALIVE_STATES and vm.state != "unknown":
            vm.up_since = ts  # came back from stopped/crashed while we watched
        # First seen already running: the start time is unknown, not "now".
        vm.state = state
