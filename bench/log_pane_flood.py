"""Flood the live kernel-log pane and measure what a user would feel.

Feeds the cockpit's dashboard (headless, ``App.run_test``) with kernel-log lines taken
from real console captures (tests/data/klog/*.log), cycled over three VMs, plus the
KernelEventRaised reports the real classifier (klog/classify.py) finds in them. Events
go through the real EventBus and the app's real pump, exactly as the engine feeds it.

Reports:
- lines/s absorbed by the pane (producer as fast as it can, then paced at --rate);
- key-press-to-screen latency p50/p99 while flooding: a ``p`` key event is injected the
  way the terminal driver does, and the clock stops when the log status line is
  painted with the new mode (PAUSED / FOLLOW) by the compositor;
- resident memory after the first 10k lines and at the end (flat = bounded).

The max-rate flood of --lines is repeated --rounds times (the same console lines, each
round numbered on from the last), so its p99 rests on dozens of key presses rather than
the handful a sub-second flood leaves room for. Flooding starts once the app has
finished starting (its first idle), as a user's key would. The producer builds each
event as it publishes it, as the engine does: what the pane keeps is young and tracked
by the cyclic GC as in production (the prebuilt lines it reads from are frozen out of
the GC's way).

Usage: python bench/log_pane_flood.py [--lines 200000] [--rounds 5] [--rate 10000] [--paced-seconds 10]
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from textual import events
from textual.widgets import Static

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from vexfs_cockpit.engine.bus import EventBus  # noqa: E402
from vexfs_cockpit.engine.events import Event, KernelEventRaised, KernelLogLine  # noqa: E402
from vexfs_cockpit.errors import CockpitError  # noqa: E402
from vexfs_cockpit.klog.classify import Classifier, split_lines  # noqa: E402
from vexfs_cockpit.tui.app import CockpitApp  # noqa: E402
from vexfs_cockpit.tui.backend import ActionResult, HistoryCatalog, RunChoices, RunRequest, VmInfo  # noqa: E402
from vexfs_cockpit.tui.widgets.kernel_log_pane import KernelLogPane  # noqa: E402

CAPTURES = ROOT / "tests" / "data" / "klog"
VMS = ("vexfs-bench-kernel_module-0", "vexfs-bench-filesystem_operations-0", "vexfs-bench-safety_validation-0")
CHUNK = 500  # events published per producer step before yielding to the UI
TARGET_P99_MS = 100.0
TARGET_RATE = 10_000.0


class BenchBackend:
    """Just the bus: the bench drives only the live pane."""

    def __init__(self) -> None:
        self._bus = EventBus()

    @property
    def bus(self) -> EventBus:
        return self._bus

    async def open(self) -> None:
        self._bus.bind_loop(asyncio.get_running_loop())

    async def close(self) -> None:
        return None

    async def vm_list(self) -> list[VmInfo]:
        return []

    def history_catalog(self) -> HistoryCatalog:
        return HistoryCatalog()

    def run_choices(self) -> RunChoices:
        return RunChoices(domains=(), envs=("bench",), default_env="bench")

    def expected_durations(self, env: str, domain: str, tests: Sequence[str]) -> dict[str, float]:
        return {}

    def __getattr__(self, name: str) -> Any:
        async def unavailable(*_: Any) -> ActionResult | str | None:
            raise CockpitError(f"{name} is not available in the log-pane bench")

        return unavailable

    async def start_run(self, request: RunRequest) -> str:
        raise CockpitError("no runs in the log-pane bench")


def build_stream(total: int) -> tuple[list[Event], int, float]:
    """``total`` KernelLogLines from the captures over VMS, plus the classifier's reports."""
    files = sorted(CAPTURES.glob("*.log"))
    if not files:
        raise SystemExit(f"no captures in {CAPTURES}")
    corpus = [ln for f in files for ln in split_lines(f.read_text(errors="replace"))]
    classifiers = {vm: Classifier(vm) for vm in VMS}
    line_no = dict.fromkeys(VMS, 0)
    out: list[Event] = []
    reports = 0
    t0 = time.perf_counter()
    for i in range(total):
        vm = VMS[(i // 40) % len(VMS)]  # bursts of 40 lines per VM, like interleaved consoles
        text = corpus[i % len(corpus)]
        line_no[vm] += 1
        out.append(KernelLogLine(vm=vm, line_no=line_no[vm], text=text))
        for rep in classifiers[vm].feed(line_no[vm], text):
            out.append(KernelEventRaised(vm=vm, report=rep))
            reports += 1
    for vm, clf in classifiers.items():
        for rep in clf.flush():
            out.append(KernelEventRaised(vm=vm, report=rep))
            reports += 1
    return out, reports, time.perf_counter() - t0


def published(ev: Event, offset: int) -> Event:
    """A new event object for ``ev``, ``offset`` lines further on in its VM's log."""
    if isinstance(ev, KernelLogLine):
        return KernelLogLine(vm=ev.vm, line_no=ev.line_no + offset, text=ev.text)
    if isinstance(ev, KernelEventRaised):
        return dataclasses.replace(ev, report=dataclasses.replace(ev.report, line=ev.report.line + offset))
    return ev


def heap_blocks() -> int:
    """Live Python allocations (unlike RSS, not inflated by the allocator keeping freed arenas)."""
    return sys.getallocatedblocks()


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


@dataclass
class Phase:
    name: str
    lines: int = 0
    seconds: float = 0.0
    cpu_s: float = 0.0  # process CPU time (producer + pane): comparable across loads
    latencies_ms: list[float] = field(default_factory=list)
    by_key: dict[str, list[float]] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.lines / self.seconds if self.seconds else 0.0


class Probe:
    """Times key presses until the log status line is painted with the new mode."""

    def __init__(self, app: CockpitApp, status: Static):
        self.app = app
        self.want: str | None = None
        self.pressed_at = 0.0
        self.painted = asyncio.Event()
        real_render = status.render

        def render() -> Any:
            out = real_render()
            if self.want is not None and self.want in str(getattr(status, "content", "")):
                self.latency = time.perf_counter() - self.pressed_at
                self.want = None
                self.painted.set()
            return out

        status.render = render  # type: ignore[method-assign]
        self.latency = 0.0

    async def press(self, key: str, expect: str, timeout: float = 5.0) -> float | None:
        driver = self.app._driver
        assert driver is not None
        self.painted.clear()
        self.want = expect
        self.pressed_at = time.perf_counter()
        event = events.Key(key, key)
        event.set_sender(self.app)
        driver.send_message(event)  # the path a real terminal's key takes
        try:
            await asyncio.wait_for(self.painted.wait(), timeout)
        except TimeoutError:
            self.want = None
            return None
        return self.latency * 1000


async def flood(app: CockpitApp, stream: list[Event], phase: Phase, probe: Probe, rate: float | None,
                mem_marks: dict[str, int], offset: int = 0) -> None:
    """Publish ``stream``; meanwhile press `p` twice (pause, follow), again and again,
    until the pane has absorbed the whole stream (at max rate the producer is done long
    before the UI is: its backlog is the flood the keys have to get through).

    Paced: a pair every ~250 ms. Max rate: back to back.
    """
    bus = app.backend.bus
    pane = app.screen_stack[0].query_one(KernelLogPane)
    seen0 = pane.model.lines_seen
    n_lines = sum(1 for e in stream if isinstance(e, KernelLogLine))
    done = asyncio.Event()  # absorbed by the pane

    async def producer() -> None:
        start = time.perf_counter()
        sent = 0
        for i in range(0, len(stream), CHUNK):
            chunk = stream[i:i + CHUNK]
            for ev in chunk:
                bus.publish(published(ev, offset))
            sent += len(chunk)
            if rate:
                # Pacing is the load generator's job: hold the chunk until its slot.
                due = start + sent / rate
                delay = due - time.perf_counter()
                await asyncio.sleep(max(0.0, delay))
            else:
                await asyncio.sleep(0)

    async def keys() -> None:
        while not done.is_set():
            for expect in ("PAUSED", "FOLLOW"):
                ms = await probe.press("p", expect)
                if ms is not None:
                    phase.latencies_ms.append(ms)
                    phase.by_key.setdefault(expect, []).append(ms)
            if rate:
                try:
                    await asyncio.wait_for(done.wait(), 0.25)
                except TimeoutError:
                    pass

    start = time.perf_counter()
    cpu0 = time.process_time()
    prod = asyncio.create_task(producer())
    keyer = asyncio.create_task(keys())
    while pane.model.lines_seen - seen0 < n_lines:
        absorbed = pane.model.lines_seen
        if "10k" not in mem_marks and absorbed >= 10_000:
            mem_marks["10k"] = rss_kb()
            mem_marks["10k blocks"] = heap_blocks()
        await asyncio.sleep(0.05)  # sampling the counter; the work is event-driven
    phase.seconds = time.perf_counter() - start
    phase.cpu_s = time.process_time() - cpu0
    phase.lines = n_lines
    done.set()
    await prod
    await keyer
    if pane.paused:
        pane.follow()


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


async def main(args: argparse.Namespace) -> int:
    stream, reports, build_s = build_stream(args.lines)
    paced: list[Event] = []
    if args.paced_seconds > 0:
        paced = build_stream(int(args.rate * args.paced_seconds))[0]
    # The prebuilt streams stand in for consoles that hold no history: keep them out of
    # the cyclic GC's work and out of the memory deltas (measured from here on).
    gc.collect()
    gc.freeze()
    print(f"stream: {args.lines:,} real console lines over {len(VMS)} VMs, {reports} classified reports "
          f"(classifier took {build_s:.2f}s, {args.lines / build_s:,.0f} lines/s, not part of the timing); "
          f"max rate: {args.rounds} round(s)")
    app = CockpitApp(BenchBackend())  # type: ignore[arg-type]
    mem: dict[str, int] = {}
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause()  # started: the footer's first compose is not part of a flood
        status = app.screen_stack[0].query_one("#log-status", Static)
        probe = Probe(app, status)
        mem["start"] = rss_kb()
        max_phase = Phase("max rate")
        for r in range(args.rounds):
            one = Phase("round")
            await flood(app, stream, one, probe, None, mem, offset=r * args.lines)
            max_phase.lines += one.lines
            max_phase.seconds += one.seconds
            max_phase.cpu_s += one.cpu_s
            max_phase.latencies_ms += one.latencies_ms
            for mode, lat in one.by_key.items():
                max_phase.by_key.setdefault(mode, []).extend(lat)
        mem["after max"] = rss_kb()
        paced_phase = Phase(f"paced {args.rate:,.0f}/s")
        if paced:
            await flood(app, paced, paced_phase, probe, args.rate, mem, offset=args.rounds * args.lines)
        mem["end"] = rss_kb()
        mem["end blocks"] = heap_blocks()
        pane = app.screen_stack[0].query_one(KernelLogPane)
        held = (len(pane.model.records), len(pane.view.lines))

    print(f"pane holds {held[0]:,} records / {held[1]:,} rows (retain {app.log_retain:,})")
    print(f"host load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs (latency figures depend on it)")
    print(f"{'phase':<16}{'lines':>10}{'seconds':>9}{'lines/s':>10}{'CPU µs/line':>12}{'keys':>6}{'p50 ms':>8}{'p99 ms':>8}{'max ms':>8}")
    for ph in (max_phase, paced_phase):
        if not ph.lines:
            continue
        lat = ph.latencies_ms
        print(f"{ph.name:<16}{ph.lines:>10,}{ph.seconds:>9.2f}{ph.rate:>10,.0f}{1e6 * ph.cpu_s / ph.lines:>12.1f}{len(lat):>6}"
              f"{pct(lat, .5):>8.1f}{pct(lat, .99):>8.1f}{max(lat, default=float('nan')):>8.1f}")
    for ph in (max_phase, paced_phase):
        for mode, lat in ph.by_key.items():
            print(f"  {ph.name}: p → {mode}: p50 {pct(lat, .5):.1f} ms, p99 {pct(lat, .99):.1f} ms ({len(lat)} presses)")
    print(f"RSS: start {mem['start'] / 1024:.0f} MB, at 10k lines {mem.get('10k', 0) / 1024:.0f} MB, "
          f"after max-rate phase {mem['after max'] / 1024:.0f} MB, end {mem['end'] / 1024:.0f} MB")
    print("vs targets:")
    print(f"  throughput (max rate) / {TARGET_RATE:,.0f} lines/s target = {max_phase.rate / TARGET_RATE:.2f}x")
    for ph in (max_phase, paced_phase):
        if ph.latencies_ms:
            print(f"  key p99 ({ph.name}, {ph.rate:,.0f} lines/s) / {TARGET_P99_MS:.0f} ms target = "
                  f"{pct(ph.latencies_ms, .99) / TARGET_P99_MS:.2f}x (below 1 meets it)")
    print(f"Python heap: {mem.get('10k blocks', 0):,} blocks at 10k lines, {mem['end blocks']:,} at the end")
    if mem.get("10k"):
        print(f"  RSS end / RSS at 10k lines = {mem['end'] / mem['10k']:.2f}x (flat is ~1.0)")
        print(f"  heap blocks end / at 10k lines = {mem['end blocks'] / mem['10k blocks']:.2f}x (flat is ~1.0)")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lines", type=int, default=200_000, help="lines in one max-rate round")
    p.add_argument("--rounds", type=int, default=5, help="max-rate rounds (more key presses for the p99)")
    p.add_argument("--rate", type=float, default=TARGET_RATE, help="lines/s of the paced phase")
    p.add_argument("--paced-seconds", type=float, default=10.0, help="length of the paced phase (0: skip)")
    return p.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main(parse_args())))
