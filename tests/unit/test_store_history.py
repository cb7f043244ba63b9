"""The read API over a DB filled by the real Recorder: lists, trends, comparisons, baselines."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.store import BACKENDS, DAY, FS, KM, T0, F, P, RunSpec, kreport, new_history, record_sync, recorded, run_events
from vexfs_cockpit.engine.plugin import HistoryView
from vexfs_cockpit.errors import UsageError
from vexfs_cockpit.klog.model import Severity
from vexfs_cockpit.store import history as hist_mod
from vexfs_cockpit.store.history import History, parse_period, since_period
from vexfs_cockpit.store.location import StoreLocation
from vexfs_cockpit.store.report import ReportBuilder

OOPS = kreport("oops", "BUG: unable to handle page fault in vexfs_read", Severity.CRITICAL)

SPECS = [
    RunSpec("r1", T0 - 10 * DAY, outcomes={(KM, "build"): P, (KM, "load"): P, (FS, "mount"): P},
            metrics={(KM, "load"): {"load_time_ms": 10.0}}),
    RunSpec("r2", T0 - 5 * DAY, outcomes={(KM, "build"): P, (KM, "load"): F, (FS, "mount"): P},
            metrics={(KM, "load"): {"load_time_ms": 12.0}}, kernel=[(KM, "load", OOPS, False)]),
    RunSpec("r3", T0 - 2 * DAY, outcomes={(KM, "build"): P, (KM, "load"): P, (FS, "mount"): F},
            metrics={(KM, "load"): {"load_time_ms": 11.0}}, retried={(KM, "load")}, test_duration=3.0),
    RunSpec("r4", T0 - 1 * DAY, env="ci", outcomes={(KM, "build"): P, (KM, "load"): F},
            metrics={(KM, "load"): {"load_time_ms": 50.0}}),
    RunSpec("r5", T0, outcomes={(KM, "build"): P, (KM, "load"): F, (FS, "mount"): F},
            metrics={(KM, "load"): {"load_time_ms": 13.0}}, status=""),  # still running
]


@pytest.fixture(scope="module", params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[StoreLocation]:
    with recorded(new_history(request, tmp_path_factory.mktemp("hist")), SPECS) as path:  # r5 stays running
        yield path


def test_history_is_a_history_view(db: Path) -> None:
    view: HistoryView = History(db)  # the protocol domains get
    assert view.previous_metric(KM, "load", "load_time_ms", "dev") == 13.0


def test_list_runs_newest_first_with_counts(db: Path) -> None:
    runs = History(db).list_runs()
    assert [r.run_id for r in runs] == ["r5", "r4", "r3", "r2", "r1"]
    r2 = runs[3]
    assert r2.counts == {"PASSED": 2, "FAILED": 1} and r2.bad == 1 and r2.total == 3
    assert r2.status == "failed" and r2.env == "dev" and r2.profile == "selftest"
    assert r2.duration_s is not None and r2.duration_s > 0
    assert runs[0].status == "running" and runs[0].duration_s is None


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        ({"env": "ci"}, ["r4"]),
        ({"status": "running"}, ["r5"]),
        ({"status": "passed"}, ["r1"]),
        ({"domain": FS}, ["r5", "r3", "r2", "r1"]),
        ({"since": T0 - 3 * DAY}, ["r5", "r4", "r3"]),
        ({"text": "page FAULT"}, ["r2"]),  # a kernel event title, case-insensitive
        ({"text": "mount failed"}, ["r5", "r3"]),  # a test message
        ({"text": "%"}, []),  # LIKE wildcards are literal
        ({"limit": 2}, ["r5", "r4"]),
        ({"env": "dev", "domain": KM, "since": T0 - 6 * DAY, "limit": 1}, ["r5"]),
    ],
)
def test_list_runs_filters(db: Path, filters: dict, expected: list[str]) -> None:
    assert [r.run_id for r in History(db).list_runs(**filters)] == expected


@pytest.fixture(params=BACKENDS)
def empty(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    """A new, empty history of each backend (for a test that records its own runs)."""
    return new_history(request, tmp_path)


def test_list_runs_pages_never_repeat_or_skip_a_run(empty: StoreLocation) -> None:
    path = empty
    # Runs sharing a start time, with ids that do not sort as they were recorded.
    record_sync(path, [RunSpec(rid, T0 + (i // 3) * DAY, outcomes={(KM, "load"): P})
                       for i, rid in enumerate(["b", "c", "a", "e", "d", "f", "g"])])
    h = History(path)
    whole = [r.run_id for r in h.list_runs(limit=100)]
    assert whole == ["g", "f", "e", "d", "c", "b", "a"]  # newest first, ties by id descending
    paged: list[str] = []
    before = None
    while page := h.list_runs(limit=2, before=before):
        paged += [r.run_id for r in page]
        before = (page[-1].started_at, page[-1].run_id)
    assert paged == whole
    assert [r.run_id for r in h.list_runs(env="dev", limit=2, before=(T0 + DAY, "e"))] == ["d", "c"]


def test_run_detail_equals_the_report_built_from_the_same_events(db: Path) -> None:
    for spec in SPECS:
        from_events = ReportBuilder().feed_all(run_events(spec))
        from_store = History(db).run_detail(spec.run_id)
        assert from_store == from_events, spec.run_id
    rep = History(db).run_detail("r2")
    assert rep is not None
    load = rep.domain(KM).tests[1]  # type: ignore[union-attr]
    assert load.evidence.commands[0].exit_code == 1 and load.metrics == {"load_time_ms": 12.0}
    assert [(k.domain, k.test, k.report.kind) for k in rep.kernel_events] == [(KM, "load", "oops")]
    assert History(db).run_detail("nope") is None


def test_resolve_run_id(db: Path) -> None:
    h = History(db)
    assert h.resolve_run_id("r3") == "r3"
    assert h.resolve_run_id("zz") is None
    with pytest.raises(UsageError, match="ambiguous"):
        h.resolve_run_id("r")
    assert h.resolve_run_id("R3") == "r3"  # a prefix is case-blind on both backends
    assert h.resolve_run_id("%") is None and h.resolve_run_id("_3") is None  # LIKE wildcards are literal


def test_the_pickers_catalog_pass_rates_and_shard_durations(db: StoreLocation) -> None:
    """What the TUI's pickers and pass-rate chart and CI sharding read."""
    h = History(db)
    cat = h.recent_catalog()
    assert cat.envs == ["ci", "dev"] and cat.metrics == [(KM, "load", "load_time_ms")]
    assert {d: sorted(t) for d, t in cat.tests.items()} == {KM: ["build", "load"], FS: ["mount"]}
    assert h.recent_catalog(env_runs=1, test_runs=1).envs == ["dev"]  # r5 only
    assert [(p.run_id, p.passed, p.bad) for p in h.domain_pass_rate(KM, since=T0 - 3 * DAY)] == [
        ("r3", 2, 0), ("r4", 1, 1), ("r5", 1, 1)]
    assert h.test_durations([(KM, "load"), (FS, "mount"), (KM, "nope")], window=3) == {
        (KM, "load"): 1.0, (FS, "mount"): 1.0}  # median of r5, r4, r3 (3 s)
    assert h.envs() == ["ci", "dev"] and h.run_env("r4") == "ci" and h.run_env("zz") is None


