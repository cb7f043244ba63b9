"""`vexfs-cockpit run --batch` end to end, as CI runs it: real TCG guests, the six
domains against the self-test module, history, reports, exit codes, Ctrl-C.

The profile is configs/default.yaml + configs/env/ci.yaml copied verbatim under an
env name of this test's own (see e2e_support.PrivateProfile): VM names carry the env,
and a second cockpit running `--env ci` on the same host must not collide with us.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

from tests.e2e_support import (
    ROOT,
    PrivateProfile,
    cockpit,
    cockpit_argv,
    private_profile,
    stderr_lines,
    stored_results,
    stored_runs,
    vexfs_vms,
)

pytestmark = pytest.mark.vm

DOMAINS = [
    "kernel_module",
    "filesystem_operations",
    "vector_operations",
    "performance_metrics",
    "safety_validation",
    "integration_testing",
]
MIN_TESTS = 40


@pytest.fixture
def profile(tmp_path: Path) -> PrivateProfile:
    return private_profile(tmp_path, "")


def our_vms(profile: PrivateProfile) -> set[str]:
    return {n for n in vexfs_vms() if n.startswith(profile.vm_prefix)}


def history_row(db: Path, run_id: str) -> list[str]:
    """The `vexfs-cockpit history` row of ``run_id``, split into columns."""
    h = cockpit("history", "--db", str(db))
    assert h.returncode == 0, h.stderr
    rows = [ln.split() for ln in h.stdout.splitlines() if ln.startswith(run_id)]
    assert len(rows) == 1, h.stdout
    return rows[0]


@pytest.mark.timeout(1500)
def test_full_batch_run(tmp_path: Path, profile: PrivateProfile) -> None:
    """One full CI run: exit 0, JUnit/JSON/DB agree that all 40+ tests passed, no VM left."""
    db, junit, report = tmp_path / "history.db", tmp_path / "out.xml", tmp_path / "out.json"
    assert not our_vms(profile)
    proc = subprocess.run(
        cockpit_argv("run", "--batch", *profile.args(), "--db", str(db), "--junit", str(junit), "--json", str(report)),
        check=False, cwd=ROOT, capture_output=True, text=True, timeout=1400,
    )
    log = f"stdout tail:\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, log
    # No error line (logging warnings, e.g. a refused SSH channel being retried, may appear).
    assert "Traceback" not in proc.stderr and "vexfs-cockpit:" not in proc.stderr, log

    # JUnit: one suite per domain, 40+ cases, none failed, errored or skipped.
    xml = JUnitXml.fromfile(str(junit))
    suites = list(xml)
    assert [s.name for s in suites] == DOMAINS, log
    cases = [(s.name, c) for s in suites for c in s]
    assert len(cases) >= MIN_TESTS, f"only {len(cases)} test cases: {[f'{d}.{c.name}' for d, c in cases]}"
    bad = [f"{d}.{c.name}: {[type(r).__name__ + ': ' + str(r.message) for r in c.result]}"
           for d, c in cases if any(isinstance(r, (Failure, Error, Skipped)) for r in c.result)]
    assert not bad, "\n".join(bad)
    assert xml.failures == 0 and xml.errors == 0 and xml.tests == len(cases)

    # JSON: every domain, all passed, nothing crashed or hung unexpectedly.
    doc = json.loads(report.read_text())
    run_id = doc["run"]["run_id"]
    assert doc["run"]["status"] == "passed"
    assert [d["name"] for d in doc["domains"]] == DOMAINS
    for d in doc["domains"]:
        assert d["status"] == "passed" and not d["missing_tests"], d["name"]
        assert {t["name"] for t in d["tests"]} == {c.name for s, c in cases if s == d["name"]}
    assert doc["summary"]["ok"] is True, doc["summary"]

    # History DB and the history command.
    runs = stored_runs(db)
    assert [(r["id"], r["status"], r["env"]) for r in runs] == [(run_id, "passed", profile.env)]
    stored = stored_results(db, run_id)
    assert len(stored) == len(cases) and set(stored.values()) == {"PASSED"}
    row = history_row(db, run_id)
    assert "passed" in row and str(len(cases)) in row, row

    # The stdout summary CI logs grep for, and no VM of this run left behind.
    assert f"{len(cases)} passed, 0 failed, 0 skipped" in proc.stdout.splitlines()[-1]
    assert not our_vms(profile)


@pytest.mark.timeout(120)
def test_unreachable_libvirt_is_one_line_exit_3(tmp_path: Path, profile: PrivateProfile) -> None:
    db = tmp_path / "history.db"
    uri = "qemu+unix:///system?socket=/nonexistent"
    proc = cockpit("run", "--batch", *profile.args(), "--db", str(db), "--set", f"fleet.libvirt_uri={uri}")
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr
    lines = stderr_lines(proc)
    assert len(lines) == 1, proc.stderr
    assert uri in lines[0] and "libvirtd -d" in lines[0] and "Traceback" not in proc.stderr, lines[0]
    runs = stored_runs(db)
    assert len(runs) == 1 and runs[0]["status"] == "errored"
    assert uri in runs[0]["reason"]
    assert "errored" in history_row(db, runs[0]["id"])
    assert not our_vms(profile)


@pytest.mark.timeout(60)
def test_unknown_domain_is_one_line_exit_2(tmp_path: Path, profile: PrivateProfile) -> None:
    db = tmp_path / "history.db"
    proc = cockpit("run", "--batch", *profile.args(), "--db", str(db), "--domains", "nope")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = stderr_lines(proc)
    assert len(lines) == 1 and "'nope'" in lines[0] and "kernel_module" in lines[0], proc.stderr
    assert not db.exists() or not stored_runs(db)  # a usage error starts no run


class LineReader:
    """The child's stdout as lines, read on a thread, so waits can have deadlines."""

    def __init__(self, proc: subprocess.Popen[str]):
        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        assert proc.stdout is not None
        self._t = threading.Thread(target=self._pump, args=(proc.stdout,), daemon=True)
        self._t.start()

    def _pump(self, stream) -> None:  # type: ignore[no-untyped-def]
        for line in stream:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, predicate, timeout: float) -> str:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError("the cockpit exited early:\n" + "\n".join(self.lines[-30:]))
            self.lines.append(line)
            if predicate(line):
                return line
        raise AssertionError(f"nothing matched within {timeout:g}s:\n" + "\n".join(self.lines[-30:]))

    def rest(self) -> list[str]:
        self._t.join(timeout=30)
        while (line := self._q.get_nowait() if not self._q.empty() else None) is not None:
            self.lines.append(line)
        return self.lines


