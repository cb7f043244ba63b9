"""The one typed event stream. Front ends and the store see only these.

Events are small frozen dataclasses. ``ts`` is wall-clock seconds (time.time()).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from vexfs_cockpit.engine.results import TestResult, TestStatus
from vexfs_cockpit.klog.model import KernelReport


def _now() -> float:
    return time.time()


@dataclass(frozen=True, slots=True, kw_only=True)
class RunStarted:
    run_id: str
    config_path: str
    profile: str  # e.g. "selftest" or "vexfs"
    env: str
    domains: tuple[str, ...]
    config_json: str = "{}"  # the effective merged config, for the record
    # Known before any VM boots, so a front end counts every selected test from the start:
    # domain -> the tests it will run (a re-run's selection with what it depends on) ...
    planned: dict[str, tuple[str, ...]] = field(default_factory=dict)
    # ... and how many domains run side by side at most (for an ETA over the whole run).
    parallel: int = 1
    # Where the run came from (app.provenance): kernel, module source and commit, config hash,
    # cockpit version, host. JSON, so the engine need not know its keys.
    provenance_json: str = "{}"
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class RunFinished:
    run_id: str
    status: str  # passed | failed | errored | aborted
    counts: dict[str, int]  # TestStatus value -> count
    reason: str = ""
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainStarted:
    run_id: str
    domain: str
    vm: str
    planned_tests: tuple[str, ...]
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class DomainFinished:
    run_id: str
    domain: str
    status: str  # passed | failed | errored | skipped
    counts: dict[str, int]
    reason: str = ""
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class TestStarted:
    __test__ = False
    run_id: str
    domain: str
    test: str
    attempt: int
    vm: str = ""
    deadline_s: float = 0.0  # when the attempt times out (0: not told)
    p95_s: float = 0.0  # its p95 duration in history, when the deadline came from it (0: not)
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class TestFinished:
    __test__ = False
    run_id: str
    result: TestResult
    ts: float = field(default_factory=_now)

    @property
    def status(self) -> TestStatus:
        return self.result.status


@dataclass(frozen=True, slots=True, kw_only=True)
class MetricRecorded:
    run_id: str
    domain: str
    test: str
    name: str
    value: float
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class KernelLogLine:
    vm: str
    line_no: int  # absolute line number in that VM's log since it booted
    text: str
    source: str = "console"  # console | dmesg
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class KernelEventRaised:
    """A classified kernel report, attributed to the test running on that VM (if any)."""

    vm: str
    report: KernelReport
    run_id: str = ""
    domain: str = ""
    test: str = ""
    expected: bool = False  # the test declared it expects this kind (fault injection)
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class VmStateChanged:
    vm: str
    state: str  # defined | booting | running | ready | paused | hung | crashed | stopped | undefined
    reason: str = ""
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class VmReady:
    """A VM came up, measured by the fleet: from the start (cold boot) or the restore of
    its golden snapshot until SSH answered (the "ready" VmStateChanged comes with it)."""

    vm: str
    mode: str  # boot | restore
    seconds: float
    reset: bool = False  # came back after a reset, not at its first start
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class AlertFired:
    """An alert rule (config monitoring.alerts) fired while the run was going
    (monitoring/live.py); at most once per run for each rule and domain."""

    run_id: str
    rule: str
    kind: str  # failure_rate | test_timeout | kernel_crash | metric_regression
    severity: str  # info | warning | critical
    summary: str  # one line: what fired and where
    domain: str = ""
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class VmSample:
    """1 Hz health sample of a VM."""

    vm: str
    state: str
    cpu_pct: float
    mem_kb: int
    block_rd_bytes: int = 0
    block_wr_bytes: int = 0
    net_rx_bytes: int = 0
    net_tx_bytes: int = 0
    run_id: str = ""
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class InfraProblem:
    """Something outside the code under test broke (libvirt, image, SSH)."""

    message: str
    vm: str = ""
    run_id: str = ""
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class HostStatus:
    """A libvirt host of a run over several (``hosts:``): placed, re-read every few
    seconds while the run is on, or lost. Single-host runs publish none."""

    host: str  # its name in hosts:
    uri: str
    state: str  # up | lost
    cpus: int  # the room the cockpit may use there: the config's grant, else libvirt's
    memory_mb: int  # (memory less what is kept for the host: fleet/hosts.py)
    free_memory_mb: int | None  # the host's own free memory; None: its libvirt does not say
    domains: tuple[str, ...]  # placed there (a lost host's domains move elsewhere)
    reason: str = ""  # why it is lost
    run_id: str = ""
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class ConfirmStarted:
    """The run's tests are done; these changed ones are rerun on a fresh VM to confirm."""

    run_id: str
    tests: tuple[str, ...]  # "domain/test"
    reruns: int  # K, per test
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class TestRerun:
    """One confirmation rerun of a test (not a result of the run: counts are untouched)."""

    __test__ = False
    run_id: str
    domain: str
    test: str
    number: int  # 1..of
    of: int
    status: TestStatus
    message: str = ""
    duration_s: float = 0.0
    vm: str = ""
    ts: float = field(default_factory=_now)


@dataclass(frozen=True, slots=True, kw_only=True)
class TestVerdict:
    """What a changed test's outcome means (engine.confirm.Verdict), after its reruns."""

    __test__ = False
    run_id: str
    domain: str
    test: str
    verdict: str  # engine.confirm.Verdict value
    now: str  # the test's status in this run
    before: str = ""  # its status in the reference ("" = not run there)
    reference: str = ""  # "baseline RUN" | "run RUN" | ""
    reruns: tuple[str, ...] = ()  # the reruns' statuses, in order
    note: str = ""
    ts: float = field(default_factory=_now)


Event = (
    RunStarted
    | RunFinished
    | DomainStarted
    | DomainFinished
    | TestStarted
    | TestFinished
    | MetricRecorded
    | KernelLogLine
    | KernelEventRaised
    | VmStateChanged
    | VmReady
    | VmSample
    | InfraProblem
    | HostStatus
    | AlertFired
    | ConfirmStarted
    | TestRerun
    | TestVerdict
)
