"""The history DB's schema as an ordered list of forward migrations.

Version N is "the first N migrations applied"; it lives in ``PRAGMA user_version``
(cheap to read before touching anything) and, for humans, in the ``schema_version``
table. ``PRAGMA application_id`` marks the file as ours: a file without it is never
written to. A plain numbered list rather than ``sqlite_utils.Migrations`` because we
need the "written by a newer cockpit" check (user_version > ours) before migrating.

Times are wall-clock epoch seconds (REAL); JSON columns are TEXT.
"""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Callable
from typing import Any

APPLICATION_ID = 0x56584643  # "VXFC"
SQLITE_MAGIC = b"SQLite format 3\x00"

# Tables every valid history DB has (checked before anything is written). All were
# created by v1, so db.verify_schema expects them at every version: a table added by a
# later migration must not be listed here.
REQUIRED_TABLES = frozenset(
    {
        "schema_version",
        "runs",
        "domain_runs",
        "test_results",
        "metrics",
        "kernel_events",
        "crash_signatures",
        "crash_occurrences",
        "vm_samples",
        "vm_states",
        "infra_problems",
    }
)

_V1 = """
CREATE TABLE schema_version (
    version INTEGER PRIMARY KEY,
    name TEXT NOT NULL,
    applied_at REAL NOT NULL
);

CREATE TABLE runs (
    id TEXT PRIMARY KEY,
    started_at REAL NOT NULL,
    finished_at REAL,
    status TEXT NOT NULL,              -- running | passed | failed | errored | aborted
    env TEXT NOT NULL DEFAULT '',
    profile TEXT NOT NULL DEFAULT '',
    config_path TEXT NOT NULL DEFAULT '',
    config_json TEXT NOT NULL DEFAULT '{}',
    domains TEXT NOT NULL DEFAULT '[]', -- planned domains, JSON list
    counts TEXT NOT NULL DEFAULT '{}',  -- TestStatus -> count, from RunFinished
    reason TEXT NOT NULL DEFAULT '',
    last_event_at REAL,                 -- newest event of the run: an abandoned run's end
    -- who is writing it, to tell a live run from one whose process died
    pid INTEGER,
    proc_start INTEGER,                 -- /proc/<pid>/stat starttime: guards against pid reuse
    hostname TEXT NOT NULL DEFAULT '',
    boot_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX runs_started ON runs(started_at);
CREATE INDEX runs_env_started ON runs(env, started_at);
CREATE INDEX runs_status ON runs(status);

CREATE TABLE domain_runs (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id),
    domain TEXT NOT NULL,
    vm TEXT NOT NULL DEFAULT '',
    planned_tests TEXT NOT NULL DEFAULT '[]',
    started_at REAL NOT NULL,
    finished_at REAL,
    status TEXT NOT NULL,               -- running | passed | failed | errored | skipped | aborted
    counts TEXT NOT NULL DEFAULT '{}',
    reason TEXT NOT NULL DEFAULT '',
    current_test TEXT NOT NULL DEFAULT '' -- last TestStarted: names the culprit of an abort
);
CREATE UNIQUE INDEX domain_runs_run_domain ON domain_runs(run_id, domain);
CREATE INDEX domain_runs_domain_started ON domain_runs(domain, started_at);

CREATE TABLE test_results (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id),
    domain TEXT NOT NULL,
    test TEXT NOT NULL,
    status TEXT NOT NULL,               -- TestStatus value
    message TEXT NOT NULL DEFAULT '',
    started_at REAL NOT NULL,
    finished_at REAL NOT NULL,
    duration_s REAL NOT NULL,
    attempt_count INTEGER NOT NULL DEFAULT 1,
    attempts TEXT NOT NULL DEFAULT '[]',  -- [{number, status, message, duration_s}]
    evidence TEXT NOT NULL DEFAULT '{}',  -- {commands, kernel_log, kernel_events, notes}
    metrics TEXT NOT NULL DEFAULT '{}',
    artifacts TEXT NOT NULL DEFAULT '{}',
    tags TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX test_results_trend ON test_results(domain, test, started_at);
CREATE INDEX test_results_run ON test_results(run_id, domain);

CREATE TABLE metrics (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id),
    domain TEXT NOT NULL,
    test TEXT NOT NULL,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    ts REAL NOT NULL,
    env TEXT NOT NULL DEFAULT ''
);
-- one value per metric per test per run: MetricRecorded and TestResult.metrics both land here
CREATE UNIQUE INDEX metrics_run_key ON metrics(run_id, domain, test, name);
CREATE INDEX metrics_trend ON metrics(name, domain, test, ts);

CREATE TABLE kernel_events (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL DEFAULT '',
    domain TEXT NOT NULL DEFAULT '',
    test TEXT NOT NULL DEFAULT '',
    vm TEXT NOT NULL DEFAULT '',
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    signature TEXT NOT NULL,
    severity INTEGER NOT NULL,
    line INTEGER NOT NULL,
    module TEXT,
    text TEXT NOT NULL,
    expected INTEGER NOT NULL DEFAULT 0,
    ts REAL NOT NULL
);
CREATE INDEX kernel_events_run ON kernel_events(run_id, ts);
CREATE INDEX kernel_events_signature ON kernel_events(signature, ts);

CREATE TABLE crash_signatures (
    signature TEXT PRIMARY KEY,         -- "kind: title"
    kind TEXT NOT NULL,
    title TEXT NOT NULL,
    severity INTEGER NOT NULL,
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    count INTEGER NOT NULL,
    last_run_id TEXT NOT NULL DEFAULT ''
);
CREATE INDEX crash_signatures_last_seen ON crash_signatures(last_seen);

CREATE TABLE crash_occurrences (
    id INTEGER PRIMARY KEY,
    signature TEXT NOT NULL REFERENCES crash_signatures(signature),
    kernel_event_id INTEGER NOT NULL REFERENCES kernel_events(id),
    run_id TEXT NOT NULL DEFAULT '',
    domain TEXT NOT NULL DEFAULT '',
    test TEXT NOT NULL DEFAULT '',
    vm TEXT NOT NULL DEFAULT '',
    ts REAL NOT NULL
);
CREATE INDEX crash_occurrences_signature ON crash_occurrences(signature, ts);
CREATE INDEX crash_occurrences_run ON crash_occurrences(run_id);

CREATE TABLE vm_samples (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL,
    vm TEXT NOT NULL,
    ts REAL NOT NULL,
    state TEXT NOT NULL,
    cpu_pct REAL NOT NULL,
    mem_kb INTEGER NOT NULL,
    block_rd_bytes INTEGER NOT NULL DEFAULT 0,
    block_wr_bytes INTEGER NOT NULL DEFAULT 0,
    net_rx_bytes INTEGER NOT NULL DEFAULT 0,
    net_tx_bytes INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX vm_samples_run_vm ON vm_samples(run_id, vm, ts);

CREATE TABLE vm_states (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL DEFAULT '',
    vm TEXT NOT NULL,
    state TEXT NOT NULL,
    reason TEXT NOT NULL DEFAULT '',
    ts REAL NOT NULL
);
CREATE INDEX vm_states_run ON vm_states(run_id, ts);

CREATE TABLE infra_problems (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL DEFAULT '',
    vm TEXT NOT NULL DEFAULT '',
    message TEXT NOT NULL,
    ts REAL NOT NULL
);
CREATE INDEX infra_problems_run ON infra_problems(run_id, ts);
"""