@pytest.mark.timeout(400)
def test_ctrl_c_destroys_vms_and_keeps_results(tmp_path: Path, profile: PrivateProfile) -> None:
    """SIGINT mid-domain: exit 130 within 30 s, the VM gone, the run stored as aborted
    with the results that finished before the interrupt."""
    db = tmp_path / "history.db"
    domain = "filesystem_operations"
    vm = f"{profile.vm_prefix}{domain}-0"
    proc = subprocess.Popen(
        cockpit_argv("run", "--batch", *profile.args(), "--db", str(db), "--domains", domain),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        out = LineReader(proc)
        out.wait_for(lambda ln: f"vm {vm}: ready" in ln, timeout=240)
        first = out.wait_for(lambda ln: f"{domain}/" in ln and ": PASSED" in ln, timeout=120)
        finished_test = first.split(f"{domain}/", 1)[1].split(":", 1)[0]
        assert vm in vexfs_vms()
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        code = proc.wait(timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = out.rest()
    err = proc.stderr.read() if proc.stderr else ""
    assert code == 130, f"exit {code}\n" + "\n".join(lines[-20:]) + err
    assert took < 30
    assert stderr_lines(err)[-1:] == ["vexfs-cockpit: interrupted: VMs destroyed, finished results kept"], err
    assert "Traceback" not in err, err
    assert vm not in vexfs_vms() and not our_vms(profile)

    runs = stored_runs(db)
    assert len(runs) == 1, [dict(r) for r in runs]
    run = runs[0]
    assert run["status"] == "aborted" and run["finished_at"] is not None, dict(run)
    stored = stored_results(db, run["id"])
    assert stored.get((domain, finished_test)) == "PASSED", stored
    assert "aborted" in history_row(db, run["id"])
