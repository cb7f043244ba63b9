"""History screen + trend chart on a large history DB, against the bare SQL it needs.

The DB (default 10,000 runs × 6 domains × 17 tests ≈ 1,000,000 test results plus
metrics, kernel events and VM states) is generated through the store's own schema by
bench/_dbgen.py and cached under /tmp, keyed by schema version, so reruns start at once.

Three layers, in one run and on the same file:
1. bare SQL: the store's own trend / run-list SQL on one open sqlite3 connection
   (prepared, warm), rows fetched and nothing else: the floor;
2. the store API (History: a fresh read-only connection per call, validation, rows
   turned into dataclasses), and the TUI's catalog query;
3. the TUI: CockpitApp headless (App.run_test) on the real store. A key event is sent
   the way the terminal driver sends it; the clock stops when the compositor paints a
   frame that holds the data: `h` → the history table with its first page of runs,
   `g` → the trend chart with the domain's pass rate per run, then the duration chart
   of one test (the trend-kind list driven by keys). "Painted" = the first screen
   update after the data reached the widget, and, for the chart, whose render drew
   the screen's current series (plotext's figure, built in the fetch worker or on
   render). Nothing sleeps: the probe waits on an asyncio.Event set from the paint path.
   The screens hold Python's garbage collector while they fill and run it right after
   that frame (tui/gc_pause.py): that cost is reported on its own line, not in the step.

The headline is the first h + g of a fresh app, what every session pays: --cold fresh
processes (default 5) each start the app on the DB and time their first h then g
(imports the app does lazily count: the bench does not import the screens itself), in
two ways, alternating:
- "after the app's first idle": the keys come once the app is idle after starting. Once
  the dashboard is up, the app builds its history and trends screens ahead, in the
  background (their modules imported in a thread, the widgets mounted off the screen
  stack); that idle includes it, and how long after the dashboard it was done is printed;
- "h the moment the dashboard is up": before that build is done (it then competes).
Between h and g the bench waits until the app is idle: that includes the history screen
reading and drawing the trends screen's first chart ahead, in a thread, once its runs are
on screen (g then shows it); a g pressed before that read is done reads as it opens.
In one process, the app keeps the history and trends screens once built and resets them
as they close, so its rounds measure reopening them: the first round is reported apart,
the rest give best and median. Each TUI step is shown with its ratio to the bare SQL it
needs, and the whole "open history, chart a trend" path (h + g) against the 300 ms target.

--postgres (issue 19 item 6; the default when PostgreSQL's server is installed, which
scripts/setup.sh does; --no-postgres: SQLite only): the same, side by side in one run, on PostgreSQL holding the
same rows: a real server started as the tests start theirs (tests/support/postgres.py,
its cluster kept under the cache dir and loaded once by bench/_dbgen.py), each layer on
both backends and a table of the two with their ratio and the 300 ms target. On
PostgreSQL the store API is also timed through pg.Readers (a pool of open connections)
next to History's fresh connection per call, with what a fresh connection costs, and
EXPLAIN ANALYZE checks that the trend and run-list SQL read the indexes schema_pg.py
makes (the exit status is 1 if one does not).

Usage: python bench/history_screen.py [--runs 10000] [--repeat 7] [--size 120x40] [--cold 5] [--no-postgres]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from textual import events

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _dbgen import CACHE_DIR, cached_db, cached_pg, iter_counts, pg_cluster_dir

from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.errors import CockpitError
from vexfs_cockpit.store import history as hist
from vexfs_cockpit.store import pg
from vexfs_cockpit.store.db import reading
from vexfs_cockpit.store.history import (
    DomainTrendPoint,
    DurationPoint,
    History,
    MetricPoint,
    PassRatePoint,
    RunSummary,
)
from vexfs_cockpit.store.location import PgUrl, StoreLocation, parse_location
from vexfs_cockpit.tui.app import CockpitApp
from vexfs_cockpit.tui.backend import (
    ActionResult,
    HistoryCatalog,
    MetricKey,
    RunChoices,
    RunFilter,
    VmInfo,
)
from vexfs_cockpit.tui.gc_pause import GcPause
from vexfs_cockpit.tui.history_queries import HistoryQueries

# The screens' modules are not imported here: the app imports them itself (lazily, or
# ahead in a thread once the dashboard is up), and a cold first open must pay that as a
# user does. The probes recognise the screens by their class names.
HISTORY, TRENDS = "HistoryScreen", "TrendsScreen"
PAGE = 50  # tui/screens/history.py PAGE (checked against it in main, after the cold opens)

TARGET_MS = 300.0
T = TypeVar("T")
STEP_TIMEOUT_S = 60.0  # a step that never paints is reported as a failure, not waited on forever


class BenchBackend(HistoryQueries):
    """The real history half (store read API on the generated DB); no fleet, no runs.

    Counts history queries in flight, so the bench can tell when the screens are
    quiet: a cancelled thread worker's query still runs to its end.
    """

    def __init__(self, db: StoreLocation, pooled: bool = False) -> None:
        # pooled: History reads through pg.Readers (closed with the backend)
        self._readers = pg.Readers(db) if pooled and isinstance(db, PgUrl) else None
        super().__init__(PooledHistory(db, self._readers) if self._readers is not None else History(db))
        self._bus = EventBus()
        self._inflight = 0
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._quiet = asyncio.Event()
        self._quiet.set()

    @property
    def bus(self) -> EventBus:
        return self._bus

    async def open(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._bus.bind_loop(self._loop)

    async def close(self) -> None:
        if self._readers is not None:
            self._readers.close()

    async def vm_list(self) -> list[VmInfo]:
        return []

    def run_choices(self) -> RunChoices:
        return RunChoices(domains=(), envs=("bench",), default_env="bench")

    def _tracked(self, fn: Callable[..., T], *args: Any) -> T:
        with self._lock:
            self._inflight += 1
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._quiet.clear)
        try:
            return fn(*args)
        finally:
            with self._lock:
                self._inflight -= 1
                if self._inflight == 0 and self._loop is not None:
                    self._loop.call_soon_threadsafe(self._quiet_if_idle)

    def _quiet_if_idle(self) -> None:
        if self._inflight == 0:
            self._quiet.set()

    async def quiet(self) -> None:
        await self._quiet.wait()

    def history_catalog(self) -> HistoryCatalog:
        return self._tracked(super().history_catalog)

    def list_runs(self, flt: RunFilter) -> list[RunSummary]:
        return self._tracked(super().list_runs, flt)

    def domain_trend(self, domain: str, since: float | None) -> list[DomainTrendPoint]:
        return self._tracked(super().domain_trend, domain, since)

    def domain_pass_rate(self, domain: str, since: float | None) -> list[PassRatePoint]:
        return self._tracked(super().domain_pass_rate, domain, since)

    def test_duration_trend(self, domain: str, test: str, since: float | None) -> list[DurationPoint]:
        return self._tracked(super().test_duration_trend, domain, test, since)

    def metric_trend(self, key: MetricKey, since: float | None) -> list[MetricPoint]:
        return self._tracked(super().metric_trend, key, since)

    def __getattr__(self, name: str) -> Any:
        async def unavailable(*_: Any) -> ActionResult | str | None:
            raise CockpitError(f"{name} is not available in the history bench")

        return unavailable


# -- timing helpers -------------------------------------------------------------------------
@dataclass
class Sample:
    name: str
    ms: list[float] = field(default_factory=list)  # wall clock
    cpu: list[float] = field(default_factory=list)  # CPU time of this process (all threads), ms
    first_ms: float | None = None  # TUI: the cold first round, kept out of best/median
    rows: int = 0

    def add(self, ms: float, cpu: float) -> None:
        self.ms.append(ms)
        self.cpu.append(cpu)

    @property
    def best(self) -> float:
        return min(self.ms) if self.ms else float("nan")

    @property
    def median(self) -> float:
        return statistics.median(self.ms) if self.ms else float("nan")

    @property
    def cpu_median(self) -> float:
        return statistics.median(self.cpu) if self.cpu else float("nan")


def repeat(name: str, n: int, fn: Callable[[], Sequence[Any]]) -> Sample:
    s = Sample(name)
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        rows = fn()
        s.add((time.perf_counter() - t0) * 1000, (time.process_time() - c0) * 1000)
        s.rows = len(rows)
    return s


def bare_connect(db: StoreLocation) -> Any:
    """One plain connection: sqlite3 read-only, or the store's psycopg connection (which
    only turns the store's ``?``/``:name`` parameters into psycopg's)."""
    if isinstance(db, PgUrl):
        return pg.connect(db)
    return sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)


def bare_sql(db: StoreLocation, n: int, domain: str, test: str) -> dict[str, Sample]:
    """The store's SQL run straight on one open connection, nothing else: the floor."""
    conn = bare_connect(db)
    inf = float("-inf")

    def runs_page() -> list[Any]:
        rows = conn.execute(hist.LIST_RUNS_SQL, {"since": inf, "env": None, "status": None, "also_running": 0, "domain": None,
                                                 "text": None, "limit": PAGE, "before_ts": float("inf"),
                                                 "before_id": ""}).fetchall()
        ids = [r[0] for r in rows]
        marks = ",".join("?" for _ in ids)
        conn.execute(f"SELECT run_id, status, count(*) FROM test_results WHERE run_id IN ({marks}) "
                     "GROUP BY run_id, status", ids).fetchall()
        return rows

    try:
        return {
            "runs": repeat(f"run list: {PAGE} newest + status counts", n, runs_page),
            "pass": repeat("pass rate per run (DOMAIN_PASS_RATE_SQL)", n, lambda: conn.execute(
                hist.DOMAIN_PASS_RATE_SQL, {"domain": domain, "since": inf}).fetchall()),
            "duration": repeat("one test's duration (TEST_DURATION_TREND_SQL)", n, lambda: conn.execute(
                hist.TEST_DURATION_TREND_SQL, {"domain": domain, "test": test, "since": inf, "env": None}).fetchall()),
        }
    finally:
        conn.close()