def _v1_initial(conn: sqlite3.Connection) -> None:
    for stmt in _statements(_V1):
        conn.execute(stmt)


def _statements(script: str) -> list[str]:
    # executescript() would COMMIT our transaction; split instead (no ';' inside our DDL).
    body = "\n".join(line.split("--", 1)[0] for line in script.splitlines())
    return [s.strip() for s in body.split(";") if s.strip()]


# v2: the trend and run-list reads at scale (10k runs, 1M results; bench/history_screen.py).
# The two test_results indexes keep their names and leading columns (every query that
# used them still does) and gain the columns those reads fetch, so the reads never
# touch the ~3 kB result rows: the pass-rate trend counts statuses per domain run and
# the run list counts them per run (test_results_run); the duration trend reads
# status/duration/attempts per result (test_results_trend).
_V2 = """
DROP INDEX test_results_run;
CREATE INDEX test_results_run ON test_results(run_id, domain, status);
DROP INDEX test_results_trend;
CREATE INDEX test_results_trend ON test_results(domain, test, started_at, status, duration_s, attempt_count, run_id);
"""


def _v2_covering_trend_indexes(conn: sqlite3.Connection) -> None:
    for stmt in _statements(_V2):
        conn.execute(stmt)


# v3: result counts per domain run, kept by triggers, so the pass-rate trend reads one
# row per run of the domain (10k at 10k runs) instead of folding its ~170k results
# (~0.2 s). Triggers rather than writer code: every way a result row is written,
# changed or removed (the writer, a bulk load, a hand repair) keeps them exact. A
# result stored before its domain row (the writer never does) is counted when that
# row is inserted. Part of the shipped v3 migration: never edit, add a migration.
_COUNTS = {  # column: which results it counts, for a result row named {r}
    "n_passed": "{r}.status = 'PASSED'",
    "n_bad": "{r}.status IN ('FAILED','TIMEOUT','ERROR')",
    "n_skipped": "{r}.status = 'SKIPPED'",
    "n_results": "1",
}


