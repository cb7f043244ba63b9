"""The history store under real faults: a read-only DB (filesystem, file, directory),
its directory removed mid-run, a full disk, two writers at once, a SIGKILLed run.

Each fault is made for real (tmpfs, read-only remount, chattr +i, rm -r, SIGKILL: see
tests/support/faults.py) and must come out as one line naming the cause and the fix, with
the right exit code; a run that lost results says how many and exits 3.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.support.faults import (
    REPO,
    cockpit_batch,
    fill,
    immutable,
    read_only,
    stderr_lines,
    tmpfs,
)
from tests.support.store import run_cli
from tests.support.store import (
    BACKENDS,
    FS,
    KILLED_RUN_CHILD,
    KM,
    T0,
    P,
    RunSpec,
    new_history,
    query,
    record_sync,
    run_events,
)
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.events import InfraProblem, TestFinished
from vexfs_cockpit.engine.results import TestStatus
from vexfs_cockpit.errors import StoreError, StoreUnwritable
from vexfs_cockpit.store.history import History
from vexfs_cockpit.store.location import PgUrl, StoreLocation
from vexfs_cockpit.store.pg import run_lock_key
from vexfs_cockpit.store.recorder import HistoryStore, Recorder


def _refused(path: Path) -> str:
    with pytest.raises(StoreError) as err:
        HistoryStore.open(path)
    msg = str(err.value)
    assert isinstance(err.value, StoreUnwritable) and err.value.exit_code == 3
    assert "\n" not in msg and str(path) in msg and "--db PATH" in msg and "corrupt" not in msg, msg
    return msg


def _readable(path: Path, runs: list[str]) -> None:
    """Readers and `history` still read a DB that cannot be written."""
    assert [r.run_id for r in History(path).list_runs()] == runs
    code, out = run_cli("history", "--db", str(path))
    assert code == 0 and all(r in out for r in runs), out


def _no_run_started(proc: subprocess.CompletedProcess[str]) -> None:
    assert "started on" not in proc.stdout and "Traceback" not in proc.stderr, proc.stdout + proc.stderr


# -- a DB that cannot be written ------------------------------------------------------------
def test_db_on_a_read_only_filesystem(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "4m") as mnt:
        path = mnt / "history.db"
        record_sync(path, [RunSpec("r1", T0, outcomes={(KM, "load"): P})])
        with read_only(mnt):
            msg = _refused(path)
            assert "read-only filesystem" in msg and f"({mnt})" in msg and "remount it read-write" in msg
            _readable(path, ["r1"])
            proc = cockpit_batch(path, tmp_path)
            assert proc.returncode == 3, proc.stdout + proc.stderr
            assert stderr_lines(proc.stderr) == [f"vexfs-cockpit: {msg}"], proc.stderr
            _no_run_started(proc)


def test_read_only_db_file(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    record_sync(path, [RunSpec("r1", T0, outcomes={(KM, "load"): P})])
    with immutable(path):
        msg = _refused(path)
        assert msg == f"history DB {path} is read-only: make it writable (chmod u+w, chattr -i) or pass --db PATH"
        _readable(path, ["r1"])
        proc = cockpit_batch(path, tmp_path)
        assert proc.returncode == 3 and stderr_lines(proc.stderr) == [f"vexfs-cockpit: {msg}"], proc.stderr
        _no_run_started(proc)


def test_db_directory_not_writable(tmp_path: Path) -> None:
    d = tmp_path / "store"
    path = d / "history.db"
    record_sync(path, [RunSpec("r1", T0, outcomes={(KM, "load"): P})])
    with immutable(d):
        msg = _refused(path)
        assert f"its directory {d} is not writable" in msg, msg
        # SQLite cannot make the -shm a WAL DB needs even to be read: read as immutable
        _readable(path, ["r1"])
        assert sorted(os.listdir(d)) == ["history.db"]
        proc = cockpit_batch(path, tmp_path)
        assert proc.returncode == 3 and stderr_lines(proc.stderr) == [f"vexfs-cockpit: {msg}"], proc.stderr
    with immutable(d):  # a DB not created yet, in a directory that takes no new file
        msg = _refused(d / "new.db")
        assert f"its directory {d} is not writable" in msg, msg


# -- the directory removed while a run writes ---------------------------------------------------
async def test_recorder_counts_what_it_could_not_store_once_the_directory_is_gone(tmp_path: Path) -> None:
    d = tmp_path / "store"
    store = await HistoryStore.aopen(d / "history.db")
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    seen = bus.subscribe(InfraProblem)
    rec = Recorder(store, bus)
    rec.start()
    events = run_events(RunSpec("r1", T0, outcomes={(KM, f"t{i}"): P for i in range(6)}))
    try:
        for ev in events[:4]:
            bus.publish(ev)
        await rec.flush()
        os.system(f"rm -rf {d}")  # as a user would: the store cannot tell
        for ev in events[4:]:
            bus.publish(ev)
            await rec.flush()  # one batch each: one notice all the same
        await rec.aclose()
    finally:
        store.close()
    after = events[4:]
    assert (rec.written, rec.lost) == (4, len(after))
    assert rec.lost_results == sum(isinstance(e, TestFinished) for e in after) > 0
    notices = seen.drain_nowait()
    assert [n.message for n in notices] == [rec.error]
    assert rec.error == f"history DB {d / 'history.db'}: its directory {d} is gone: recreate it or pass --db PATH"
    assert rec.loss_line() == f"{rec.error}; {rec.lost} events not stored, {rec.lost_results} of them test results"


def test_run_whose_db_directory_is_removed_exits_3_and_says_how_much_was_lost(tmp_path: Path) -> None:
    d = tmp_path / "store"
    path = d / "history.db"
    junit = tmp_path / "out" / "junit.xml"
    proc = cockpit_batch(path, tmp_path, "--junit", str(junit), tests="5", rmtree=str(d))
    assert proc.returncode == 3, proc.stdout + proc.stderr
    lines = stderr_lines(proc.stderr)
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"vexfs-cockpit: history DB {path}: its directory {d} is gone: ")
    # t02..t05 at least (t01's too if it was still queued when t02 removed the directory)
    lost = re.search(r"; (\d+) events not stored, (\d+) of them test results$", lines[0])
    assert lost and int(lost[1]) >= int(lost[2]) and int(lost[2]) in (4, 5), lines[0]
    assert "5 passed, 0 failed, 0 skipped" in proc.stdout  # the run itself went on
    xml = junit.read_text()  # its reports have every result, and say the store failed
    assert xml.count('<testcase classname="faults"') == 5 and f"its directory {d} is gone" in xml


# -- a full disk -------------------------------------------------------------------------------------
DISK_FULL_CHILD = textwrap.dedent(
    """
    import asyncio, logging, sys
    from pathlib import Path
    # what cli.main sets up: every warning the store logs would reach stderr
    logging.basicConfig(level=logging.WARNING, format="vexfs-cockpit: %(name)s: %(message)s")
    from tests.support.faults import fill
    from tests.support.store import KM, T0, P, RunSpec, run_events
    from vexfs_cockpit.engine.bus import EventBus
    from vexfs_cockpit.store.recorder import HistoryStore, Recorder

    async def main() -> None:
        path = Path(sys.argv[1])
        store = await HistoryStore.aopen(path)
        bus = EventBus()
        bus.bind_loop(asyncio.get_running_loop())
        rec = Recorder(store, bus)
        rec.start()
        events = run_events(RunSpec("full", T0, outcomes={(KM, f"t{i}"): P for i in range(20)}))
        fill(path.parent)
        for ev in events:
            bus.publish(ev)
            await rec.flush()  # a batch per event: as many failed writes
        await rec.aclose()
        store.close()
        print(len(events), rec.written, rec.lost, rec.lost_results)
        print(rec.loss_line(), file=sys.stderr)  # what a front end prints

    asyncio.run(main())
    """
)


def test_disk_full_is_one_line_and_a_count_not_a_traceback_per_batch(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "1m") as mnt:
        path = mnt / "history.db"
        proc = subprocess.run([sys.executable, "-c", DISK_FULL_CHILD, str(path)], cwd=REPO,
                              capture_output=True, text=True, timeout=120)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        total, written, lost, lost_results = map(int, proc.stdout.split())
        assert lost > 0 and written + lost == total and lost_results > 0
        lines = stderr_lines(proc.stderr)
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert lines[0] == (f"history DB {path}: disk full (no space left on the filesystem at {mnt}): free space "
                            f"there or pass --db PATH; {lost} events not stored, {lost_results} of them test results")


def test_run_on_a_full_disk_exits_3_and_says_how_much_was_lost(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "1m") as mnt:
        path = mnt / "history.db"
        HistoryStore.open(path).close()
        fill(mnt, leave=64 * 1024)  # room for the run's start, not for its results
        json_out = tmp_path / "run.json"
        proc = cockpit_batch(path, tmp_path, "--json", str(json_out), tests="12", payload=str(40_000))
        assert proc.returncode == 3, proc.stdout + proc.stderr
        lines = stderr_lines(proc.stderr)
        assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
        assert lines[0].startswith(f"vexfs-cockpit: history DB {path}: disk full (no space left on the filesystem at {mnt})")
        assert " events not stored, " in lines[0] and " of them test results" in lines[0], lines[0]
        assert "12 passed, 0 failed, 0 skipped" in proc.stdout
        assert "INFRA history DB" in proc.stdout  # said live once, as it happened
        # the JSON report (elsewhere) has every result, and names the store's failure
        import json

        doc = json.loads(json_out.read_text())
        assert sum(len(d["tests"]) for d in doc["domains"]) == 12
        assert any("disk full" in p["message"] for p in doc["infra_problems"])


# -- two writers at once ----------------------------------------------------------------------------
WRITER_CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from pathlib import Path
    from tests.support.store import KM, FS, T0, P, F, RunSpec, run_events
    from vexfs_cockpit.engine.bus import EventBus
    from vexfs_cockpit.store.recorder import HistoryStore, Recorder

    async def main() -> None:
        path, run_id, go = Path(sys.argv[1]), sys.argv[2], Path(sys.argv[3])
        while not go.exists():
            time.sleep(0.005)
        store = await HistoryStore.aopen(path)  # both open a fresh DB at once too
        bus = EventBus()
        bus.bind_loop(asyncio.get_running_loop())
        rec = Recorder(store, bus)
        rec.start()
        outcomes = {(d, f"{run_id}-t{i}"): (P if i % 3 else F) for d in (KM, FS) for i in range(40)}
        events = run_events(RunSpec(run_id, T0, outcomes=outcomes, metrics={(KM, f"{run_id}-t1"): {"m": 1.0}}))
        for ev in events:
            bus.publish(ev)
            await rec.flush()  # a transaction per event: the two writers interleave
        await rec.aclose()
        store.close()
        print(len(events), rec.written, rec.lost, rec.error)

    asyncio.run(main())
    """
)


