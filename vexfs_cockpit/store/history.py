"""Read queries over the history DB: run lists, trends, comparisons, crash signatures.

Plain synchronous functions on a ``History`` object; every call opens its own
read-only connection, so any thread may call them (the TUI does, from
``@work(thread=True)`` workers) while the recorder writes (WAL). A DB that does not
exist yet reads as empty. Times are epoch seconds.

Definitions used below:
- a *bad* result is FAILED, TIMEOUT or ERROR; SKIPPED counts as neither pass nor fail.
- a domain's *pass rate* in a run is passed / (passed + bad); None if nothing ran.
- a run still marked *running* whose process is certainly dead (store/liveness.py: pid,
  start time, host and boot all checked, as the writer does when it opens; on
  PostgreSQL: no session holds the run's lock, pg.py) reads as
  *aborted*, with the reason and end time the writer would give it: a SIGKILLed run
  does not show "running" until the next writer opens the DB, and a read-only DB is
  never written to for it.
- a test is *flaky* (compare_runs) if in the newer run it passed only after a retry,
  or if over the last ``window`` runs of that env (up to the newer run) its outcome
  flipped between pass and bad at least twice. One flip is a regression or a fix,
  not flakiness. Flaky tests may also appear in new_failures/fixed.
"""

from __future__ import annotations

import json
import re
import statistics
import time
from collections.abc import Iterable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, NamedTuple

from vexfs_cockpit.engine.results import TestResult, TestStatus
from vexfs_cockpit.errors import UsageError
from vexfs_cockpit.klog.model import KernelReport, Severity
from vexfs_cockpit.store.codec import (
    attempt_from_dict,
    evidence_from_dict,
    retried_pass,
)
from vexfs_cockpit.store.db import reading
from vexfs_cockpit.store.dialect import (
    Conn,
    fetch_tuples,
    has_table,
    is_pg,
    json_text,
    schema_version,
    table_columns,
)
from vexfs_cockpit.store.location import StoreLocation

if TYPE_CHECKING:
    from vexfs_cockpit.store.pg import (
        Readers,  # psycopg is imported only for PostgreSQL
    )
from vexfs_cockpit.store.liveness import (
    ProcessIdentity,
    domain_died_reason,
    owner_gone,
    run_died_reason,
)
from vexfs_cockpit.store.report import (
    DomainReport,
    InfraRecord,
    KernelEventRecord,
    RunInfo,
    RunReport,
    VerdictRecord,
    VmReadyRecord,
    VmStateRecord,
)
from vexfs_cockpit.store.schema import COUNTS_VERSION

BAD = (str(TestStatus.FAILED), str(TestStatus.TIMEOUT), str(TestStatus.ERROR))
_BAD_SQL = "('FAILED','TIMEOUT','ERROR')"
FINISHED_RUN_STATUSES = ("passed", "failed", "errored")

# The trend queries, kept here so a test can EXPLAIN QUERY PLAN them.
# A domain's pass rate per run reads the result counts the schema keeps per domain run
# (v3), from the covering index domain_runs_domain_started: one index entry per run of
# the domain, never its results. Ties on started_at break on run_id, which that index
# orders (its rowid comes last). runs_id_env gives the env without reading run rows;
# named because the planner prefers the primary key's index for the join.
DOMAIN_TREND_SQL = """
SELECT d.run_id, d.started_at, d.finished_at, d.status, r.env,
       d.n_passed AS passed, d.n_bad AS bad, d.n_skipped AS skipped, d.n_results AS total
FROM domain_runs d
JOIN runs r INDEXED BY runs_id_env ON r.id = d.run_id
WHERE d.domain = :domain AND d.started_at >= :since AND (:env IS NULL OR r.env = :env)
ORDER BY d.started_at, d.run_id
"""

# The same from a DB no writer has migrated to v3 yet (the TUI only reads): folds the
# results of each domain run from the covering index test_results_run (v2).
DOMAIN_TREND_FOLD_SQL = f"""
SELECT d.run_id, d.started_at, d.finished_at, d.status, r.env,
       count(t.id) FILTER (WHERE t.status = 'PASSED') AS passed,
       count(t.id) FILTER (WHERE t.status IN {_BAD_SQL}) AS bad,
       count(t.id) FILTER (WHERE t.status = 'SKIPPED') AS skipped,
       count(t.id) AS total
FROM domain_runs d
JOIN runs r ON r.id = d.run_id
LEFT JOIN test_results t ON t.run_id = d.run_id AND t.domain = d.domain
WHERE d.domain = :domain AND d.started_at >= :since AND (:env IS NULL OR r.env = :env)
GROUP BY d.started_at, d.run_id
ORDER BY d.started_at, d.run_id
"""

# What a pass-rate chart needs, per run of a domain that ran a test (passed or bad): four
# columns of the covering index, no join (runs' env is not asked for). ~11 ms for 10k
# runs vs ~30 ms for DOMAIN_TREND_SQL (bench/history_screen.py's bare SQL).
DOMAIN_PASS_RATE_SQL = """
SELECT run_id, started_at, n_passed, n_bad
FROM domain_runs
WHERE domain = :domain AND started_at >= :since AND n_passed + n_bad > 0
ORDER BY started_at, run_id
"""

