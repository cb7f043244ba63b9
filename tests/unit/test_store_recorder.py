"""The Recorder: events off a real bus into the history (SQLite and PostgreSQL), on one
writer thread; aborted runs."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.support.postgres import PgServer, pg_bindir
from tests.support.store import (
    BACKENDS,
    FS,
    KILLED_RUN_CHILD,
    KM,
    T0,
    F,
    P,
    RunSpec,
    kreport,
    new_history,
    query,
    record,
    recorded,
    result,
    run_events,
)
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.events import (
    DomainStarted,
    InfraProblem,
    KernelEventRaised,
    KernelLogLine,
    MetricRecorded,
    RunFinished,
    RunStarted,
    TestFinished,
    TestStarted,
    VmReady,
    VmSample,
    VmStateChanged,
)
from vexfs_cockpit.engine.results import TestStatus
from vexfs_cockpit.klog.model import Severity
from vexfs_cockpit.store.history import History
from vexfs_cockpit.store.liveness import ProcessIdentity, proc_start_ticks
from vexfs_cockpit.store.location import PgUrl, StoreLocation
from vexfs_cockpit.store import pg
from vexfs_cockpit.store.pg import run_lock_key
from vexfs_cockpit.store.recorder import HistoryStore, Recorder

REPO = Path(__file__).resolve().parents[2]
rows = query


@pytest.fixture(params=BACKENDS)
def loc(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    """A new history of each backend (SQLite: a file in tmp_path)."""
    return new_history(request, tmp_path, "h.db")


def dump(loc: StoreLocation) -> str:
    """Everything the history holds, as text (SQLite's iterdump; PostgreSQL's pg_dump)."""
    if isinstance(loc, PgUrl):
        bindir = pg_bindir()
        assert bindir is not None
        return subprocess.run([str(bindir / "pg_dump"), "--data-only", loc.url], check=True,
                              capture_output=True, text=True).stdout
    conn = sqlite3.connect(loc)
    try:
        return "\n".join(conn.iterdump())
    finally:
        conn.close()


async def test_a_whole_run_lands_in_every_table(loc: StoreLocation) -> None:
    spec = RunSpec(
        "r1", T0,
        outcomes={(KM, "build"): P, (KM, "load"): F, (FS, "mount"): P},
        metrics={(KM, "load"): {"load_time_ms": 12.5}},
        kernel=[(KM, "load", kreport(), False)],
    )
    events = run_events(spec)
    # interleave what a live run also publishes
    events.insert(3, KernelLogLine(vm="vm-0", line_no=1, text="raw log line", ts=T0 + 2.5))
    events.insert(4, VmSample(vm="vm-0", state="running", cpu_pct=50.0, mem_kb=1000, ts=T0 + 2.6))
    events.insert(5, VmStateChanged(vm="vm-0", state="ready", ts=T0 + 2.7))
    events.insert(6, VmReady(vm="vm-0", mode="restore", seconds=1.15, ts=T0 + 2.7))
    events.insert(0, VmReady(vm="dev-0", mode="boot", seconds=9.8, ts=T0 - 5))  # before any run: not history
    await record(loc, events)

    assert rows(loc, "SELECT id, status, env, profile, domains FROM runs") == [
        ("r1", "failed", "dev", "selftest", json.dumps([KM, FS], separators=(",", ":")))]
    assert rows(loc, "SELECT domain, vm, status FROM domain_runs ORDER BY id") == [
        (KM, "vm-0", "failed"), (FS, "vm-1", "passed")]
    assert rows(loc, "SELECT domain, test, status, attempt_count FROM test_results ORDER BY id") == [
        (KM, "build", "PASSED", 1), (KM, "load", "FAILED", 1), (FS, "mount", "PASSED", 1)]
    ev = json.loads(rows(loc, "SELECT evidence FROM test_results WHERE test='load'")[0][0])
    assert ev["commands"] == [{"cmd": "run-load", "exit_code": 1, "duration_s": 0.25,
                               "output_tail": "output of load\nlast line", "timed_out": False, "target": "vm-a"}]
    assert ev["kernel_log"] and ev["notes"] == ["note load"]
    assert rows(loc, "SELECT domain, test, name, value, env FROM metrics") == [
        (KM, "load", "load_time_ms", 12.5, "dev")]
    # the report came with only a VM: attribution filled in the running test
    assert rows(loc, "SELECT run_id, domain, test, vm, kind, severity FROM kernel_events") == [
        ("r1", KM, "load", "vm-0", "warning", int(Severity.WARNING))]
    assert rows(loc, "SELECT signature, count, last_run_id FROM crash_signatures") == [
        ("warning: WARNING in vexfs_write", 1, "r1")]
    assert rows(loc, "SELECT run_id, domain, test FROM crash_occurrences") == [("r1", KM, "load")]
    assert rows(loc, "SELECT run_id, vm, cpu_pct FROM vm_samples") == [("r1", "vm-0", 50.0)]
    assert rows(loc, "SELECT run_id, vm, state FROM vm_states") == [("r1", "vm-0", "ready")]
    assert rows(loc, "SELECT run_id, vm, mode, seconds, reset FROM vm_ready") == [("r1", "vm-0", "restore", 1.15, 0)]
    detail = History(loc).run_detail("r1")
    assert detail is not None and [(r.vm, r.mode, r.seconds, r.reset) for r in detail.vm_ready] == [
        ("vm-0", "restore", 1.15, False)]
    # raw kernel log lines are not history: the string only lives in nothing
    text = dump(loc)
    assert "load_time_ms" in text and "raw log line" not in text


async def test_kernel_events_between_tests_belong_to_the_domain_only(loc: StoreLocation) -> None:
    events = [
        RunStarted(run_id="r", config_path="c", profile="p", env="dev", domains=(KM,), ts=T0),
        DomainStarted(run_id="r", domain=KM, vm="vm-0", planned_tests=("a",), ts=T0 + 1),
        TestStarted(run_id="r", domain=KM, test="a", attempt=1, vm="vm-0", ts=T0 + 2),
        TestFinished(run_id="r", result=result(KM, "a", P, T0 + 2), ts=T0 + 3),
        KernelEventRaised(vm="vm-0", report=kreport(title="WARNING in teardown"), ts=T0 + 4),
        KernelEventRaised(vm="vm-9", report=kreport(title="WARNING elsewhere", vm="vm-9"), ts=T0 + 5),
        RunFinished(run_id="r", status="passed", counts={"PASSED": 1}, ts=T0 + 6),
        KernelEventRaised(vm="vm-0", report=kreport(title="WARNING after run"), ts=T0 + 7),
    ]
    await record(loc, events)
    assert rows(loc, "SELECT run_id, domain, test, title FROM kernel_events ORDER BY id") == [
        ("r", KM, "", "WARNING in teardown"),
        ("r", "", "", "WARNING elsewhere"),
        ("", KM, "", "WARNING after run"),
    ]


async def test_crash_signatures_count_across_runs_and_skip_expected_and_info(loc: StoreLocation) -> None:
    oops = kreport("oops", "BUG: unable to handle page fault in vexfs_read", Severity.CRITICAL)
    taint = kreport("taint", "module taints kernel", Severity.INFO)
    injected = kreport("warning", "WARNING in selftest_inject", Severity.WARNING)
    store = await HistoryStore.aopen(loc)
    try:
        await record(loc, run_events(RunSpec("r1", T0, outcomes={(KM, "a"): F},
                                              kernel=[(KM, "a", oops, False), (KM, "a", taint, False)])), store)
        await record(loc, run_events(RunSpec("r2", T0 + 100, outcomes={(KM, "a"): F, (KM, "inject"): P},
                                              kernel=[(KM, "a", oops, False), (KM, "inject", injected, True)])),
                     store)
    finally:
        store.close()
    sigs = History(loc).crash_signatures()
    assert [(s.signature, s.count, s.last_run_id, s.severity) for s in sigs] == [
        (oops.signature, 2, "r2", Severity.CRITICAL)]
    assert sigs[0].first_seen < sigs[0].last_seen
    assert [o.run_id for o in History(loc).crash_occurrences(oops.signature)] == ["r2", "r1"]
    # every event is still a kernel_events row
    assert rows(loc, "SELECT count(*), sum(expected) FROM kernel_events") == [(4, 1)]


async def test_metric_recorded_and_result_metrics_make_one_row_latest_wins(loc: StoreLocation) -> None:
    events = [
        RunStarted(run_id="r", config_path="c", profile="p", env="ci", domains=(KM,), ts=T0),
        MetricRecorded(run_id="r", domain=KM, test="load", name="load_time_ms", value=1.0, ts=T0 + 1),
        TestFinished(run_id="r", result=result(KM, "load", P, T0, metrics={"load_time_ms": 2.0}), ts=T0 + 2),
        MetricRecorded(run_id="r", domain=KM, test="load", name="rss_kb", value=300.0, ts=T0 + 3),
        MetricRecorded(run_id="r", domain=KM, test="", name="domain_total_s", value=9.0, ts=T0 + 4),
    ]
    await record(loc, events)
    assert rows(loc, "SELECT test, name, value, env FROM metrics ORDER BY name") == [
        ("", "domain_total_s", 9.0, "ci"), ("load", "load_time_ms", 2.0, "ci"), ("load", "rss_kb", 300.0, "ci")]
    detail = History(loc).run_detail("r")
    assert detail is not None
    assert detail.domains[0].tests[0].metrics == {"load_time_ms": 2.0, "rss_kb": 300.0}
    assert detail.domains[0].metrics == {"domain_total_s": 9.0}


async def test_flush_commits_while_running_and_writes_happen_on_one_thread(loc: StoreLocation) -> None:
    store = await HistoryStore.aopen(loc)
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    rec = Recorder(store, bus)
    rec.start()
    try:
        for ev in run_events(RunSpec("r1", T0, outcomes={(KM, "a"): P}, status="")):
            bus.publish(ev)
        await rec.flush()
        # a separate reader sees committed rows while the writer is still open (WAL)
        runs = History(loc).list_runs()
        assert [(r.run_id, r.status, r.counts) for r in runs] == [("r1", "running", {"PASSED": 1})]
        idents = {await store.acall(lambda w: threading.get_ident()) for _ in range(3)}
        assert len(idents) == 1 and threading.get_ident() not in idents
        assert rec.written == len(run_events(RunSpec("r1", T0, outcomes={(KM, "a"): P}, status="")))
    finally:
        await rec.aclose()
        store.close()


async def test_a_broken_store_is_reported_once_and_the_stream_goes_on(loc: StoreLocation) -> None:
    store = await HistoryStore.aopen(loc)
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    seen = bus.subscribe(InfraProblem)
    rec = Recorder(store, bus)
    rec.start()
    store.close()  # the store goes away under the recorder
    for ev in run_events(RunSpec("r1", T0, outcomes={(KM, "a"): P})):
        bus.publish(ev)
        await rec.flush()
    await rec.aclose()
    problems = seen.drain_nowait()
    assert len(problems) == 1 and isinstance(problems[0], InfraProblem)
    assert "history DB" in problems[0].message and rec.error == problems[0].message


async def test_guest_text_with_a_nul_is_stored_not_lost(loc: StoreLocation) -> None:
    """Guest output may hold a NUL byte; PostgreSQL's text cannot (it stores U+FFFD in its
    place), SQLite's can. Either way the result, the kernel report and the problem are kept."""
    events = run_events(RunSpec("r", T0, outcomes={(KM, "a"): F},
                                kernel=[(KM, "a", kreport(title="WARNING in x\x00y"), False)]))
    fin = next(e for e in events if isinstance(e, TestFinished))
    fin.result.message = "bad\x00message"
    fin.result.evidence.commands[0].output_tail = "out\x00put"
    events.insert(-1, InfraProblem(run_id="r", vm="vm-0", message="serial\x00noise", ts=T0 + 50))
    await record(loc, events)  # asserts the recorder lost nothing
    rep = History(loc).run_detail("r")
    assert rep is not None
    nul = "\ufffd" if isinstance(loc, PgUrl) else "\x00"
    (test,) = rep.tests()
    assert test.message == f"bad{nul}message"
    assert test.evidence.commands[0].output_tail == "out\x00put"  # JSON keeps it escaped on both
    assert [k.report.title for k in rep.kernel_events] == [f"WARNING in x{nul}y"]
    assert [p.message for p in rep.infra_problems] == [f"serial{nul}noise"]