class PooledHistory(History):
    """History reading through a pool of open connections (store/pg.py Readers) instead
    of a fresh connection per call: what the PostgreSQL rows "pooled" measure."""

    def __init__(self, db: PgUrl, readers: pg.Readers) -> None:
        super().__init__(db)
        self.readers = readers

    def _read(self) -> Any:
        return reading(self.path, self.readers)


def connection_cost(db: PgUrl, n: int) -> dict[str, Sample]:
    """What a History call pays on PostgreSQL before its query: a connection (socket
    and authentication) and the schema check db.reading makes on it."""
    out = {"connect": Sample("pg.connect (socket + auth + close)"), "verify": Sample("pg.verify (schema check)")}
    for _ in range(n):
        t0, c0 = time.perf_counter(), time.process_time()
        conn = pg.connect(db)
        t1, c1 = time.perf_counter(), time.process_time()
        pg.verify(conn)
        t2, c2 = time.perf_counter(), time.process_time()
        conn.close()
        t3, c3 = time.perf_counter(), time.process_time()
        out["connect"].add((t1 - t0 + t3 - t2) * 1000, (c1 - c0 + c3 - c2) * 1000)
        out["verify"].add((t2 - t1) * 1000, (c2 - c1) * 1000)
    return out


def store_api(h: History, n: int, domain: str, test: str, metric: MetricKey | None) -> dict[str, Sample]:
    queries = HistoryQueries(h)
    out = {
        "runs": repeat(f"History.list_runs(limit={PAGE})", n, lambda: h.list_runs(limit=PAGE)),
        "catalog": repeat("history_catalog() (trend pickers)", n, lambda: [queries.history_catalog()]),
        "pass": repeat("History.domain_pass_rate", n, lambda: h.domain_pass_rate(domain)),
        "trend": repeat("History.domain_trend", n, lambda: h.domain_trend(domain)),
        "duration": repeat("History.test_duration_trend", n, lambda: h.test_duration_trend(domain, test)),
    }
    if metric is not None:
        out["metric"] = repeat("History.metric_trend (one test's metric)", n,
                               lambda: h.metric_trend(metric.name, metric.domain, metric.test))
    return out


