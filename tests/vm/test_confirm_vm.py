"""Confirmed regressions on real guests (issue 16, "Done when"): a fault knob turned on
between two runs is confirmed as a new regression after K reruns on a fresh VM; a knob
that fails one time in two is called flaky, never a regression.

The whole CLI as a subprocess (`run --batch`, then `history show`) on a history DB of
its own, with the test env's profile (TCG guests, snapshot restore). The regression's
knob is the self-test module's own (eio_on_read=1: every read of a file fails); the
flaky one is tests/support/knob_domain.py, a plugin installed through the
``vexfs_cockpit.domains`` entry point, whose guest-side counter fails odd attempts.
Known failures in a run's exit code, and `expunge audit --rerun`, on the same guests.
Measured here (2 cores shared with other jobs, TCG, snapshot restore): 26-82 s per test,
about 3 min for the file.
"""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
from pathlib import Path

import pytest

from tests.support.e2e import ROOT, cockpit_argv, owned_vms

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]

PROFILE = ["--config", "configs/default.yaml", "--env", "test"]


def _cockpit(db: Path, *args: str, env: dict[str, str] | None = None) -> tuple[subprocess.CompletedProcess[str], int]:
    with subprocess.Popen(cockpit_argv(*args, "--db", str(db)), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, **(env or {})}) as p:
        try:
            out, err = p.communicate(timeout=300)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise AssertionError(f"cockpit {' '.join(args)} still running after 300 s:\n{out[-4000:]}\n{err}") from None
    return subprocess.CompletedProcess(p.args, p.returncode, out, err), p.pid


def _progress(proc: subprocess.CompletedProcess[str]) -> list[str]:
    """The batch lines without their elapsed-time prefix."""
    return [ln.split("] ", 1)[-1] for ln in proc.stdout.splitlines()]


def _verdicts(db: Path, run_id: str) -> dict[tuple[str, str], tuple[str, list[str], str]]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT domain, test, verdict, reruns, before FROM test_verdicts WHERE run_id=?", (run_id,))
        return {(d, t): (v, json.loads(r), b) for d, t, v, r, b in rows}


def _run_id(proc: subprocess.CompletedProcess[str]) -> str:
    m = re.search(r"^\[\s*[\d.]+s\] run (\S+) profile=", proc.stdout, re.M)
    assert m, proc.stdout
    return m.group(1)


def _log(*procs: subprocess.CompletedProcess[str]) -> str:
    return "\n".join(f"--- exit {p.returncode}\n{p.stdout[-3000:]}\n{p.stderr[-2000:]}" for p in procs)


