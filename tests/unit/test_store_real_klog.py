"""Crash signatures and report summaries from kernel logs captured on real guests.

tests/data/klog/*.log are serial-console captures of the self-test module's fault
knobs in a real TCG guest; here they go through the real classifier, the real bus
and Recorder, and come out as signatures and report summaries.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.store import BACKENDS, KM, T0, F, P, RunSpec, new_history, record_sync, run_events
from vexfs_cockpit.reports.json_report import report_dict
from vexfs_cockpit.klog.classify import classify_text
from vexfs_cockpit.klog.model import KernelReport
from vexfs_cockpit.store.history import History
from vexfs_cockpit.store.location import StoreLocation
from vexfs_cockpit.store.report import ReportBuilder

KLOG = Path(__file__).parent.parent / "data" / "klog"


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    return new_history(request, tmp_path, "h.db")


def captured(name: str) -> list[KernelReport]:
    path = KLOG / f"{name}.log"
    if not path.exists():
        pytest.skip(f"no capture {path}")
    return classify_text(path.read_text(errors="replace"), vm="vm-0")


def spec(run_id: str, start: float, knobs: dict[str, str]) -> RunSpec:
    """One test per knob; the test's window holds that knob's real kernel output."""
    kernel = [(KM, test, rep, False) for test, log in knobs.items() for rep in captured(log)]
    outcomes = {(KM, test): (F if any(k[1] == test for k in kernel) else P) for test in knobs}
    return RunSpec(run_id, start, outcomes=outcomes, kernel=kernel)


def test_real_reports_become_signatures_counted_across_runs(db: StoreLocation) -> None:
    knobs = {"oops": "oops", "warn": "warn", "hang": "hung_task", "boot": "clean_boot", "cycle": "module_cycle"}
    record_sync(db, [spec("r1", T0, knobs), spec("r2", T0 + 600, {"oops": "oops", "bug": "bug"})])
    sigs = {s.signature: s for s in History(db).crash_signatures()}
    oops = "oops: BUG: kernel NULL pointer dereference in vexfs_selftest_oops_knob"
    assert set(sigs) == {
        oops,
        "warning: WARNING in vexfs_selftest_warn_knob",
        "hung_task: INFO: task hung in vexfs_selftest_hang_knob",
        "bug: kernel BUG in vexfs_selftest_bug_knob",
    }  # the INFO taint lines of a module load/unload cycle are events, not signatures
    assert (sigs[oops].count, sigs[oops].last_run_id) == (2, "r2")
    newest_first = [s.signature for s in History(db).crash_signatures()]
    assert newest_first[:2] == ["bug: kernel BUG in vexfs_selftest_bug_knob", oops]  # r2: oops, then bug
    assert {(o.run_id, o.test) for o in History(db).crash_occurrences(oops)} == {("r1", "oops"), ("r2", "oops")}

    doc = report_dict(History(db).run_detail("r1"))  # type: ignore[arg-type]
    assert [c["kind"] for c in doc["summary"]["crashes"]] == ["oops"]
    assert [h["kind"] for h in doc["summary"]["hangs"]] == ["hung_task"]
    assert doc["summary"]["ok"] is False


def test_a_real_panic_and_soft_lockups_are_summarised(db: StoreLocation) -> None:
    record_sync(db, [spec("r", T0, {"panic": "sysrq_panic", "lockup": "soft_lockup"})])
    rep = History(db).run_detail("r")
    assert rep is not None
    assert [k.report.kind for k in rep.crashes()] == ["panic"]
    assert {k.report.kind for k in rep.hangs()} == {"soft_lockup"}
    assert rep.crashes()[0].report.fatal
    live = ReportBuilder().feed_all(run_events(spec("r", T0, {"panic": "sysrq_panic", "lockup": "soft_lockup"})))
    assert live is not None and report_dict(rep) == report_dict(live)