# -- PostgreSQL's plans -------------------------------------------------------------------------
BIG_TABLES = ("runs", "domain_runs", "test_results", "metrics")


@dataclass
class PlanCheck:
    name: str
    index: str  # the index schema_pg.py made for this query
    used: list[str]  # indexes the plan read
    seq_scans: list[str]  # big tables read whole
    sorts: list[str]  # sort nodes (an ORDER BY the index did not give)
    ms: float  # EXPLAIN ANALYZE's execution time

    @property
    def ok(self) -> bool:
        return self.index in self.used


def _walk(node: dict[str, Any]) -> Iterator[dict[str, Any]]:
    yield node
    for child in node.get("Plans", ()):
        yield from _walk(child)


def explain_pg(db: PgUrl, domain: str, test: str, metric: MetricKey | None) -> list[PlanCheck]:
    """EXPLAIN ANALYZE of the trend and run-list SQL on the generated database, with the
    parameters the store binds (client-side, as the store does): which indexes each plan
    reads, whether it reads a big table whole, and whether it sorts."""
    inf = float("-inf")
    cases: list[tuple[str, str, str, dict[str, Any]]] = [
        ("run list (LIST_RUNS_SQL)", hist.LIST_RUNS_SQL, "runs_started",
         {"since": inf, "env": None, "status": None, "also_running": 0, "domain": None, "text": None, "limit": PAGE,
          "before_ts": float("inf"), "before_id": ""}),
        ("pass rate (DOMAIN_PASS_RATE_SQL)", hist.DOMAIN_PASS_RATE_SQL, "domain_runs_domain_started",
         {"domain": domain, "since": inf}),
        ("domain trend (DOMAIN_TREND_SQL)", hist.DOMAIN_TREND_SQL, "domain_runs_domain_started",
         {"domain": domain, "since": inf, "env": None}),
        ("test duration (TEST_DURATION_TREND_SQL)", hist.TEST_DURATION_TREND_SQL, "test_results_trend",
         {"domain": domain, "test": test, "since": inf, "env": None}),
    ]
    if metric is not None:
        cases.append(("metric trend (metric_trend_sql)", hist.metric_trend_sql(True, True), "metrics_trend",
                      {"name": metric.name, "domain": metric.domain, "test": metric.test, "since": inf, "env": None}))
    conn = pg.connect(db)
    out: list[PlanCheck] = []
    try:
        for name, sql, index, params in cases:
            for _ in range(2):  # the second, on a warm cache, is the one kept
                (plan,) = conn.execute("EXPLAIN (ANALYZE, FORMAT JSON) " + sql, params).fetchone()
            plan = json.loads(plan) if isinstance(plan, str) else plan
            nodes = list(_walk(plan[0]["Plan"]))
            out.append(PlanCheck(
                name, index,
                used=sorted({n["Index Name"] for n in nodes if "Index Name" in n}),
                seq_scans=sorted({n["Relation Name"] for n in nodes
                                  if n["Node Type"] == "Seq Scan" and n.get("Relation Name") in BIG_TABLES}),
                sorts=[f"{n['Node Type']} by {', '.join(n.get('Sort Key', n.get('Presorted Key', [])))}"
                       for n in nodes if n["Node Type"] in ("Sort", "Incremental Sort")],
                ms=float(plan[0]["Execution Time"]),
            ))
    finally:
        conn.close()
    return out


