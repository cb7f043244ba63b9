"""``history import``: merge another history into this one (CI shards, another machine).

The source is another history DB (any schema version we know: migrated on a private
copy, the file itself is never written) or a JSON run report (``reports/json_report``
format ``vexfs-cockpit-run/1``, turned into a one-run DB by the store's own writer).
Either way the copy is then merged in one transaction: all of it or, on any error,
nothing, and the stored runs are never touched.

A run is identified by its id *and* its start time, both of which every schema version
and every JSON report carries: importing twice adds nothing. Two different runs with
the same id (ids are second + 16 random bits; CI shards start in the same second) are
both kept: the incoming one under ``ID~XXXXXX`` (a hash of its identity, so a repeated
import finds it again). Runs still ``running`` in the source are left out (their
results are not final); import again once they have finished.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import tempfile
from collections.abc import Iterator, Mapping
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
    verify_schema,
)
from vexfs_cockpit.store.liveness import ProcessIdentity
from vexfs_cockpit.store.schema import migrate

JSON_FORMAT = "vexfs-cockpit-run/1"
# Tables whose rows belong to one run (by run_id) and carry no reference to another row.
_RUN_TABLES = ("domain_runs", "test_results", "metrics", "vm_samples", "vm_states", "infra_problems")
# Kept by triggers on the destination (schema v3): recounted there, never copied.
_TRIGGER_COUNTED = frozenset({"n_passed", "n_bad", "n_skipped", "n_results"})


@dataclass(slots=True)
class ImportSummary:
    source: str
    added: list[str] = field(default_factory=list)  # run ids as stored here
    renamed: dict[str, str] = field(default_factory=dict)  # source id -> id here (an id clash)
    present: int = 0  # already here: skipped
    running: int = 0  # unfinished in the source: skipped
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


def import_history(dest: Path, source: Path) -> ImportSummary:
    """Merge ``source`` (a history DB or a JSON run report) into the DB at ``dest``.
    StoreError (one line naming the file) for a source we cannot read; ``dest`` is
    then unchanged."""
    with _as_db(source) as copy:
        conn = open_writer(dest, deep_check=False)
        try:
            return _merge(conn, copy, ImportSummary(str(source)))
        except sqlite3.DatabaseError as exc:
            raise StoreError(f"cannot import {source} into history DB {dest} ({exc}); nothing was imported") from None
        finally:
            conn.close()


# -- the source as a private, migrated DB ------------------------------------------------
@contextmanager
def _as_db(source: Path) -> Iterator[Path]:
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


def _columns(conn: sqlite3.Connection, table: str) -> list[str]:
    """Columns both DBs have (a later migration's column only where both do)."""
    main = [r[1] for r in conn.execute(f"PRAGMA main.table_info({table})")]
    src = {r[1] for r in conn.execute(f"PRAGMA src.table_info({table})")}
    return [c for c in main if c in src]


def _merge(conn: sqlite3.Connection, copy: Path, summary: ImportSummary) -> ImportSummary:
    conn.execute("ATTACH DATABASE ? AS src", (str(copy),))
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            _merge_runs(conn, summary)
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.execute("DETACH DATABASE src")
    return summary


def _merge_runs(conn: sqlite3.Connection, summary: ImportSummary) -> None:
    run_cols = _columns(conn, "runs")
    child_cols = {t: [c for c in _columns(conn, t) if c != "id" and c not in _TRIGGER_COUNTED] for t in _RUN_TABLES}
    event_cols = [c for c in _columns(conn, "kernel_events") if c != "id"]
    occ_cols = [c for c in _columns(conn, "crash_occurrences") if c not in ("id", "kernel_event_id")]
    runs = conn.execute("SELECT id, started_at, status FROM src.runs ORDER BY started_at, id").fetchall()
    for src_id, started_at, status in runs:
        if status == "running":
            summary.running += 1
            continue
        new_id = src_id
        here = conn.execute("SELECT started_at FROM main.runs WHERE id=?", (src_id,)).fetchone()
        if here is not None:
            if here[0] == started_at:
                summary.present += 1
                continue
            new_id = clash_id(src_id, started_at)
            if conn.execute("SELECT 1 FROM main.runs WHERE id=?", (new_id,)).fetchone():
                summary.present += 1  # imported before, under its clash id
                continue
            summary.renamed[src_id] = new_id
        sel = ", ".join("?" if c == "id" else c for c in run_cols)
        conn.execute(f"INSERT INTO main.runs({', '.join(run_cols)}) SELECT {sel} FROM src.runs WHERE id=?",
                     (new_id, src_id))
        for table, cols in child_cols.items():  # domain_runs first: its trigger counts the results after it
            sel = ", ".join("?" if c == "run_id" else c for c in cols)
            conn.execute(f"INSERT INTO main.{table}({', '.join(cols)}) SELECT {sel} FROM src.{table} "
                         "WHERE run_id=? ORDER BY id", (new_id, src_id))
        summary.results += conn.execute("SELECT count(*) FROM src.test_results WHERE run_id=?", (src_id,)).fetchone()[0]
        _merge_kernel_events(conn, src_id, new_id, event_cols, occ_cols)
        summary.added.append(new_id)


def _merge_kernel_events(conn: sqlite3.Connection, src_id: str, new_id: str,
                         event_cols: list[str], occ_cols: list[str]) -> None:
    """Kernel events get new row ids here; their crash occurrences follow them, and the
    signatures' counts and first/last seen grow as the writer grows them."""
    sel = ", ".join("?" if c == "run_id" else c for c in event_cols)
    ids: dict[int, int] = {}
    for (old,) in conn.execute("SELECT id FROM src.kernel_events WHERE run_id=? ORDER BY id", (src_id,)).fetchall():
        cur = conn.execute(f"INSERT INTO main.kernel_events({', '.join(event_cols)}) "
                           f"SELECT {sel} FROM src.kernel_events WHERE id=?", (new_id, old))
        ids[old] = int(cur.lastrowid or 0)
    if not ids:
        return
    occ_sel = ", ".join("?" if c == "run_id" else c for c in occ_cols)
    for (occ_id, event_id) in conn.execute(
            "SELECT id, kernel_event_id FROM src.crash_occurrences WHERE run_id=? ORDER BY id", (src_id,)).fetchall():
        conn.execute(f"INSERT INTO main.crash_occurrences({', '.join(occ_cols)}, kernel_event_id) "
                     f"SELECT {occ_sel}, ? FROM src.crash_occurrences WHERE id=?",
                     (new_id, ids.get(event_id, 0), occ_id))
    conn.execute(
        "INSERT INTO main.crash_signatures(signature, kind, title, severity, first_seen, last_seen, count, last_run_id) "
        "SELECT s.signature, s.kind, s.title, s.severity, min(o.ts), max(o.ts), count(*), ? "
        "FROM src.crash_occurrences o JOIN src.crash_signatures s ON s.signature = o.signature "
        "WHERE o.run_id=? GROUP BY s.signature "
        "ON CONFLICT(signature) DO UPDATE SET count=count+excluded.count, "
        "first_seen=min(first_seen, excluded.first_seen), severity=max(severity, excluded.severity), "
        "last_run_id=CASE WHEN excluded.last_seen >= last_seen THEN excluded.last_run_id ELSE last_run_id END, "
        "last_seen=max(last_seen, excluded.last_seen)",
        (new_id, src_id),
    )


__all__ = ["JSON_FORMAT", "ImportSummary", "clash_id", "import_history", "report_events"]
