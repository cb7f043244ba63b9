"""Cold start of the cockpit TUI to a drawn dashboard, against `python -c 'import textual'`.

Target: the cockpit's median is less than 1 s more than the baseline's, in the same run.

Each iteration spawns two fresh processes, alternating so host load hits both alike:
- baseline: `python -c 'import textual'`, timed from spawn to exit;
- cockpit: `python -m vexfs_cockpit` (what `vexfs-cockpit` runs) on a pseudo-terminal
  of 120x36, timed from spawn until the terminal has received a frame of the dashboard:
  the footer ("Start run"), the run summary ("no run yet") and the log pane's status
  ("FOLLOW") all painted. Textual holds painting until the app's mount handler is done,
  and that handler awaits the engine's open (libvirt connection, guest image, accelerator
  probe), so the frame also means the engine is up. Then `q` is typed and the cockpit
  must exit 0, with no "engine" error toast on screen (a dashboard without its engine,
  or one that crashes after drawing, is not a start: the bench fails).

The history DB is a fresh temporary file per cockpit start (what a first start sees).
`--importtime FILE` / `--cprofile FILE` also profile one start (imports / everything
until `q`), to see where the time goes.

Usage: python bench/tui_cold_start.py [--iterations 10] [--importtime FILE] [--cprofile FILE]
"""

from __future__ import annotations

import argparse
import fcntl
import os
import pty
import re
import select
import statistics
import struct
import subprocess
import sys
import tempfile
import termios
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TARGET_EXTRA_S = 1.0
COLS, ROWS = 120, 36
# One string from each of three dashboard widgets, each a single styled segment.
MARKERS = (b"Start", b"no run yet", b"FOLLOW")  # the key bar, the run summary, the log pane
IMPORT_LINE = re.compile(rb"import time:\s+\d+ \|\s+\d+ \| [\w. ]+")
ANSI = re.compile(rb"\x1b\[[0-9;?<>=$]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-Za-z]|\x1b[=>78]")


class StartFailed(Exception):
    pass


def child_env(pycache: Path) -> dict[str, str]:
    """The environment both kinds of process start with: bytecode cached as on a user's
    machine (PYTHONDONTWRITEBYTECODE, set on some dev boxes, would make every start
    recompile the project's ~90 modules), in a cache of this bench's own."""
    env = dict(os.environ, PYTHONPYCACHEPREFIX=str(pycache))
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env.pop("TEXTUAL", None)  # no devtools
    return env


def baseline(env: dict[str, str]) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import textual"], check=True, env=env)
    return time.perf_counter() - t0


def _read(fd: int, timeout: float) -> bytes | None:
    """Bytes the child wrote, b"" if none within ``timeout``, None once the pty is closed."""
    ready, _, _ = select.select([fd], [], [], timeout)
    if not ready:
        return b""
    try:
        return os.read(fd, 65536)
    except OSError:  # EIO: the child closed its end
        return None


def cockpit(base_env: dict[str, str], timeout: float, importtime: Path | None = None, cprofile: Path | None = None) -> float:
    """Seconds from spawn to a drawn dashboard; the cockpit must then quit cleanly on `q`."""
    with tempfile.TemporaryDirectory(prefix="vexfs-cold-") as tmp:
        env = dict(base_env, TERM="xterm-256color", VEXFS_COCKPIT_DB=str(Path(tmp) / "history.db"))
        argv = [sys.executable, *(["-X", "importtime"] if importtime else []),
                *(["-m", "cProfile", "-o", str(cprofile)] if cprofile else []), "-m", "vexfs_cockpit"]
        t0 = time.perf_counter()
        pid, fd = pty.fork()
        if pid == 0:  # child: the cockpit on a terminal of COLSxROWS
            try:
                fcntl.ioctl(0, termios.TIOCSWINSZ, struct.pack("HHHH", ROWS, COLS, 0, 0))
                os.chdir(ROOT)
                os.execve(argv[0], argv, env)
            finally:
                os._exit(127)
        out = b""
        drawn: float | None = None
        try:
            deadline = t0 + timeout
            while time.perf_counter() < deadline:
                chunk = _read(fd, 0.05)
                if chunk is None:
                    break
                out += chunk
                if chunk and all(m in ANSI.sub(b"", out) for m in MARKERS):
                    drawn = time.perf_counter() - t0
                    break
            if drawn is None:
                why = "it closed its terminal first" if time.perf_counter() < deadline else f"{timeout:.0f}s passed"
                raise StartFailed(f"no dashboard drawn ({why}); last output:\n{_tail(out)}")
            os.write(fd, b"q")
            code, rest = _wait_exit(pid, fd, deadline=time.perf_counter() + timeout)
            out += rest
            if code is not None:
                pid = 0  # reaped
            if code != 0:
                raise StartFailed(f"cockpit exited {code} after q; last output:\n{_tail(out)}")
            failed = _engine_failure(out)
            if failed:  # a dashboard without its engine starts faster, and is not a start
                raise StartFailed(f"the engine did not open: {failed}")
        finally:
            if pid:
                os.kill(pid, 9)
                os.waitpid(pid, 0)
            os.close(fd)
        if importtime:  # Textual paints on stderr too: pick the report's lines out of the stream
            importtime.write_bytes(b"\n".join(IMPORT_LINE.findall(out)) + b"\n")
        return drawn


