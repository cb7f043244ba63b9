"""The history reads at scale: schema v2's covering indexes, v3's per-domain-run result
counts, the catalog and metric-key reads, the chart envelope, one query per chart, and
the benchmark's DB generator (rows shaped as the real writer writes them)."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from textual.widgets import Select

from tests.support.store import (
    DAY,
    T0,
    RunSpec,
    dbgen,  # noqa: F401
    record_sync,
)
from tests.support.tui import UiBackend, cockpit, seed_history, settle
from vexfs_cockpit.engine.results import TestStatus
from vexfs_cockpit.store import db as dbmod
from vexfs_cockpit.store import history as hist_mod
from vexfs_cockpit.store import schema
from vexfs_cockpit.store.history import History
from vexfs_cockpit.store.recorder import HistoryStore
from vexfs_cockpit.tui.history_queries import CATALOG_RUNS
from vexfs_cockpit.tui.screens.history import HistoryScreen
from vexfs_cockpit.tui.screens.trends import TrendsScreen
from vexfs_cockpit.tui.widgets.trend_chart import envelope

ROOT = Path(__file__).resolve().parents[2]
P, F, S, TO = TestStatus.PASSED, TestStatus.FAILED, TestStatus.SKIPPED, TestStatus.TIMEOUT
KM, FS = "kernel_module", "filesystem_operations"


def specs() -> list[RunSpec]:
    return [
        RunSpec("r1", T0, outcomes={(KM, "load"): P, (KM, "unload"): P, (FS, "mount"): S},
                metrics={(KM, "load"): {"load_time_ms": 10.0, "ünload_ms": 1.0}}),
        RunSpec("r2", T0 + DAY, env="ci", outcomes={(KM, "load"): F, (KM, "unload"): TO, (FS, "mount"): P},
                metrics={(FS, "mount"): {"mount_ms": 3.0}}),
        RunSpec("r3", T0 + 2 * DAY, outcomes={(KM, "load"): P}, metrics={(KM, "load"): {"load_time_ms": 12.0}}),
    ]


@pytest.fixture
def db(tmp_path: Path) -> Path:
    path = tmp_path / "h.db"
    record_sync(path, specs())
    return path


def plan(path: Path, sql: str, params: dict[str, object]) -> str:
    conn = sqlite3.connect(path)
    try:
        return "\n".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    finally:
        conn.close()


# -- schema v2 and v3 -------------------------------------------------------------------
def old_db(path: Path, version: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """A DB as the cockpit of schema ``version`` left it, with specs() recorded."""
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:version])
        m.setattr(schema, "LATEST_VERSION", version)
        m.setattr(dbmod, "LATEST_VERSION", version)
        record_sync(path, specs())


def index_columns(path: Path, *names: str) -> dict[str, list[str]]:
    conn = sqlite3.connect(path)
    try:
        return {name: [r[2] for r in conn.execute(f"PRAGMA index_info({name})")] for name in names}
    finally:
        conn.close()


def stored_counts(path: Path) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    """The counts domain_runs keeps, and the same folded from test_results."""
    conn = sqlite3.connect(path)
    try:
        kept = conn.execute("SELECT run_id, domain, n_passed, n_bad, n_skipped, n_results FROM domain_runs "
                            "ORDER BY run_id, domain").fetchall()
        folded = conn.execute(
            "SELECT d.run_id, d.domain, count(t.id) FILTER (WHERE t.status = 'PASSED'), "
            "count(t.id) FILTER (WHERE t.status IN ('FAILED','TIMEOUT','ERROR')), "
            "count(t.id) FILTER (WHERE t.status = 'SKIPPED'), count(t.id) FROM domain_runs d "
            "LEFT JOIN test_results t ON t.run_id = d.run_id AND t.domain = d.domain "
            "GROUP BY d.run_id, d.domain ORDER BY d.run_id, d.domain").fetchall()
    finally:
        conn.close()
    return kept, folded


def test_v1_db_upgrades_to_covering_indexes_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "old.db"
    old_db(path, 1, monkeypatch)
    before = History(path).domain_trend(KM)  # read before any writer migrated it
    HistoryStore.open(path).close()
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST_VERSION
    finally:
        conn.close()
    cols = index_columns(path, "test_results_run", "test_results_trend")
    assert cols["test_results_run"] == ["run_id", "domain", "status"]
    assert cols["test_results_trend"][:3] == ["domain", "test", "started_at"]
    assert History(path).domain_trend(KM) == before
    assert [(p.run_id, p.passed, p.bad, p.skipped, p.total) for p in before] == [
        ("r1", 2, 0, 0, 2), ("r2", 0, 2, 0, 2), ("r3", 1, 0, 0, 1)]


def test_v2_db_gains_counts_that_match_its_results(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "v2.db"
    old_db(path, 2, monkeypatch)
    h = History(path)
    before = {d: h.domain_trend(d) for d in (KM, FS)}  # v2: folded from the results
    HistoryStore.open(path).close()
    kept, folded = stored_counts(path)
    assert kept == folded and sum(r[5] for r in kept) == 7  # type: ignore[misc]
    assert {d: h.domain_trend(d) for d in (KM, FS)} == before  # v3: read from the counts
    assert index_columns(path, "domain_runs_domain_started")["domain_runs_domain_started"][:2] == ["domain", "started_at"]
    record_sync(path, [RunSpec("r4", T0 + 3 * DAY, outcomes={(KM, "load"): F, (KM, "unload"): S, (FS, "mount"): P})])
    kept, folded = stored_counts(path)
    assert kept == folded and [(p.run_id, p.passed, p.bad, p.skipped) for p in h.domain_trend(KM)][-1] == ("r4", 0, 1, 1)


def test_counts_stay_exact_however_results_change(db: Path) -> None:
    conn = sqlite3.connect(db)
    try:
        conn.execute("UPDATE test_results SET status = 'ERROR' WHERE run_id = 'r1' AND test = 'load'")
        conn.execute("DELETE FROM test_results WHERE run_id = 'r2' AND test = 'unload'")
        conn.execute("INSERT INTO test_results(run_id, domain, test, status, started_at, finished_at, duration_s) "
                     "VALUES ('r9', 'vector_operations', 'topk', 'PASSED', 0, 1, 1)")  # before its domain row
        conn.execute("INSERT INTO domain_runs(run_id, domain, started_at, status) VALUES ('r9', 'vector_operations', 0, 'passed')")
        conn.commit()
    finally:
        conn.close()
    kept, folded = stored_counts(db)
    assert kept == folded
    assert ("r1", KM, 1, 1, 0, 2) in kept and ("r2", KM, 0, 1, 0, 1) in kept and ("r9", "vector_operations", 1, 0, 0, 1) in kept


def test_trend_reads_never_touch_result_rows(db: Path) -> None:
    inf = float("-inf")
    p = plan(db, hist_mod.DOMAIN_TREND_SQL, {"domain": KM, "since": inf, "env": None})
    assert "COVERING INDEX domain_runs_domain_started" in p and "COVERING INDEX runs_id_env" in p, p
    assert "test_results" not in p and "TEMP B-TREE" not in p, p
    p = plan(db, hist_mod.DOMAIN_PASS_RATE_SQL, {"domain": KM, "since": inf})
    assert "COVERING INDEX domain_runs_domain_started" in p and "runs" not in p.replace("domain_runs", ""), p
    assert "TEMP B-TREE" not in p, p
    p = plan(db, hist_mod.DOMAIN_TREND_FOLD_SQL, {"domain": KM, "since": inf, "env": None})
    assert "COVERING INDEX test_results_run (run_id=? AND domain=?)" in p, p
    p = plan(db, hist_mod.TEST_DURATION_TREND_SQL, {"domain": KM, "test": "load", "since": inf, "env": None})
    assert "COVERING INDEX test_results_trend" in p, p
    p = plan(db, "SELECT run_id, status, count(*) FROM test_results WHERE run_id IN (:a, :b) GROUP BY run_id, status",
             {"a": "r1", "b": "r2"})
    assert "COVERING INDEX test_results_run" in p, p


def test_domain_trend_counts_with_a_domain_run_without_results(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO domain_runs(run_id, domain, started_at, status) VALUES ('r3', 'vector_operations', ?, 'aborted')",
                 (T0 + 2 * DAY,))
    conn.commit()
    conn.close()
    (pt,) = History(db).domain_trend("vector_operations")
    assert (pt.run_id, pt.passed, pt.bad, pt.skipped, pt.total, pt.pass_rate) == ("r3", 0, 0, 0, 0, None)
    assert [(p.run_id, p.passed, p.skipped, p.total) for p in History(db).domain_trend(FS)] == [
        ("r1", 0, 1, 1), ("r2", 1, 0, 1)]


def pass_rate_of_trend(h: History, domain: str, since: float | None = None) -> list[tuple[object, ...]]:
    """What the trends screen charted from domain_trend: the runs with a pass rate."""
    return [(p.run_id, p.started_at, p.passed, p.bad, p.pass_rate)
            for p in h.domain_trend(domain, since) if p.pass_rate is not None]


def pass_rate(h: History, domain: str, since: float | None = None) -> list[tuple[object, ...]]:
    return [(p.run_id, p.started_at, p.passed, p.bad, p.pass_rate) for p in h.domain_pass_rate(domain, since)]


def test_domain_pass_rate_is_domain_trend_with_a_pass_rate(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chart's lean read (four columns, no join) gives the points the chart took from
    domain_trend: on recorded runs (with a domain run that ran no test), on a DB shaped as
    the bench's, and on a v2 DB (no counts yet: folded from the results)."""
    conn = sqlite3.connect(db)
    conn.execute("INSERT INTO domain_runs(run_id, domain, started_at, status) VALUES ('r3', ?, ?, 'aborted')",
                 (FS, T0 + 2 * DAY))
    conn.commit()
    conn.close()
    h = History(db)
    for domain in (KM, FS, "no_such_domain"):
        assert pass_rate(h, domain) == pass_rate_of_trend(h, domain)
        assert pass_rate(h, domain, T0 + DAY) == pass_rate_of_trend(h, domain, T0 + DAY)
    assert [p[0] for p in pass_rate(h, FS)] == ["r2"]  # r1 only skipped, r3 ran nothing
    gen = dbgen().generate(tmp_path / "gen.db", 40)
    g = History(gen.path)
    for domain in dbgen().DOMAINS:
        assert pass_rate(g, domain) == pass_rate_of_trend(g, domain) != []
    v2 = tmp_path / "v2.db"
    old_db(v2, 2, monkeypatch)
    assert pass_rate(History(v2), KM) == pass_rate_of_trend(History(v2), KM) != []