# -- the TUI probe ----------------------------------------------------------------------------
class PaintProbe:
    """Stops the clock at the first screen update that shows the awaited data.

    ``arm(ready)``: ``ready()`` is checked at every compositor paint (``App._display``,
    called right after the frame was rendered); the first paint where it holds sets
    ``painted``. A paint and the check run on the UI thread with no await between.
    """

    def __init__(self, app: CockpitApp, pilot: Any) -> None:
        self.app = app
        self.pilot = pilot
        self.ready: Callable[[], bool] | None = None
        self.painted = asyncio.Event()
        self.painted_at = 0.0
        self.painted_cpu = 0.0
        real_display = app._display

        def display(screen: Any, renderable: Any) -> None:
            real_display(screen, renderable)
            if self.ready is not None and renderable is not None and self.ready():
                self.painted_at, self.painted_cpu = time.perf_counter(), time.process_time()
                self.ready = None
                self.painted.set()

        app._display = display  # type: ignore[method-assign]

    async def press(self, keys: Sequence[str], ready: Callable[[], bool]) -> tuple[float, float]:
        """Send ``keys`` (the last one starts the clock); wall and CPU ms until a frame
        shows ``ready``."""
        driver = self.app._driver
        assert driver is not None
        for key in keys[:-1]:
            await self.pilot.press(key)
            await self.idle()
        self.painted.clear()
        self.ready = ready
        t0, c0 = time.perf_counter(), time.process_time()
        self._send(driver, keys[-1])
        try:
            await asyncio.wait_for(self.painted.wait(), STEP_TIMEOUT_S)
        except TimeoutError:
            self.ready = None
            raise SystemExit(f"bench: nothing painted {STEP_TIMEOUT_S:.0f}s after {keys[-1]!r}") from None
        return (self.painted_at - t0) * 1000, (self.painted_cpu - c0) * 1000

    @staticmethod
    def _send(driver: Any, key: str) -> None:
        char = key if len(key) == 1 else None
        event = events.Key(key, char)
        event.set_sender(driver._app)
        driver.send_message(event)  # the path a real terminal's key takes

    async def idle(self) -> None:
        """No history query in flight, no worker running, pending messages handled."""
        backend = self.app.backend
        assert isinstance(backend, BenchBackend)
        while True:
            await backend.quiet()
            running = [w for w in self.app.workers if not w.is_finished]
            if running:
                await asyncio.gather(*(w.wait() for w in running), return_exceptions=True)
            await self.pilot.pause()  # delivers call_from_thread results, which may start more
            if backend._quiet.is_set() and not any(not w.is_finished for w in self.app.workers):
                return


class GcWatch:
    """Times the collections the screens defer to just after their data frame."""

    def __init__(self) -> None:
        self.ms: list[float] = []
        real = GcPause._collect
        watch = self

        def collect(pause: GcPause) -> None:
            t0 = time.perf_counter()
            real(pause)
            watch.ms.append((time.perf_counter() - t0) * 1000)

        GcPause._collect = collect  # type: ignore[method-assign]


def history_ready(app: CockpitApp) -> Callable[[], bool]:
    def ready() -> bool:
        scr: Any = app.screen
        if type(scr).__name__ != HISTORY or not scr.runs:
            return False
        return scr.query_one("#runs").row_count == len(scr.runs)

    return ready


def chart_ready(app: CockpitApp, kind_title: str) -> Callable[[], bool]:
    """The frame holds the chart of the screen's current series, with data: the chart's
    last render() (made for this frame) drew that series."""

    def ready() -> bool:
        scr: Any = app.screen
        return (
            type(scr).__name__ == TRENDS
            and scr.series is not None
            and scr.series.title.startswith(kind_title)
            and len(scr.series.values) > 0
            and scr.query_one("TrendChart").shown is scr.series
        )

    return ready


