"""What the warm-loop benches (inner_loop.py, watch.py) share: the self-test module they
edit, the CLI as a developer types it, and one timed step that must exit 0 (a failing
step aborts the bench: a fast wrong loop proves nothing). Not a bench itself."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

FIXTURE = Path(__file__).resolve().parent.parent / "tests" / "fixtures" / "selftest_fs"
EDIT_MARK = "/* bench edit */"


class BenchFailed(Exception):
    pass


def cli(*argv: str) -> list[str]:
    return [sys.executable, "-m", "vexfs_cockpit", *argv]


def copy_fixture(dst: Path) -> Path:
    """The self-test module's sources, without build outputs, at ``dst``."""
    shutil.copytree(FIXTURE, dst, ignore=shutil.ignore_patterns("*.o", "*.ko", "*.mod*", ".*", "__pycache__", "*.py"))
    return dst


def edit_source(src: Path, tag: str) -> None:
    """A real edit that changes the module's bytes (a new string in .rodata), written in one go."""
    c = src / "vexfs_selftest.c"
    text = c.read_text().split(EDIT_MARK)[0]
    c.write_text(f"{text}{EDIT_MARK}\nstatic const char vexfs_bench_edit[] __used = \"{tag}\";\n")


def timed(argv: list[str], env: dict[str, str], timeout: float, label: str = "") -> float:
    """Run ``argv``; its wall time. BenchFailed with its last lines if it does not exit 0."""
    t0 = time.monotonic()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout)
    took = time.monotonic() - t0
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-12:])
        raise BenchFailed(f"{label or '`' + ' '.join(argv[3:5]) + '`'} exited {proc.returncode} after {took:.1f}s:\n{tail}")
    return took
