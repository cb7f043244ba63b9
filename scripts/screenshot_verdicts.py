"""Regenerate the README's picture of verdict badges from real runs: docs/img/results-verdicts.svg.

1. Two headless runs on real self-test guests into a temporary history DB, each of
   filesystem_operations/file_read_write and knob/probe (the fault-knob domain of the
   test suite, tests/support/knob_domain.py, installed as a plugin through the entry
   point for these runs only): the first clean, the second with the module's
   eio_on_read=1 (every read fails) and the probe failing odd attempts on a guest.
   The second run confirms both changes on fresh VMs: a NEW REGRESSION and a FLAKY test.
2. The cockpit TUI opens that history (h), the newest run's detail (enter), and the
   screen is saved once its results table shows both badges; otherwise the script fails
   and leaves the old picture alone.

Usage: .venv/bin/python scripts/screenshot_verdicts.py [--out docs/img] [--db PATH]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from textual.widgets import DataTable

from screenshots import ShotFailed, settle  # this folder: how the README's other pictures are taken
from vexfs_cockpit.app.session import open_session
from vexfs_cockpit.tui.app import CockpitApp
from vexfs_cockpit.tui.screens.run_detail import RunDetailScreen
from vexfs_cockpit.tui.session_backend import SessionBackend

ROOT = Path(__file__).resolve().parent.parent
SIZE = (120, 30)
RUN_TIMEOUT_S = 15 * 60
TESTS = "filesystem_operations/file_read_write,knob/probe"
BADGES = ("NEW REGRESSION", "FLAKY")


def batch_runs(db: Path, site: Path) -> None:
    dist = site / "vexfs_knob_plugin-0.dist-info"
    dist.mkdir(parents=True, exist_ok=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: vexfs-knob-plugin\nVersion: 0\n")
    (dist / "entry_points.txt").write_text("[vexfs_cockpit.domains]\nknob = tests.support.knob_domain:KnobDomain\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(site), str(ROOT)])}
    base = [sys.executable, "-m", "vexfs_cockpit", "run", "--batch", "--env", "test",
            "--domains", "filesystem_operations,knob", "--tests", TESTS, "--db", str(db)]
    for extra, want in (([], 0), (["--set", "module.module_params=eio_on_read=1", "--set", "domains.knob.options.probe=odd"], 1)):
        argv = base + extra
        print(f"screenshot: vexfs-cockpit {' '.join(argv[3:])}", flush=True)
        rc = subprocess.run(argv, cwd=ROOT, env=env, timeout=RUN_TIMEOUT_S).returncode
        if rc != want:
            raise ShotFailed(f"`vexfs-cockpit {' '.join(argv[3:])}` exited {rc}, expected {want} (see its output above)")


async def shot(db: Path) -> str:
    session = await open_session(argparse.Namespace(config=None, env="test", set=[], db=str(db)))
    app = CockpitApp(SessionBackend(session))
    async with app.run_test(size=SIZE) as pilot:
        await settle(pilot)
        await pilot.press("h")
        await settle(pilot)
        await pilot.press("enter")  # the newest run
        await settle(pilot)
        if not isinstance(app.screen, RunDetailScreen):
            raise ShotFailed(f"history: enter opened {type(app.screen).__name__}, not a run's detail")
        table = app.screen.query_one("#detail-results", DataTable)
        cells = " ".join(str(getattr(c, "plain", c)) for i in range(table.row_count) for c in table.get_row_at(i))
        missing = [b for b in BADGES if b not in cells]
        if missing:
            raise ShotFailed(f"run detail: no {', '.join(missing)} badge in its results table: {cells}")
        print(f"screenshot: run {app.screen.run_id}: {', '.join(BADGES)} shown", flush=True)
        app.clear_notifications()
        await settle(pilot)
        return app.export_screenshot(title="vexfs-cockpit: a run's results with verdict badges")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "img", help="where the SVG goes")
    p.add_argument("--db", type=Path, help="history DB to use (default: a temporary one)")
    args = p.parse_args(argv)
    os.chdir(ROOT)
    with tempfile.TemporaryDirectory(prefix="vexfs-verdicts-") as tmp:
        db = args.db or Path(tmp) / "history.db"
        try:
            batch_runs(db, Path(tmp) / "site")
            svg = asyncio.run(shot(db))
        except (ShotFailed, subprocess.TimeoutExpired) as err:
            print(f"screenshot: {err}", file=sys.stderr)
            return 1
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results-verdicts.svg").write_text(svg, encoding="utf-8")
    print(f"screenshot: wrote {args.out / 'results-verdicts.svg'}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
