"""Issue 19 on a real guest: `run --batch --db postgresql://...` boots the self-test
guest, stores every result in a real PostgreSQL as they arrive, and the history, the
JUnit report and the database agree; then the run is moved into an SQLite file and
reads the same there."""

from __future__ import annotations

from pathlib import Path

import pytest
from junitparser import JUnitXml

from tests.support.e2e import CI_PROFILE, cockpit, cockpit_run, owned_vms
from tests.support.store import query
from vexfs_cockpit.store.history import History
from vexfs_cockpit.store.location import PgUrl

pytestmark = pytest.mark.vm


@pytest.mark.timeout(600)
def test_a_real_guest_run_records_into_postgresql(pg_server, tmp_path: Path) -> None:
    url = pg_server.new_database("e2e")
    junit = tmp_path / "out.xml"
    proc, pid = cockpit_run("run", "--batch", *CI_PROFILE, "--domains", "kernel_module", "--db", url,
                            "--junit", str(junit), timeout=540)
    log = f"stdout tail:\n{proc.stdout[-4000:]}\nstderr:\n{proc.stderr}"
    assert proc.returncode == 0 and "Traceback" not in proc.stderr, log
    assert owned_vms(pid) == [], log

    (run,) = History(PgUrl(url)).list_runs()
    cases = {c.name for suite in JUnitXml.fromfile(str(junit)) for c in suite}
    assert run.status == "passed" and run.counts == {"PASSED": len(cases)} and len(cases) >= 10, log
    stored = query(PgUrl(url), "SELECT test, status FROM test_results WHERE run_id = ?", run.run_id)
    assert sorted(t for t, _ in stored) == sorted(cases) and {s for _, s in stored} == {"PASSED"}
    (counts,) = query(PgUrl(url), "SELECT n_passed, n_results FROM domain_runs WHERE run_id = ?", run.run_id)
    assert tuple(counts) == (len(cases), len(cases))  # kept by the PostgreSQL triggers
    assert query(PgUrl(url), "SELECT count(*) FROM vm_samples WHERE run_id = ?", run.run_id)[0][0] > 0
    ready = query(PgUrl(url), "SELECT vm, mode, seconds FROM vm_ready WHERE run_id = ?", run.run_id)
    assert ready and all(m in ("boot", "restore") and 0 < sec < 120 for _, m, sec in ready), ready  # schema v7

    shown = cockpit("history", "show", "latest", "--db", url, "--evidence", "none")
    assert shown.returncode == 0 and shown.stdout.startswith(f"run {run.run_id}  passed"), shown.stderr
    vm, mode, seconds = ready[0]
    assert f"vm={vm} ({mode} {seconds:.1f}s" in shown.stdout
    local = tmp_path / "laptop.db"
    moved = cockpit("history", "import", "--db", str(local), url)
    assert moved.returncode == 0, moved.stderr
    (again,) = History(local).list_runs()
    assert (again.run_id, again.status, again.counts) == (run.run_id, run.status, run.counts)