def test_domain_trend(db: Path) -> None:
    h = History(db)
    pts = h.domain_trend(KM)
    assert [(p.run_id, p.passed, p.bad, p.pass_rate) for p in pts] == [
        ("r1", 2, 0, 1.0), ("r2", 1, 1, 0.5), ("r3", 2, 0, 1.0), ("r4", 1, 1, 0.5), ("r5", 1, 1, 0.5)]
    # DomainStarted at start+1, two tests of 1 s (+1 s gaps), DomainFinished 1 s later
    assert pts[0].duration_s == pytest.approx(5.0)
    assert [p.run_id for p in h.domain_trend(KM, since=T0 - 3 * DAY)] == ["r3", "r4", "r5"]
    assert [p.run_id for p in h.domain_trend(KM, env="dev")] == ["r1", "r2", "r3", "r5"]
    assert h.domain_trend("no_such_domain") == []


def test_test_duration_and_metric_trends(db: Path) -> None:
    h = History(db)
    durations = h.test_duration_trend(KM, "load")
    assert [(d.run_id, d.duration_s, d.attempts) for d in durations] == [
        ("r1", 1.0, 1), ("r2", 1.0, 1), ("r3", 3.0, 2), ("r4", 1.0, 1), ("r5", 1.0, 1)]
    assert [m.value for m in h.metric_trend("load_time_ms")] == [10.0, 12.0, 11.0, 50.0, 13.0]
    assert [m.value for m in h.metric_trend("load_time_ms", domain=KM, test="load", env="dev")] == [
        10.0, 12.0, 11.0, 13.0]
    assert [m.run_id for m in h.metric_trend("load_time_ms", since=T0 - 1.5 * DAY)] == ["r4", "r5"]
    assert h.metric_names() == [(KM, "load", "load_time_ms")]


def test_compare_runs(db: Path) -> None:
    h = History(db)
    c = h.compare_runs("r2", "r3")
    assert [(d.domain, d.test, d.before, d.after) for d in c.new_failures] == [(FS, "mount", "PASSED", "FAILED")]
    assert [(d.test, d.before, d.after) for d in c.fixed] == [("load", "FAILED", "PASSED")]
    assert c.still_failing == []
    assert [d.test for d in c.flaky] == ["load"]  # passed only after a retry, and P->F->P
    c = h.compare_runs("r3", "r5")
    assert [d.test for d in c.new_failures] == ["load"]
    assert [d.test for d in c.still_failing] == ["mount"]
    assert [d.test for d in c.flaky] == ["load"]  # P,F,P,F over the dev window; mount flipped once
    # with a window of 2 dev runs (r3, r5) load flipped once: not flaky
    assert h.compare_runs("r3", "r5", window=2).flaky == []
    with pytest.raises(UsageError, match="no run 'zz'"):
        h.compare_runs("r1", "zz")


