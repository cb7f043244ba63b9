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


def _host(host: str, state: str, domains: tuple[str, ...], free: int | None, reason: str = "") -> ev.HostStatus:
    return ev.HostStatus(host=host, uri=f"test:///{host}.xml", state=state, cpus=4, memory_mb=8192,
                         free_memory_mb=free, domains=domains, reason=reason, run_id="r")


def _result(domain: str, status: TestStatus) -> ev.TestFinished:
    return ev.TestFinished(run_id="r", result=TestResult(status=status, name="t", domain=domain, duration_s=1.0))


def test_runs_over_several_hosts_print_each_hosts_state_and_a_summary_before_the_closing_line():
    """Issue 18 item 3: a line per host at the start, one when it is lost (not one per
    10 s refresh), a summary per host before the closing line, which stays last."""
    lines = _lines([
        ev.RunStarted(run_id="r", config_path="c", profile="selftest", env="ci",
                      domains=("kernel_module", "performance_metrics", "vector_operations")),
        _host("big", "up", ("kernel_module", "performance_metrics"), 6100),
        _host("small", "up", ("vector_operations",), None),
        _result("kernel_module", TestStatus.PASSED),
        _host("big", "up", ("kernel_module", "performance_metrics"), 5900),  # a refresh: no line
        _host("small", "lost", ("vector_operations",), None, reason="lost the libvirt connection to test:///small.xml"),
        _host("small", "lost", (), None, reason="lost the libvirt connection to test:///small.xml"),
        _host("big", "up", ("kernel_module", "performance_metrics", "vector_operations"), 5900),
        _result("vector_operations", TestStatus.FAILED),
        _result("performance_metrics", TestStatus.PASSED),
        ev.RunFinished(run_id="r", status="failed", counts={"PASSED": 2, "FAILED": 1}),
        _host("big", "up", ("kernel_module",), 100),  # a refresh in flight at the end: not printed
    ])
    hosts = [ln for ln in lines if "host " in ln]
    assert hosts == [
        "host big: up, 4 CPUs, 8192 MB (6100 MB free): kernel_module, performance_metrics",
        "host small: up, 4 CPUs, 8192 MB: vector_operations",
        "host small: LOST — lost the libvirt connection to test:///small.xml",
        "host big: up, 4 CPUs, 8192 MB (5900 MB free): kernel_module, performance_metrics, vector_operations",
        ("  host big: up, kernel_module, performance_metrics, vector_operations: 2 passed, 1 failed; "
         "free memory lowest 5900 MB"),
        "  host small: LOST (lost the libvirt connection to test:///small.xml), its domains moved: no tests",
    ]
    assert lines.index(hosts[-1]) == len(lines) - 2
    assert lines[-1] == "2 passed, 1 failed, 0 skipped"


def test_single_host_runs_print_no_host_lines():
    lines = _lines([
        ev.RunStarted(run_id="r", config_path="c", profile="selftest", env="ci", domains=("kernel_module",)),
        _result("kernel_module", TestStatus.PASSED),
        ev.RunFinished(run_id="r", status="passed", counts={"PASSED": 1}),
    ])
    assert not any("host " in ln for ln in lines) and lines[-1] == "1 passed, 0 failed, 0 skipped"
