"""app.kdev.watch_lines, what the TUI's watch toggle reads: a `watch` process's lines as
they come, its one-line failure, and Ctrl-C (SIGINT) to the process when the reader stops."""

from __future__ import annotations

import sys
from pathlib import Path

from vexfs_cockpit.app.kdev import watch_lines

# The lines are printed inside the try: a SIGINT that comes right after the second one
# (the reader closes as soon as it has read it) must still be seen.
CHILD = """
import pathlib, sys, time
try:
    print("watching /src for vm-a: ...", flush=True)
    print("12:00:00 save 1: PASS 1/1 (0.1s)", flush=True)
    time.sleep(120)
except KeyboardInterrupt:
    pathlib.Path(sys.argv[1]).write_text("SIGINT")
"""


async def test_lines_stream_and_closing_sends_ctrl_c(tmp_path: Path) -> None:
    got = tmp_path / "got"
    lines = watch_lines([sys.executable, "-c", CHILD, str(got)])
    assert await anext(lines) == "watching /src for vm-a: ..."
    assert await anext(lines) == "12:00:00 save 1: PASS 1/1 (0.1s)"  # before the process ends
    await lines.aclose()
    assert got.read_text() == "SIGINT"  # stopped the way Ctrl-C stops `watch`


async def test_the_real_watch_on_a_missing_vm_is_its_one_line(tmp_path: Path) -> None:
    """The CLI the session backend starts: no such VM is one line, then the lines end."""
    out = [ln async for ln in watch_lines([sys.executable, "-m", "vexfs_cockpit", "watch", "vexfs-dev-nosuch-0"])]
    assert len(out) == 1 and "no VM named vexfs-dev-nosuch-0" in out[0], out