TEST_DURATION_TREND_SQL = """
SELECT t.run_id, t.started_at, t.status, t.duration_s, t.attempt_count, r.env
FROM test_results t
JOIN runs r ON r.id = t.run_id
WHERE t.domain = :domain AND t.test = :test AND t.started_at >= :since
  AND (:env IS NULL OR r.env = :env)
ORDER BY t.started_at
"""



def metric_trend_sql(by_domain: bool, by_test: bool) -> str:
    """Optional filters are spelled out, not ``(:x IS NULL OR ...)``: a plan is made
    before the parameters are known, and only plain equalities let metrics_trend
    serve both the range on ts and the ORDER BY."""
    keys = ["name = :name"]
    if by_domain:
        keys.append("domain = :domain")
        if by_test:
            keys.append("test = :test")
    elif by_test:
        keys.append("test = :test")
    return (
        "SELECT run_id, ts, domain, test, name, value, env FROM metrics "
        f"WHERE {' AND '.join(keys)} AND ts >= :since AND (:env IS NULL OR env = :env) ORDER BY ts"
    )


# Newest first, a page at a time: :before_ts/:before_id is the last run of the page
# before (+inf and '' for the first page), so a page never repeats or skips a run, even
# when runs start meanwhile or share a start time.
LIST_RUNS_SQL = """
SELECT * FROM runs
WHERE started_at >= :since
  AND started_at <= :before_ts AND (started_at < :before_ts OR id < :before_id)
  AND (:env IS NULL OR env = :env)
  AND (:status IS NULL OR status = :status OR (:also_running = 1 AND status = 'running'))
  AND (:domain IS NULL OR EXISTS (SELECT 1 FROM domain_runs d WHERE d.run_id = runs.id AND d.domain = :domain))
  AND (:text IS NULL
       OR lower(id) LIKE lower(:text) ESCAPE '\\' OR lower(profile) LIKE lower(:text) ESCAPE '\\' OR lower(env) LIKE lower(:text) ESCAPE '\\'
       OR lower(reason) LIKE lower(:text) ESCAPE '\\' OR lower(config_path) LIKE lower(:text) ESCAPE '\\'
       OR EXISTS (SELECT 1 FROM test_results t WHERE t.run_id = runs.id
                  AND (lower(t.test) LIKE lower(:text) ESCAPE '\\' OR lower(t.message) LIKE lower(:text) ESCAPE '\\'))
       OR EXISTS (SELECT 1 FROM kernel_events k WHERE k.run_id = runs.id
                  AND lower(k.title) LIKE lower(:text) ESCAPE '\\'))
ORDER BY started_at DESC, id DESC
LIMIT :limit
"""

_PERIOD = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw])\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def parse_period(text: str) -> float:
    """'90m', '12h', '7d', '2w' -> seconds. UsageError otherwise."""
    m = _PERIOD.match(text or "")
    if not m:
        raise UsageError(f"bad period {text!r}: use a number and a unit s/m/h/d/w, e.g. 7d")
    return float(m.group(1)) * _UNIT_S[m.group(2)]


def since_period(text: str | None, now: float | None = None) -> float | None:
    return None if not text else (now if now is not None else time.time()) - parse_period(text)


# -- result rows ---------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class RunSummary:
    run_id: str
    started_at: float
    finished_at: float | None
    status: str
    env: str
    profile: str
    config_path: str
    reason: str
    counts: dict[str, int]  # TestStatus value -> stored results

    @property
    def duration_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def bad(self) -> int:
        return sum(self.counts.get(s, 0) for s in BAD)


# The trend points are NamedTuples, not frozen dataclasses: a chart reads ~10k of them
# and a frozen dataclass costs ~1.5 µs to build (15 ms per trend), a NamedTuple ~0.3 µs.
class DomainTrendPoint(NamedTuple):
    run_id: str
    started_at: float
    finished_at: float | None
    status: str
    env: str
    passed: int
    bad: int
    skipped: int
    total: int

    @property
    def pass_rate(self) -> float | None:
        ran = self.passed + self.bad
        return None if ran == 0 else self.passed / ran

    @property
    def duration_s(self) -> float | None:
        return None if self.finished_at is None else self.finished_at - self.started_at


class PassRatePoint(NamedTuple):
    """A run of a domain that ran at least one test (passed or bad)."""

    run_id: str
    started_at: float
    passed: int
    bad: int

    @property
    def pass_rate(self) -> float:
        return self.passed / (self.passed + self.bad)


class DurationPoint(NamedTuple):
    run_id: str
    started_at: float
    status: str
    duration_s: float
    attempts: int
    env: str


@dataclass(frozen=True, slots=True)
class MetricPoint:
    run_id: str
    ts: float
    domain: str
    test: str
    name: str
    value: float
    env: str


@dataclass(frozen=True, slots=True)
class RecentCatalog:
    """What the newest runs hold, for filter and trend pickers (see History.recent_catalog)."""

    envs: list[str]  # sorted, non-empty envs of the newest ``env_runs`` runs
    tests: dict[str, set[str]]  # domain -> planned and stored tests of the newest ``test_runs`` runs
    metrics: list[tuple[str, str, str]]  # as metric_names()


@dataclass(frozen=True, slots=True)
class TestDelta:
    __test__ = False
    domain: str
    test: str
    before: str | None  # status in run a (None: not run there)
    after: str | None  # status in run b
    message: str = ""  # run b's message (or a's, when b lacks the test)


