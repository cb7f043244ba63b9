"""Test results and the evidence that backs every one of them."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import StrEnum

from vexfs_cockpit.klog.model import KernelReport

OUTPUT_TAIL_CHARS = 4000


class TestStatus(StrEnum):
    __test__ = False  # not a pytest class

    PENDING = "PENDING"
    RUNNING = "RUNNING"
    PASSED = "PASSED"
    FAILED = "FAILED"
    SKIPPED = "SKIPPED"
    TIMEOUT = "TIMEOUT"
    ERROR = "ERROR"

    @property
    def bad(self) -> bool:
        return self in (TestStatus.FAILED, TestStatus.TIMEOUT, TestStatus.ERROR)


@dataclass(slots=True)
class CommandRecord:
    """One command run on the target, as evidence."""

    cmd: str
    exit_code: int | None  # None: killed by timeout or the link dropped
    duration_s: float
    output_tail: str
    timed_out: bool = False
    target: str = ""


@dataclass(slots=True)
class Evidence:
    commands: list[CommandRecord] = field(default_factory=list)
    kernel_log: list[str] = field(default_factory=list)  # the test's window of the VM's log
    kernel_events: list[KernelReport] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Attempt:
    number: int
    status: TestStatus
    message: str
    duration_s: float


@dataclass(slots=True)
class TestResult:
    """What a test method returns (short form: status + message) and what the runner stores.

    The runner fills in name, domain, timing, attempts and evidence.
    Metrics are floats keyed by a name carrying its unit, e.g. ``load_time_ms``.
    """

    __test__ = False

    status: TestStatus
    message: str = ""
    metrics: dict[str, float] = field(default_factory=dict)
    artifacts: dict[str, str] = field(default_factory=dict)
    name: str = ""
    domain: str = ""
    duration_s: float = 0.0
    started_at: float = field(default_factory=time.time)
    attempts: list[Attempt] = field(default_factory=list)
    evidence: Evidence = field(default_factory=Evidence)
    tags: tuple[str, ...] = ()


def tail(text: str, limit: int = OUTPUT_TAIL_CHARS) -> str:
    return text if len(text) <= limit else "…" + text[-limit:]
