"""The classifier against REAL console captures of the self-test guest (tests/data/klog/*.log).

Each capture was taken on Debian 12's 6.1 kernel under TCG by exercising one knob of
the vexfs_selftest fixture module (see tests/fixtures/selftest_fs/README.md). The
titles are asserted literally: they are what the batch report and the TUI show.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from vexfs_cockpit.engine.klog_buffer import KernelLogBuffer
from vexfs_cockpit.klog.classify import classify_text, split_lines
from vexfs_cockpit.klog.model import Severity

DATA = Path(__file__).parent.parent / "data" / "klog"
E, W, C, I = Severity.ERROR, Severity.WARNING, Severity.CRITICAL, Severity.INFO
MOD = "vexfs_selftest"
SOFT = ("soft_lockup", "BUG: soft lockup in vexfs_selftest_softlockup_knob", E, MOD)

# capture -> [(line or None if not pinned, kind, title, severity, module)]
EXPECTED: dict[str, list[tuple[int | None, str, str, Severity, str | None]]] = {
    "warn.log": [(3, "warning", "WARNING in vexfs_selftest_warn_knob", W, MOD)],
    "oops.log": [(3, "oops", "BUG: kernel NULL pointer dereference in vexfs_selftest_oops_knob", E, MOD)],
    "bug.log": [(3, "bug", "kernel BUG in vexfs_selftest_bug_knob", E, MOD)],
    "hung_task.log": [(3, "hung_task", "INFO: task hung in vexfs_selftest_hang_knob", E, MOD)],
    "soft_lockup.log": [(3, *SOFT), (43, *SOFT)],
    # one 30 s spin: three soft-lockup reports, an RCU stall whose first stack is the
    # starved GP kthread's (the guilty RIP comes after it), then a fourth soft lockup
    "rcu_stall.log": [
        (3, *SOFT), (37, *SOFT), (71, *SOFT),
        (105, "rcu_stall", "INFO: rcu detected stall in vexfs_selftest_softlockup_knob", E, MOD),
        (158, *SOFT),
    ],
    "sysrq_panic.log": [(3, "panic", "Kernel panic - not syncing: sysrq triggered crash", C, None)],
    "module_cycle.log": [
        (2, "taint", "taint: out-of-tree module vexfs_selftest", I, MOD),
        (3, "taint", "taint: unsigned module vexfs_selftest", I, MOD),
    ],
    # no kmemleak in Debian's kernel: a leak is visible in /proc/meminfo, not in the log
    "leak.log": [],
    "bad_param.log": [],
    "eio_on_read.log": [],
    "clean_boot.log": [],
}


def _capture(name: str) -> Path:
    path = DATA / name
    if not path.exists():
        pytest.skip(f"capture {path} not recorded yet")
    return path


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_real_capture(name: str) -> None:
    got = classify_text(_capture(name).read_text(errors="replace"))
    want = EXPECTED[name]
    assert [(r.kind, r.title, r.severity, r.module) for r in got] == [w[1:] for w in want]
    pinned = [(g.line, w[0]) for g, w in zip(got, want) if w[0] is not None]
    assert all(line == want_line for line, want_line in pinned), pinned


def test_no_capture_left_unchecked() -> None:
    assert {p.name for p in DATA.glob("*.log")} <= set(EXPECTED)


def test_clean_boot_has_nothing_above_info() -> None:
    reports = classify_text(_capture("clean_boot.log").read_text(errors="replace"))
    assert all(r.severity is Severity.INFO for r in reports)


@pytest.mark.parametrize("name", ["warn.log", "oops.log", "hung_task.log", "rcu_stall.log"])
def test_live_buffer_matches_file_classification(name: str) -> None:
    """Fed line by line (as the console thread does), the buffer finds the same reports."""
    lines = split_lines(_capture(name).read_text(errors="replace"))
    buf = KernelLogBuffer("vm0", idle_flush_s=None)
    for ln in lines:
        buf.feed(ln)
    buf.flush()
    file_reports = classify_text("\n".join(lines), first_line=0)
    assert [(r.line, r.title) for r in buf.reports()] == [(r.line, r.title) for r in file_reports]
