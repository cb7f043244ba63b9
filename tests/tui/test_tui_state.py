"""The TUI's pure parts: event folding (LiveState), the log pane's model, formatting."""

from __future__ import annotations

from vexfs_cockpit.engine.events import (
    DomainFinished,
    InfraProblem,
    KernelLogLine,
    RunFinished,
    TestFinished,
    TestStarted,
    VmSample,
    VmStateChanged,
)
from vexfs_cockpit.engine.results import TestStatus
from vexfs_cockpit.klog.model import Severity
from vexfs_cockpit.tui.backend import TestRef, VmInfo
from vexfs_cockpit.tui.format import duration, error_line, memory_kb, progress_bar, sparkline, vm_display_name
from vexfs_cockpit.tui.logmodel import LINE_SEP, MARK_SEP, LogModel, Marker, parse_row
from vexfs_cockpit.tui.state import LiveState, Part

from tests.support.tui import T0, VM_A, VM_B, boot_lines, mid_run_events, result, warn_event


def folded(events) -> LiveState:
    st = LiveState()
    st.apply_all(events)
    return st


def test_mid_run_counts_current_tests_and_vm_domains():
    st = folded(mid_run_events())
    km = st.domains["kernel_module"]
    fs = st.domains["filesystem_operations"]
    assert (km.passed, km.failed, km.done, len(km.planned)) == (1, 1, 2, 4)
    assert km.current == "module_unload"
    assert fs.current == "create_files" and fs.passed == 1
    assert st.vms[VM_A].domain == "kernel_module"
    assert st.status_counts()["PASSED"] == 2 and st.running_tests() == 2
    assert st.planned_total() == 8
    assert len(st.kernel_events) == 1
    # elapsed from the DomainStarted timestamp, against the caller's clock
    assert km.elapsed(T0) == 20


def test_eta_needs_history_for_every_remaining_test():
    st = folded(mid_run_events())
    km = st.domains["kernel_module"]
    assert km.eta(T0, st.expected) is None  # nothing known yet
    st.set_expected("kernel_module", {"module_unload": 10.0})
    assert km.eta(T0, st.expected) is None  # taint_check still unknown
    st.set_expected("kernel_module", {"taint_check": 3.0})
    # module_unload started 15 s ago with a typical 10 s: overdue counts as 0, plus 3 s
    assert km.eta(T0, st.expected) == 3.0
    assert km.eta(T0 - 12, st.expected) == 10 - 3 + 3.0


def test_run_finished_clears_current_and_domain_finished_sets_status():
    st = folded(mid_run_events())
    st.apply(DomainFinished(run_id="run-1", domain="kernel_module", status="failed", counts={}, reason="module_load failed", ts=T0))
    st.apply(RunFinished(run_id="run-1", status="aborted", counts={}, reason="user abort", ts=T0 + 1))
    assert st.domains["kernel_module"].status == "failed"
    assert all(d.current is None for d in st.domains.values())
    assert st.run is not None and not st.run.active and st.run.status == "aborted"
    assert st.run.elapsed(T0 + 100) == 32  # frozen at RunFinished


def test_rerun_of_a_test_replaces_its_result():
    st = folded(mid_run_events())
    again = result("kernel_module", "module_load", TestStatus.PASSED, 1.0, T0)
    changed = st.apply(TestFinished(run_id="run-1", result=again, ts=T0))
    km = st.domains["kernel_module"]
    assert Part.RESULTS in changed
    assert (km.passed, km.failed, km.done) == (2, 0, 2)
    assert [r.status for r in st.results if r.name == "module_load"] == [TestStatus.PASSED]


def test_uptime_known_only_when_the_start_was_seen():
    st = LiveState()
    st.apply(VmSample(vm="v", state="running", cpu_pct=5.0, mem_kb=1000, ts=T0))
    assert st.vms["v"].uptime(T0 + 5) is None  # first seen already running: start unknown
    st.apply(VmStateChanged(vm="v", state="stopped", ts=T0 + 10))
    st.apply(VmStateChanged(vm="v", state="booting", ts=T0 + 20))
    st.apply(VmStateChanged(vm="v", state="ready", ts=T0 + 28))
    assert st.vms["v"].uptime(T0 + 30) == 10
    st.apply(VmStateChanged(vm="v", state="booting", reason="reset", ts=T0 + 40))  # reset: uptime restarts
    assert st.vms["v"].uptime(T0 + 41) == 1
    st.apply(VmStateChanged(vm="v", state="crashed", ts=T0 + 50))
    assert st.vms["v"].uptime(T0 + 51) is None