async def tui(db: StoreLocation, rounds: int, size: tuple[int, int],
              pooled: bool = False) -> tuple[dict[str, Sample], dict[str, Any]]:
    app = CockpitApp(BenchBackend(db, pooled))
    out = {k: Sample(k) for k in ("h", "g", "duration", "h+g")}
    seen: dict[str, Any] = {}
    async with app.run_test(size=size) as pilot:
        probe = PaintProbe(app, pilot)
        await probe.idle()
        for i in range(rounds):
            h_ms = await probe.press(["h"], history_ready(app))
            await probe.idle()  # the catalog worker finishes before we go on
            g_ms = await probe.press(["g"], chart_ready(app, "pass rate of"))
            settle_t0 = time.perf_counter()
            await probe.idle()
            seen["g settle extra ms"] = (time.perf_counter() - settle_t0) * 1000
            scr: Any = app.screen
            assert type(scr).__name__ == TRENDS and scr.series is not None
            seen["pass points"] = len(scr.series.values)
            seen["pass title"] = scr.series.title
            # The trend-kind list has focus: open it, move to "duration of a test", pick it.
            d_ms = await probe.press(["enter", "down", "enter"], chart_ready(app, "duration of"))
            await probe.idle()
            seen["duration points"] = len(scr.series.values) if scr.series else 0
            seen["duration title"] = scr.series.title if scr.series else ""
            both = (h_ms[0] + g_ms[0], h_ms[1] + g_ms[1])
            for name, (ms, cpu) in (("h", h_ms), ("g", g_ms), ("duration", d_ms), ("h+g", both)):
                if i == 0:
                    out[name].first_ms = ms
                else:
                    out[name].add(ms, cpu)
            # Back to the dashboard for the next round.
            for _ in range(2):
                await pilot.press("escape")
                await probe.idle()
            if type(app.screen).__name__ in (TRENDS, HISTORY):
                raise SystemExit(f"bench: escape did not return to the dashboard (on {type(app.screen).__name__})")
    return out, seen


async def cold_open(db: StoreLocation, size: tuple[int, int], when: str, pooled: bool = False) -> dict[str, Any]:
    """A fresh app's first h + g (run in a fresh process, so imports count: cold_opens).

    ``when``: "idle": the keys come once the app is idle after starting (its first idle,
    which includes building the history and trends screens ahead); "early": h the moment
    the dashboard is up, before that build is done.
    """
    gc_watch = GcWatch()
    app = CockpitApp(BenchBackend(db, pooled))
    out: dict[str, Any] = {}
    async with app.run_test(size=size) as pilot:
        t_up = time.perf_counter()  # run_test: the dashboard is mounted and drawn
        probe = PaintProbe(app, pilot)
        if when == "idle":
            await probe.idle()
            prebuilt = getattr(app, "screens_prebuilt", None)
            if prebuilt is not None:
                await prebuilt.wait()
                await probe.idle()
            out["ready_ms"] = (time.perf_counter() - t_up) * 1000
        h_ms = await probe.press(["h"], history_ready(app))
        await probe.idle()
        g_ms = await probe.press(["g"], chart_ready(app, "pass rate of"))
        await probe.idle()
        out.update(h=h_ms[0], g=g_ms[0], hg=h_ms[0] + g_ms[0], gc=list(gc_watch.ms))
    return out


def cold_opens(db: StoreLocation, n: int, size: str, when: str,
               pooled: bool = False) -> tuple[Sample, list[float], list[float]]:
    """``n`` fresh processes, each a first h + g (cold_open): wall ms, the screens'
    build-ahead time after the dashboard was up, and the deferred GC pauses."""
    s, ready, gcs = Sample(f"first h + g ({when})"), [], []
    for _ in range(n):
        proc = subprocess.run([sys.executable, __file__, "--cold-child", when, "--db", str(db), "--size", size,
                               *(["--pooled"] if pooled else [])],
                              capture_output=True, text=True, timeout=300)
        if proc.returncode != 0:
            raise SystemExit(f"bench: cold child failed:\n{proc.stderr}")
        res = json.loads(proc.stdout.strip().splitlines()[-1])
        s.add(res["hg"], float("nan"))
        ready.extend([res["ready_ms"]] if "ready_ms" in res else [])
        gcs.extend(res["gc"])
    return s, ready, gcs


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@dataclass
class Measured:
    """Every layer on one backend."""

    label: str
    db: StoreLocation
    bare: dict[str, Sample]
    api: dict[str, Sample]
    pooled: bool  # History reads through pg.Readers (a pool of open connections)
    conn_cost: dict[str, Sample]  # PostgreSQL, fresh connections: what one costs before its query
    cold: dict[str, tuple[Sample, list[float], list[float]]] = field(default_factory=dict)
    ui: dict[str, Sample] = field(default_factory=dict)
    seen: dict[str, Any] = field(default_factory=dict)
    deferred_gc: list[float] = field(default_factory=list)