# -- catalog and metric keys -------------------------------------------------------------
def old_catalog(h: History) -> tuple[list[str], dict[str, set[str]], list[tuple[str, str, str]]]:
    """The catalog as it was derived before recent_catalog: whole runs decoded."""
    runs = h.list_runs(limit=1000)
    tests: dict[str, set[str]] = {}
    for run in runs[:CATALOG_RUNS]:
        detail = h.run_detail(run.run_id)
        assert detail is not None
        for dom in detail.domains:
            names = tests.setdefault(dom.name, set())
            names.update(dom.planned_tests)
            names.update(t.name for t in dom.tests)
    return sorted({r.env for r in runs if r.env}), tests, h.metric_names()


def test_recent_catalog_matches_decoding_whole_runs(db: Path) -> None:
    h = History(db)
    cat = h.recent_catalog(test_runs=CATALOG_RUNS)
    assert (cat.envs, cat.tests, cat.metrics) == old_catalog(h)
    assert cat.envs == ["ci", "dev"] and cat.tests == {KM: {"load", "unload"}, FS: {"mount"}}
    two = h.recent_catalog(env_runs=1, test_runs=1)  # only r3 (dev): newest first
    assert two.envs == ["dev"] and two.tests == {KM: {"load"}}
    assert History(db.with_name("absent.db")).recent_catalog().envs == []