def test_crash_signatures_newest_first(db: Path) -> None:
    sigs = History(db).crash_signatures()
    assert [(s.signature, s.count, s.last_run_id) for s in sigs] == [(OOPS.signature, 1, "r2")]
    assert History(db).crash_signatures(since=T0 - 4 * DAY) == []


def test_baselines_for_domains(db: Path) -> None:
    h = History(db)
    assert h.previous_metric(KM, "load", "load_time_ms", "dev") == 13.0
    assert h.for_run("r5").previous_metric(KM, "load", "load_time_ms", "dev") == 11.0
    assert h.previous_metric(KM, "load", "load_time_ms", "ci") == 50.0
    assert h.previous_metric(KM, "load", "nope", "dev") is None
    # r5 is still running: the last *finished* dev run is r3
    assert h.failed_in_previous_run("dev") == [(FS, "mount")]
    assert h.for_run("r3").failed_in_previous_run("dev") == [(KM, "load")]
    assert h.failed_in_previous_run("ci") == [(KM, "load")]
    assert h.failed_in_previous_run("prod") == []


def test_periods() -> None:
    assert parse_period("7d") == 7 * DAY and parse_period("90m") == 5400 and parse_period("2w") == 14 * DAY
    assert since_period("1h", now=T0) == T0 - 3600 and since_period(None) is None
    with pytest.raises(UsageError, match="bad period"):
        parse_period("seven days")


def _plan(db: Path, sql: str, params: dict) -> str:
    conn = sqlite3.connect(db)
    try:
        return "\n".join(r[3] for r in conn.execute("EXPLAIN QUERY PLAN " + sql, params))
    finally:
        conn.close()


def test_trend_queries_use_their_indexes(db: StoreLocation) -> None:
    if not isinstance(db, Path):
        pytest.skip("SQLite's query plans; PostgreSQL's are measured by bench/history_screen.py --postgres")
    inf = float("-inf")
    plan = _plan(db, hist_mod.DOMAIN_TREND_SQL, {"domain": KM, "since": inf, "env": None})
    assert "domain_runs_domain_started" in plan and "test_results" not in plan, plan  # v3: the kept counts
    plan = _plan(db, hist_mod.DOMAIN_TREND_FOLD_SQL, {"domain": KM, "since": inf, "env": None})
    assert "domain_runs_domain_started" in plan and "test_results_run" in plan, plan  # a DB not yet at v3
    plan = _plan(db, hist_mod.TEST_DURATION_TREND_SQL, {"domain": KM, "test": "load", "since": inf, "env": None})
    assert "test_results_trend" in plan, plan
    metric_sql = hist_mod.metric_trend_sql(by_domain=True, by_test=True)
    plan = _plan(db, metric_sql, {"name": "load_time_ms", "domain": KM, "test": "load", "since": inf, "env": None})
    assert "metrics_trend (name=? AND domain=? AND test=? AND ts>?)" in plan, plan
    plan = _plan(db, hist_mod.metric_trend_sql(False, False), {"name": "x", "since": inf, "env": None})
    assert "metrics_trend (name=?)" in plan, plan
    plan = _plan(db, hist_mod.LIST_RUNS_SQL, {"since": inf, "env": None, "status": None, "also_running": 0, "domain": None,
                                              "text": None, "limit": 10,
                                              "before_ts": float("inf"), "before_id": ""})
    assert "runs_started" in plan and "SCAN runs" not in plan.replace("USING INDEX", ""), plan
    for sql in (hist_mod.DOMAIN_TREND_SQL, hist_mod.TEST_DURATION_TREND_SQL, metric_sql):
        assert "USE TEMP B-TREE FOR ORDER BY" not in _plan(
            db, sql, {"domain": KM, "test": "load", "name": "x", "since": inf, "env": None}), sql


def test_compare_shows_what_one_run_lacks_and_what_moved(empty: StoreLocation) -> None:
    """A 2-domain run against a 1-domain run is not '0 changes' (issue 20 item 8): the
    tests only one run has, and durations and metrics that moved, are listed."""
    path = empty
    record_sync(path, [
        RunSpec("two", T0, outcomes={(KM, "load"): P, (FS, "mount"): P}, metrics={(KM, "load"): {"load_ms": 10.0, "steady": 5.0}}),
        RunSpec("one", T0 + DAY, outcomes={(KM, "load"): P, (KM, "stress"): P}, metrics={(KM, "load"): {"load_ms": 30.0, "steady": 5.2}},
                test_duration=3.0),
    ])
    c = History(path).compare_runs("two", "one")
    assert (c.new_failures, c.fixed, c.still_failing) == ([], [], [])
    assert [(d.domain, d.test, d.before, d.after) for d in c.only_before] == [(FS, "mount", "PASSED", None)]
    assert [(d.domain, d.test) for d in c.only_after] == [(KM, "stress")]
    [moved] = c.changed
    assert (moved.domain, moved.test) == (KM, "load")
    assert "duration 1.00s → 3.00s (+200%)" in moved.message and "load_ms 10 → 30 (+200%)" in moved.message
    assert "steady" not in moved.message  # 4%: inside the noise band