# -- aborted runs ----------------------------------------------------------------------
def _dead_identity() -> ProcessIdentity:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    me = ProcessIdentity.current()
    start = proc_start_ticks(proc.pid)
    proc.wait()
    return ProcessIdentity(proc.pid, start, me.hostname, me.boot_id)


def test_liveness_rules() -> None:
    me = ProcessIdentity.current()
    assert me.is_gone(me) is False
    assert _dead_identity().is_gone(me) is True
    assert ProcessIdentity(me.pid, me.proc_start, me.hostname, "other-boot").is_gone(me) is True
    assert ProcessIdentity(me.pid, me.proc_start, "other-host", me.boot_id).is_gone(me) is None
    # same pid, different start time: the pid was reused
    assert ProcessIdentity(me.pid, (me.proc_start or 0) + 1, me.hostname, me.boot_id).is_gone(me) is True
    parent = ProcessIdentity(os.getppid(), proc_start_ticks(os.getppid()), me.hostname, me.boot_id)
    assert parent.is_gone(me) is False


async def test_only_runs_of_dead_processes_are_marked_aborted(loc: StoreLocation) -> None:
    if isinstance(loc, PgUrl):
        pytest.skip("PostgreSQL tells live runs by their writer's advisory lock, not the process identity: "
                    "see test_on_postgresql_only_runs_nobody_holds_are_marked_aborted")
    me = ProcessIdentity.current()
    writers = {
        "dead": _dead_identity(),
        "alive": me,
        "elsewhere": ProcessIdentity(1, 1, "another-host", "b"),
        "rebooted": ProcessIdentity(me.pid, me.proc_start, me.hostname, "an-older-boot"),
    }
    store = await HistoryStore.aopen(loc, me=me)
    try:
        for run_id, ident in writers.items():
            await store.acall(lambda w, ident=ident: setattr(w, "me", ident))  # write as that process
            events = run_events(RunSpec(run_id, T0, outcomes={(KM, "a"): P, (KM, "b"): F}, status=""))
            await record(loc, events[:-1], store)
    finally:
        store.close()
    store = await HistoryStore.aopen(loc, me=me)
    store.close()
    assert sorted(store.aborted_on_open) == ["dead", "rebooted"]
    status = dict(rows(loc, "SELECT id, status FROM runs"))
    assert status == {"dead": "aborted", "alive": "running", "elsewhere": "running", "rebooted": "aborted"}