def test_two_writers_on_one_db_both_complete_unmixed(tmp_path: Path) -> None:
    path = tmp_path / "history.db"
    go = tmp_path / "go"
    procs = {
        run_id: subprocess.Popen([sys.executable, "-c", WRITER_CHILD, str(path), run_id, str(go)], cwd=REPO,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for run_id in ("alpha", "beta")
    }
    go.touch()
    outs = {run_id: p.communicate(timeout=180) for run_id, p in procs.items()}
    for run_id, (out, err) in outs.items():
        assert procs[run_id].returncode == 0 and err == "", err
        total, written, lost, error = out.split(maxsplit=3)
        assert (written, lost, error.strip()) == (total, "0", "None"), out
    conn = sqlite3.connect(path)
    try:
        runs = dict(conn.execute("SELECT id, status FROM runs"))
        assert runs == {"alpha": "failed", "beta": "failed"}
        for run_id in ("alpha", "beta"):
            rows = conn.execute("SELECT domain, test, status FROM test_results WHERE run_id=?", (run_id,)).fetchall()
            assert len(rows) == 80 and all(t.startswith(f"{run_id}-") for _, t, _ in rows)
            assert {(d, t) for d, t, _ in rows} == {(d, f"{run_id}-t{i}") for d in (KM, FS) for i in range(40)}
            bad = sum(s == "FAILED" for *_, s in rows)
            assert bad == 2 * len([i for i in range(40) if i % 3 == 0])
            doms = conn.execute("SELECT domain, status FROM domain_runs WHERE run_id=? ORDER BY domain", (run_id,)).fetchall()
            assert doms == [(FS, "failed"), (KM, "failed")]
            assert conn.execute("SELECT run_id FROM metrics WHERE test=?", (f"{run_id}-t1",)).fetchall() == [(run_id,)]
        assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == conn.execute(
            "PRAGMA user_version").fetchone()[0]  # migrated once, not twice
    finally:
        conn.close()


# -- a run whose process was SIGKILLed -----------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def history_loc(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    """A new history of each backend, for the faults that are not the file's."""
    return new_history(request, tmp_path)


def _sigkilled_run(path: StoreLocation) -> None:
    child = subprocess.Popen([sys.executable, "-c", KILLED_RUN_CHILD, str(path)], cwd=REPO,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()


def _stored_status(path: StoreLocation) -> str:
    ((status,),) = query(path, "SELECT status FROM runs WHERE id='killed'")
    return str(status)


def _wait_until_unlocked(loc: PgUrl, run_id: str) -> None:
    """Until PostgreSQL has ended a killed client's backend and with it the run's lock
    (a moment after the process is gone): asks for that lock, blocking, and gives it back."""
    import psycopg

    with psycopg.connect(loc.url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '30s'")
        conn.execute("SELECT pg_advisory_lock(%s)", (run_lock_key(run_id),))
        conn.execute("SELECT pg_advisory_unlock(%s)", (run_lock_key(run_id),))


def _assert_shown_aborted(h: History) -> None:
    (run,) = h.list_runs()
    assert (run.run_id, run.status, run.finished_at) == ("killed", "aborted", T0 + 60)
    assert "died during the run" in run.reason and run.counts == {"PASSED": 1, "FAILED": 1}
    assert [r.run_id for r in h.list_runs(status="aborted")] == ["killed"]
    assert h.list_runs(status="running") == []
    detail = h.run_detail("killed")
    assert detail is not None and detail.run.status == "aborted" and detail.run.finished_at == T0 + 60
    (dom,) = detail.domains
    assert (dom.status, dom.reason) == ("aborted", "cockpit process died during test unload")
    assert [(t.name, t.status) for t in dom.tests] == [("build", TestStatus.PASSED), ("load", TestStatus.FAILED)]


def test_a_reader_shows_a_sigkilled_run_aborted_before_any_writer_opens(history_loc: StoreLocation) -> None:
    path = history_loc
    _sigkilled_run(path)
    if isinstance(path, PgUrl):  # the server frees the dead client's lock when it sees the socket close
        _wait_until_unlocked(path, "killed")
    _assert_shown_aborted(History(path))
    assert _stored_status(path) == "running"  # shown so, not written: a reader never writes
    # `history` marks it in the file too, where it can write; on PostgreSQL it only reads
    # (a team member may hold only SELECT) and the next writer marks it
    code, out = run_cli("history", "--db", str(path))
    assert code == 0 and out.splitlines()[1].split()[5] == "aborted", out
    if isinstance(path, PgUrl):
        assert _stored_status(path) == "running"
        HistoryStore.open(path).close()
    assert _stored_status(path) == "aborted"
    _assert_shown_aborted(History(path))  # the same either way


def test_history_of_a_read_only_db_shows_a_sigkilled_run_aborted(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "mnt", "4m") as mnt:
        path = mnt / "history.db"
        _sigkilled_run(path)
        with read_only(mnt):
            code, out = run_cli("history", "--db", str(path))
            assert code == 0 and out.splitlines()[1].split()[5] == "aborted", out
            code, out = run_cli("history", "show", "killed", "--db", str(path), "--evidence", "none")
            assert code == 0 and "killed  aborted" in out and "cockpit process died during test unload" in out, out
            _assert_shown_aborted(History(path))
        assert _stored_status(path) == "running"


# A trigger refusing test 'b': one statement failing inside a write batch (on PostgreSQL
# that aborts the whole transaction; on SQLite only the statement).
_NO_B = {
    "sqlite": ["CREATE TRIGGER no_b BEFORE INSERT ON test_results WHEN NEW.test='b' BEGIN SELECT RAISE(ABORT, 'no b'); END"],
    "postgresql": [
        ("CREATE FUNCTION no_b() RETURNS trigger LANGUAGE plpgsql AS "
         "'BEGIN IF NEW.test = ''b'' THEN RAISE EXCEPTION ''no b''; END IF; RETURN NEW; END'"),
        "CREATE TRIGGER no_b BEFORE INSERT ON test_results FOR EACH ROW EXECUTE FUNCTION no_b()",
    ],
}


def test_a_bad_event_loses_only_itself(history_loc: StoreLocation) -> None:
    """Not a fault of the file: a per-event failure is counted and said once, the rest stored."""
    path = history_loc
    record_sync(path, [])

    async def go() -> Recorder:
        store = await HistoryStore.aopen(path)
        bus = EventBus()
        bus.bind_loop(asyncio.get_running_loop())
        rec = Recorder(store, bus)
        rec.start()
        events = run_events(RunSpec("r", T0, outcomes={(KM, "a"): P, (KM, "b"): P}))
        for sql in _NO_B["postgresql" if isinstance(path, PgUrl) else "sqlite"]:
            await store.acall(lambda w, sql=sql: w.conn.execute(sql))
        for ev in events:
            bus.publish(ev)
        await rec.aclose()
        store.close()
        return rec

    rec = asyncio.run(go())
    assert (rec.lost, rec.lost_results) == (1, 1) and "no b" in (rec.error or "")
    assert query(path, "SELECT test FROM test_results") == [("a",)]
    assert query(path, "SELECT status FROM runs") == [("passed",)]  # the events after it were stored