@dataclass(frozen=True, slots=True)
class RunComparison:
    a: str
    b: str
    new_failures: list[TestDelta]
    fixed: list[TestDelta]
    still_failing: list[TestDelta]
    flaky: list[TestDelta]
    # Tests one run has and the other does not (a domain left out, a test added).
    only_before: list[TestDelta] = field(default_factory=list)
    only_after: list[TestDelta] = field(default_factory=list)
    # Same outcome, but a duration or a metric moved past COMPARE_DURATION/COMPARE_METRIC;
    # the message says what and by how much.
    changed: list[TestDelta] = field(default_factory=list)


# A duration "changed" past both: relative and absolute (timing noise under TCG); a metric past the relative one.
COMPARE_DURATION = (0.25, 0.1)
COMPARE_METRIC = 0.10


def _moved(before: float, after: float, rel: float, floor: float = 0.0) -> bool:
    diff = abs(after - before)
    return diff > floor and diff > rel * max(abs(before), 1e-9)


def _pct(before: float, after: float) -> str:
    return f"{(after - before) / before * 100:+.0f}%" if before else "new"


def _changes(ra: TestResult, rb: TestResult) -> list[str]:
    out = []
    if _moved(ra.duration_s, rb.duration_s, *COMPARE_DURATION):
        out.append(f"duration {ra.duration_s:.2f}s → {rb.duration_s:.2f}s ({_pct(ra.duration_s, rb.duration_s)})")
    for name in sorted(ra.metrics.keys() & rb.metrics.keys()):
        x, y = ra.metrics[name], rb.metrics[name]
        if _moved(x, y, COMPARE_METRIC):
            out.append(f"{name} {x:g} → {y:g} ({_pct(x, y)})")
    return out


@dataclass(frozen=True, slots=True)
class CrashSignature:
    signature: str
    kind: str
    title: str
    severity: Severity
    first_seen: float
    last_seen: float
    count: int
    last_run_id: str


@dataclass(frozen=True, slots=True)
class CrashOccurrence:
    signature: str
    run_id: str
    domain: str
    test: str
    vm: str
    ts: float


def _loads(text: str | None, default: Any) -> Any:
    if not text:
        return default
    try:
        return json.loads(text)
    except ValueError:
        return default


def _has_column(conn: Conn, table: str, column: str) -> bool:
    return column in table_columns(conn, table)


class DeadRuns:
    """Which ``running`` rows belong to a process that is gone (one query's worth:
    this process's identity, or PostgreSQL's held run locks, are read once)."""

    def __init__(self, conn: Conn) -> None:
        self._conn = conn
        self._here: ProcessIdentity | None = None
        self._held: set[int] | None = None

    def gone(self, run: Any) -> bool:
        if run["status"] != "running":
            return False
        if is_pg(self._conn):  # a run's writer holds its lock while alive, on any host (pg.py)
            from vexfs_cockpit.store import pg

            if self._held is None:
                self._held = pg.held_run_keys(self._conn)
            return pg.run_lock_key(run["id"]) not in self._held
        if self._here is None:
            self._here = ProcessIdentity.current()
        return owner_gone(run["pid"], run["proc_start"], run["hostname"], run["boot_id"], self._here)


def as_aborted(run: Any) -> tuple[str, float, str]:
    """(status, finished_at, reason) of a run whose process died: as the writer marks it."""
    started = run["started_at"]
    last = run["last_event_at"]
    return "aborted", max(started, last if last is not None else started), run_died_reason(run["pid"], run["hostname"])


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def _like(text: str | None) -> str | None:
    """A case-insensitive substring pattern; the user's % and _ are literal."""
    return f"%{_escape_like(text)}%" if text else None


class AnalysisRun(NamedTuple):
    """A finished run, for vexfs_cockpit.analysis. ``guest_kernel``: the kernel the
    run's config asked for (``auto``/``host`` or a release). ``code``: what the run
    tested, from its provenance (schema v5 on): the guest kernel release and the module
    source's git commit (``+dirty`` with uncommitted edits) or tree hash; "" when the
    run recorded neither."""

    run_id: str
    started_at: float
    env: str
    status: str
    guest_kernel: str
    code: str = ""


def code_identity(provenance: dict[str, Any]) -> str:
    """``kernel 6.1.0-57-amd64 · module 1a2b3c4+dirty`` from a run's provenance; "" when
    the kernel or the module's identity is unknown (the run is then comparable by env only)."""
    if not isinstance(provenance, dict):
        return ""
    kernel, commit, tree = (str(provenance.get(k) or "") for k in ("kernel", "module_commit", "module_tree"))
    if commit.startswith("("):  # "(source not found)"
        commit = ""
    module = f"{commit[:12]}{'+dirty' if provenance.get('module_dirty') == 'yes' else ''}" if commit else tree[:12]
    return f"kernel {kernel} · module {module}" if kernel and module else ""


class AnalysisResult(NamedTuple):
    run_id: str
    domain: str
    test: str
    status: str
    duration_s: float
    attempts: int


class AnalysisMetric(NamedTuple):
    run_id: str
    domain: str
    test: str
    name: str
    value: float


@dataclass(frozen=True, slots=True)
class AnalysisRows:
    runs: list[AnalysisRun]  # oldest first
    results: list[AnalysisResult]  # the last result of each test of each run
    metrics: list[AnalysisMetric]
    # (run_id, domain, test) -> the verdict its confirmation reruns gave (schema v6)
    verdicts: dict[tuple[str, str, str], VerdictRecord] = field(default_factory=dict)