def test_on_postgresql_only_runs_nobody_holds_are_marked_aborted(pg_server: PgServer) -> None:
    """A run is live while some writer's connection holds its lock, whatever the pid in
    its row says: another cockpit's open run stays running, a closed writer's is aborted
    (by readers at once: a closing writer frees its locks before it goes)."""
    loc = PgUrl(pg_server.new_database())
    unfinished = {(KM, "a"): P, (KM, "b"): F}
    gone = [f"gone{i}" for i in range(8)]
    with recorded(loc, [RunSpec("alive", T0, outcomes=unfinished, status="")]):  # its writer stays open
        watcher = pg.connect(loc)
        try:
            for i, run_id in enumerate(gone):
                with recorded(loc, [RunSpec(run_id, T0 + 10 + i, outcomes=unfinished, status="")]):
                    pass  # this writer closed: nobody holds its run any more...
                # ...from the moment close() returned (the server ends the session later)
                assert pg.run_lock_key(run_id) not in pg.held_run_keys(watcher)
                assert pg.run_lock_key("alive") in pg.held_run_keys(watcher)
        finally:
            watcher.close()
        assert {r.run_id: r.status for r in History(loc).list_runs()} == {
            "alive": "running", **{g: "aborted" for g in gone}}
        store = HistoryStore.open(loc)
        store.close()
        assert store.aborted_on_open == [gone[-1]]  # each writer's open marked the one before
        assert dict(rows(loc, "SELECT id, status FROM runs")) == {"alive": "running", **{g: "aborted" for g in gone}}
        assert rows(loc, "SELECT count(*) FROM test_results WHERE run_id LIKE 'gone%'") == [(2 * len(gone),)]


