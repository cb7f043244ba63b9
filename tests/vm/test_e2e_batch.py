"""`vexfs-cockpit run --batch` end to end, as CI runs it: configs/default.yaml --env ci,
real TCG guests, the six domains against the self-test module, history, reports, exit
codes, Ctrl-C.

"No VM left behind" is judged by libvirt's owner metadata (tests/support/e2e.py owned_vms): the
names are vexfs-ci-<domain>-<n>, and another cockpit on the host may hold the same
names at the same time.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from pathlib import Path

import pytest
from junitparser import Error, Failure, JUnitXml, Skipped

from tests.support.e2e import (
    CI_PROFILE,
    ROOT,
    LineReader,
    cockpit,
    cockpit_argv,
    cockpit_run,
    owned_vms,
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


def history_row(db: Path, run_id: str) -> list[str]:
    """The `vexfs-cockpit history` row of ``run_id``, split into columns."""
    h = cockpit("history", "--db", str(db))
    assert h.returncode == 0, h.stderr
    rows = [ln.split() for ln in h.stdout.splitlines() if ln.startswith(run_id)]
    assert len(rows) == 1, h.stdout
    return rows[0]


@pytest.mark.timeout(1500)
def test_full_batch_run(tmp_path: Path) -> None:
    """One full CI run: exit 0, JUnit/JSON/DB agree that all 40+ tests passed, no VM left."""
    db, junit, report = tmp_path / "history.db", tmp_path / "out.xml", tmp_path / "out.json"
    proc, pid = cockpit_run("run", "--batch", *CI_PROFILE, "--db", str(db), "--junit", str(junit), "--json", str(report),
                            timeout=1400)
    log = f"stdout tail:\n{proc.stdout[-6000:]}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0, log
    # No error line (logging warnings, e.g. a refused SSH channel being retried, may appear).
    assert "Traceback" not in proc.stderr and "vexfs-cockpit:" not in proc.stderr, log
    assert owned_vms(pid) == [], log

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
    assert doc["run"]["status"] == "passed" and doc["run"]["env"] == "ci"
    assert [d["name"] for d in doc["domains"]] == DOMAINS
    for d in doc["domains"]:
        assert d["status"] == "passed" and not d["missing_tests"], d["name"]
        assert {t["name"] for t in d["tests"]} == {c.name for s, c in cases if s == d["name"]}
        assert re.fullmatch(rf"vexfs-ci-{d['name']}-\d+", d["vm"]), d["vm"]
    assert doc["summary"]["ok"] is True, doc["summary"]

    # History DB and the history command.
    runs = stored_runs(db)
    assert [(r["id"], r["status"], r["env"]) for r in runs] == [(run_id, "passed", "ci")]
    stored = stored_results(db, run_id)
    assert len(stored) == len(cases) and set(stored.values()) == {"PASSED"}
    row = history_row(db, run_id)
    assert row[5:9] == ["passed", str(len(cases)), "0", "0"], row  # STATUS PASS FAIL SKIP
    # Where it came from: the guest kernel, the module tree, the config, the cockpit.
    show = cockpit("history", "show", run_id, "--db", str(db), "--evidence", "none")
    assert re.search(r"from: kernel \S+ \(linux-image-amd64\) · module (\w{12}( \+ local changes)? at|tree \w{16} at) \S+selftest_fs",
                     show.stdout), show.stdout

    # The closing line CI logs grep for.
    assert proc.stdout.splitlines()[-1] == f"{len(cases)} passed, 0 failed, 0 skipped", log


@pytest.mark.timeout(120)
def test_unreachable_libvirt_is_one_line_exit_3(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    uri = "qemu+unix:///system?socket=/nonexistent"
    proc, pid = cockpit_run("run", "--batch", *CI_PROFILE, "--db", str(db), "--set", f"fleet.libvirt_uri={uri}", timeout=100)
    assert proc.returncode == 3, proc.stdout[-3000:] + proc.stderr
    lines = stderr_lines(proc)
    assert len(lines) == 1, proc.stderr
    # Names the URI and what to do about it.
    assert uri in lines[0] and "libvirtd -d" in lines[0] and "Traceback" not in proc.stderr, lines[0]
    runs = stored_runs(db)
    assert len(runs) == 1 and runs[0]["status"] == "errored", [dict(r) for r in runs]
    assert uri in runs[0]["reason"]
    assert "errored" in history_row(db, runs[0]["id"])
    assert owned_vms(pid) == []


@pytest.mark.timeout(60)
def test_unknown_domain_is_one_line_exit_2(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    proc = cockpit("run", "--batch", *CI_PROFILE, "--db", str(db), "--domains", "nope")
    assert proc.returncode == 2, proc.stdout + proc.stderr
    lines = stderr_lines(proc)
    assert len(lines) == 1 and "'nope'" in lines[0] and "kernel_module" in lines[0], proc.stderr
    assert not db.exists() or not stored_runs(db)  # a usage error starts no run


@pytest.mark.timeout(400)
def test_ctrl_c_destroys_vms_and_keeps_results(tmp_path: Path) -> None:
    """SIGINT mid-domain: exit 130 within 30 s, the VM gone, the run stored as aborted
    with the results that finished before the interrupt."""
    db = tmp_path / "history.db"
    domain = "filesystem_operations"
    proc = subprocess.Popen(
        cockpit_argv("run", "--batch", *CI_PROFILE, "--db", str(db), "--domains", domain),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        out = LineReader(proc.stdout)
        started = out.wait_for(lambda ln: f"{domain}: started on vexfs-ci-" in ln, timeout=240)  # VM ready
        vm = started.split(" started on ", 1)[1].split()[0]
        first = out.wait_for(lambda ln: f"{domain}/" in ln and ": PASSED" in ln, timeout=120)
        finished_test = first.split(f"{domain}/", 1)[1].split(":", 1)[0]
        assert owned_vms(proc.pid) == [vm] and vm in vexfs_vms()  # the leftover checks see a live VM
        proc.send_signal(signal.SIGINT)
        t0 = time.monotonic()
        code = proc.wait(timeout=30)
        took = time.monotonic() - t0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = out.rest()
    err = proc.stderr.read()
    assert code == 130, f"exit {code}\n" + "\n".join(lines[-20:]) + err
    assert took < 30
    assert stderr_lines(err)[-1:] == ["vexfs-cockpit: interrupted: VMs destroyed, finished results kept"], err
    assert "Traceback" not in err, err
    assert owned_vms(proc.pid) == []

    runs = stored_runs(db)
    assert len(runs) == 1, [dict(r) for r in runs]
    run = runs[0]
    assert run["status"] == "aborted" and run["finished_at"] is not None, dict(run)
    stored = stored_results(db, run["id"])
    assert stored.get((domain, finished_test)) == "PASSED", stored
    assert "aborted" in history_row(db, run["id"])


@pytest.mark.timeout(1500)
def test_sigkill_mid_run_reads_as_aborted_and_the_next_run_reaps_its_vm(tmp_path: Path) -> None:
    """SIGKILL (nothing runs on the way out): readers show the run aborted at once, its
    finished results are kept, and the next cockpit reaps the VM the dead one left."""
    db = tmp_path / "history.db"
    domain = "kernel_module"
    proc = subprocess.Popen(
        cockpit_argv("run", "--batch", *CI_PROFILE, "--db", str(db), "--domains", domain),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    try:
        out = LineReader(proc.stdout)
        started = out.wait_for(lambda ln: f"{domain}: started on vexfs-ci-" in ln, timeout=240)
        vm = started.split(" started on ", 1)[1].split()[0]
        # module_build, then module_info on the guest: the second PASSED is a guest result.
        out.wait_for(lambda ln: f"{domain}/" in ln and ": PASSED" in ln, timeout=180)
        second = out.wait_for(lambda ln: f"{domain}/" in ln and ": PASSED" in ln, timeout=180)
        finished_test = second.split(f"{domain}/", 1)[1].split(":", 1)[0]
        run_id = stored_runs(db)[0]["id"]
        # The recorder commits in batches: wait (bounded) until the store holds the result.
        deadline = time.monotonic() + 30
        while stored_results(db, run_id).get((domain, finished_test)) != "PASSED" and time.monotonic() < deadline:
            time.sleep(0.2)
        proc.kill()
        assert proc.wait(timeout=30) == -signal.SIGKILL
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert owned_vms(proc.pid) == [vm]  # nothing ran on the way out
    assert stored_runs(db)[0]["status"] == "running"  # as the dead writer left it
    assert "aborted" in history_row(db, run_id)  # a reader alone sees it is dead
    assert stored_results(db, run_id).get((domain, finished_test)) == "PASSED"

    nxt, _ = cockpit_run("run", "--batch", *CI_PROFILE, "--db", str(db), "--domains", domain,
                         "--tests", f"{domain}/module_build", timeout=600)
    assert nxt.returncode == 0, nxt.stdout[-3000:] + nxt.stderr
    assert owned_vms(proc.pid) == [], "the next cockpit did not reap the dead one's VM"
    runs = {r["id"]: r for r in stored_runs(db)}
    assert runs[run_id]["status"] == "aborted" and len(runs) == 2
    assert stored_results(db, run_id).get((domain, finished_test)) == "PASSED"