# Names a user may give instead of a run id: how many runs back from the newest.
RUN_ALIASES = {"latest": 0, "prev": 1}


class History:
    """Read-only view of the history DB; implements engine.plugin.HistoryView.

    ``exclude_run``: the run in progress, which baselines must not compare against.
    """

    def __init__(self, path: StoreLocation, exclude_run: str = "", readers: Readers | None = None) -> None:
        self.path = path
        self.exclude_run = exclude_run
        # PostgreSQL: a pool of open reader connections its owner (a session) keeps,
        # instead of a new connection per call; None: one per call (SQLite always).
        self.readers = readers

    def for_run(self, run_id: str) -> History:
        """The HistoryView a domain of run ``run_id`` gets."""
        return History(self.path, exclude_run=run_id, readers=self.readers)

    def _read(self) -> AbstractContextManager[Conn | None]:
        return reading(self.path, self.readers)

    # -- runs ------------------------------------------------------------------------
    def list_runs(
        self,
        *,
        env: str | None = None,
        domain: str | None = None,
        status: str | None = None,
        since: float | None = None,
        text: str | None = None,
        limit: int = 50,
        before: tuple[float, str] | None = None,
    ) -> list[RunSummary]:
        """Newest first. ``text`` matches run id, profile, env, reason, config path,
        test names/messages and kernel event titles (case-insensitive substring).
        ``before``: (started_at, run_id) of the last run already listed: the next page."""
        with self._read() as conn:
            if conn is None:
                return []
            dead = DeadRuns(conn)
            params = {
                "since": since if since is not None else float("-inf"),
                "env": env or None,
                "status": status or None,
                "also_running": 0,
                "domain": domain or None,
                "text": _like(text),
                "limit": limit,
                "before_ts": before[0] if before is not None else float("inf"),
                "before_id": before[1] if before is not None else "",
            }
            if status in ("running", "aborted"):
                # A dead run still marked running lists as aborted: read those rows too,
                # and enough of them that the page is still full once they are sorted out.
                (n_running,) = conn.execute("SELECT count(*) FROM runs WHERE status='running'").fetchone()
                params["also_running"] = int(status == "aborted")
                params["limit"] = limit + n_running
            rows = conn.execute(LIST_RUNS_SQL, params).fetchall()
            shown = []
            for r in rows:
                st, finished_at, reason = as_aborted(r) if dead.gone(r) else (r["status"], r["finished_at"], r["reason"])
                if status and st != status:
                    continue
                shown.append((r, st, finished_at, reason))
            shown = shown[:limit]
            counts = self._counts(conn, [r["id"] for r, *_ in shown])
        return [
            RunSummary(
                run_id=r["id"],
                started_at=r["started_at"],
                finished_at=finished_at,
                status=st,
                env=r["env"],
                profile=r["profile"],
                config_path=r["config_path"],
                reason=reason,
                counts=counts.get(r["id"], {}),
            )
            for r, st, finished_at, reason in shown
        ]

    @staticmethod
    def _counts(conn: Conn, run_ids: list[str]) -> dict[str, dict[str, int]]:
        out: dict[str, dict[str, int]] = {}
        if not run_ids:
            return out
        marks = ",".join("?" for _ in run_ids)
        for run_id, status, n in conn.execute(
            f"SELECT run_id, status, count(*) FROM test_results WHERE run_id IN ({marks}) GROUP BY run_id, status",
            run_ids,
        ):
            out.setdefault(run_id, {})[status] = n
        return out

    def resolve_run_id(self, ref: str) -> str | None:
        """An exact run id, a unique prefix of one, or ``latest`` / ``prev`` (the newest
        run and the one before it, by start time)."""
        with self._read() as conn:
            if conn is None:
                return None
            if ref in RUN_ALIASES:
                row = conn.execute(
                    "SELECT id FROM runs ORDER BY started_at DESC, id DESC LIMIT 1 OFFSET ?", (RUN_ALIASES[ref],)
                ).fetchone()
                return row[0] if row else None
            if conn.execute("SELECT 1 FROM runs WHERE id=?", (ref,)).fetchone():
                return ref
            hits = conn.execute(
                # case-blind on both backends, as SQLite's LIKE always was
                "SELECT id FROM runs WHERE lower(id) LIKE lower(?) ESCAPE '\\' LIMIT 2", (_escape_like(ref) + "%",)
            ).fetchall()
        if len(hits) > 1:
            raise UsageError(f"run id prefix {ref!r} is ambiguous: give more characters")
        return hits[0][0] if hits else None

    def run_detail(self, run_id: str) -> RunReport | None:
        """The whole run (domains, tests with evidence and metrics, kernel events)."""
        with self._read() as conn:
            if conn is None:
                return None
            run = conn.execute("SELECT * FROM runs WHERE id=?", (run_id,)).fetchone()
            if run is None:
                return None
            died = DeadRuns(conn).gone(run)
            status, finished_at, reason = as_aborted(run) if died else (run["status"], run["finished_at"], run["reason"])
            report = RunReport(
                run=RunInfo(
                    run_id=run["id"],
                    started_at=run["started_at"],
                    status=status,
                    finished_at=finished_at,
                    env=run["env"],
                    profile=run["profile"],
                    config_path=run["config_path"],
                    planned_domains=tuple(_loads(run["domains"], [])),
                    counts=_loads(run["counts"], {}),
                    reason=reason,
                    host=run["hostname"],
                    provenance=_loads(run["provenance"], {}) if "provenance" in run.keys() else {},
                )
            )
            domains: dict[str, DomainReport] = {}
            for d in conn.execute("SELECT * FROM domain_runs WHERE run_id=? ORDER BY id", (run_id,)):
                cut = died and d["status"] == "running"  # its process died with the run
                domains[d["domain"]] = DomainReport(
                    name=d["domain"],
                    started_at=d["started_at"],
                    vm=d["vm"],
                    status="aborted" if cut else d["status"],
                    finished_at=finished_at if cut else d["finished_at"],
                    reason=domain_died_reason(d["current_test"]) if cut else d["reason"],
                    planned_tests=tuple(_loads(d["planned_tests"], [])),
                    current_test=d["current_test"],
                )
            metrics: dict[tuple[str, str], dict[str, float]] = {}
            for m in conn.execute(
                "SELECT domain, test, name, value FROM metrics WHERE run_id=? ORDER BY id", (run_id,)
            ):
                metrics.setdefault((m["domain"], m["test"]), {})[m["name"]] = m["value"]
            for t in conn.execute("SELECT * FROM test_results WHERE run_id=? ORDER BY id", (run_id,)):
                result = _result_from_row(t, metrics.get((t["domain"], t["test"]), {}))
                dom = domains.get(t["domain"])
                if dom is None:  # only if rows were written by hand: the writer always adds one
                    dom = domains[t["domain"]] = DomainReport(name=t["domain"], started_at=t["finished_at"])
                dom.tests.append(result)
            for (dname, test), values in metrics.items():
                if not test and dname in domains:
                    domains[dname].metrics.update(values)
            report.domains = list(domains.values())
            for k in conn.execute("SELECT * FROM kernel_events WHERE run_id=? ORDER BY id", (run_id,)):
                report.kernel_events.append(
                    KernelEventRecord(
                        report=KernelReport(
                            kind=k["kind"],
                            title=k["title"],
                            severity=Severity(k["severity"]),
                            line=k["line"],
                            module=k["module"],
                            text=k["text"],
                            vm=k["vm"],
                        ),
                        ts=k["ts"],
                        vm=k["vm"],
                        domain=k["domain"],
                        test=k["test"],
                        expected=bool(k["expected"]),
                    )
                )
            for s in conn.execute("SELECT * FROM vm_states WHERE run_id=? ORDER BY id", (run_id,)):
                report.vm_states.append(VmStateRecord(s["vm"], s["state"], s["ts"], s["reason"]))
            if has_table(conn, "vm_ready"):  # v7
                for r in conn.execute("SELECT * FROM vm_ready WHERE run_id=? ORDER BY id", (run_id,)):
                    report.vm_ready.append(VmReadyRecord(r["vm"], r["mode"], r["seconds"], r["ts"], bool(r["reset"])))
            for p in conn.execute("SELECT * FROM infra_problems WHERE run_id=? ORDER BY id", (run_id,)):
                report.infra_problems.append(InfraRecord(p["message"], p["ts"], p["vm"]))
            if has_table(conn, "test_verdicts"):
                for v in conn.execute("SELECT * FROM test_verdicts WHERE run_id=? ORDER BY id", (run_id,)):
                    report.verdicts[(v["domain"], v["test"])] = VerdictRecord(
                        v["verdict"], v["now"], v["before"], v["reference"], tuple(_loads(v["reruns"], [])), v["note"])
        return report

    # -- trends ----------------------------------------------------------------------
    def domain_trend(
        self, domain: str, since: float | None = None, env: str | None = None
    ) -> list[DomainTrendPoint]:
        """Per run of ``domain`` (oldest first): pass counts, pass rate, duration."""
        with self._read() as conn:
            if conn is None:
                return []
            version = schema_version(conn)
            # plain tuples, in DomainTrendPoint's field order: 10k rows
            rows = fetch_tuples(conn, DOMAIN_TREND_SQL if version >= COUNTS_VERSION else DOMAIN_TREND_FOLD_SQL,
                                {"domain": domain, "since": _since(since), "env": env})
        return list(map(DomainTrendPoint._make, rows))

    def domain_pass_rate(self, domain: str, since: float | None = None) -> list[PassRatePoint]:
        """Per run of ``domain`` that ran a test (oldest first): its pass and bad counts.
        The points of ``domain_trend`` whose ``pass_rate`` is not None, in four columns."""
        with self._read() as conn:
            if conn is None:
                return []
            version = schema_version(conn)
            if version < COUNTS_VERSION:  # no per-domain-run counts yet: folded (see above)
                rows = [(p.run_id, p.started_at, p.passed, p.bad)
                        for p in map(DomainTrendPoint._make, conn.execute(
                            DOMAIN_TREND_FOLD_SQL, {"domain": domain, "since": _since(since), "env": None}).fetchall())
                        if p.passed + p.bad]
            else:
                # plain tuples, in PassRatePoint's field order: 10k rows
                rows = fetch_tuples(conn, DOMAIN_PASS_RATE_SQL, {"domain": domain, "since": _since(since)})
        return list(map(PassRatePoint._make, rows))

    def test_duration_trend(
        self, domain: str, test: str, since: float | None = None, env: str | None = None
    ) -> list[DurationPoint]:
        with self._read() as conn:
            if conn is None:
                return []
            # plain tuples, in DurationPoint's field order
            rows = fetch_tuples(conn, TEST_DURATION_TREND_SQL,
                                {"domain": domain, "test": test, "since": _since(since), "env": env})
        return list(map(DurationPoint._make, rows))

    def metric_trend(
        self,
        name: str,
        domain: str | None = None,
        test: str | None = None,
        since: float | None = None,
        env: str | None = None,
    ) -> list[MetricPoint]:
        with self._read() as conn:
            if conn is None:
                return []
            rows = conn.execute(
                metric_trend_sql(domain is not None, test is not None),
                {"name": name, "domain": domain, "test": test, "since": _since(since), "env": env},
            ).fetchall()
        return [MetricPoint(r["run_id"], r["ts"], r["domain"], r["test"], r["name"], r["value"], r["env"]) for r in rows]

    def metric_names(self) -> list[tuple[str, str, str]]:
        """Every (domain, test, name) with a stored metric, for pickers."""
        with self._read() as conn:
            if conn is None:
                return []
            return _metric_keys(conn)

    def recent_catalog(self, env_runs: int = 1000, test_runs: int = 8) -> RecentCatalog:
        """Envs of the newest ``env_runs`` runs, the tests (planned or stored) of each
        domain in the newest ``test_runs`` runs, and every metric key: one connection,
        no result rows decoded."""
        with self._read() as conn:
            if conn is None:
                return RecentCatalog([], {}, [])
            envs = sorted(
                r[0]
                for r in conn.execute(
                    "SELECT DISTINCT env FROM (SELECT env FROM runs ORDER BY started_at DESC LIMIT ?) AS recent "
                    "WHERE env != ''",  # PostgreSQL (< 16) wants the subquery named
                    (env_runs,),
                )
            )
            ids = [r[0] for r in conn.execute("SELECT id FROM runs ORDER BY started_at DESC LIMIT ?", (test_runs,))]
            tests: dict[str, set[str]] = {}
            if ids:
                marks = ",".join("?" for _ in ids)
                for domain, planned in conn.execute(
                    f"SELECT domain, planned_tests FROM domain_runs WHERE run_id IN ({marks})", ids
                ):
                    tests.setdefault(domain, set()).update(_loads(planned, []))
                for domain, test in conn.execute(
                    f"SELECT DISTINCT domain, test FROM test_results WHERE run_id IN ({marks})", ids
                ):
                    tests.setdefault(domain, set()).add(test)
            return RecentCatalog(envs, tests, _metric_keys(conn))

    # -- comparisons -----------------------------------------------------------------
    def compare_runs(self, a: str, b: str, window: int = 5) -> RunComparison:
        """Run ``a`` (older, the baseline) against run ``b`` (newer). See module doc."""
        with self._read() as conn:
            if conn is None:
                raise UsageError("no runs yet: nothing to compare")
            runs = {r["id"]: r for r in conn.execute("SELECT * FROM runs WHERE id IN (?, ?)", (a, b))}
            for ref in (a, b):
                if ref not in runs:
                    raise UsageError(f"no run {ref!r} in {self.path}: see `vexfs-cockpit history`")
            before = _last_results(conn, a)
            after = _last_results(conn, b)
            window_runs = [
                r[0]
                for r in conn.execute(
                    "SELECT id FROM runs WHERE env=? AND started_at<=? AND (status!='running' OR id=?) "
                    "ORDER BY started_at DESC LIMIT ?",
                    (runs[b]["env"], runs[b]["started_at"], b, window),
                )
            ]
            histories = _outcome_histories(conn, window_runs)
        comp = RunComparison(a=a, b=b, new_failures=[], fixed=[], still_failing=[], flaky=[])
        for key in sorted(before.keys() | after.keys()):
            ra, rb = before.get(key), after.get(key)
            sa = ra.status if ra else None
            sb = rb.status if rb else None
            delta = TestDelta(key[0], key[1], sa, sb, (rb or ra).message if (rb or ra) else "")
            bad_a, bad_b = sa in BAD, sb in BAD
            if ra is None:
                comp.only_after.append(delta)
            elif rb is None:
                comp.only_before.append(delta)
            elif sa == sb and (moved := _changes(ra, rb)):
                comp.changed.append(TestDelta(key[0], key[1], sa, sb, "; ".join(moved)))
            if bad_b and not bad_a:
                comp.new_failures.append(delta)
            elif bad_a and sb == TestStatus.PASSED:
                comp.fixed.append(delta)
            elif bad_a and bad_b:
                comp.still_failing.append(delta)
            if (rb is not None and retried_pass(rb)) or _flips(histories.get(key, [])) >= 2:
                comp.flaky.append(delta)
        return comp

    # -- analysis (vexfs_cockpit.analysis) ---------------------------------------------
    def analysis_rows(
        self,
        *,
        env: str | None = None,
        domain: str | None = None,
        since: float | None = None,
        limit: int = 200,
        include: tuple[str, ...] = (),
    ) -> AnalysisRows:
        """The newest ``limit`` finished (passed/failed/errored) runs of ``env`` since
        ``since``, plus the runs named in ``include`` (a baseline older than the
        period), with their tests' last results and metrics (``domain``: only its)."""
        marks = ",".join("?" for _ in FINISHED_RUN_STATUSES)
        with self._read() as conn:
            if conn is None:
                return AnalysisRows([], [], [])
            # a run's provenance (its code identity) is stored from schema v5 on
            prov = "provenance" if _has_column(conn, "runs", "provenance") else "NULL"
            rows = conn.execute(
                "SELECT id, started_at, env, status, "
                f"coalesce({json_text(conn, 'config_json', 'fleet', 'guest_kernel')}, '') AS kernel, {prov} FROM runs "
                f"WHERE status IN ({marks}) AND started_at >= ? AND (? IS NULL OR env = ?) "
                "ORDER BY started_at DESC, id DESC LIMIT ?",
                (*FINISHED_RUN_STATUSES, _since(since), env or None, env or None, limit),
            ).fetchall()
            extra = [i for i in include if i and i not in {r[0] for r in rows}]
            if extra:
                rows += conn.execute(
                    "SELECT id, started_at, env, status, "
                    f"coalesce({json_text(conn, 'config_json', 'fleet', 'guest_kernel')}, '') AS kernel, {prov} FROM runs "
                    f"WHERE id IN ({','.join('?' for _ in extra)})",
                    extra,
                ).fetchall()
            runs = sorted((AnalysisRun(r[0], r[1], r[2], r[3], str(r[4]), code_identity(_loads(r[5], {}))) for r in rows),
                          key=lambda r: (r.started_at, r.run_id))
            ids = [r.run_id for r in runs]
            results: dict[tuple[str, str, str], AnalysisResult] = {}
            metrics: list[AnalysisMetric] = []
            verdicts: dict[tuple[str, str, str], VerdictRecord] = {}
            has_verdicts = has_table(conn, "test_verdicts")
            for chunk in (ids[i:i + 500] for i in range(0, len(ids), 500)):
                q = ",".join("?" for _ in chunk)
                for t in conn.execute(
                    "SELECT run_id, domain, test, status, duration_s, attempt_count FROM test_results "
                    f"WHERE run_id IN ({q}) AND (? IS NULL OR domain = ?) ORDER BY id",
                    (*chunk, domain or None, domain or None),
                ):
                    results[(t[0], t[1], t[2])] = AnalysisResult(t[0], t[1], t[2], t[3], float(t[4]), int(t[5]))
                metrics += [
                    AnalysisMetric(m[0], m[1], m[2], m[3], float(m[4]))
                    for m in conn.execute(
                        "SELECT run_id, domain, test, name, value FROM metrics "
                        f"WHERE run_id IN ({q}) AND (? IS NULL OR domain = ?) ORDER BY run_id, domain, test, name",
                        (*chunk, domain or None, domain or None),
                    )
                ]
                if has_verdicts:
                    for v in conn.execute(
                        "SELECT run_id, domain, test, verdict, now, before, reference, reruns, note FROM test_verdicts "
                        f"WHERE run_id IN ({q}) AND (? IS NULL OR domain = ?)", (*chunk, domain or None, domain or None)
                    ):
                        verdicts[(v[0], v[1], v[2])] = VerdictRecord(v[3], v[4], v[5], v[6], tuple(_loads(v[7], [])), v[8])
        return AnalysisRows(runs, list(results.values()), metrics, verdicts)

    def envs(self) -> list[str]:
        """Every env a run was recorded in, sorted."""
        with self._read() as conn:
            if conn is None:
                return []
            return [r[0] for r in conn.execute("SELECT DISTINCT env FROM runs ORDER BY env")]

    def run_env(self, run_id: str) -> str | None:
        """The env of run ``run_id`` (None: no such run)."""
        with self._read() as conn:
            if conn is None:
                return None
            row = conn.execute("SELECT env FROM runs WHERE id=?", (run_id,)).fetchone()
        return None if row is None else str(row[0])

    def baselines(self) -> dict[str, tuple[str, float]]:
        """env -> (baseline run id, when it was set); empty before schema v4."""
        with self._read() as conn:
            if conn is None or not has_table(conn, "baselines"):
                return {}
            return {r[0]: (r[1], float(r[2])) for r in conn.execute("SELECT env, run_id, set_at FROM baselines")}

    # -- crashes ---------------------------------------------------------------------
    def crash_signatures(self, limit: int = 100, since: float | None = None) -> list[CrashSignature]:
        """Newest (last seen) first."""
        with self._read() as conn:
            if conn is None:
                return []
            rows = conn.execute(
                "SELECT * FROM crash_signatures WHERE last_seen >= ? ORDER BY last_seen DESC LIMIT ?",
                (_since(since), limit),
            ).fetchall()
        return [
            CrashSignature(
                r["signature"], r["kind"], r["title"], Severity(r["severity"]),
                r["first_seen"], r["last_seen"], r["count"], r["last_run_id"],
            )
            for r in rows
        ]

    def crash_occurrences(self, signature: str, limit: int = 100) -> list[CrashOccurrence]:
        """Where a signature was seen, newest first."""
        with self._read() as conn:
            if conn is None:
                return []
            rows = conn.execute(
                "SELECT * FROM crash_occurrences WHERE signature=? ORDER BY ts DESC LIMIT ?", (signature, limit)
            ).fetchall()
        return [CrashOccurrence(r["signature"], r["run_id"], r["domain"], r["test"], r["vm"], r["ts"]) for r in rows]

    # -- HistoryView (for domains) ---------------------------------------------------
    def previous_metric(self, domain: str, test: str, name: str, env: str) -> float | None:
        """The newest value of that metric in ``env`` from a run other than ours."""
        with self._read() as conn:
            if conn is None:
                return None
            row = conn.execute(
                "SELECT value FROM metrics WHERE name=? AND domain=? AND test=? AND env=? AND run_id!=? "
                "ORDER BY ts DESC LIMIT 1",
                (name, domain, test, env, self.exclude_run),
            ).fetchone()
        return None if row is None else float(row[0])

    def test_durations(self, tests: Iterable[tuple[str, str]], window: int = 5) -> dict[tuple[str, str], float]:
        """(domain, test) -> the median duration of its newest ``window`` results that ran
        (not SKIPPED), for CI sharding's estimates; tests never run are left out. One
        index seek per test (test_results_trend covers status and duration)."""
        out: dict[tuple[str, str], float] = {}
        with self._read() as conn:
            if conn is None:
                return out
            for domain, test in sorted(set(tests)):
                rows = conn.execute(
                    "SELECT duration_s FROM test_results WHERE domain=? AND test=? AND status!='SKIPPED' "
                    "ORDER BY started_at DESC LIMIT ?",
                    (domain, test, window),
                ).fetchall()
                if rows:
                    out[(domain, test)] = statistics.median(float(r[0]) for r in rows)
        return out

    def failed_in_previous_run(self, env: str) -> list[tuple[str, str]]:
        """(domain, test) pairs that were bad in the last finished run of ``env``."""
        with self._read() as conn:
            if conn is None:
                return []
            marks = ",".join("?" for _ in FINISHED_RUN_STATUSES)
            run = conn.execute(
                f"SELECT id FROM runs WHERE env=? AND status IN ({marks}) AND id!=? "
                "ORDER BY started_at DESC LIMIT 1",
                (env, *FINISHED_RUN_STATUSES, self.exclude_run),
            ).fetchone()
            if run is None:
                return []
            rows = conn.execute(
                f"SELECT DISTINCT domain, test FROM test_results WHERE run_id=? AND status IN {_BAD_SQL} "
                "ORDER BY domain, test",
                (run[0],),
            ).fetchall()
        return [(r[0], r[1]) for r in rows]