async def test_recent_catalog_matches_on_the_seeded_tui_history(tmp_path: Path) -> None:
    path = tmp_path / "seeded.db"
    await seed_history(path)
    h = History(path)
    cat = h.recent_catalog(test_runs=CATALOG_RUNS)
    assert (cat.envs, cat.tests, cat.metrics) == old_catalog(h)


def test_metric_keys_are_the_distinct_keys_in_binary_order(db: Path) -> None:
    conn = sqlite3.connect(db)
    conn.executemany("INSERT INTO metrics(run_id, domain, test, name, value, ts) VALUES ('r9', ?, ?, ?, 1, 0)",
                     [("", "", "Zeta"), (KM, "", "ünload_ms"), ("a", "b", "load_time_ms"), (KM, "load", "x")])
    conn.commit()
    want = [tuple(r) for r in conn.execute("SELECT DISTINCT domain, test, name FROM metrics ORDER BY domain, test, name")]
    conn.close()
    assert History(db).metric_names() == want
    assert len(want) == 7  # load_time_ms of kernel_module.load was stored by two runs


# -- the chart envelope -----------------------------------------------------------------
def test_envelope_keeps_every_dip_and_small_series_untouched() -> None:
    xs = list(range(1, 11))
    ys = [float(i) for i in range(10)]
    assert envelope(xs, ys, 5) == (xs, ys)
    n = 10_000
    xs = list(range(1, n + 1))
    ys = [100.0] * n
    ys[4321] = 0.0  # one failed run among ten thousand passes
    ys[9999] = 50.0
    px, py = envelope(xs, ys, 240)
    assert len(px) <= 480 and px == sorted(px)
    assert (4322, 0.0) in zip(px, py) and (10_000, 50.0) in zip(px, py)
    assert min(py) == 0.0 and max(py) == 100.0 and px[0] == 1


