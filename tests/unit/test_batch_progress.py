"""The batch front end shows what the dashboard shows: progress, kernel reports, VM health."""

from __future__ import annotations

import io

from vexfs_cockpit.commands.progress import ProgressPrinter
from vexfs_cockpit.engine import events as ev
from vexfs_cockpit.engine.results import TestResult, TestStatus
from vexfs_cockpit.klog.model import KernelReport, Severity


def _lines(events) -> list[str]:
    out = io.StringIO()
    p = ProgressPrinter(out, colour=False)
    for e in events:
        p.handle(e)
    return [ln.split("] ", 1)[-1] for ln in out.getvalue().splitlines()]


def test_progress_lines_kernel_reports_health_and_closing_line():
    rep = KernelReport("warning", "WARNING in vexfs_selftest_warn_knob", Severity.WARNING, 7, "vexfs_selftest", "...")
    lines = _lines([
        ev.RunStarted(run_id="r", config_path="c", profile="selftest", env="ci", domains=("kernel_module",)),
        ev.DomainStarted(run_id="r", domain="kernel_module", vm="vexfs-ci-kernel_module-0", planned_tests=("a",)),
        ev.VmSample(vm="vexfs-ci-kernel_module-0", state="running", cpu_pct=20.0, mem_kb=200 * 1024),
        ev.VmSample(vm="vexfs-ci-kernel_module-0", state="running", cpu_pct=60.0, mem_kb=300 * 1024),
        ev.KernelEventRaised(vm="vexfs-ci-kernel_module-0", report=rep, run_id="r", domain="kernel_module", test="a"),
        ev.TestFinished(run_id="r", result=TestResult(status=TestStatus.FAILED, message="kernel reported WARNING in vexfs_selftest_warn_knob", name="a", domain="kernel_module", duration_s=1.5)),
        ev.DomainFinished(run_id="r", domain="kernel_module", status="failed", counts={"FAILED": 1}),
        ev.RunFinished(run_id="r", status="failed", counts={"PASSED": 0, "FAILED": 1, "SKIPPED": 0}),
        # the run's VMs are destroyed in the background once it is over
        ev.VmStateChanged(vm="vexfs-ci-kernel_module-0", state="stopped", reason="destroyed"),
    ])
    assert "KERNEL warning: WARNING in vexfs_selftest_warn_knob on vexfs-ci-kernel_module-0 during kernel_module/a" in lines
    assert "kernel_module/a: FAILED (1.50s) — kernel reported WARNING in vexfs_selftest_warn_knob" in lines
    assert "kernel_module: vm vexfs-ci-kernel_module-0 cpu avg 40% peak 60%, mem peak 300 MB (2 samples)" in lines
    assert lines[-1] == "0 passed, 1 failed, 0 skipped"
