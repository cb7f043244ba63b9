"""The kernel-report record every part of the cockpit shares."""

from __future__ import annotations

from dataclasses import dataclass
from enum import IntEnum


class Severity(IntEnum):
    """Ordered so ``severity >= Severity.WARNING`` reads naturally."""

    INFO = 10
    WARNING = 20
    ERROR = 30
    CRITICAL = 40  # the guest is (probably) dead: panic, fatal oops, lockup


@dataclass(frozen=True, slots=True)
class KernelReport:
    """One classified kernel report (a multi-line block grouped into one event).

    ``kind`` is one of panic, oops, bug, warning, gpf, hung_task, soft_lockup,
    hard_lockup, rcu_stall, kasan, kfence, ubsan, kmemleak, lockdep, oom,
    segfault, taint. ``title`` is syzkaller-style ("WARNING in foo_write").
    ``line`` is the absolute line number of the first line in the VM's log.
    """

    kind: str
    title: str
    severity: Severity
    line: int
    module: str | None
    text: str
    vm: str = ""

    @property
    def signature(self) -> str:
        return f"{self.kind}: {self.title}"

    @property
    def fatal(self) -> bool:
        return self.severity >= Severity.CRITICAL
