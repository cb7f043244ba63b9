"""``history import``: merge another history into this one (CI shards, another machine).

Either side may be SQLite or PostgreSQL (SQLite into PostgreSQL to set up a team's
history, and back). The source is another history (an SQLite file of any schema
version we know: migrated on a private copy, the file itself is never written; a
PostgreSQL history: only read) or a JSON run report (``reports/json_report`` format
``vexfs-cockpit-run/1``, turned into a one-run DB by the store's own writer). It is
read through a reader's connection and written through the destination's writer, in
one SQL for both backends, one transaction per run: a run comes in whole or not at
all, and the stored runs are never touched. Row ids are the destination's own (kernel
events' and their crash occurrences' references follow); result counts are kept by the
destination's triggers and crash signatures grow as the writer grows them.

A run is identified by its id *and* its start time, both of which every schema version
and every JSON report carries: importing twice adds nothing. Two different runs with
the same id (ids are second + 16 random bits; CI shards start in the same second) are
both kept: the incoming one under ``ID~XXXXXX`` (a hash of its identity, so a repeated
import finds it again). Runs still ``running`` in the source are left out (their
results are not final); import again once they have finished. A run whose cockpit
died (it will never finish) comes in aborted, as the source's readers show it.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field
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
    VmReady,
    VmStateChanged,
)
from vexfs_cockpit.engine.results import TestResult, TestStatus
from vexfs_cockpit.errors import StoreError
from vexfs_cockpit.store.codec import (
    attempt_from_dict,
    evidence_from_dict,
    kreport_from_dict,
)
from vexfs_cockpit.store.db import (
    SQLITE_MAGIC,
    check_file,
    connect_ro,
    open_writer,
    reading,
    verify_schema,
)
from vexfs_cockpit.store.dialect import (
    Conn,
    fetch_tuples,
    has_table,
    table_columns,
    write_tx,
)
from vexfs_cockpit.store.history import (  # the readers' view of a dead run
    DeadRuns,
    as_aborted,
)
from vexfs_cockpit.store.liveness import ProcessIdentity, domain_died_reason
from vexfs_cockpit.store.location import PgUrl, StoreLocation
from vexfs_cockpit.store.schema import migrate
from vexfs_cockpit.store.writer import SIGNATURE_UPSERT

JSON_FORMAT = "vexfs-cockpit-run/1"
# Tables whose rows belong to one run (by run_id) and carry no reference to another row.
_RUN_TABLES = ("domain_runs", "test_results", "metrics", "vm_samples", "vm_states", "infra_problems",
               "test_verdicts", "vm_ready")
# Kept by triggers on the destination (schema v3): recounted there, never copied.
_TRIGGER_COUNTED = frozenset({"n_passed", "n_bad", "n_skipped", "n_results"})


@dataclass(slots=True)
class ImportSummary:
    source: str
    added: list[str] = field(default_factory=list)  # run ids as stored here
    renamed: dict[str, str] = field(default_factory=dict)  # source id -> id here (an id clash)
    present: int = 0  # already here: skipped
    running: int = 0  # unfinished in the source (its cockpit alive): skipped
    results: int = 0  # test results added

    def line(self) -> str:
        parts = [f"imported {len(self.added)} run(s) with {self.results} test result(s) from {self.source}"]
        if self.present:
            parts.append(f"{self.present} already here")
        if self.running:
            parts.append(f"{self.running} still running there, left out (import again when finished)")
        if self.renamed:
            parts.append("id clash, kept as " + ", ".join(f"{a} -> {b}" for a, b in sorted(self.renamed.items())))
        return "; ".join(parts)


def import_history(dest: StoreLocation, source: StoreLocation) -> ImportSummary:
    """Merge ``source`` (a history DB: SQLite file or PostgreSQL URL, or a JSON run
    report) into the history at ``dest`` (either backend). StoreError (one line naming
    both) for a source we cannot read; the runs already stored are never touched."""
    with _as_source(source) as src_loc, reading(src_loc) as src:
        if src is None:
            raise StoreError(f"history DB {source} holds no vexfs-cockpit history yet; nothing was imported")
        dst = open_writer(dest, deep_check=False)  # its own errors are one line already
        summary = ImportSummary(str(source))
        try:
            return _merge(dst, src, summary)
        except _db_errors(dest, source) as exc:
            # Raised here, not in reading(): it would name the source for any error.
            done = (f"the {len(summary.added)} run(s) before it were imported, import again for the rest"
                    if summary.added else "nothing was imported")
            raise StoreError(f"cannot import {source} into history DB {dest} ({_first_line(exc)}); {done}") from None
        finally:
            dst.close()


def _db_errors(*locs: StoreLocation) -> tuple[type[Exception], ...]:
    if any(isinstance(loc, PgUrl) for loc in locs):
        from vexfs_cockpit.store import pg

        return (sqlite3.DatabaseError, pg.psycopg.Error)
    return (sqlite3.DatabaseError,)


def _first_line(exc: BaseException) -> str:
    return next((ln.strip() for ln in str(exc).splitlines() if ln.strip()), type(exc).__name__)


# -- the source as a private, migrated DB ------------------------------------------------
@contextmanager
def _as_source(source: StoreLocation) -> Iterator[StoreLocation]:
    """Where to read the source from: a PostgreSQL history as it is (read only), a file
    as a private SQLite copy migrated to our schema."""
    if isinstance(source, PgUrl):
        yield source
        return
    try:
        with open(source, "rb") as fh:
            head = fh.read(100)
    except OSError as exc:
        raise StoreError(f"cannot read {source}: {exc.strerror}; pass a history DB or a JSON run report") from None
    with tempfile.TemporaryDirectory(prefix="vexfs-import-") as tmp:
        copy = Path(tmp) / "source.db"
        if head.startswith(SQLITE_MAGIC):
            _copy_db(source, copy)
        else:
            _json_to_db(source, copy)
        yield copy


def _copy_db(source: Path, copy: Path) -> None:
    """A consistent copy (the backup API reads a WAL DB's committed state), migrated to
    our schema; the source file is only read."""
    try:
        check_file(source)  # ours? (header: magic and application_id)
        verify_schema(source, deep=True)  # tables present, not newer than us, not corrupt
    except StoreError as err:  # said of the DB in use; here the file is only read
        why = str(err).removesuffix(": move it away or pass --db PATH").removesuffix(" or pass --db PATH")
        raise StoreError(f"cannot import: {why}; nothing was imported") from None
    try:
        with closing(connect_ro(source)) as src, closing(sqlite3.connect(copy)) as dst:
            src.backup(dst)
            migrate(dst)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"cannot import history DB {source}: {exc} (corrupt?); nothing was imported") from None


def _json_to_db(source: Path, copy: Path) -> None:
    from vexfs_cockpit.store.writer import (
        StoreWriter,  # only a JSON source needs the writer
    )

    try:
        doc = json.loads(source.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise StoreError(f"{source} is neither a vexfs-cockpit history DB nor a JSON run report ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != JSON_FORMAT:
        found = doc.get("format") if isinstance(doc, dict) else type(doc).__name__
        raise StoreError(f"{source}: not a vexfs-cockpit JSON run report (format {found!r}, expected {JSON_FORMAT!r}); "
                         "write one with `run --json` or `history report RUN --json`")
    try:
        run = doc["run"]
        events = report_events(doc)
    except (KeyError, TypeError, ValueError) as exc:
        raise StoreError(f"{source}: JSON run report is incomplete or damaged ({type(exc).__name__}: {exc}); "
                         "nothing was imported") from None
    writer = StoreWriter(copy, me=ProcessIdentity(0, None, str(run.get("host", "")), ""), deep_check=False)
    try:
        lost = writer.write_batch([(ev, run["run_id"]) for ev in events])
        if lost:
            raise StoreError(f"{source}: cannot convert the report ({lost[0].message}); nothing was imported")
        writer.conn.execute("UPDATE runs SET pid=NULL, proc_start=NULL")  # no process of ours ran it
        writer.conn.commit()
    finally:
        writer.close()


def report_events(doc: Mapping[str, Any]) -> list[Event]:
    """The events a JSON run report stands for, at the times it records."""
    run = doc["run"]
    rid = str(run["run_id"])
    t0 = float(run["started_at"])
    evs: list[Event] = [RunStarted(run_id=rid, config_path=str(run.get("config_path", "")),
                                   profile=str(run.get("profile", "")), env=str(run.get("env", "")),
                                   domains=tuple(run.get("planned_domains", ())), ts=t0)]
    for d in doc.get("domains", ()):
        name = str(d["name"])
        evs.append(DomainStarted(run_id=rid, domain=name, vm=str(d.get("vm", "")),
                                 planned_tests=tuple(d.get("planned_tests", ())), ts=float(d["started_at"])))
        for t in d.get("tests", ()):
            r = TestResult(
                status=TestStatus(t["status"]), message=str(t.get("message", "")),
                metrics={k: float(v) for k, v in t.get("metrics", {}).items()},
                artifacts=dict(t.get("artifacts", {})), name=str(t["name"]), domain=name,
                duration_s=float(t.get("duration_s", 0.0)), started_at=float(t["started_at"]),
                attempts=[attempt_from_dict(a) for a in t.get("attempts", ())],
                evidence=evidence_from_dict(t.get("evidence", {})), tags=tuple(t.get("tags", ())),
            )
            evs.append(TestFinished(run_id=rid, result=r, ts=r.started_at + r.duration_s))
        end = d.get("finished_at")
        for metric, value in d.get("metrics", {}).items():
            evs.append(MetricRecorded(run_id=rid, domain=name, test="", name=metric, value=float(value),
                                      ts=float(end if end is not None else d["started_at"])))
        if end is not None:
            evs.append(DomainFinished(run_id=rid, domain=name, status=str(d["status"]), counts=dict(d.get("tally", {})),
                                      reason=str(d.get("reason", "")), ts=float(end)))
    for k in doc.get("kernel_events", ()):
        evs.append(KernelEventRaised(vm=str(k.get("vm", "")), report=kreport_from_dict(k), run_id=rid,
                                     domain=str(k.get("domain", "")), test=str(k.get("test", "")),
                                     expected=bool(k.get("expected", False)), ts=float(k["ts"])))
    for s in doc.get("vm_states", ()):
        if s.get("in_run", True):  # other VMs' changes belong to their own runs
            evs.append(VmStateChanged(vm=str(s["vm"]), state=str(s["state"]), reason=str(s.get("reason", "")),
                                      ts=float(s["ts"])))
    for r in doc.get("vm_ready", ()):  # reports from v7 on
        evs.append(VmReady(vm=str(r["vm"]), mode=str(r["mode"]), seconds=float(r["seconds"]),
                           reset=bool(r.get("reset", False)), ts=float(r["ts"])))
    for p in doc.get("infra_problems", ()):
        evs.append(InfraProblem(message=str(p["message"]), vm=str(p.get("vm", "")), run_id=rid, ts=float(p["ts"])))
    if run.get("finished_at") is not None:
        evs.append(RunFinished(run_id=rid, status=str(run["status"]), counts=dict(run.get("reported_counts", {})),
                               reason=str(run.get("reason", "")), ts=float(run["finished_at"])))
    return evs


# -- the merge ---------------------------------------------------------------------------
def clash_id(run_id: str, started_at: float) -> str:
    """The id an incoming run gets when another run here has its id: stable, so the
    next import of the same run finds it."""
    return f"{run_id}~{hashlib.sha256(f'{run_id}|{started_at!r}'.encode()).hexdigest()[:6]}"


def _shared_columns(dst: Conn, src: Conn, table: str) -> list[str]:
    """Columns both histories have (a later migration's column only where both do);
    none for a table one of them lacks."""
    if not (has_table(dst, table) and has_table(src, table)):
        return []
    theirs = set(table_columns(src, table))
    return [c for c in table_columns(dst, table) if c in theirs]


@dataclass(frozen=True, slots=True)
class _Columns:
    runs: list[str]
    children: dict[str, list[str]]  # _RUN_TABLES, without id and the trigger-kept counts
    events: list[str]  # kernel_events, without id
    occurrences: list[str]  # crash_occurrences, without id and kernel_event_id

    @classmethod
    def of(cls, dst: Conn, src: Conn) -> _Columns:
        children = {t: [c for c in _shared_columns(dst, src, t) if c != "id" and c not in _TRIGGER_COUNTED]
                    for t in _RUN_TABLES}
        return cls(
            runs=_shared_columns(dst, src, "runs"),
            children={t: cols for t, cols in children.items() if cols},
            events=[c for c in _shared_columns(dst, src, "kernel_events") if c != "id"],
            occurrences=[c for c in _shared_columns(dst, src, "crash_occurrences")
                         if c not in ("id", "kernel_event_id")],
        )


def _insert_sql(table: str, cols: Sequence[str], tail: str = "") -> str:
    return f"INSERT INTO {table}({', '.join(cols)}) VALUES ({', '.join('?' for _ in cols)}){tail}"


def _merge(dst: Conn, src: Conn, summary: ImportSummary) -> ImportSummary:
    """Each run in its own transaction of the destination's writer: short ones, so the
    cockpits writing to a shared PostgreSQL meanwhile are held up only briefly."""
    cols = _Columns.of(dst, src)
    dead = DeadRuns(src)
    runs = src.execute("SELECT * FROM runs ORDER BY started_at, id").fetchall()
    for run in runs:
        src_id, started_at = run["id"], run["started_at"]
        # A run its cockpit left `running` when it died never finishes: it comes in as
        # the source's readers show it, and as a writer would mark it there.
        ended = as_aborted(run) if dead.gone(run) else None
        if run["status"] == "running" and ended is None:
            summary.running += 1
            continue
        with write_tx(dst):
            new_id = _place_run(dst, src, cols.runs, src_id, started_at, ended)
            if new_id is None:
                summary.present += 1
                continue
            results = _copy_children(dst, src, cols, src_id, new_id, ended)
        if new_id != src_id:
            summary.renamed[src_id] = new_id
        summary.added.append(new_id)
        summary.results += results
    return summary


def _place_run(dst: Conn, src: Conn, run_cols: list[str], src_id: str, started_at: float,
               ended: tuple[str, float, str] | None) -> str | None:
    """Insert the run's row under its id (or its clash id); None if it is here already.
    ``ended``: (status, finished_at, reason) of a run whose cockpit died."""
    row = list(fetch_tuples(src, f"SELECT {', '.join(run_cols)} FROM runs WHERE id=?", (src_id,))[0])
    if ended is not None:
        for col, value in zip(("status", "finished_at", "reason"), ended, strict=True):
            row[run_cols.index(col)] = value
    for _ in range(3):
        new_id = src_id
        here = dst.execute("SELECT started_at FROM runs WHERE id=?", (src_id,)).fetchone()
        if here is not None:
            if here[0] == started_at:
                return None
            new_id = clash_id(src_id, started_at)
            if dst.execute("SELECT 1 FROM runs WHERE id=?", (new_id,)).fetchone():
                return None  # imported before, under its clash id
        values = [new_id if c == "id" else v for c, v in zip(run_cols, row, strict=True)]
        if dst.execute(_insert_sql("runs", run_cols, " ON CONFLICT DO NOTHING RETURNING id"), values).fetchone():
            return new_id
        # Another import stored that id between our look and our insert (PostgreSQL's
        # insert waited for it to commit): look again.
    raise StoreError(f"run {src_id} kept changing in the destination while it was imported")


def _copy_children(dst: Conn, src: Conn, cols: _Columns, src_id: str, new_id: str,
                   ended: tuple[str, float, str] | None) -> int:
    """The run's rows of every other table; returns the number of test results."""
    results = 0
    for table, tcols in cols.children.items():  # domain_runs first: its trigger counts the results after it
        rows = fetch_tuples(src, f"SELECT {', '.join(tcols)} FROM {table} WHERE run_id=? ORDER BY id", (src_id,))
        if not rows:
            continue
        if table == "domain_runs" and ended is not None:
            rows = [_domain_cut(tcols, r, ended[1]) for r in rows]
        at = tcols.index("run_id")
        dst.executemany(_insert_sql(table, tcols), [(*r[:at], new_id, *r[at + 1:]) for r in rows])
        if table == "test_results":
            results = len(rows)
    _merge_kernel_events(dst, src, cols, src_id, new_id)
    return results


def _domain_cut(cols: list[str], row: tuple[Any, ...], finished_at: float) -> tuple[Any, ...]:
    """A domain run still running when its cockpit died: aborted, as the writer marks it."""
    out = list(row)
    if out[cols.index("status")] == "running":
        out[cols.index("status")] = "aborted"
        out[cols.index("finished_at")] = finished_at
        out[cols.index("reason")] = domain_died_reason(out[cols.index("current_test")])
    return tuple(out)


def _merge_kernel_events(dst: Conn, src: Conn, cols: _Columns, src_id: str, new_id: str) -> None:
    """Kernel events get new row ids here; their crash occurrences follow them, and the
    signatures' counts and first/last seen grow as the writer grows them."""
    if not cols.events:
        return
    ev_cols = ["id", *cols.events]
    ids: dict[int, int] = {}
    at = cols.events.index("run_id")
    insert = _insert_sql("kernel_events", cols.events, " RETURNING id")
    for old, *values in fetch_tuples(src, f"SELECT {', '.join(ev_cols)} FROM kernel_events WHERE run_id=? ORDER BY id",
                                     (src_id,)):
        values[at] = new_id
        ids[int(old)] = int(dst.execute(insert, values).fetchone()[0])
    if not ids or not cols.occurrences:
        return
    occ = fetch_tuples(src, f"SELECT kernel_event_id, {', '.join(cols.occurrences)} FROM crash_occurrences "
                            "WHERE run_id=? ORDER BY id", (src_id,))
    at = cols.occurrences.index("run_id")
    dst.executemany(_insert_sql("crash_occurrences", [*cols.occurrences, "kernel_event_id"]),
                    [(*r[1:at + 1], new_id, *r[at + 2:], ids.get(int(r[0]), 0)) for r in occ])
    signatures = fetch_tuples(
        src,
        "SELECT s.signature, s.kind, s.title, s.severity, o.first_seen, o.last_seen, o.n "
        "FROM (SELECT signature, min(ts) AS first_seen, max(ts) AS last_seen, count(*) AS n "
        "      FROM crash_occurrences WHERE run_id=? GROUP BY signature) o "
        "JOIN crash_signatures s ON s.signature = o.signature ORDER BY s.signature",
        (src_id,),
    )
    for sig, kind, title, severity, first, last, n in signatures:
        dst.execute(SIGNATURE_UPSERT, (sig, kind, title, int(severity), first, last, int(n), new_id))


__all__ = ["JSON_FORMAT", "ImportSummary", "clash_id", "import_history", "report_events"]