# -- one query per chart ---------------------------------------------------------------------
class CountingBackend(UiBackend):
    def __post_init__(self) -> None:
        super().__post_init__()
        self.queries: list[str] = []

    def domain_pass_rate(self, domain, since):  # type: ignore[no-untyped-def]
        self.queries.append(f"pass {domain}")
        return super().domain_pass_rate(domain, since)

    def domain_trend(self, domain, since):  # type: ignore[no-untyped-def]
        self.queries.append(f"pass (full points) {domain}")
        return super().domain_trend(domain, since)

    def test_duration_trend(self, domain, test, since):  # type: ignore[no-untyped-def]
        self.queries.append(f"duration {domain}.{test}")
        return super().test_duration_trend(domain, test, since)

    def list_runs(self, flt):  # type: ignore[no-untyped-def]
        self.queries.append("runs")
        return super().list_runs(flt)


async def test_history_and_trends_ask_once_per_view(db: Path) -> None:
    be = CountingBackend(db_path=db)
    async with cockpit(be) as (app, pilot, _):
        await pilot.press("h")
        await settle(app, pilot)
        # The runs, and the trends screen's first chart, read ahead as history opens.
        assert isinstance(app.screen, HistoryScreen) and be.queries == ["runs", f"pass {FS}"]
        await pilot.press("g")
        await settle(app, pilot)
        scr = app.screen
        assert isinstance(scr, TrendsScreen) and scr.series is not None
        assert be.queries == ["runs", f"pass {FS}"]  # g and the pickers' echoes asked nothing more
        assert not scr.query("#t-test")  # not part of a pass-rate chart: not even built
        await pilot.press("ctrl+r")
        await settle(app, pilot)
        assert be.queries[-1] == f"pass {FS}" and len(be.queries) == 3
        scr.query_one("#t-kind", Select).value = "duration"
        await settle(app, pilot)
        assert be.queries[3:] == [f"duration {FS}.mount"]
        scr.query_one("#t-domain", Select).value = KM
        await settle(app, pilot)
        assert be.queries[4:] == [f"duration {KM}.load"]
        assert scr.series is not None and scr.series.title.startswith(f"duration of {KM}.load")
        await pilot.press("escape")
        await settle(app, pilot)
        assert be.queries[-1] == "runs"  # back on history: reloaded, a run may have finished


# -- the benchmark's generator -----------------------------------------------------------------
def test_generated_db_is_a_store_db_shaped_like_recorded_rows(db: Path, tmp_path: Path) -> None:
    gen = dbgen()
    stats = gen.generate(tmp_path / "gen.db", 12, end=T0)
    path = stats.path
    assert stats.runs == 12 and stats.test_results > 12 * 6 * 10
    dbmod.verify_schema(path, deep=True)  # ours, current schema, not corrupt
    h = History(path)
    runs = h.list_runs(limit=100)
    assert len(runs) == 12 and all(r.total == sum(r.counts.values()) > 0 for r in runs)
    detail = h.run_detail(runs[0].run_id)  # every JSON column decodes through the store's codec
    assert detail is not None and len(detail.domains) == 6
    assert all(len(d.planned_tests) == gen.TESTS_PER_DOMAIN for d in detail.domains)
    assert any(t.evidence.commands for d in detail.domains for t in d.tests)
    for domain in gen.DOMAINS:
        pts = h.domain_trend(domain)
        assert len(pts) == 12 and all(p.total > 0 for p in pts)
    assert h.metric_names() and h.recent_catalog().tests

    # Same columns filled, same JSON keys, as rows the real recorder wrote.
    def shapes(p: Path) -> dict[str, object]:
        conn = sqlite3.connect(p)
        conn.row_factory = sqlite3.Row
        try:
            out: dict[str, object] = {}
            for table in ("runs", "domain_runs", "test_results", "metrics"):
                row = conn.execute(f"SELECT * FROM {table} ORDER BY rowid DESC LIMIT 1").fetchone()
                out[table] = sorted(k for k in row.keys() if row[k] is not None)  # noqa: SIM118 (sqlite3.Row)
            t = conn.execute("SELECT attempts, evidence FROM test_results WHERE status != 'SKIPPED' LIMIT 1").fetchone()
            out["attempt keys"] = sorted(json.loads(t["attempts"])[0])
            ev = json.loads(t["evidence"])
            out["evidence keys"] = sorted(ev)
            out["command keys"] = sorted(ev["commands"][0])
            return out
        finally:
            conn.close()

    assert shapes(path) == shapes(db)


def test_cached_db_is_reused(tmp_path: Path) -> None:
    gen = dbgen()
    first = gen.cached_db(3, cache_dir=tmp_path)
    again = gen.cached_db(3, cache_dir=tmp_path)
    assert not first.cached and again.cached and again.path == first.path
    assert f"schema{schema.LATEST_VERSION}" in first.path.name
    assert not [p.name for p in tmp_path.iterdir() if ".tmp" in p.name]  # no half-written file left
