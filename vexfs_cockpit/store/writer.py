"""Turns events into rows. Lives on the store's one writer thread (see recorder.py).

Every write batch is one transaction (dialect.write_tx). The SQL is one text for
SQLite and PostgreSQL (dialect.py says what differs). On PostgreSQL several cockpits
write at once: each holds an advisory lock per run it is writing (pg.py), which is
how a killed one's runs are told apart from live ones on any host.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vexfs_cockpit.engine.events import (
    DomainFinished,
    DomainStarted,
    Event,
    InfraProblem,
    KernelEventRaised,
    MetricRecorded,
    RunFinished,
    RunStarted,
    TestFinished,
    TestStarted,
    TestVerdict,
    VmReady,
    VmSample,
    VmStateChanged,
)
from vexfs_cockpit.errors import StoreError, StoreUnwritable
from vexfs_cockpit.klog.model import Severity
from vexfs_cockpit.store.codec import attempt_to_dict, evidence_to_dict
from vexfs_cockpit.store.db import open_writer, write_failure, write_problem
from vexfs_cockpit.store.dialect import has_table, is_pg, table_columns, write_tx
from vexfs_cockpit.store.liveness import (
    ProcessIdentity,
    domain_died_reason,
    owner_gone,
    run_died_reason,
)
from vexfs_cockpit.store.location import StoreLocation
from vexfs_cockpit.store.report import RUN_ENDED_EARLY, join_vm

log = logging.getLogger(__name__)

_SIG = "crash_signatures"  # the upsert's stored row (PostgreSQL wants it named)
# Adds ``count`` sightings of a signature between first_seen and last_seen (of run
# last_run_id) to its row: the writer adds one report, history import a run's worth.
SIGNATURE_UPSERT = (
    "INSERT INTO crash_signatures(signature, kind, title, severity, first_seen, last_seen, count, last_run_id) "
    "VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(signature) DO UPDATE SET "
    f"count={_SIG}.count+excluded.count, "
    f"first_seen=CASE WHEN excluded.first_seen < {_SIG}.first_seen THEN excluded.first_seen ELSE {_SIG}.first_seen END, "
    f"severity=CASE WHEN excluded.severity > {_SIG}.severity THEN excluded.severity ELSE {_SIG}.severity END, "
    f"last_run_id=CASE WHEN excluded.last_seen >= {_SIG}.last_seen THEN excluded.last_run_id ELSE {_SIG}.last_run_id END, "
    f"last_seen=CASE WHEN excluded.last_seen > {_SIG}.last_seen THEN excluded.last_seen ELSE {_SIG}.last_seen END"
)
BATCH_IDS_KEPT_S = 86400.0

# Unexpected kernel reports at or above this severity become crash signatures.
SIGNATURE_MIN_SEVERITY = Severity.WARNING


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


# An event plus the run it belongs to (for VM-level events that carry no run_id).
Item = tuple[Event, str]


@dataclass(frozen=True, slots=True)
class Lost:
    """Events a write could not store, and why (one line)."""

    events: int
    results: int  # of them, test results (TestFinished)
    message: str
    run_id: str = ""  # the run the first of them belongs to

    @classmethod
    def of(cls, items: Sequence[Item], message: str) -> Lost:
        run_id = next((getattr(ev, "run_id", "") or ctx for ev, ctx in items if getattr(ev, "run_id", "") or ctx), "")
        return cls(len(items), sum(isinstance(ev, TestFinished) for ev, _ in items), message, run_id)


class StoreWriter:
    """Owns the writer connection. Not thread-safe by design: one thread only."""

    def __init__(self, path: StoreLocation, me: ProcessIdentity | None = None, deep_check: bool = True) -> None:
        self.path = path
        self.me = me or ProcessIdentity.current()
        self.conn = open_writer(path, deep_check)
        self.pg = is_pg(self.conn)
        self._file_id: tuple[int, int] | None = None
        if isinstance(path, Path):
            st = os.stat(path)
            self._file_id = (st.st_dev, st.st_ino)
        self._env: dict[str, str] = {}
        self._live: set[str] = set()  # runs started and not finished here (PostgreSQL: locks held)
        # Columns a later migration added are written only where the DB has them (a DB a
        # test builds at an older schema, with this writer).
        self._run_columns = set(table_columns(self.conn, "runs"))
        self._verdicts = has_table(self.conn, "test_verdicts")  # v6
        self._vm_ready = has_table(self.conn, "vm_ready")  # v7
        # v8, PostgreSQL: each batch's id goes in with it (a resend after a lost link must
        # not store it twice); a day's worth is kept.
        self._batches = self.pg and has_table(self.conn, "write_batches")
        if self._batches:
            self.conn.execute("DELETE FROM write_batches WHERE ts < ?", (time.time() - BATCH_IDS_KEPT_S,))

    def close(self) -> None:
        try:
            if self.pg and self._live and not self.conn.broken:
                # Free the runs' locks before going: the server ends a closed session's
                # backend (and its locks) a moment after close() returns, and a reader in
                # that moment would still see the unfinished runs as live.
                from vexfs_cockpit.store import pg

                pg.release_all(self.conn)
        except Exception:  # the server is gone: so are the locks
            log.debug("history: cannot release the run locks before closing", exc_info=True)
        finally:
            self.conn.close()

    def _tx(self) -> Any:
        return write_tx(self.conn)

    def _insert(self, table: str, row: dict[str, Any]) -> int:
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        cur = self.conn.execute(f"INSERT INTO {table}({cols}) VALUES ({marks}) RETURNING id", tuple(row.values()))
        return int(cur.fetchone()[0])

    def _reconnect(self) -> bool:
        """After a lost PostgreSQL connection: connect again and take back the locks of
        the runs still being written. False if the server is still out of reach."""
        if not self.pg or not self.conn.broken:
            return False
        try:
            conn = open_writer(self.path, deep_check=False)
        except StoreError:
            return False
        self.conn.close()
        self.conn = conn
        from vexfs_cockpit.store import pg

        with self._tx():
            for run_id in self._live:
                pg.hold_run(self.conn, run_id)  # first: from now on nobody takes it for dead
                self._revive(run_id)
        return True

    def _revive(self, run_id: str) -> None:
        """While we were cut off our runs' locks were free: another cockpit opening the
        history took this run for a dead one's (mark_aborted_runs). It is live: undo that."""
        row = self.conn.execute("SELECT status, reason FROM runs WHERE id=?", (run_id,)).fetchone()
        if row is None or (row[0], row[1]) != ("aborted", run_died_reason(self.me.pid, self.me.hostname)):
            return
        self.conn.execute("UPDATE runs SET status='running', finished_at=NULL, reason='' WHERE id=?", (run_id,))
        for dom_id, current, reason in self.conn.execute(
            "SELECT id, current_test, reason FROM domain_runs WHERE run_id=? AND status='aborted'", (run_id,)
        ).fetchall():
            if reason == domain_died_reason(current):
                self.conn.execute(
                    "UPDATE domain_runs SET status='running', finished_at=NULL, reason='' WHERE id=?", (dom_id,))

    # -- events ---------------------------------------------------------------------
    def write_batch(self, items: Sequence[Item]) -> list[Lost]:
        """Write ``items`` in one transaction; returns what could not be stored.

        If the batch fails, each event is retried in its own transaction so a single
        bad event cannot take its neighbours down with it; a failure of the file itself
        (disk full, read-only, gone, corrupt) loses the whole batch at once. Each
        failure is one line naming the cause (db.write_failure): no traceback is
        logged, the caller reports it once.
        """
        try:
            self._check_same_file()
            batch = uuid.uuid4().hex if self._batches else ""
            try:
                with self._tx():
                    self._write_items(items, batch)
            except StoreError:
                if not self._reconnect():
                    raise
                if not self._committed(batch):  # a COMMIT that landed before the link broke
                    with self._tx():  # once more, on the new connection
                        self._write_items(items, batch)
            return []
        except Exception as exc:
            if len(items) == 1 or _is_fatal(exc):
                log.debug("history: cannot store %d events", len(items), exc_info=True)
                return [Lost.of(items, self._failure(exc, items))]
        lost: list[Lost] = []
        for item in items:
            try:
                with self._tx():
                    self._write_items([item])
            except Exception as exc:  # keep going: one bad event must not lose the rest
                log.debug("history: cannot store %s", type(item[0]).__name__, exc_info=True)
                lost.append(Lost.of([item], self._failure(exc, [item])))
        return lost

    def _check_same_file(self) -> None:
        """SQLite goes on writing a DB whose file was deleted (or its directory removed)
        under it, into nothing: refuse instead, so the loss is counted and said."""
        if not isinstance(self.path, Path):
            return
        try:
            st = os.stat(self.path)
        except OSError as exc:
            problem = write_problem(self.path)
            raise StoreUnwritable(problem or f"history DB {self.path} was deleted while in use "
                                  f"({exc.strerror}): this run's results from now on are not stored; "
                                  "pass --db PATH") from None
        if (st.st_dev, st.st_ino) != self._file_id:
            raise StoreUnwritable(f"history DB {self.path} was replaced by another file while in use: "
                                  "this run's results from now on are not stored there; pass --db PATH")

    def _failure(self, exc: Exception, items: Sequence[Item]) -> str:
        if isinstance(exc, StoreError):
            return str(exc)
        if isinstance(self.path, Path) and isinstance(exc, sqlite3.DatabaseError | OSError) and _is_fatal(exc):
            return str(write_failure(self.path, exc))
        what = type(items[0][0]).__name__ if len(items) == 1 else f"{len(items)} events"
        return f"history DB {self.path}: cannot store {what} ({type(exc).__name__}: {exc})"

    def _committed(self, batch: str) -> bool:
        return bool(batch) and self.conn.execute("SELECT 1 FROM write_batches WHERE id=?", (batch,)).fetchone() is not None

    def _write_items(self, items: Sequence[Item], batch: str = "") -> None:
        if batch:  # in the batch's own transaction: committed with it, or not at all
            self.conn.execute("INSERT INTO write_batches(id, ts) VALUES (?, ?)", (batch, time.time()))
        newest: dict[str, float] = {}
        for ev, run_ctx in items:
            self._write(ev, run_ctx)
            run_id = getattr(ev, "run_id", "") or run_ctx
            if run_id and run_id in self._env:  # only runs that have a row
                newest[run_id] = max(newest.get(run_id, ev.ts), ev.ts)
        for run_id, ts in newest.items():
            self.conn.execute(
                "UPDATE runs SET last_event_at = CASE WHEN last_event_at >= ? THEN last_event_at ELSE ? END "
                "WHERE id=?",
                (ts, ts, run_id),
            )

    def _write(self, ev: Event, run_ctx: str) -> None:
        match ev:
            case RunStarted():
                self._run_started(ev)
            case RunFinished():
                self._ensure_run(ev.run_id, ev.ts)
                self.conn.execute(
                    "UPDATE runs SET status=?, finished_at=?, counts=?, reason=? WHERE id=?",
                    (ev.status, ev.ts, _json(ev.counts), ev.reason, ev.run_id),
                )
                self.conn.execute(
                    "UPDATE domain_runs SET status='aborted', reason=? WHERE run_id=? AND status='running'",
                    (RUN_ENDED_EARLY, ev.run_id),
                )
                if self.pg and ev.run_id in self._live:
                    from vexfs_cockpit.store import pg

                    pg.release_run(self.conn, ev.run_id)
                self._live.discard(ev.run_id)
            case DomainStarted():
                self._domain_started(ev)
            case DomainFinished():
                self._ensure_domain(ev.run_id, ev.domain, ev.ts)
                self.conn.execute(
                    "UPDATE domain_runs SET status=?, reason=?, finished_at=?, counts=? "
                    "WHERE run_id=? AND domain=?",
                    (ev.status, ev.reason, ev.ts, _json(ev.counts), ev.run_id, ev.domain),
                )
            case TestStarted():
                self._ensure_domain(ev.run_id, ev.domain, ev.ts)
                self.conn.execute(
                    "UPDATE domain_runs SET current_test=? WHERE run_id=? AND domain=?",
                    (ev.test, ev.run_id, ev.domain),
                )
            case TestFinished():
                self._test_finished(ev)
            case MetricRecorded():
                if ev.test:
                    self._ensure_run(ev.run_id, ev.ts)
                else:  # a domain-level metric: the domain shows in the report with it
                    self._ensure_domain(ev.run_id, ev.domain, ev.ts)
                self._metric(ev.run_id, ev.domain, ev.test, ev.name, ev.value, ev.ts)
            case KernelEventRaised():
                self._kernel_event(ev)
            case VmSample() if ev.run_id or run_ctx:
                run_id = ev.run_id or run_ctx
                self._ensure_run(run_id, ev.ts)
                self._insert("vm_samples", 
                    {
                        "run_id": run_id,
                        "vm": ev.vm,
                        "ts": ev.ts,
                        "state": ev.state,
                        "cpu_pct": ev.cpu_pct,
                        "mem_kb": ev.mem_kb,
                        "block_rd_bytes": ev.block_rd_bytes,
                        "block_wr_bytes": ev.block_wr_bytes,
                        "net_rx_bytes": ev.net_rx_bytes,
                        "net_tx_bytes": ev.net_tx_bytes,
                    }
                )
            case VmStateChanged():
                if run_ctx:
                    self._ensure_run(run_ctx, ev.ts)
                self._insert("vm_states", 
                    {"run_id": run_ctx, "vm": ev.vm, "state": ev.state, "reason": ev.reason, "ts": ev.ts}
                )
            case VmReady() if run_ctx and self._vm_ready:  # outside a run (a dev VM): not history
                self._ensure_run(run_ctx, ev.ts)
                self._insert("vm_ready", {"run_id": run_ctx, "vm": ev.vm, "mode": ev.mode, "seconds": ev.seconds,
                                          "reset": int(ev.reset), "ts": ev.ts})
            case InfraProblem():
                run_id = ev.run_id or run_ctx
                if run_id:
                    self._ensure_run(run_id, ev.ts)
                self._insert("infra_problems", 
                    {"run_id": run_id, "vm": ev.vm, "message": ev.message, "ts": ev.ts}
                )
            case TestVerdict() if self._verdicts:
                self._ensure_run(ev.run_id, ev.ts)
                self.conn.execute(
                    "INSERT INTO test_verdicts(run_id, domain, test, verdict, now, before, reference, reruns, note, ts) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(run_id, domain, test) DO UPDATE SET "
                    "verdict=excluded.verdict, now=excluded.now, before=excluded.before, reference=excluded.reference, "
                    "reruns=excluded.reruns, note=excluded.note, ts=excluded.ts",
                    (ev.run_id, ev.domain, ev.test, ev.verdict, ev.now, ev.before, ev.reference,
                     _json(list(ev.reruns)), ev.note, ev.ts),
                )
            case _:
                pass  # KernelLogLine, samples outside a run and the reruns' progress are not history

    def _identity(self) -> dict[str, Any]:
        me = self.me
        return {"pid": me.pid, "proc_start": me.proc_start, "hostname": me.hostname, "boot_id": me.boot_id}

    def _run_started(self, ev: RunStarted) -> None:
        row = {
            "id": ev.run_id,
            "started_at": ev.ts,
            "status": "running",
            "env": ev.env,
            "profile": ev.profile,
            "config_path": ev.config_path,
            "config_json": ev.config_json,
            "provenance": ev.provenance_json,
            "domains": _json(list(ev.domains)),
            **self._identity(),
        }
        row = {k: v for k, v in row.items() if k in self._run_columns}
        cols = ", ".join(row)
        marks = ", ".join("?" for _ in row)
        updates = ", ".join(f"{c}=excluded.{c}" for c in row if c != "id")
        self.conn.execute(
            f"INSERT INTO runs({cols}) VALUES ({marks}) ON CONFLICT(id) DO UPDATE SET {updates}",
            tuple(row.values()),
        )
        self._env[ev.run_id] = ev.env
        if self.pg and ev.run_id not in self._live:
            from vexfs_cockpit.store import pg

            pg.hold_run(self.conn, ev.run_id)
        self._live.add(ev.run_id)

    def _ensure_run(self, run_id: str, ts: float) -> None:
        """A run we did not see start (recorder attached late) still gets a row."""
        if run_id in self._env:
            return
        ident = self._identity()
        self.conn.execute(
            "INSERT INTO runs(id, started_at, status, pid, proc_start, hostname, boot_id) "
            "VALUES (?, ?, 'running', ?, ?, ?, ?) ON CONFLICT DO NOTHING",
            (run_id, ts, ident["pid"], ident["proc_start"], ident["hostname"], ident["boot_id"]),
        )
        env = self.conn.execute("SELECT env FROM runs WHERE id=?", (run_id,)).fetchone()[0]
        self._env[run_id] = env

    def _ensure_domain(self, run_id: str, domain: str, ts: float) -> None:
        self._ensure_run(run_id, ts)
        self.conn.execute(
            "INSERT INTO domain_runs(run_id, domain, started_at, status) VALUES (?, ?, ?, 'running') "
            "ON CONFLICT DO NOTHING",
            (run_id, domain, ts),
        )

    def _domain_started(self, ev: DomainStarted) -> None:
        self._ensure_domain(ev.run_id, ev.domain, ev.ts)
        (vm,) = self.conn.execute(
            "SELECT vm FROM domain_runs WHERE run_id=? AND domain=?", (ev.run_id, ev.domain)
        ).fetchone()
        self.conn.execute(
            "UPDATE domain_runs SET vm=?, planned_tests=?, status='running' WHERE run_id=? AND domain=?",
            (join_vm(vm, ev.vm), _json(list(ev.planned_tests)), ev.run_id, ev.domain),
        )

    def _test_finished(self, ev: TestFinished) -> None:
        r = ev.result
        self._ensure_domain(ev.run_id, r.domain, ev.ts)
        self._insert("test_results", 
            {
                "run_id": ev.run_id,
                "domain": r.domain,
                "test": r.name,
                "status": str(r.status),
                "message": r.message,
                "started_at": r.started_at,
                "finished_at": ev.ts,
                "duration_s": r.duration_s,
                "attempt_count": max(1, len(r.attempts)),
                "attempts": _json([attempt_to_dict(a) for a in r.attempts]),
                "evidence": _json(evidence_to_dict(r.evidence)),
                "metrics": _json(r.metrics),
                "artifacts": _json(r.artifacts),
                "tags": _json(list(r.tags)),
            }
        )
        self.conn.execute(
            "UPDATE domain_runs SET current_test='' WHERE run_id=? AND domain=? AND current_test=?",
            (ev.run_id, r.domain, r.name),
        )
        for name, value in r.metrics.items():
            self._metric(ev.run_id, r.domain, r.name, name, value, ev.ts)

    def _metric(self, run_id: str, domain: str, test: str, name: str, value: float, ts: float) -> None:
        self.conn.execute(
            "INSERT INTO metrics(run_id, domain, test, name, value, ts, env) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT(run_id, domain, test, name) DO UPDATE SET "
            "value=excluded.value, ts=excluded.ts, env=excluded.env",
            (run_id, domain, test, name, float(value), ts, self._env.get(run_id, "")),
        )

    def _kernel_event(self, ev: KernelEventRaised) -> None:
        r = ev.report
        if ev.run_id:
            self._ensure_run(ev.run_id, ev.ts)
        event_id = self._insert(
            "kernel_events",
            {
                "run_id": ev.run_id,
                "domain": ev.domain,
                "test": ev.test,
                "vm": ev.vm or r.vm,
                "kind": r.kind,
                "title": r.title,
                "signature": r.signature,
                "severity": int(r.severity),
                "line": r.line,
                "module": r.module,
                "text": r.text,
                "expected": int(ev.expected),
                "ts": ev.ts,
            }
        )
        if ev.expected or r.severity < SIGNATURE_MIN_SEVERITY:
            return
        self.conn.execute(SIGNATURE_UPSERT, (r.signature, r.kind, r.title, int(r.severity), ev.ts, ev.ts, 1, ev.run_id))
        self._insert(
            "crash_occurrences",
            {
                "signature": r.signature,
                "kernel_event_id": event_id,
                "run_id": ev.run_id,
                "domain": ev.domain,
                "test": ev.test,
                "vm": ev.vm or r.vm,
                "ts": ev.ts,
            }
        )

    # -- startup housekeeping --------------------------------------------------------
    def mark_aborted_runs(self) -> list[str]:
        """Runs left ``running`` by a process that is gone become ``aborted``.

        Their unfinished domain runs too (naming the test that was running); every
        stored test result stays. A run of a live process (us included) or of another
        host (cannot tell) is left alone. Returns the run ids marked. Readers show the
        same without writing (History, through the same liveness rules).
        """
        marked: list[str] = []
        with self._tx():
            rows = self.conn.execute(
                "SELECT id, pid, proc_start, hostname, boot_id FROM runs WHERE status='running'"
            ).fetchall()
            held = self._held_runs()
            for run_id, pid, proc_start, hostname, boot_id in rows:
                if held is not None:  # PostgreSQL: a run nobody holds has no writer left
                    from vexfs_cockpit.store import pg

                    if run_id in self._live or pg.run_lock_key(run_id) in held:
                        continue
                elif not owner_gone(pid, proc_start, hostname, boot_id, self.me):
                    continue
                last = self._last_activity(run_id)
                self.conn.execute(
                    "UPDATE runs SET status='aborted', finished_at=?, reason=? WHERE id=?",
                    (last, run_died_reason(pid, hostname), run_id),
                )
                for dom_id, current in self.conn.execute(
                    "SELECT id, current_test FROM domain_runs WHERE run_id=? AND status='running'", (run_id,)
                ).fetchall():
                    self.conn.execute(
                        "UPDATE domain_runs SET status='aborted', finished_at=?, reason=? WHERE id=?",
                        (last, domain_died_reason(current), dom_id),
                    )
                marked.append(run_id)
        return marked

    def _held_runs(self) -> set[int] | None:
        if not self.pg:
            return None
        from vexfs_cockpit.store import pg

        return pg.held_run_keys(self.conn)

    def _last_activity(self, run_id: str) -> float:
        # The last thing we heard from the run, not "now": a run found days later
        # must not claim a days-long duration.
        row = self.conn.execute(
            "SELECT CASE WHEN last_event_at > started_at THEN last_event_at ELSE started_at END FROM runs WHERE id=?",
            (run_id,),
        ).fetchone()
        return float(row[0]) if row and row[0] is not None else time.time()


def _is_fatal(exc: BaseException) -> bool:
    """Errors that no per-event retry can fix (the file itself is the problem)."""
    if isinstance(exc, StoreError | OSError):
        return True
    if not isinstance(exc, sqlite3.DatabaseError):
        return False
    msg = str(exc).lower()
    return any(s in msg for s in ("malformed", "not a database", "disk i/o", "readonly", "full", "unable to open"))