def test_a_knob_turned_on_between_two_runs_is_a_confirmed_regression(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    only = ["--domains", "filesystem_operations", "--tests", "filesystem_operations/file_read_write"]
    clean, _ = _cockpit(db, "run", "--batch", *PROFILE, *only)
    assert clean.returncode == 0 and "1 passed, 0 failed, 0 skipped" in clean.stdout.splitlines(), _log(clean)

    broken, pid = _cockpit(db, "run", "--batch", *PROFILE, *only, "--set", "module.module_params=eio_on_read=1")
    lines, log = _progress(broken), _log(clean, broken)
    assert broken.returncode == 1, log
    assert "confirming 1 changed test, 3 reruns each on a fresh VM: filesystem_operations/file_read_write" in lines, log
    reruns = [ln for ln in lines if ln.startswith("filesystem_operations/file_read_write: rerun ")]
    assert [ln.split()[2:4] for ln in reruns] == [["1/3", "FAILED"], ["2/3", "FAILED"], ["3/3", "FAILED"]], log
    # On a VM of its own: not the one the run's test ran on.
    run_vm = re.search(r"filesystem_operations: started on (\S+)", broken.stdout).group(1)  # type: ignore[union-attr]
    rerun_vms = {ln.rsplit(" on ", 1)[1].split(" — ")[0] for ln in reruns}
    assert len(rerun_vms) == 1 and run_vm not in rerun_vms, log
    first, second = _run_id(clean), _run_id(broken)
    verdict = (f"filesystem_operations/file_read_write: [NEW REGRESSION] FAILED now, PASSED in run {first} — "
               f"3/3 reruns failed on fresh VM {rerun_vms.pop()}")
    assert verdict in lines, log
    assert _verdicts(db, second) == {("filesystem_operations", "file_read_write"): ("regression", ["FAILED"] * 3, "PASSED")}
    assert owned_vms(pid) == [], "the rerun VM was left behind"

    shown = subprocess.run(cockpit_argv("history", "--db", str(db), "show", second, "--evidence", "none"), cwd=ROOT,
                           capture_output=True, text=True, timeout=60)
    assert f"[NEW REGRESSION] PASSED in run {first} — 3/3 reruns failed" in shown.stdout, shown.stdout + shown.stderr


def _knob_plugin(tmp_path: Path) -> dict[str, str]:
    """The knob domain, installed as a plugin: the environment that finds it."""
    site = tmp_path / "site" / "vexfs_knob_test-0.dist-info"
    site.mkdir(parents=True)
    (site / "METADATA").write_text("Metadata-Version: 2.1\nName: vexfs-knob-test\nVersion: 0\n")
    (site / "entry_points.txt").write_text("[vexfs_cockpit.domains]\nknob = tests.support.knob_domain:KnobDomain\n")
    return {"PYTHONPATH": str(tmp_path / "site")}


def test_a_knob_failing_one_time_in_two_is_flaky(tmp_path: Path) -> None:
    env = _knob_plugin(tmp_path)
    db = tmp_path / "history.db"

    clean, _ = _cockpit(db, "run", "--batch", *PROFILE, "--domains", "knob", "--set", "domains.knob.options.probe=pass", env=env)
    assert clean.returncode == 0 and "knob/probe: PASSED" in clean.stdout, _log(clean)

    odd, _ = _cockpit(db, "run", "--batch", *PROFILE, "--domains", "knob", "--set", "domains.knob.options.probe=odd", env=env)
    lines, log = _progress(odd), _log(clean, odd)
    assert any(ln.startswith("knob/probe: FAILED") and "attempt 1 on this guest" in ln for ln in lines), log
    reruns = [ln.split()[2:4] for ln in lines if ln.startswith("knob/probe: rerun ")]
    assert reruns == [["1/3", "FAILED"], ["2/3", "PASSED"], ["3/3", "FAILED"]], log
    assert any(ln.startswith("knob/probe: [FLAKY] FAILED now, PASSED in run ") and "2/3 reruns failed" in ln
               for ln in lines), log
    assert not any("NEW REGRESSION" in ln for ln in lines), log
    assert _verdicts(db, _run_id(odd)) == {("knob", "probe"): ("flaky", ["FAILED", "PASSED", "FAILED"], "PASSED")}
    assert odd.returncode == 1, log  # the run's own attempt failed: flaky is a verdict, not a pass


def test_known_failures_do_not_fail_the_batch_until_they_pass_or_expire(tmp_path: Path) -> None:
    env = _knob_plugin(tmp_path)
    db = tmp_path / "history.db"
    known = tmp_path / "known"
    known.mkdir()
    listed = known / "test.yaml"  # the test env's file
    listed.write_text("known_failures:\n  - test: knob/probe\n    reason: probe knob on by design\n")

    def run(mode: str) -> subprocess.CompletedProcess[str]:
        return _cockpit(db, "run", "--batch", *PROFILE, "--domains", "knob", "--set", f"domains.knob.options.probe={mode}",
                        "--set", f"analysis.known_failures_dir={known}", env=env)[0]

    on = run("fail")
    assert on.returncode == 0, _log(on)  # listed: reported, not failing the run
    lines = _progress(on)
    assert "knob/probe: [KNOWN FAILURE] FAILED now, not run before in this env — probe knob on by design" in lines, _log(on)
    assert any(ln.startswith(f"run {_run_id(on)} PASSED: 1 failed — 1 known failure: knob/probe") for ln in lines), _log(on)
    assert "0 passed, 1 failed (1 known), 0 skipped" in on.stdout.splitlines(), _log(on)

    off = run("pass")
    assert off.returncode == 0, _log(off)
    assert any(ln.startswith("knob/probe: [KNOWN, PASSES: REMOVE IT] PASSED now, FAILED in run ")
               and ln.endswith("listed in " + str(listed) + " (entry 1) but passes: fixed, remove it")
               for ln in _progress(off)), _log(off)

    listed.write_text("known_failures:\n  - test: knob/probe\n    reason: probe knob on by design\n    expires: 2026-01-01\n")
    expired = run("fail")
    lines = _progress(expired)
    assert expired.returncode == 1, _log(expired)  # an expired entry counts again
    assert any(ln.startswith("knob/probe: [NEW REGRESSION] FAILED now, PASSED in run ")
               and "known failure expired on 2026-01-01: counts again (probe knob on by design)" in ln
               for ln in lines), _log(expired)


def test_expunge_audit_rerun_runs_the_listed_tests_and_proposes_the_passing_ones(tmp_path: Path) -> None:
    db = tmp_path / "history.db"
    known = tmp_path / "known"
    known.mkdir()
    (known / "test.yaml").write_text(
        "known_failures:\n  - test: filesystem_operations/file_read_write\n    reason: EIO under the old module\n")
    only = ["--domains", "filesystem_operations", "--tests", "filesystem_operations/file_read_write"]
    first, _ = _cockpit(db, "run", "--batch", *PROFILE, *only, "--set", "module.module_params=eio_on_read=1",
                        "--set", f"analysis.known_failures_dir={known}")
    assert first.returncode == 0 and "[KNOWN FAILURE]" in first.stdout, _log(first)  # listed: the run passes

    # The module is fixed (no eio_on_read): the rerun passes, and with audit_runs 1 the entry should go.
    audit, pid = _cockpit(db, "expunge", "audit", "--rerun", "--env", "test", "--config", "configs/default.yaml",
                          "--known-failures", str(known), "--set", "analysis.audit_runs=1")
    lines, log = _progress(audit), _log(first, audit)
    assert audit.returncode == 1, log  # an entry to remove
    assert "rerunning 1 known failure(s) of env 'test' in fresh VMs" in lines, log
    assert any(ln.startswith("filesystem_operations/file_read_write: [KNOWN, PASSES: REMOVE IT] PASSED now, FAILED in run ")
               for ln in lines), log
    assert any(re.match(r"1\s+filesystem_operations/file_read_write\s+drop\s+passed in the last 1 runs that ran it", ln)
               for ln in lines), log
    assert lines[-1] == "1 of 1 entry to remove", log
    assert owned_vms(pid) == [], "the rerun's VM was left behind"