def print_layers(m: Measured, args: argparse.Namespace, width: int, height: int) -> None:
    """One backend's layers, each step against the bare SQL it needs."""
    print()
    print(f"== {m.label} ==")
    print(f"{'layer / step':<46}{'rows':>7}{'best ms':>9}{'median ms':>11}{'CPU ms':>8}{'first ms':>10}"
          f"{'vs bare SQL':>13}")
    bare, api, ui, seen = m.bare, m.api, m.ui, m.seen
    print(f"bare SQL ({'psycopg' if isinstance(m.db, PgUrl) else 'sqlite3'}, one warm connection)")
    for key in ("runs", "pass", "duration"):
        line("  " + bare[key].name, bare[key], None)
    print("store API (History: an open connection lent per call by pg.Readers)" if m.pooled
          else "store API (History: a fresh read connection per call)")
    for key, base in (("runs", "runs"), ("catalog", None), ("pass", "pass"), ("trend", None),
                      ("duration", "duration"), ("metric", None)):
        if key in api:
            line("  " + api[key].name, api[key], bare[base] if base else None)
    if m.conn_cost:
        print("what each fresh-connection call pays before its query")
        for s in m.conn_cost.values():
            line("  " + s.name, s, None)
    if not ui:
        return
    print(f"TUI, key press → frame painted ({width}x{height}, headless)")
    line("  h: history screen with its run table", ui["h"], bare["runs"])
    line("  g: trend chart, pass rate per run", ui["g"], bare["pass"])
    print("    (g shows the chart the history screen read and drew ahead, in a thread, once its runs were on "
          "screen: that SQL ran before the key, in the idle after h)")
    line("  duration chart (enter, down, enter)", ui["duration"], bare["duration"])
    line("  h + g: open history, chart a trend", ui["h+g"], bare_both(m))
    if m.cold:
        print(f"TUI, the first h + g of a fresh app: {args.cold} fresh processes each (its imports count, "
              "and building its screens)")
        idle, ready, _ = m.cold["idle"]
        line("  keys after the app's first idle", idle, bare_both(m))
        if ready:
            print(f"    (that idle includes building the history and trends screens ahead, in the background: "
                  f"done median {statistics.median(ready):.0f} ms, max {max(ready):.0f} ms after the dashboard was up)")
        line("  h the moment the dashboard is up", m.cold["early"][0], bare_both(m))
        cold_gc = [*m.cold["idle"][2], *m.cold["early"][2]]
        if cold_gc:
            print(f"    (their deferred garbage collection: median {statistics.median(cold_gc):.0f} ms, "
                  f"max {max(cold_gc):.0f} ms, after the measured frames)")
    print(f"  (after the chart painted, the screen's remaining trend/catalog workers took "
          f"{seen['g settle extra ms']:.0f} ms more in the last round)")
    if m.deferred_gc:
        print(f"  (garbage collection the screens deferred to just after their data frame: median "
              f"{statistics.median(m.deferred_gc):.0f} ms, max {max(m.deferred_gc):.0f} ms, {len(m.deferred_gc)} runs; "
              "on the UI thread, after the measured frame)")
    print(f"charted: “{seen['pass title']}” ({seen['pass points']:,} points), "
          f"“{seen['duration title']}” ({seen['duration points']:,} points)")


def line(label: str, s: Sample, base: Sample | None) -> None:
    ratio = f"{s.median / base.median:.1f}x" if base is not None and base.median > 0 else ""
    first = f"{s.first_ms:.1f}" if s.first_ms is not None else ""
    rows = f"{s.rows:,}" if s.rows else ""
    cpu = "" if s.cpu_median != s.cpu_median else f"{s.cpu_median:.1f}"  # NaN: not measured (fresh processes)
    print(f"{label:<46}{rows:>7}{s.best:>9.1f}{s.median:>11.1f}{cpu:>8}{first:>10}{ratio:>13}")


def bare_both(m: Measured) -> Sample:
    return Sample("bare", [a + b for a, b in zip(m.bare["runs"].ms, m.bare["pass"].ms)])


def print_side_by_side(ms: list[Measured]) -> None:
    """The same steps on every backend: medians, each against the first (SQLite), and the
    300 ms target."""
    base = ms[0]
    print()
    print(f"== side by side: {' vs '.join(m.label for m in ms)}; same rows, same run (median ms) ==")
    print(f"{'step':<52}" + "".join(f"{m.label:>12}" for m in ms)
          + "".join(f"{m.label + ' / ' + base.label:>24}" for m in ms[1:]) + f"   < {TARGET_MS:.0f} ms")
    rows: list[tuple[str, list[Sample | None]]] = []
    for key in ("runs", "pass", "duration"):
        rows.append((f"bare SQL: {base.bare[key].name}", [m.bare.get(key) for m in ms]))
    for key in ("runs", "catalog", "pass", "trend", "duration", "metric"):
        if key in base.api:
            rows.append((f"store: {base.api[key].name}", [m.api.get(key) for m in ms]))
    if all(m.ui for m in ms):
        for key, label in (("h", "TUI h: history screen"), ("g", "TUI g: trend chart"),
                           ("duration", "TUI duration chart"), ("h+g", "TUI h + g (warm app)")):
            rows.append((label, [m.ui[key] for m in ms]))
    for key, label in (("idle", "TUI first h + g, fresh app (after idle)"),
                       ("early", "TUI first h + g, fresh app (h at once)")):
        if all(key in m.cold for m in ms):
            rows.append((label, [m.cold[key][0] for m in ms]))
    for label, samples in rows:
        cells = "".join(f"{s.median:>12.1f}" if s is not None else f"{'':>12}" for s in samples)
        first = samples[0]
        ratios = "".join(f"{s.median / first.median:>23.2f}x" if s is not None and first is not None and first.median > 0
                         else f"{'':>24}" for s in samples[1:])
        verdict = ("   " + " / ".join("PASS" if s.median < TARGET_MS else "FAIL" for s in samples if s is not None)
                   if label.startswith("TUI") else "")
        print(f"{label:<52}{cells}{ratios}{verdict}")