def test_a_stopped_vm_shows_no_cpu_or_memory():
    st = LiveState()
    st.apply(VmSample(vm="v", state="ready", cpu_pct=41.9, mem_kb=278_000, ts=T0))
    assert (st.vms["v"].cpu_pct, st.vms["v"].mem_kb) == (41.9, 278_000)
    st.apply(VmStateChanged(vm="v", state="stopped", ts=T0 + 1))
    vm = st.vms["v"]
    assert (vm.cpu_pct, vm.mem_kb) == (None, None)  # not the last sample of a running guest
    assert list(vm.cpu_history) == [41.9]  # the last minute's sparkline stays


def test_samples_keep_one_minute_and_listing_seeds_vms():
    st = LiveState()
    for i in range(90):
        st.apply(VmSample(vm="v", state="ready", cpu_pct=float(i), mem_kb=10, ts=T0 + i))
    assert len(st.vms["v"].cpu_history) == 60 and st.vms["v"].cpu_history[-1] == 89.0
    st.seed_vms([VmInfo("w", "running", started_at=T0)])
    assert st.vms["w"].uptime(T0 + 3) == 3 and st.fleet_error is None
    st.set_fleet_error("cannot reach libvirt")
    assert st.fleet_error == "cannot reach libvirt"


def test_test_started_attempts_and_infra():
    st = folded(mid_run_events())
    st.apply(TestStarted(run_id="run-1", domain="kernel_module", test="taint_check", attempt=2, vm=VM_A, ts=T0))
    assert st.domains["kernel_module"].current_attempt == 2
    assert Part.INFRA in st.apply(InfraProblem(message="ssh to vm dropped", vm=VM_B))


# -- log model ----------------------------------------------------------------------------


def test_rows_parse_back_and_labels_are_short():
    m = LogModel()
    m.add(boot_lines(VM_B, 7, 1, T0))
    row = m.all_rows()[0]
    key = parse_row(row)
    assert key is not None and key.label == "dev/fsops-0" and key.line_no == 7 and not key.marker
    assert row[key.text_start:].startswith("[")
    assert vm_display_name("vexfs-ci-safety_validation-3") == "ci/safety-3"
    assert vm_display_name("my-vm") == "my-vm"
    assert LINE_SEP in row and MARK_SEP not in row


def test_report_marks_its_lines_and_adds_a_marker():
    m = LogModel()
    lines, ev = warn_event(VM_A, 31, T0)
    new, reports = m.add([*boot_lines(VM_A, 1, 30, T0), *lines])
    assert not reports and m.severity_of(VM_A, 32) is None  # the report comes after its lines
    new, reports = m.add([ev])
    assert reports and new[0].report is ev.report
    for n in range(31, 36):
        assert m.severity_of(VM_A, n) == Severity.WARNING
    assert m.severity_of(VM_A, 36) is None
    marker = parse_row(m.format(new[0]))
    assert marker is not None and marker.marker and marker.line_no == 31


def test_filters_vm_severity_text():
    m = LogModel()
    lines, ev = warn_event(VM_A, 31, T0)
    m.add([*boot_lines(VM_A, 1, 30, T0), *boot_lines(VM_B, 1, 20, T0), *lines, ev])
    total = len(m.all_rows())
    assert total == 30 + 20 + 5 + 1
    assert m.cycle_vm().vm == VM_A
    assert len(m.all_rows()) == 36
    assert m.cycle_vm().vm == VM_B and len(m.all_rows()) == 20
    assert m.cycle_vm().vm is None
    assert m.cycle_severity().min_severity == Severity.INFO
    assert len(m.all_rows()) == 6  # the five report lines and the marker
    m.cycle_severity()
    m.cycle_severity()  # ERROR: the warning no longer passes
    assert m.all_rows() == []
    m.reset_filter()
    m.set_text("E1000")
    assert {parse_row(r).label for r in m.all_rows()} == {"dev/kmod-0", "dev/fsops-0"}
    assert all("e1000" in r.lower() for r in m.all_rows())


