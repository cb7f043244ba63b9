"""Many writers on one PostgreSQL history (issue 19 item 2): real cockpit processes
writing at once lose and double nothing, and a writer whose connection the server drops
reconnects and goes on without losing a result.

Measured here (2 cores): three writers x 300 results, each result its own transaction
as in a run, all at once: 0.8 s on a quiet host, about 3 s beside other helpers' tests
(the test prints it with -s). The dropped-link test: under 1 s.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg

from tests.support.store import KM, T0, P, result
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.events import (
    DomainStarted,
    RunFinished,
    RunStarted,
    TestFinished,
)
from vexfs_cockpit.store import pg
from vexfs_cockpit.store.db import reading
from vexfs_cockpit.store.history import History
from vexfs_cockpit.store.location import PgUrl
from vexfs_cockpit.store.recorder import HistoryStore, Recorder

REPO = Path(__file__).resolve().parents[2]
WRITERS = 3
RESULTS = 300  # per writer
KERNEL_EVERY = 10  # every 10th test also raises the one kernel signature all writers share

# One cockpit: its own HistoryStore + Recorder. Says "ready" once its store is open,
# waits for the parent's "go" (the barrier: one line on stdin), then records a run
# (argv[2]) result by result, each committed before the next (Recorder.flush), and
# prints what its recorder wrote and lost.
WRITER_CHILD = textwrap.dedent(
    """
    import asyncio, sys, time
    from tests.support.store import KM, T0, P, F, kreport, result
    from vexfs_cockpit.engine.bus import EventBus
    from vexfs_cockpit.engine.events import (DomainFinished, DomainStarted, KernelEventRaised, RunFinished,
                                             RunStarted, TestFinished)
    from vexfs_cockpit.store.location import parse_location
    from vexfs_cockpit.store.recorder import HistoryStore, Recorder

    async def main() -> None:
        url, run_id, n, every = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
        store = await HistoryStore.aopen(parse_location(url, "argv[1]"))
        bus = EventBus()
        bus.bind_loop(asyncio.get_running_loop())
        rec = Recorder(store, bus)
        rec.start()
        print("ready", flush=True)
        await asyncio.to_thread(sys.stdin.readline)
        t0 = time.monotonic()
        ts = T0
        bus.publish(RunStarted(run_id=run_id, config_path="c.yaml", profile="p", env="ci", domains=(KM,), ts=ts))
        bus.publish(DomainStarted(run_id=run_id, domain=KM, vm="vm-" + run_id, planned_tests=(), ts=ts))
        for i in range(n):
            ts += 1
            test = f"t{i:04d}"
            if i % every == 0:
                bus.publish(KernelEventRaised(vm="vm-" + run_id, report=kreport(), run_id=run_id, domain=KM,
                                              test=test, ts=ts))
            bus.publish(TestFinished(run_id=run_id, result=result(KM, test, F if i % 7 == 0 else P, ts), ts=ts + 0.5))
            await rec.flush()
        bus.publish(DomainFinished(run_id=run_id, domain=KM, status="failed", counts={}, ts=ts + 1))
        bus.publish(RunFinished(run_id=run_id, status="failed", counts={}, ts=ts + 2))
        await rec.aclose()
        store.close()
        print(f"done {rec.written} {rec.lost} {time.monotonic() - t0:.3f}", flush=True)

    asyncio.run(main())
    """
)


def _rows(url: PgUrl, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    with reading(url) as conn:
        assert conn is not None
        return [tuple(r) for r in conn.execute(sql, params).fetchall()]


def test_three_writers_at_once_store_every_result_exactly_once(pg_server: Any) -> None:
    url = PgUrl(pg_server.new_database())
    runs = [f"shard-{k}" for k in range(WRITERS)]
    children = [subprocess.Popen([sys.executable, "-c", WRITER_CHILD, str(url), run, str(RESULTS), str(KERNEL_EVERY)],
                                 cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
                for run in runs]
    try:
        for child in children:  # every store open (schema made once, under pg.migrate's lock)
            assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        start = time.monotonic()
        for child in children:
            assert child.stdin is not None
            child.stdin.write("go\n")
            child.stdin.close()
        outs = [child.stdout.read() for child in children if child.stdout is not None]
        for child in children:
            child.wait(timeout=300)
        wall = time.monotonic() - start
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
                child.wait()
    assert [c.returncode for c in children] == [0] * WRITERS, outs
    events_each = 2 + RESULTS + RESULTS // KERNEL_EVERY + 2
    for out in outs:
        _, written, lost, _secs = out.split()
        assert (int(written), int(lost)) == (events_each, 0), out
    print(f"\n{WRITERS} writers x {RESULTS} results (one transaction each) at once: {wall:.2f} s; "
          f"per writer {', '.join(o.split()[3] + ' s' for o in outs)}")

    bad = len([i for i in range(RESULTS) if i % 7 == 0])
    for run in runs:
        assert _rows(url, "SELECT count(*), count(DISTINCT test) FROM test_results WHERE run_id=?", (run,)) == [
            (RESULTS, RESULTS)]
        assert _rows(url, "SELECT n_results, n_passed, n_bad, status FROM domain_runs WHERE run_id=?", (run,)) == [
            (RESULTS, RESULTS - bad, bad, "failed")]
        assert _rows(url, "SELECT status FROM runs WHERE id=?", (run,)) == [("failed",)]
        assert _rows(url, "SELECT count(*) FROM kernel_events WHERE run_id=?", (run,)) == [(RESULTS // KERNEL_EVERY,)]
    # nothing extra anywhere: no run, result or domain run but the writers'
    assert _rows(url, "SELECT count(*) FROM test_results") == [(WRITERS * RESULTS,)]
    assert _rows(url, "SELECT id FROM runs ORDER BY id") == [(r,) for r in runs]
    # one signature, raised by all three at once: its count is every occurrence
    occurrences = WRITERS * (RESULTS // KERNEL_EVERY)
    assert _rows(url, "SELECT count(*) FROM crash_occurrences") == [(occurrences,)]
    assert _rows(url, "SELECT count, first_seen FROM crash_signatures") == [(occurrences, T0 + 1)]
    # The writes did interleave (else this test proves nothing): the writers' result
    # rows share one id sequence, and each writer's range overlaps the others'.
    spans = _rows(url, "SELECT run_id, min(id), max(id) FROM test_results GROUP BY run_id ORDER BY run_id")
    assert max(lo for _, lo, _ in spans) < min(hi for _, _, hi in spans), spans


def _writer_backends(admin: psycopg.Connection[Any], dbname: str) -> list[int]:
    return [r[0] for r in admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE datname = %s AND application_name = 'vexfs-cockpit'", (dbname,))]


def test_a_writer_whose_connection_is_dropped_reconnects_and_loses_nothing(pg_server: Any) -> None:
    """The server ends the writer's session (pg_terminate_backend: a restart, a
    failover, an idle-session timeout); the next batch finds the connection broken,
    reconnects, takes its run's lock back (and the run back from another cockpit that
    took it for dead meanwhile) and writes the batch again."""
    url = PgUrl(pg_server.new_database())
    dbname = urlsplit(url.url).path.lstrip("/")

    async def go() -> None:
        store = await HistoryStore.aopen(url)
        bus = EventBus()
        bus.bind_loop(asyncio.get_running_loop())
        rec = Recorder(store, bus)
        rec.start()
        bus.publish(RunStarted(run_id="dropped", config_path="c.yaml", profile="p", env="ci", domains=(KM,), ts=T0))
        bus.publish(DomainStarted(run_id="dropped", domain=KM, vm="vm-a", planned_tests=(), ts=T0))
        for i in range(5):
            bus.publish(TestFinished(run_id="dropped", result=result(KM, f"before{i}", P, T0 + i), ts=T0 + i + 0.5))
        await rec.flush()
        with psycopg.connect(pg_server.url(dbname), autocommit=True, application_name="test-admin") as admin:
            (pid,) = _writer_backends(admin, dbname)  # the store's one writer connection
            # returns once the session is gone on the server (its lock with it)
            assert admin.execute("SELECT pg_terminate_backend(%s, 30000)", (pid,)).fetchone() == (True,)
            assert _writer_backends(admin, dbname) == []
            # Meanwhile another cockpit opens the history: with no lock held, it cannot tell
            # a cut-off writer from a dead one and marks the run aborted.
            other = HistoryStore.open(url)
            other.close()
            assert other.aborted_on_open == ["dropped"]
            for i in range(5):
                bus.publish(TestFinished(run_id="dropped", result=result(KM, f"after{i}", P, T0 + 10 + i),
                                         ts=T0 + 10 + i + 0.5))
            await rec.flush()
            assert (rec.lost, rec.error) == (0, None)
            (new_pid,) = _writer_backends(admin, dbname)
            assert new_pid != pid
        # the run is live again: its writer holds its lock and undid the other's mark, so
        # neither a reader nor another writer's open takes it for a dead cockpit's run
        with reading(url) as conn:
            assert conn is not None and pg.run_lock_key("dropped") in pg.held_run_keys(conn)
        (run,) = History(url).list_runs()
        assert (run.status, run.finished_at, run.reason) == ("running", None, "")
        detail = History(url).run_detail("dropped")
        assert detail is not None and [(d.status, d.reason) for d in detail.domains] == [("running", "")]
        other = HistoryStore.open(url)
        try:
            assert other.aborted_on_open == []
        finally:
            other.close()
        bus.publish(RunFinished(run_id="dropped", status="passed", counts={}, ts=T0 + 20))
        await rec.aclose()
        store.close()

    asyncio.run(go())
    assert _rows(url, "SELECT test FROM test_results ORDER BY started_at") == [
        *[(f"before{i}",) for i in range(5)], *[(f"after{i}",) for i in range(5)]]
    assert _rows(url, "SELECT n_results, n_passed FROM domain_runs") == [(10, 10)]
    assert _rows(url, "SELECT status FROM runs") == [("passed",)]


def test_a_batch_whose_commit_landed_before_the_link_broke_is_not_stored_twice(pg_server: Any) -> None:
    """The server committed the batch, then the connection broke before its answer came
    back: the writer cannot tell that from a batch lost with the link. It reconnects,
    finds the batch's id stored with it (schema v8) and does not write it again."""
    from vexfs_cockpit.errors import StoreError
    from vexfs_cockpit.store.writer import StoreWriter

    url = PgUrl(pg_server.new_database())
    writer = StoreWriter(url)
    try:
        assert writer.write_batch([(RunStarted(run_id="r", config_path="c", profile="p", env="ci", domains=(KM,),
                                               ts=T0), "")]) == []
        broken = writer.conn
        sent = broken.execute

        def commit_then_lose_the_answer(sql: str, params: Any = ()) -> Any:
            cur = sent(sql, params)
            if sql == "COMMIT":
                broken.raw.close()
                raise StoreError(f"history DB {url}: the connection was lost (server closed the connection)")
            return cur

        broken.execute = commit_then_lose_the_answer  # type: ignore[method-assign]
        batch = [(TestFinished(run_id="r", result=result(KM, f"t{i}", P, T0 + i), ts=T0 + i + 0.5), "")
                 for i in range(3)]
        assert writer.write_batch(batch) == []
        assert writer.conn is not broken  # it did reconnect
        with reading(url) as conn:
            assert conn is not None
            assert conn.execute("SELECT test, count(*) FROM test_results GROUP BY test ORDER BY test").fetchall() == [
                ("t0", 1), ("t1", 1), ("t2", 1)]
            assert conn.execute("SELECT n_results FROM domain_runs").fetchall() == [(3,)]  # the kept count too
    finally:
        writer.close()