def print_plans(plans: list[PlanCheck]) -> None:
    print()
    print("== PostgreSQL: EXPLAIN ANALYZE of the trend and run-list SQL on the generated database (warm) ==")
    for p in plans:
        verdict = "OK" if p.ok else f"NOT {p.index}"
        extra = f"; {', '.join(p.sorts)}" if p.sorts else "; no sort (the index gives the order)"
        seq = f"; reads whole: {', '.join(p.seq_scans)}" if p.seq_scans else ""
        print(f"  {p.name:<42}{verdict:<15}{p.ms:>7.1f} ms  indexes: {', '.join(p.used) or 'none'}{seq}{extra}")


async def measure(label: str, db: StoreLocation, pooled: bool, args: argparse.Namespace, domain: str, test: str,
                  metric: MetricKey | None) -> Measured:
    bare = bare_sql(db, args.repeat, domain, test)
    cost: dict[str, Sample] = {}
    if isinstance(db, PgUrl) and pooled:
        with pg.Readers(db) as readers:
            api = store_api(PooledHistory(db, readers), args.repeat, domain, test, metric)
    else:
        api = store_api(History(db), args.repeat, domain, test, metric)
        if isinstance(db, PgUrl):
            cost = connection_cost(db, args.repeat)
    return Measured(label, db, bare, api, pooled, cost)


async def main(args: argparse.Namespace) -> int:
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.cold_child:
        print(json.dumps(await cold_open(parse_location(args.db, "--db"), (width, height), args.cold_child,
                                         args.pooled)))
        return 0
    with contextlib.ExitStack() as stack:
        return await run_bench(args, width, height, stack)