def _recount(key: str) -> str:
    """The counts of the results of domain run ``key`` (an expression giving run_id
    and domain, e.g. ``NEW``), read from the covering index test_results_run."""
    counts = ", ".join(f"count(*) FILTER (WHERE {cond.format(r='t')})" for cond in _COUNTS.values())
    return (f"({', '.join(_COUNTS)}) = (SELECT {counts} FROM test_results t "
            f"WHERE t.run_id = {key}.run_id AND t.domain = {key}.domain)")


def _bump(sign: str, row: str) -> str:
    sets = ", ".join(f"{col} = {col} {sign} ({cond.format(r=row)})" for col, cond in _COUNTS.items())
    return f"UPDATE domain_runs SET {sets} WHERE run_id = {row}.run_id AND domain = {row}.domain;"


_V3_TRIGGERS = (
    f"CREATE TRIGGER test_results_count_insert AFTER INSERT ON test_results BEGIN {_bump('+', 'NEW')} END",
    f"CREATE TRIGGER test_results_count_delete AFTER DELETE ON test_results BEGIN {_bump('-', 'OLD')} END",
    "CREATE TRIGGER test_results_count_update AFTER UPDATE OF run_id, domain, status ON test_results "
    f"BEGIN {_bump('-', 'OLD')} {_bump('+', 'NEW')} END",
    "CREATE TRIGGER domain_runs_count_insert AFTER INSERT ON domain_runs "
    f"BEGIN UPDATE domain_runs SET {_recount('NEW')} WHERE id = NEW.id; END",
)


# The trend's index keeps its name and leading columns and covers what the trend reads;
# runs_id_env serves the trend's join to the run's env without reading ~2 kB run rows.
_V3_INDEXES = f"""
DROP INDEX domain_runs_domain_started;
CREATE INDEX domain_runs_domain_started ON domain_runs(domain, started_at, run_id, finished_at, status, {', '.join(_COUNTS)});
CREATE INDEX runs_id_env ON runs(id, env);
"""


def _v3_domain_run_counts(conn: sqlite3.Connection) -> None:
    for col in _COUNTS:
        conn.execute(f"ALTER TABLE domain_runs ADD COLUMN {col} INTEGER NOT NULL DEFAULT 0")
    conn.execute(f"UPDATE domain_runs SET {_recount('domain_runs')}")
    for stmt in (*_V3_TRIGGERS, *_statements(_V3_INDEXES)):
        conn.execute(stmt)


# v4: one baseline run per environment (`vexfs-cockpit baseline set`), which `analyze`
# compares the newest run with instead of the run before it. Not in REQUIRED_TABLES:
# a DB at v3 has none, and a reader treats a missing table as "no baselines".
_V4 = """
CREATE TABLE baselines (
    env TEXT PRIMARY KEY,
    run_id TEXT NOT NULL,
    set_at REAL NOT NULL
);
"""


def _v4_baselines(conn: sqlite3.Connection) -> None:
    for stmt in _statements(_V4):
        conn.execute(stmt)


def _v5_provenance(conn: sqlite3.Connection) -> None:
    conn.execute("ALTER TABLE runs ADD COLUMN provenance TEXT NOT NULL DEFAULT '{}'")


