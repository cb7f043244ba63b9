"""Regenerate the README's pictures from real runs: docs/img/dashboard.svg, docs/img/history-trend.svg.

1. ``--runs - 1`` headless runs (`vexfs-cockpit run --batch --env ENV --domains DOMAIN`)
   on real self-test guests, into a temporary history DB, so the trend has points;
2. the cockpit TUI itself (its real engine session, headless at 120x36) starts one more
   run of the same domain; once more than half its tests have finished, the dashboard is
   saved: the guest VM, the domain's progress and its live kernel log;
3. when that run has finished, history (h) and trends (g) are opened and a metric of
   that domain is charted over all the runs: that screen is saved.

Every picture is checked for real content before it is written (a VM of this run alive,
finished tests, kernel-log lines, one chart point per run); otherwise the script fails
and leaves the old pictures alone. The dashboard lists this process's VMs only: on a
shared host, other cockpits' VMs would be in the picture.

Usage: .venv/bin/python scripts/screenshots.py [--runs 4] [--env ci] [--domain kernel_module]
           [--metric module_lifecycle_stress/load_p50_ms] [--out docs/img] [--db PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from textual.pilot import Pilot
from textual.widgets import Select

from vexfs_cockpit.engine.events import DomainStarted, InfraProblem, RunFinished, TestFinished
from vexfs_cockpit.app.session import open_session
from vexfs_cockpit.tui.app import CockpitApp
from vexfs_cockpit.tui.backend import RunRequest, VmInfo
from vexfs_cockpit.tui.screens.trends import TrendsScreen
from vexfs_cockpit.tui.session_backend import SessionBackend
from vexfs_cockpit.tui.widgets.kernel_log_pane import KernelLogPane

ROOT = Path(__file__).resolve().parent.parent
SIZE = (120, 36)
ALIVE = ("running", "ready", "booting")
RUN_TIMEOUT_S = 30 * 60  # one run of a domain under TCG on a busy host, with room


class ShotFailed(Exception):
    pass


class OwnVmsOnly(SessionBackend):
    """The real backend, showing only the VMs this process started (their libvirt owner
    metadata names our pid): the picture of a host with no other cockpit on it."""

    async def open(self) -> None:
        await super().open()
        self.session.provider.fleet.watch_all = False  # type: ignore[attr-defined]  # lifecycle events of our VMs only

    async def vm_list(self) -> list[VmInfo]:
        listed = await self.session.provider.fleet.list_vms()  # type: ignore[attr-defined]
        mine = {v.name for v in listed if v.owner is not None and v.owner.pid == os.getpid()}
        return [vm for vm in await super().vm_list() if vm.name in mine]


# -- 1. history from headless runs ---------------------------------------------------------
def batch_runs(n: int, env: str, domain: str, db: Path) -> None:
    argv = [sys.executable, "-m", "vexfs_cockpit", "run", "--batch", "--env", env, "--domains", domain, "--db", str(db)]
    for i in range(n):
        print(f"screenshots: history run {i + 1}/{n}: vexfs-cockpit {' '.join(argv[3:])}", flush=True)
        rc = subprocess.run(argv, cwd=ROOT, timeout=RUN_TIMEOUT_S).returncode
        if rc not in (0, 1):  # 1 is failed tests: still a real run for the history
            raise ShotFailed(f"`vexfs-cockpit {' '.join(argv[3:])}` exited {rc} (see its output above; `vexfs-cockpit doctor` checks the host)")


# -- 2./3. the TUI -------------------------------------------------------------------------
async def settle(pilot: Pilot[int], rounds: int = 40) -> None:
    """Workers done and two consecutive frames alike (a DataTable re-measures its columns
    when idle, a frame later). Bounded: mid-run the log may never stand still."""
    app = pilot.app
    previous = None
    for _ in range(rounds):
        await app.workers.wait_for_complete()
        await pilot.pause()
        frame = app.export_screenshot()
        if frame == previous:
            return
        previous = frame


def check_dashboard(app: CockpitApp, domain: str) -> str:
    """What the dashboard shows, in one line; ShotFailed if any part of it is empty."""
    state = app.state
    dom = state.domains.get(domain)
    if dom is None or not dom.results:
        raise ShotFailed(f"dashboard: no finished test of {domain} on screen")
    vm = state.vms.get(dom.vm)
    if vm is None or vm.state not in ALIVE:
        raise ShotFailed(f"dashboard: {domain}'s VM {dom.vm or '?'} is not listed alive (VMs: {', '.join(state.vms) or 'none'})")
    lines = app.screen_stack[0].query_one(KernelLogPane).model.lines_seen
    if lines == 0:
        raise ShotFailed(f"dashboard: the kernel log of {vm.name} is empty")
    return f"{vm.name} {vm.state}, {len(dom.results)}/{len(dom.planned)} tests done, {lines} kernel-log lines, VMs listed: {', '.join(state.vms)}"


async def tui_shots(args: argparse.Namespace, db: Path) -> dict[str, str]:
    """SVG text by file name."""
    shots: dict[str, str] = {}
    session_args = argparse.Namespace(config=None, env=args.env, set=[], db=str(db))
    session = await open_session(session_args)
    backend = OwnVmsOnly(session)
    app = CockpitApp(backend)
    async with app.run_test(size=SIZE) as pilot:
        sub = backend.bus.subscribe(DomainStarted, TestFinished, RunFinished, InfraProblem)
        app.start_run(RunRequest(env=args.env, domains=(args.domain,)))
        async with asyncio.timeout(RUN_TIMEOUT_S):
            # The dashboard once more than half the domain's tests have finished.
            want, done = 0, 0
            async for ev in sub:
                if isinstance(ev, DomainStarted) and ev.domain == args.domain:
                    want = math.floor(len(ev.planned_tests) / 2) + 1
                elif isinstance(ev, InfraProblem):
                    raise ShotFailed(f"infrastructure: {ev.message}")
                elif isinstance(ev, RunFinished):
                    raise ShotFailed(f"the run {ev.status} before the dashboard could be taken: {ev.reason or ev.counts}")
                elif isinstance(ev, TestFinished) and ev.result.domain == args.domain:
                    done += 1
                    if want and done >= want:
                        break
            app.pump_now()
            await settle(pilot)
            print(f"screenshots: dashboard: {check_dashboard(app, args.domain)}", flush=True)
            shots["dashboard.svg"] = app.export_screenshot(title="vexfs-cockpit: dashboard during a run")

            async for ev in sub:
                if isinstance(ev, RunFinished):
                    print(f"screenshots: TUI run {ev.run_id} {ev.status}", flush=True)
                    break
        sub.close()
        app.pump_now()

        await pilot.press("h")
        await settle(pilot)
        await pilot.press("g")
        await settle(pilot)
        screen = app.screen
        if not isinstance(screen, TrendsScreen):
            raise ShotFailed(f"history: g opened {type(screen).__name__}, not the trends screen")
        test, _, name = args.metric.partition("/")
        index = next((i for i, m in enumerate(screen.catalog.metrics) if (m.domain, m.test, m.name) == (args.domain, test, name)), None)
        if index is None:
            raise ShotFailed(f"trends: no stored metric {args.domain}/{args.metric} (have: {', '.join(m.label() for m in screen.catalog.metrics)})")
        screen.query_one("#t-kind", Select).value = "metric"
        await settle(pilot)
        screen.query_one("#t-metric", Select).value = str(index)
        await settle(pilot)
        series = screen.series
        if series is None or len(series.values) < args.runs:
            have = 0 if series is None else len(series.values)
            raise ShotFailed(f"trends: {args.metric} has {have} points, expected one per run ({args.runs})")
        print(f"screenshots: trend: {series.title}: {', '.join(f'{v:.4g}' for v in series.values)}", flush=True)
        app.clear_notifications()  # "run passed" toasts belong to the moment, not the picture
        await settle(pilot)
        shots["history-trend.svg"] = app.export_screenshot(title="vexfs-cockpit: history, trend of a metric")
        await pilot.press("escape", "escape")
    return shots


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--runs", type=int, default=4, help="runs in the history, the TUI's own included (>= 2)")
    p.add_argument("--env", default="ci", help="environment overlay of the runs")
    p.add_argument("--domain", default="kernel_module", help="the domain the runs run")
    p.add_argument("--metric", default="module_lifecycle_stress/load_p50_ms", help="TEST/METRIC of that domain to chart")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="where the SVGs go")
    p.add_argument("--db", type=Path, help="history DB to use (default: a temporary one)")
    args = p.parse_args(argv)
    if args.runs < 2:
        p.error("--runs: a trend needs at least 2 runs")
    os.chdir(ROOT)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="vexfs-shots-") as tmp:
        db = args.db or Path(tmp) / "history.db"
        try:
            batch_runs(args.runs - 1, args.env, args.domain, db)
            shots = asyncio.run(tui_shots(args, db))
        except (ShotFailed, TimeoutError, subprocess.TimeoutExpired) as err:
            print(f"screenshots: {err or 'timed out waiting for the run'}", file=sys.stderr)
            return 1
    for name, svg in shots.items():  # both or neither: a failed run leaves the old pair
        (args.out / name).write_text(svg, encoding="utf-8")
        print(f"screenshots: wrote {args.out / name}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
