"""JUnit XML and the JSON report, read back by junitparser / json, from events and from the store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

from tests.support.store import (
    BACKENDS,
    FS,
    KM,
    T0,
    E,
    F,
    P,
    RunSpec,
    S,
    T,
    kreport,
    new_history,
    record,
    record_sync,
    run_events,
)
from vexfs_cockpit.reports.json_report import FORMAT, report_dict, write_json_report
from vexfs_cockpit.reports.junit import junit_xml, write_junit, xml_safe
from vexfs_cockpit.engine.events import DomainStarted, InfraProblem, RunFinished, RunStarted, VmStateChanged
from vexfs_cockpit.klog.model import Severity
from vexfs_cockpit.store.history import History
from vexfs_cockpit.store.location import StoreLocation
from vexfs_cockpit.store.report import ReportBuilder, RunReport

OOPS = kreport("oops", "BUG: unable to handle page fault in vexfs_read", Severity.CRITICAL)
HUNG = kreport("hung_task", "INFO: task mount blocked for more than 5 seconds", Severity.ERROR)

SPEC = RunSpec(
    "run-1", T0,
    outcomes={(KM, "build"): P, (KM, "load"): F, (KM, "unload"): T, (KM, "leak"): S,
              (FS, "mount"): E, (FS, "rw"): P},
    metrics={(KM, "load"): {"load_time_ms": 12.0}},
    kernel=[(KM, "load", OOPS, False), (FS, "mount", HUNG, False)],
)


def build(events: list) -> RunReport:
    rep = ReportBuilder().feed_all(events)
    assert rep is not None
    return rep


def test_junitparser_reads_back_the_right_counts(tmp_path: Path) -> None:
    out = write_junit(build(run_events(SPEC)), tmp_path / "out" / "junit.xml")
    xml = JUnitXml.fromfile(str(out))
    suites = {s.name: s for s in xml}
    assert set(suites) == {KM, FS}
    km, fs = suites[KM], suites[FS]
    assert (km.tests, km.failures, km.errors, km.skipped) == (4, 2, 0, 1)
    assert (fs.tests, fs.failures, fs.errors, fs.skipped) == (2, 0, 1, 0)
    xml.update_statistics()
    assert (xml.tests, xml.failures, xml.errors, xml.skipped) == (6, 2, 1, 1)
    cases = {c.name: c for c in km}
    assert {c.classname for c in km} == {KM}
    assert cases["build"].is_passed and float(cases["build"].time) == 1.0
    (failure,) = cases["load"].result
    assert isinstance(failure, Failure) and failure.type == "FAILED" and failure.message == "load failed"
    (timeout,) = cases["unload"].result
    assert isinstance(timeout, Failure) and timeout.type == "TIMEOUT"
    assert isinstance(cases["leak"].result[0], Skipped)
    mount = next(c for c in fs if c.name == "mount")
    assert isinstance(mount.result[0], Error)
    # the evidence: command with exit code, output tail, kernel event, metrics
    out_text = cases["load"].system_out
    assert "$ run-load  [exit 1, 0.2s on vm-a]" in out_text
    assert "output of load" in out_text and "last line" in out_text
    assert "[oops] BUG: unable to handle page fault in vexfs_read" in out_text
    assert "load_time_ms = 12" in out_text
    assert "[hung_task]" in mount.system_out


def test_missing_tests_bad_domains_and_aborted_runs_are_not_hidden() -> None:
    events = run_events(RunSpec("run-2", T0, outcomes={(KM, "build"): P}, status=""))
    events = [e for e in events if not isinstance(e, RunFinished)]
    # a second domain that never produced a result, and an infra problem
    events += [
        DomainStarted(run_id="run-2", domain=FS, vm="vm-1", planned_tests=("mount", "rw"), ts=T0 + 50),
        VmStateChanged(vm="vm-1", state="crashed", reason="qemu exited", ts=T0 + 51),
        VmStateChanged(vm="vexfs-dev-manual-0", state="crashed", reason="someone else's", ts=T0 + 51),
        InfraProblem(message="vm-1 died: qemu exited", vm="vm-1", ts=T0 + 52),
        RunFinished(run_id="run-2", status="aborted", counts={"PASSED": 1}, reason="VM lost", ts=T0 + 53),
    ]
    xml = JUnitXml.fromstring(junit_xml(build(events)).encode())
    suites = {s.name: s for s in xml}
    fs = suites[FS]
    assert (fs.tests, fs.errors) == (2, 2)
    assert all("no result: domain aborted" in c.result[0].message for c in fs)
    run = suites["(run)"]
    (case,) = list(run)
    assert case.result[0].type == "ABORTED" and case.result[0].message == "VM lost"
    run_out = run._elem.findtext("system-out")  # junitparser has no suite-level accessor
    assert "infra: vm-1 died: qemu exited" in run_out and "vm vm-1: crashed" in run_out
    assert "vexfs-dev-manual-0" not in run_out  # another cockpit VM, not this run's


def test_a_domain_that_errored_without_a_bad_test_gets_a_case() -> None:
    events = [
        RunStarted(run_id="r", config_path="c", profile="p", env="dev", domains=(KM,), ts=T0),
        DomainStarted(run_id="r", domain=KM, vm="vm-0", planned_tests=(), ts=T0 + 1),
    ]
    from vexfs_cockpit.engine.events import DomainFinished

    events += [
        DomainFinished(run_id="r", domain=KM, status="errored", counts={}, reason="setup_domain failed", ts=T0 + 2),
        RunFinished(run_id="r", status="errored", counts={}, ts=T0 + 3),
    ]
    xml = JUnitXml.fromstring(junit_xml(build(events)).encode())
    km = next(s for s in xml if s.name == KM)
    (case,) = list(km)
    assert case.name == "(domain)" and "setup_domain failed" in case.result[0].message


def test_control_characters_do_not_break_the_xml() -> None:
    spec = RunSpec("r", T0, outcomes={(KM, "load"): F})
    events = run_events(spec)
    fin = next(e for e in events if type(e).__name__ == "TestFinished")
    fin.result.evidence.commands[0].output_tail = "colour \x1b[31mred\x1b[0m and a NUL \x00 byte"
    fin.result.evidence.kernel_log.append("weird \x07 bell")
    xml = JUnitXml.fromstring(junit_xml(build(events)).encode())
    case = next(c for s in xml for c in s if c.name == "load")
    assert "colour \\x1b[31mred" in case.system_out and "\\x00" in case.system_out
    assert xml_safe("ok\ttab\nnl") == "ok\ttab\nnl"


def test_json_report_summary_and_evidence(tmp_path: Path) -> None:
    path = write_json_report(build(run_events(SPEC)), tmp_path / "report.json")
    doc = json.loads(path.read_text())
    assert doc["format"] == FORMAT
    assert doc["run"]["run_id"] == "run-1" and doc["run"]["status"] == "failed"
    assert [d["name"] for d in doc["domains"]] == [KM, FS]
    load = next(t for t in doc["domains"][0]["tests"] if t["name"] == "load")
    assert load["status"] == "FAILED" and load["metrics"] == {"load_time_ms": 12.0}
    assert load["evidence"]["commands"][0]["exit_code"] == 1
    assert load["evidence"]["commands"][0]["output_tail"].endswith("last line")
    s = doc["summary"]
    assert s["ok"] is False
    assert s["tally"] == {"ERROR": 1, "FAILED": 1, "PASSED": 2, "SKIPPED": 1, "TIMEOUT": 1}
    assert [c["signature"] for c in s["crashes"]] == [OOPS.signature]
    assert [(h["kind"], h["domain"], h["test"]) for h in s["hangs"]] == [("hung_task", FS, "mount")]
    clean = report_dict(build(run_events(RunSpec("ok", T0, outcomes={(KM, "build"): P}))))
    assert clean["summary"]["ok"] is True and clean["summary"]["crashes"] == []


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    """A new history of each backend."""
    return new_history(request, tmp_path, "h.db")


def test_events_and_store_give_the_same_documents(db: StoreLocation) -> None:
    record_sync(db, [SPEC])
    stored = History(db).run_detail("run-1")
    live = build(run_events(SPEC))
    assert stored is not None
    assert junit_xml(stored) == junit_xml(live)
    assert report_dict(stored) == report_dict(live)


def test_a_huge_kernel_log_window_is_capped_the_same_way_live_and_stored(db: StoreLocation) -> None:
    from vexfs_cockpit.store.codec import MAX_KERNEL_LOG_LINES

    events = run_events(RunSpec("big", T0, outcomes={(KM, "load"): F}))
    fin = next(e for e in events if type(e).__name__ == "TestFinished")
    fin.result.evidence.kernel_log[:] = [f"line {i}" for i in range(MAX_KERNEL_LOG_LINES + 500)]
    asyncio.run(record(db, events))
    stored = History(db).run_detail("big")
    assert stored is not None
    window = stored.tests()[0].evidence.kernel_log
    assert len(window) == MAX_KERNEL_LOG_LINES and window[-1] == f"line {MAX_KERNEL_LOG_LINES + 499}"
    assert "501 earlier kernel log lines not stored" in window[0]
    live = build(events)
    assert junit_xml(stored) == junit_xml(live)
    assert report_dict(stored) == report_dict(live)