# v6: the verdict on each changed test of a run after its confirmation reruns on a fresh
# VM (engine/confirm.py): regression, flaky, fixed, still-failing, known, ... Not in
# REQUIRED_TABLES: an older DB has none, and readers treat a missing table as "no verdicts".
_V6 = """
CREATE TABLE test_verdicts (
    id INTEGER PRIMARY KEY,
    run_id TEXT NOT NULL REFERENCES runs(id),
    domain TEXT NOT NULL,
    test TEXT NOT NULL,
    verdict TEXT NOT NULL,
    now TEXT NOT NULL DEFAULT '',          -- the test's status in the run
    before TEXT NOT NULL DEFAULT '',       -- its status in the reference ('' = not run there)
    reference TEXT NOT NULL DEFAULT '',    -- "baseline RUN" | "run RUN"
    reruns TEXT NOT NULL DEFAULT '[]',     -- the reruns' statuses, JSON list
    note TEXT NOT NULL DEFAULT '',
    ts REAL NOT NULL
);
CREATE UNIQUE INDEX test_verdicts_run_test ON test_verdicts(run_id, domain, test);
"""


def _v6_test_verdicts(conn: sqlite3.Connection) -> None:
    for stmt in _statements(_V6):
        conn.execute(stmt)


# v7: how long each VM of a run took to come up (VmReady: a cold boot or a snapshot
# restore, until SSH answered), so boot-time changes show in the history, not only on
# the live metrics endpoint. The first migration after PostgreSQL's baseline (v6):
# written once for both backends, types through dialect.column_types. Not in
# REQUIRED_TABLES: readers treat a missing table as "not measured".
_V7 = """
CREATE TABLE vm_ready (
    {id},
    run_id TEXT NOT NULL DEFAULT '',
    vm TEXT NOT NULL,
    mode TEXT NOT NULL,                   -- boot | restore
    seconds {real} NOT NULL,
    reset INTEGER NOT NULL DEFAULT 0,     -- 1: came back after a reset
    ts {real} NOT NULL
);
CREATE INDEX vm_ready_run ON vm_ready(run_id, ts)
"""


def _v7_vm_ready(conn: Any) -> None:
    from vexfs_cockpit.store.dialect import column_types

    for stmt in _statements(_V7.format(**column_types(conn))):
        conn.execute(stmt)


# v8: the write batches a PostgreSQL writer committed, by id, so that the batch it
# sends again after a lost connection is not stored twice when the first COMMIT had
# landed before the link broke (writer.py). Kept a day. SQLite's writer never loses its
# connection and does not use it.
_V8 = """
CREATE TABLE write_batches (
    id TEXT PRIMARY KEY,
    ts {real} NOT NULL
);
CREATE INDEX write_batches_ts ON write_batches(ts)
"""


def _v8_write_batches(conn: Any) -> None:
    from vexfs_cockpit.store.dialect import column_types

    for stmt in _statements(_V8.format(**column_types(conn))):
        conn.execute(stmt)


# A migration takes either backend's connection from v7 on (PostgreSQL starts at v6).
Migration = Callable[[Any], None]

# Append only. Never edit a shipped migration: write a new one.
MIGRATIONS: tuple[tuple[str, Migration], ...] = (
    ("initial", _v1_initial),
    ("covering trend indexes", _v2_covering_trend_indexes),
    ("domain run result counts", _v3_domain_run_counts),
    ("baselines", _v4_baselines),
    ("run provenance", _v5_provenance),
    ("test verdicts", _v6_test_verdicts),
    ("vm ready times", _v7_vm_ready),
    ("write batches", _v8_write_batches),
)

LATEST_VERSION = len(MIGRATIONS)
COUNTS_VERSION = 3  # domain_runs carries its results' counts (n_passed, ...) from here on


def migrate(conn: sqlite3.Connection) -> list[int]:
    """Apply pending migrations, each in its own IMMEDIATE transaction.

    IMMEDIATE takes the write lock before reading user_version, so two processes
    opening a fresh DB at once cannot both apply version 1. Returns versions applied.
    """
    applied: list[int] = []
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = conn.execute("PRAGMA user_version").fetchone()[0]
            if current >= LATEST_VERSION:
                conn.execute("COMMIT")
                return applied
            name, fn = MIGRATIONS[current]
            fn(conn)
            version = current + 1
            conn.execute(
                "INSERT INTO schema_version(version, name, applied_at) VALUES (?, ?, ?)",
                (version, name, time.time()),
            )
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute(f"PRAGMA application_id = {APPLICATION_ID}")
            conn.execute("COMMIT")
            applied.append(version)
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