def _metric_keys(conn: Conn) -> list[tuple[str, str, str]]:
    """Distinct (domain, test, name) of metrics, ordered so.

    A skip scan over metrics_trend (name, domain, test, ts): a few index seeks per key
    instead of reading every metric row (~400k at 10k runs). The next key is sought
    column by column: SQLite seeks a row-value range ``(a, b, c) > (?, ?, ?)`` on its
    first column only and would walk every row of the current name. Python orders str
    by code point, as SQLite's BINARY collation orders UTF-8.
    """
    order = " ORDER BY name, domain, test LIMIT 1"
    head = "SELECT name, domain, test FROM metrics"
    keys: list[tuple[str, str, str]] = []
    row = conn.execute(head + order).fetchone()
    while row is not None:
        name, domain, test = row
        keys.append((domain, test, name))
        row = (
            conn.execute(head + " WHERE name = ? AND domain = ? AND test > ?" + order, (name, domain, test)).fetchone()
            or conn.execute(head + " WHERE name = ? AND domain > ?" + order, (name, domain)).fetchone()
            or conn.execute(head + " WHERE name > ?" + order, (name,)).fetchone()
        )
    keys.sort()
    return keys


def _since(since: float | None) -> float:
    return since if since is not None else float("-inf")


def _result_from_row(t: Any, table_metrics: dict[str, float]) -> TestResult:
    return TestResult(
        status=TestStatus(t["status"]),
        message=t["message"],
        metrics={**_loads(t["metrics"], {}), **table_metrics},
        artifacts=_loads(t["artifacts"], {}),
        name=t["test"],
        domain=t["domain"],
        duration_s=t["duration_s"],
        started_at=t["started_at"],
        attempts=[attempt_from_dict(a) for a in _loads(t["attempts"], [])],
        evidence=evidence_from_dict(_loads(t["evidence"], {})),
        tags=tuple(_loads(t["tags"], [])),
    )


def _last_results(conn: Conn, run_id: str) -> dict[tuple[str, str], TestResult]:
    out: dict[tuple[str, str], TestResult] = {}
    for t in conn.execute("SELECT * FROM test_results WHERE run_id=? ORDER BY id", (run_id,)):
        out[(t["domain"], t["test"])] = _result_from_row(t, {})
    return out


def _outcome_histories(conn: Conn, run_ids: list[str]) -> dict[tuple[str, str], list[bool]]:
    """(domain, test) -> passed? per run, oldest first; skipped results left out."""
    if not run_ids:
        return {}
    marks = ",".join("?" for _ in run_ids)
    out: dict[tuple[str, str], list[bool]] = {}
    for domain, test, status in conn.execute(
        f"SELECT t.domain, t.test, t.status FROM test_results t JOIN runs r ON r.id = t.run_id "
        f"WHERE t.run_id IN ({marks}) AND t.status IN ('PASSED','FAILED','TIMEOUT','ERROR') "
        f"ORDER BY r.started_at, t.id",
        run_ids,
    ):
        out.setdefault((domain, test), []).append(status == "PASSED")
    return out


def _flips(outcomes: list[bool]) -> int:
    return sum(1 for x, y in zip(outcomes, outcomes[1:]) if x != y)