def test_memory_is_bounded():
    m = LogModel(retain=1000)
    lines, ev = warn_event(VM_A, 5_000, T0)
    m.add(boot_lines(VM_A, 0, 5_000, T0))
    m.add([*lines, ev])
    m.add(boot_lines(VM_A, 5_005, 5_000, T0))
    assert len(m.records) == 1000 and m.lines_seen == 10_005
    assert len(m._marks) + len(m._marks_old) <= 2000
    new, _ = m.add(boot_lines(VM_A, 20_000, 3_000, T0))
    assert len(new) == 1000  # only what the buffer still holds is handed to the view


def test_a_batch_keeps_its_order_and_skips_other_events():
    m = LogModel()
    lines, ev = warn_event(VM_A, 31, T0)
    sample = VmSample(vm=VM_A, state="ready", cpu_pct=1.0, mem_kb=1, ts=T0)
    new, reports = m.add([*boot_lines(VM_A, 1, 30, T0), sample, *lines, ev, *boot_lines(VM_B, 1, 2, T0)])
    assert reports and m.lines_seen == 37 and m.events_seen == 1 and len(new) == 38
    assert list(m.records) == list(new) and sample not in new
    assert type(new[35]) is Marker and new[34] == (VM_A, 35, lines[-1].text) and new[36][0] == VM_B  # the marker follows its block
    assert m.vms == [VM_A, VM_B]


def test_severities_outlive_the_rows_they_colour():
    # Marks are dropped a generation at a time: what the buffer still shows keeps its colour.
    m = LogModel(retain=100)
    for k in range(50):  # 250 marked lines: both generations turn over
        lines, ev = warn_event(VM_A, 1_000 + k * 10, T0)
        m.add([*lines, ev])
    assert len(m._marks) + len(m._marks_old) <= 200
    assert all(m.record_severity(r) == Severity.WARNING for r in m.records)
    assert m.severity_of(VM_A, 1_000) is None  # the first report is long gone


def test_newlines_inside_a_line_never_split_a_row():
    m = LogModel()
    m.add([KernelLogLine(vm=VM_A, line_no=1, text="a\nb\r", ts=T0)])
    assert len(m.all_rows()) == 1 and m.all_rows()[0].endswith("a b")


# -- formatting ------------------------------------------------------------------------------


def test_format_helpers():
    assert duration(None) == "—" and duration(2.25) == "2.2s" and duration(75) == "1m15s" and duration(7300) == "2h01m"
    assert memory_kb(512) == "512K" and memory_kb(180_000) == "176M"
    assert progress_bar(1, 4, 8) == "██░░░░░░"
    spark = sparkline([0, 50, 100], 3)
    assert spark == " ▅█" or spark[0] == " "
    assert len(sparkline(range(60), 12)) == 12
    assert sparkline([0.5], 2, top=100.0)[-1] != " "  # non-zero never looks idle
    assert error_line(ValueError("bad\nsecond line")) == "ValueError: bad"
    assert TestRef("d", "t").domain == "d"


def test_vm_names_stay_unique_across_envs():
    # One name per VM from its libvirt name alone: no other VM can change it.
    names = ["vexfs-dev-kernel_module-0", "vexfs-ci-kernel_module-0", "vexfs-ci-safety_validation-0", "vexfs-dev-kmod-0"]
    assert [vm_display_name(n) for n in names] == ["dev/kmod-0", "ci/kmod-0", "ci/safety-0", "dev/kmod+-0"]


def test_marker_text_names_severity_once():
    from vexfs_cockpit.klog.model import KernelReport
    from vexfs_cockpit.tui.logmodel import _marker_text

    taint = KernelReport(kind="taint", title="taint: out-of-tree module vexfs_selftest", severity=Severity.INFO, line=1, module="vexfs_selftest", text="x")
    oops = KernelReport(kind="oops", title="BUG: kernel NULL pointer dereference in selftest_read", severity=Severity.CRITICAL, line=1, module=None, text="x")
    assert _marker_text(taint, False) == "INFO taint: out-of-tree module vexfs_selftest"
    assert _marker_text(oops, True) == "CRITICAL BUG: kernel NULL pointer dereference in selftest_read (oops) — expected"
