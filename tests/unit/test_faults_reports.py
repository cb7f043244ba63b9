"""--junit/--json under faults: a path that cannot be written is one line, before any VM
boots (exit 2) or after the run (the run's exit code kept); report files are created
safely; a SIGTERMed run still writes the reports of what finished."""

from __future__ import annotations

import json
import os
import signal
import stat
import time
from pathlib import Path

import pytest
from junitparser import JUnitXml

from tests.support.faults import (
    cockpit_batch,
    cockpit_batch_popen,
    immutable,
    read_only,
    stderr_lines,
    tmpfs,
)
from tests.support.store import run_cli
from tests.support.store import BACKENDS, KM, T0, F, P, RunSpec, new_history, record_sync, run_events
from vexfs_cockpit.errors import ReportError
from vexfs_cockpit.reports.json_report import write_json_report
from vexfs_cockpit.reports.junit import write_junit
from vexfs_cockpit.store.location import StoreLocation
from vexfs_cockpit.store.report import ReportBuilder, RunReport


def _report() -> RunReport:
    rep = ReportBuilder().feed_all(run_events(RunSpec("r1", T0, outcomes={(KM, "a"): P, (KM, "b"): F})))
    assert rep is not None
    return rep


def _before_any_run(proc, db: Path, option: str, path: Path, *needles: str) -> str:  # type: ignore[no-untyped-def]
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = stderr_lines(proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"vexfs-cockpit: {option} {path}"), lines[0]
    for n in needles:
        assert n in lines[0], lines[0]
    assert proc.stdout == "" and not db.exists()  # nothing started: no run, no DB, no VM
    return lines[0]


# -- checked before the run ----------------------------------------------------------------------
def test_report_path_that_is_a_directory_is_refused_before_the_run(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    out = tmp_path / "reports"
    out.mkdir()
    proc = cockpit_batch(db, tmp_path, "--junit", str(out))
    _before_any_run(proc, db, "--junit", out, "is a directory", "give a file path")


def test_report_path_under_a_file_is_refused_before_the_run(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    (tmp_path / "afile").write_text("x")
    out = tmp_path / "afile" / "sub" / "run.json"
    proc = cockpit_batch(db, tmp_path, "--json", str(out))
    _before_any_run(proc, db, "--json", out, f"{tmp_path / 'afile'} is not a directory")


def test_report_path_on_a_read_only_filesystem_is_refused_before_the_run(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    with tmpfs(tmp_path / "mnt", "1m") as mnt, read_only(mnt):
        out = mnt / "run.json"
        proc = cockpit_batch(db, tmp_path, "--json", str(out))
        _before_any_run(proc, db, "--json", out, "read-only filesystem")
        deeper = mnt / "new" / "dir" / "junit.xml"  # the writer would make the directories
        proc = cockpit_batch(db, tmp_path, "--junit", str(deeper))
        _before_any_run(proc, db, "--junit", deeper, "read-only filesystem")


def test_report_path_in_a_directory_that_takes_no_file_is_refused_before_the_run(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    d = tmp_path / "locked"
    d.mkdir()
    with immutable(d):
        out = d / "junit.xml"
        proc = cockpit_batch(db, tmp_path, "--junit", str(out))
        _before_any_run(proc, db, "--junit", out, f"cannot write in {d}", "fix its permissions")
        assert os.listdir(d) == []  # the probe left nothing behind


# -- failing after the run -------------------------------------------------------------------------
def test_a_report_that_cannot_be_written_after_the_run_keeps_the_runs_exit_code(tmp_path: Path) -> None:
    db = tmp_path / "h.db"
    junit, js = tmp_path / "junit.xml", tmp_path / "run.json"
    # the run itself makes a directory where the JUnit file was to go
    proc = cockpit_batch(db, tmp_path, "--junit", str(junit), "--json", str(js), tests="3", mkdir=str(junit))
    assert proc.returncode == 0, proc.stdout + proc.stderr  # the run passed: its code stands
    lines = stderr_lines(proc.stderr)
    assert lines == [f"vexfs-cockpit: JUnit report {junit} is a directory: give a file path (inside it, say)"], proc.stderr
    assert json.loads(js.read_text())["summary"]["ok"] is True  # the other report is written all the same


@pytest.fixture(params=BACKENDS)
def history_db(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    """A new history of each backend."""
    return new_history(request, tmp_path, "h.db")


def test_history_report_to_a_directory_is_one_line(history_db: StoreLocation, tmp_path: Path) -> None:
    db = history_db
    record_sync(db, [RunSpec("r1", T0, outcomes={(KM, "a"): P})])
    with pytest.raises(ReportError) as err:
        run_cli("history", "report", "r1", "--db", str(db), "--junit", str(tmp_path))
    assert err.value.exit_code == 2 and str(err.value) == (
        f"JUnit report {tmp_path} is a directory: give a file path (inside it, say)")


# -- created safely ------------------------------------------------------------------------------------
@pytest.mark.parametrize("write", [write_junit, write_json_report])
def test_report_files_are_created_safely(tmp_path: Path, write) -> None:  # type: ignore[no-untyped-def]
    out = tmp_path / "out.file"
    victim = tmp_path / "victim"
    victim.write_text("keep me")
    # The old writer's fixed temp name, planted as a symlink by someone sharing the directory.
    (tmp_path / ".out.file.tmp").symlink_to(victim)
    old = os.umask(0o022)
    try:
        assert write(_report(), out) == out
    finally:
        os.umask(old)
    assert victim.read_text() == "keep me"
    assert out.is_file() and not out.is_symlink() and "r1" in out.read_text()
    assert stat.S_IMODE(out.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.file.tmp", "out.file", "victim"]  # no temp left
    out.write_text("old")
    with immutable(tmp_path):  # a failed write: one line, the old file intact, no temp file left
        with pytest.raises(ReportError, match=f"cannot write in {tmp_path}"):
            write(_report(), out)
    assert out.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == [".out.file.tmp", "out.file", "victim"]


# -- SIGTERM ---------------------------------------------------------------------------------------------
def test_sigterm_writes_the_reports_of_what_finished(tmp_path: Path) -> None:
    db, junit, js = tmp_path / "h.db", tmp_path / "junit.xml", tmp_path / "run.json"
    ready, block = tmp_path / "ready", tmp_path / "never"
    proc = cockpit_batch_popen(db, tmp_path, "--junit", str(junit), "--json", str(js), tests="4",
                               ready=str(ready), block=str(block))
    try:
        deadline = time.monotonic() + 60
        while not ready.exists():  # t01..t03 finished, t04 is running
            assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, out + err
    assert stderr_lines(err) == ["vexfs-cockpit: interrupted: VMs destroyed, finished results kept"], err
    xml = JUnitXml.fromfile(str(junit))
    cases = {c.name: c for s in xml for c in s}
    assert {"t01", "t02", "t03"} <= set(cases) and all(not cases[t].result for t in ("t01", "t02", "t03"))
    doc = json.loads(js.read_text())
    assert doc["run"]["status"] == "aborted"
    assert [t["name"] for t in doc["domains"][0]["tests"]] == ["t01", "t02", "t03"]
    assert doc["domains"][0]["missing_tests"] == ["t04"]