def _wait_exit(pid: int, fd: int, deadline: float) -> tuple[int | None, bytes]:
    """The child's exit code (None: still running) and what it painted meanwhile."""
    out = b""
    while time.perf_counter() < deadline:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status), out
        out += _read(fd, 0.05) or b""
    return None, out


def _engine_failure(out: bytes) -> str | None:
    """The app's error toast for a failed engine open (title "engine"), as one line."""
    lines = [ln.strip(" ▌▐│┃") for ln in ANSI.sub(b"", out).decode(errors="replace").splitlines()]
    for i, ln in enumerate(lines):
        if ln == "engine":
            return " ".join(lines[i + 1:i + 4])
    return None


def _tail(out: bytes) -> str:
    text = ANSI.sub(b"", out).decode(errors="replace")
    lines = [ln.rstrip() for ln in text.splitlines() if ln.strip()]
    return "\n".join(lines[-8:])


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


def main(args: argparse.Namespace) -> int:
    base: list[float] = []
    cock: list[float] = []
    print(f"cold start, {args.iterations} iterations, alternating; python {sys.version.split()[0]}, "
          f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    pycache = tempfile.TemporaryDirectory(prefix="vexfs-cold-pycache-")
    env = child_env(Path(pycache.name))
    try:
        # Warm the bytecode cache and the OS page cache: every start after is alike.
        baseline(env)
        cockpit(env, args.timeout)
        if args.importtime:
            cockpit(env, args.timeout, args.importtime)
            print(f"importtime of one cockpit start written to {args.importtime}")
        if args.cprofile:
            cockpit(env, args.timeout, cprofile=args.cprofile)
            print(f"cProfile of one cockpit start (to q) written to {args.cprofile}")
        for i in range(args.iterations):
            base.append(baseline(env))
            cock.append(cockpit(env, args.timeout))
            print(f"  {i + 1:>2}: import textual {base[-1]:.3f}s  cockpit to dashboard {cock[-1]:.3f}s  "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    except StartFailed as err:
        print(f"bench/tui_cold_start.py: the cockpit did not start: {err}", file=sys.stderr)
        return 1
    finally:
        pycache.cleanup()
    if not base:
        return 0
    b, c = median(base), median(cock)
    extra = c - b
    print(f"{'':<28}{'median':>8}{'min':>8}{'max':>8}")
    for name, vals in (("python -c 'import textual'", base), ("cockpit to drawn dashboard", cock)):
        print(f"{name:<28}{median(vals):>8.3f}{min(vals):>8.3f}{max(vals):>8.3f}")
    verdict = "meets" if extra < TARGET_EXTRA_S else "MISSES"
    print(f"cockpit - baseline = {extra:.3f}s vs target < {TARGET_EXTRA_S:.1f}s: {verdict} "
          f"({extra / TARGET_EXTRA_S:.2f}x of the allowance; cockpit/baseline = {c / b:.2f}x)")
    return 0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--iterations", type=int, default=10, help="starts of each kind")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds a start may take before the bench fails")
    p.add_argument("--importtime", type=Path, metavar="FILE", help="also write -X importtime of one start here")
    p.add_argument("--cprofile", type=Path, metavar="FILE", help="also write a cProfile of one start (until q) here")
    return p.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main(parse_args()))