async def run_bench(args: argparse.Namespace, width: int, height: int, stack: contextlib.ExitStack) -> int:
    load = os.getloadavg()
    stats = cached_db(args.runs, Path(args.cache_dir))
    counts = dict(iter_counts(stats.path))
    how = "cached" if stats.cached else f"generated in {stats.seconds:.1f}s"
    print(f"DB {stats.path} ({stats.size_bytes / 1e9:.2f} GB, {how}, schema v{hist_schema_version(stats.path)})")
    print("   " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    backends: list[tuple[str, StoreLocation, bool]] = [("SQLite", stats.path, False)]
    if args.postgres:
        # A real server started as the tests start theirs, its cluster kept under the
        # cache dir: loaded once from the SQLite file, started again in ~1 s afterwards.
        from tests.support.postgres import pg_bindir, running_postgres

        if pg_bindir() is None:
            raise SystemExit("bench: --postgres needs PostgreSQL's server: run scripts/setup.sh")
        base = pg_cluster_dir(args.runs, Path(args.cache_dir))
        base.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        server = stack.enter_context(running_postgres(base, keep=True))
        started = time.perf_counter() - t0
        pstats = cached_pg(stats, server.url, base / "loaded")
        how = "cached" if pstats.cached else f"loaded by COPY in {pstats.seconds:.1f}s"
        print(f"PostgreSQL {pg_bindir().parent.name} on a Unix socket, cluster {base} (started in {started:.1f}s): "
              f"the same rows, {pstats.size_bytes / 1e9:.2f} GB, {how}")
        # As History reads today (a connection per call), and through pg.Readers.
        backends += [("PostgreSQL", PgUrl(pstats.url), False), ("PG pooled", PgUrl(pstats.url), True)]
    print(f"host: {os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at start"
          " (other work on the box shows up in wall-clock times)")

    catalog = HistoryQueries(History(stats.path)).history_catalog()
    if not catalog.domains:
        raise SystemExit("bench: the generated DB has no domains")
    domain = catalog.domains[0]  # what the trends screen charts first
    test = catalog.tests[domain][0]  # the first test of the duration picker
    metric = next((k for k in catalog.metrics if k.domain and k.test), None)  # one test's metric
    for label, db, _ in backends[1:]:
        other = HistoryQueries(History(db)).history_catalog()
        if other != catalog:
            raise SystemExit(f"bench: {label}'s catalog differs from SQLite's: not the same rows")

    measured = [await measure(label, db, pooled, args, domain, test, metric) for label, db, pooled in backends]
    if args.cold:
        runs: dict[tuple[int, str], list[tuple[Sample, list[float], list[float]]]] = {}
        for _ in range(args.cold):  # alternating, so load on the host hits every backend and way alike
            for i, m in enumerate(measured):
                for when in ("idle", "early"):
                    runs.setdefault((i, when), []).append(cold_opens(m.db, 1, args.size, when, m.pooled))
        for (i, when), parts in runs.items():
            measured[i].cold[when] = (
                Sample(parts[0][0].name, [x for p in parts for x in p[0].ms], [x for p in parts for x in p[0].cpu]),
                [x for p in parts for x in p[1]], [x for p in parts for x in p[2]])
    for m in measured:
        gc_watch = GcWatch()
        m.ui, m.seen = await tui(m.db, args.repeat + 1, (width, height), m.pooled)
        m.deferred_gc = list(gc_watch.ms)
        m.ui["h"].rows = len(History(m.db).list_runs(limit=PAGE))
        m.ui["g"].rows, m.ui["duration"].rows = m.seen["pass points"], m.seen["duration points"]
    plans = explain_pg(backends[1][1], domain, test, metric) if args.postgres else []  # type: ignore[arg-type]
    floor: dict[str, Sample] = {}
    if args.floor_runs:  # the same steps on a tiny DB: what the screens cost with next to no data
        floor, _ = await tui(cached_db(args.floor_runs, Path(args.cache_dir)).path, args.repeat + 1, (width, height))

    for m in measured:
        print_layers(m, args, width, height)
    if floor:
        print(f"TUI floor: the same steps on a {args.floor_runs}-run SQLite DB (screens, key bar, layout, plotext; "
              "no bulk data)")
        for key, label in (("h", "h"), ("g", "g"), ("duration", "duration chart"), ("h+g", "h + g")):
            line(f"  {label}", floor[key], None)
    if len(measured) > 1:
        print_side_by_side(measured)
    if plans:
        print_plans(plans)
    print(f"peak RSS: {peak_rss_mb():.0f} MB; load average at the end "
          + " ".join(f"{x:.1f}" for x in os.getloadavg()))
    print()
    print(f"target: open the history screen and render a trend chart in under {TARGET_MS:.0f} ms")
    for m in measured:
        for label, s in (("h + g (median)", m.ui["h+g"]), ("h (median)", m.ui["h"]), ("g (median)", m.ui["g"]),
                         ("duration chart (median)", m.ui["duration"])):
            verdict = "PASS" if s.median < TARGET_MS else "FAIL"
            print(f"  {m.label:<11}{label:<26}{s.median:>8.1f} ms  {s.median / TARGET_MS:.2f}x of target  {verdict}")
        for label, key in (("first h + g (after idle)", "idle"), ("first h + g (h at once)", "early")):
            if key in m.cold:
                s = m.cold[key][0]
                verdict = "PASS" if s.median < TARGET_MS else "FAIL"
                print(f"  {m.label:<11}{label:<26}{s.median:>8.1f} ms  {s.median / TARGET_MS:.2f}x of target  {verdict} "
                      f"(median of {len(s.ms)} fresh processes, max {max(s.ms):.1f} ms)")
    if any(not p.ok for p in plans):
        print("PostgreSQL: a trend or run-list query does not use its index (see the EXPLAIN lines above)")
        return 1
    from vexfs_cockpit.tui.screens import history as history_screen

    if history_screen.PAGE != PAGE:
        raise SystemExit(f"bench: PAGE is {PAGE}, the history screen's is {history_screen.PAGE}")
    return 0


def hist_schema_version(path: Path) -> int:
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return int(conn.execute("PRAGMA user_version").fetchone()[0])
    finally:
        conn.close()


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=10_000, help="runs in the generated DB (×~102 test results each)")
    p.add_argument("--repeat", type=int, default=7, help="timed rounds per measurement (the TUI adds a cold first round)")
    p.add_argument("--size", default="120x40", help="terminal size of the headless app, WxH")
    p.add_argument("--floor-runs", type=int, default=10, help="also time the TUI on a DB this small (0: skip)")
    p.add_argument("--cache-dir", default=str(CACHE_DIR), help="where generated DBs are kept")
    p.add_argument("--cold", type=int, default=5,
                   help="fresh processes timing a first h + g, per way of pressing (0: skip)")
    p.add_argument("--cold-child", choices=("idle", "early"), help=argparse.SUPPRESS)
    p.add_argument("--db", help=argparse.SUPPRESS)
    p.add_argument("--pooled", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--postgres", action=argparse.BooleanOptionalAction, default=None,
                   help="also on PostgreSQL, side by side: a real server (tests/support/postgres.py) holding the "
                        "same rows, its cluster kept under --cache-dir; plus EXPLAIN of the trend and run-list SQL "
                        "(default: when PostgreSQL's server is installed)")
    args = p.parse_args(argv)
    if args.postgres is None:
        from tests.support.postgres import pg_bindir

        args.postgres = pg_bindir() is not None
    return args


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse_args())))
