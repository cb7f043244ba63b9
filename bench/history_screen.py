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

Usage: python bench/history_screen.py [--runs 10000] [--repeat 7] [--size 120x40] [--cold 5]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from textual import events

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from _dbgen import CACHE_DIR, cached_db, iter_counts

from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.errors import CockpitError
from vexfs_cockpit.store import history as hist
from vexfs_cockpit.store.history import (
    DomainTrendPoint,
    DurationPoint,
    History,
    MetricPoint,
    PassRatePoint,
    RunSummary,
)
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

    def __init__(self, db: Path) -> None:
        super().__init__(History(db))
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
        return None

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


def bare_sql(db: Path, n: int, domain: str, test: str) -> dict[str, Sample]:
    """The store's SQL run straight on sqlite3: one connection, statements cached."""
    conn = sqlite3.connect(f"{db.resolve().as_uri()}?mode=ro", uri=True)
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


def store_api(backend: BenchBackend, n: int, domain: str, test: str) -> dict[str, Sample]:
    h = backend.history
    return {
        "runs": repeat(f"History.list_runs(limit={PAGE})", n, lambda: h.list_runs(limit=PAGE)),
        "catalog": repeat("history_catalog() (trend pickers)", n, lambda: [backend.history_catalog()]),
        "pass": repeat("History.domain_pass_rate", n, lambda: h.domain_pass_rate(domain)),
        "duration": repeat("History.test_duration_trend", n, lambda: h.test_duration_trend(domain, test)),
    }


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


async def tui(db: Path, rounds: int, size: tuple[int, int]) -> tuple[dict[str, Sample], dict[str, Any]]:
    app = CockpitApp(BenchBackend(db))
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


async def cold_open(db: Path, size: tuple[int, int], when: str) -> dict[str, Any]:
    """A fresh app's first h + g (run in a fresh process, so imports count: cold_opens).

    ``when``: "idle": the keys come once the app is idle after starting (its first idle,
    which includes building the history and trends screens ahead); "early": h the moment
    the dashboard is up, before that build is done.
    """
    gc_watch = GcWatch()
    app = CockpitApp(BenchBackend(db))
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