def wait_until_unlocked(loc: PgUrl, run_id: str) -> None:
    """Until PostgreSQL has ended a killed client's backend, and with it the run's lock:
    it does so when it sees the socket close, a moment after the process is gone.
    Waits by asking for that lock (blocking), then gives it back."""
    import psycopg

    with psycopg.connect(loc.url, autocommit=True) as conn:
        conn.execute("SET lock_timeout = '30s'")
        conn.execute("SELECT pg_advisory_lock(%s)", (run_lock_key(run_id),))
        conn.execute("SELECT pg_advisory_unlock(%s)", (run_lock_key(run_id),))


def test_a_sigkilled_run_keeps_its_results_and_becomes_aborted(loc: StoreLocation) -> None:
    child = subprocess.Popen(
        [sys.executable, "-c", KILLED_RUN_CHILD, str(loc)],
        cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
    )
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "ready"
        os.kill(child.pid, signal.SIGKILL)
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    if isinstance(loc, PgUrl):
        wait_until_unlocked(loc, "killed")
    # a reader shows the dead run aborted before any writer has marked it
    (listed,) = History(loc).list_runs()
    assert (listed.run_id, listed.status) == ("killed", "aborted")
    assert [r.run_id for r in History(loc).list_runs(status="aborted")] == ["killed"]
    assert History(loc).list_runs(status="running") == []
    assert History(loc).run_detail("killed").run.status == "aborted"  # type: ignore[union-attr]
    store = HistoryStore.open(loc)
    store.close()
    assert store.aborted_on_open == ["killed"]
    assert rows(loc, "SELECT status FROM runs WHERE id = 'killed'") == [("aborted",)]
    run = History(loc).run_detail("killed")
    assert run is not None
    assert run.run.status == "aborted" and "died" in run.run.reason
    assert run.run.finished_at == T0 + 60  # the last sign of life, not "now"
    (dom,) = run.domains
    assert dom.status == "aborted" and dom.reason == "cockpit process died during test unload"
    assert [(t.name, t.status) for t in dom.tests] == [("build", TestStatus.PASSED), ("load", TestStatus.FAILED)]
    assert dom.tests[1].evidence.commands[0].cmd == "run-load"


def test_recorded_kinds_exclude_only_raw_log_lines() -> None:
    from vexfs_cockpit.engine import events
    from vexfs_cockpit.store.recorder import RECORDED_KINDS

    # AlertFired feeds the session's live alerts (monitoring/live.py); an alert that fired
    # is re-derived from the stored run by `alerts check`. HostStatus is a host's live
    # health (re-read every 10 s); a lost host is also an InfraProblem, which is stored.
    # VmReady is stored from schema v7 on (vm_ready: boot and restore times).
    live_only = {KernelLogLine, events.AlertFired, events.HostStatus}
    assert set(RECORDED_KINDS) == set(events.Event.__args__) - live_only  # type: ignore[attr-defined]