def cold_opens(db: Path, n: int, size: str, when: str) -> tuple[Sample, list[float], list[float]]:
    """``n`` fresh processes, each a first h + g (cold_open): wall ms, the screens'
    build-ahead time after the dashboard was up, and the deferred GC pauses."""
    s, ready, gcs = Sample(f"first h + g ({when})"), [], []
    for _ in range(n):
        proc = subprocess.run([sys.executable, __file__, "--cold-child", when, "--db", str(db), "--size", size],
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


async def main(args: argparse.Namespace) -> int:
    width, height = (int(v) for v in args.size.lower().split("x"))
    if args.cold_child:
        print(json.dumps(await cold_open(Path(args.db), (width, height), args.cold_child)))
        return 0
    load = os.getloadavg()
    stats = cached_db(args.runs, Path(args.cache_dir))
    counts = dict(iter_counts(stats.path))
    how = "cached" if stats.cached else f"generated in {stats.seconds:.1f}s"
    print(f"DB {stats.path} ({stats.size_bytes / 1e9:.2f} GB, {how}, schema v{hist_schema_version(stats.path)})")
    print("   " + ", ".join(f"{k} {v:,}" for k, v in counts.items()))
    print(f"host: {os.cpu_count()} CPUs, load average {load[0]:.1f} {load[1]:.1f} {load[2]:.1f} at start"
          " (other work on the box shows up in wall-clock times)")

    backend = BenchBackend(stats.path)
    catalog = backend.history_catalog()
    if not catalog.domains:
        raise SystemExit("bench: the generated DB has no domains")
    domain = catalog.domains[0]  # what the trends screen charts first
    test = catalog.tests[domain][0]  # the first test of the duration picker

    bare = bare_sql(stats.path, args.repeat, domain, test)
    api = store_api(backend, args.repeat, domain, test)
    cold: dict[str, tuple[Sample, list[float], list[float]]] = {}
    if args.cold:
        runs = {"idle": [], "early": []}  # type: dict[str, list[tuple[Sample, list[float], list[float]]]]
        for _ in range(args.cold):  # alternating, so load on the host hits both alike
            for when in runs:
                runs[when].append(cold_opens(stats.path, 1, args.size, when))
        for when, parts in runs.items():
            cold[when] = (Sample(parts[0][0].name, [x for p in parts for x in p[0].ms], [x for p in parts for x in p[0].cpu]),
                          [x for p in parts for x in p[1]], [x for p in parts for x in p[2]])
    gc_watch = GcWatch()
    ui, seen = await tui(stats.path, args.repeat + 1, (width, height))
    deferred_gc = list(gc_watch.ms)
    floor: dict[str, Sample] = {}
    if args.floor_runs:  # the same steps on a tiny DB: what the screens cost with next to no data
        floor, _ = await tui(cached_db(args.floor_runs, Path(args.cache_dir)).path, args.repeat + 1, (width, height))

    print()
    print(f"{'layer / step':<46}{'rows':>7}{'best ms':>9}{'median ms':>11}{'CPU ms':>8}{'first ms':>10}"
          f"{'vs bare SQL':>13}")

    def line(label: str, s: Sample, base: Sample | None) -> None:
        ratio = f"{s.median / base.median:.1f}x" if base is not None and base.median > 0 else ""
        first = f"{s.first_ms:.1f}" if s.first_ms is not None else ""
        rows = f"{s.rows:,}" if s.rows else ""
        cpu = "" if s.cpu_median != s.cpu_median else f"{s.cpu_median:.1f}"  # NaN: not measured (fresh processes)
        print(f"{label:<46}{rows:>7}{s.best:>9.1f}{s.median:>11.1f}{cpu:>8}{first:>10}{ratio:>13}")

    print("bare SQL (sqlite3, one warm connection)")
    for key in ("runs", "pass", "duration"):
        line("  " + bare[key].name, bare[key], None)
    print("store API (fresh read connection per call)")
    for key, base in (("runs", "runs"), ("catalog", None), ("pass", "pass"), ("duration", "duration")):
        line("  " + api[key].name, api[key], bare[base] if base else None)
    print(f"TUI, key press → frame painted ({width}x{height}, headless)")
    ui["h"].rows, ui["g"].rows, ui["duration"].rows = len(backend.list_runs(RunFilter(limit=PAGE))), seen["pass points"], seen["duration points"]
    line("  h: history screen with its run table", ui["h"], bare["runs"])
    line("  g: trend chart, pass rate per run", ui["g"], bare["pass"])
    print("    (g shows the chart the history screen read and drew ahead, in a thread, once its runs were on "
          "screen: that SQL ran before the key, in the idle after h)")
    line("  duration chart (enter, down, enter)", ui["duration"], bare["duration"])
    both = ui["h+g"]
    bare_both = Sample("bare", [a + b for a, b in zip(bare["runs"].ms, bare["pass"].ms)])
    line("  h + g: open history, chart a trend", both, bare_both)
    if cold:
        print(f"TUI, the first h + g of a fresh app: {args.cold} fresh processes each (its imports count, "
              "and building its screens)")
        idle, ready, _ = cold["idle"]
        line("  keys after the app's first idle", idle, bare_both)
        if ready:
            print(f"    (that idle includes building the history and trends screens ahead, in the background: "
                  f"done median {statistics.median(ready):.0f} ms, max {max(ready):.0f} ms after the dashboard was up)")
        line("  h the moment the dashboard is up", cold["early"][0], bare_both)
        cold_gc = [*cold["idle"][2], *cold["early"][2]]
        if cold_gc:
            print(f"    (their deferred garbage collection: median {statistics.median(cold_gc):.0f} ms, "
                  f"max {max(cold_gc):.0f} ms, after the measured frames)")
    print(f"  (after the chart painted, the screen's remaining trend/catalog workers took "
          f"{seen['g settle extra ms']:.0f} ms more in the last round)")
    if deferred_gc:
        print(f"  (garbage collection the screens deferred to just after their data frame: median "
              f"{statistics.median(deferred_gc):.0f} ms, max {max(deferred_gc):.0f} ms, {len(deferred_gc)} runs; "
              "on the UI thread, after the measured frame)")
    if floor:
        print(f"TUI floor: the same steps on a {args.floor_runs}-run DB (screens, key bar, layout, plotext; no bulk data)")
        for key, label in (("h", "h"), ("g", "g"), ("duration", "duration chart"), ("h+g", "h + g")):
            line(f"  {label}", floor[key], None)
    print(f"charted: “{seen['pass title']}” ({seen['pass points']:,} points), "
          f"“{seen['duration title']}” ({seen['duration points']:,} points)")
    print(f"peak RSS: {peak_rss_mb():.0f} MB")
    print()
    print(f"target: open the history screen and render a trend chart in under {TARGET_MS:.0f} ms")
    for label, s in (("h + g (median)", both), ("h (median)", ui["h"]), ("g (median)", ui["g"]),
                     ("duration chart (median)", ui["duration"])):
        verdict = "PASS" if s.median < TARGET_MS else "FAIL"
        print(f"  {label:<26}{s.median:>8.1f} ms  {s.median / TARGET_MS:.2f}x of target  {verdict}")
    for label, key in (("first h + g (after idle)", "idle"), ("first h + g (h at once)", "early")):
        if key in cold:
            s = cold[key][0]
            verdict = "PASS" if s.median < TARGET_MS else "FAIL"
            print(f"  {label:<26}{s.median:>8.1f} ms  {s.median / TARGET_MS:.2f}x of target  {verdict} "
                  f"(median of {len(s.ms)} fresh processes, max {max(s.ms):.1f} ms)")
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
    return p.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse_args())))
