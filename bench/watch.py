#!/usr/bin/env python3
"""`vexfs-cockpit watch`: save -> result line against the cold loop, in one run. Target: <= 0.2.

Watch (a dev VM that stays up, `vm start` once): `vexfs-cockpit watch NAME --tests TEST`
runs for the whole bench. Each iteration saves a real edit of the module source (a copy
of the self-test module; the edit changes the .ko's bytes) and times from the write to
the watch's result line for that save: debounce, incremental build for the VM's kernel,
unload, load, the test, stored in the history. Every line must say PASS (a fast wrong
loop proves nothing). The watch's first save builds with make in a new build directory
(the fast path replays what that build recorded): it is timed and printed, not counted,
as the cold loop's first run is not.
Cold (a fresh VM per iteration, what `run` does), on a second copy of the source so the
watch does not see its edits:
    vexfs-cockpit run --batch --domains D --tests D/module_build,TEST

The two alternate, so a change in host load hits both alike; the load average is
printed alongside because TCG guests slow down with it. Runs go to a temporary history
DB. The bench starts its own dev VM and stops it and the watch at the end (also on
failure or Ctrl-C).

Usage:
  python bench/watch.py [--iterations 3] [--env test] [--config FILE]
                        [--test kernel_module/module_load_basic]
"""

from __future__ import annotations

import argparse
import os
import queue
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from _kdev import BenchFailed, cli, copy_fixture, edit_source, timed

TARGET_RATIO = 0.2
SAVE_LINE = re.compile(r"^\d\d:\d\d:\d\d save (\d+): (.*)$")


class Watch:
    """The `watch` process, its stdout read line by line on a thread."""

    def __init__(self, argv: list[str], env: dict[str, str]):
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                                     bufsize=1)
        self.lines: queue.Queue[str | None] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)  # EOF: the process ended

    def next_line(self, pred, timeout: float) -> str:  # noqa: ANN001
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise BenchFailed(f"watch: no expected line in {timeout:.0f}s; it printed:\n" + "\n".join(self.seen[-12:]))
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                continue
            if line is None:
                raise BenchFailed(f"watch exited {self.proc.wait()}; it printed:\n" + "\n".join(self.seen[-12:]))
            self.seen.append(line)
            if pred(line):
                return line

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # Ctrl-C is how a watch ends
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=3, help="saves and cold runs (default 3)")
    ap.add_argument("--env", default="test", help="config environment overlay (default: test)")
    ap.add_argument("--config", default=None, help="profile YAML or name (default: configs/default.yaml)")
    ap.add_argument("--test", default="kernel_module/module_load_basic", help="the one test of each loop (DOMAIN/TEST)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds any one step may take")
    args = ap.parse_args()
    if args.iterations < 1:
        ap.error("--iterations must be >= 1")
    domain = args.test.split("/", 1)[0]
    tmp = tempfile.TemporaryDirectory(prefix="vexfs-bench-watch-")
    src, cold_src = Path(tmp.name) / "watched" / "selftest_fs", Path(tmp.name) / "cold" / "selftest_fs"
    for dst in (src, cold_src):
        copy_fixture(dst)
    vm_common = ["--env", args.env] + (["--config", args.config] if args.config else [])
    name = f"vexfs-{args.env}-benchw{os.getpid()}-0"
    # `watch` and `run` never go through the kdev agent: said so that nothing starts one.
    env = dict(os.environ, VEXFS_COCKPIT_DB=str(Path(tmp.name) / "history.db"), NO_COLOR="1", VEXFS_KDEV_AGENT="0",
               PYTHONUNBUFFERED="1")
    cold_argv = cli("run", "--batch", *vm_common, "--set", f"module.build_path={cold_src}",
                    "--domains", domain, "--tests", f"{domain}/module_build,{args.test}")
    warm: list[float] = []
    cold: list[float] = []
    watch: Watch | None = None
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    try:
        boot = timed(cli("vm", "start", *vm_common, name), env, args.timeout)
        print(f"dev VM {name} up in {boot:.1f}s (once, not counted)")
        watch = Watch(cli("watch", *vm_common, "--set", f"module.build_path={src}", name, "--tests", args.test), env)
        watch.next_line(lambda ln: ln.startswith("watching "), 120)
        edit_source(src, "warm-up")
        saved = time.monotonic()
        line = watch.next_line(lambda ln: bool(SAVE_LINE.match(ln)) and "cancelled" not in ln, args.timeout)
        print(f"first save {time.monotonic() - saved:.1f}s ({SAVE_LINE.match(line).group(2)}; once, not counted)")  # type: ignore[union-attr]
        # The first `run` may save the golden snapshot its VMs restore from (minutes, once
        # per image): what every later cold loop skips, so it is not one of them.
        edit_source(cold_src, "warm-up")
        print(f"cold loop warm-up {timed(cold_argv, env, args.timeout):.1f}s (golden snapshot, once, not counted)")
        for i in range(args.iterations):
            print(f"iteration {i + 1}/{args.iterations}")
            edit_source(src, f"{i}-watch")
            saved = time.monotonic()
            line = watch.next_line(lambda ln: bool(SAVE_LINE.match(ln)) and "cancelled" not in ln, args.timeout)
            took = time.monotonic() - saved
            result = SAVE_LINE.match(line).group(2)  # type: ignore[union-attr]
            if not result.startswith("PASS"):
                raise BenchFailed(f"the save's result is not a pass: {line}")
            warm.append(took)
            print(f"  save -> result {took:6.1f}s  ({result})  load {os.getloadavg()[0]:.1f}", flush=True)
            edit_source(cold_src, f"{i}-cold")
            took = timed(cold_argv, env, args.timeout)
            cold.append(took)
            print(f"  cold loop      {took:6.1f}s  (boot + build + {args.test} + power-off)  "
                  f"load {os.getloadavg()[0]:.1f}", flush=True)
    except BenchFailed as err:
        print(f"bench aborted: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench interrupted", file=sys.stderr)
        return 130
    finally:
        if watch is not None:
            watch.stop()
        subprocess.run(cli("vm", "stop", "--force", *vm_common, name), capture_output=True, env=env, timeout=120)
        tmp.cleanup()
    print(f"load average after:  {os.getloadavg()[0]:.2f}")
    w, c = statistics.median(warm), statistics.median(cold)
    print(f"\nmedian of {args.iterations} iterations:")
    print(f"  watch: save -> result  {w:6.2f}s  (debounce + build + reload + {args.test})")
    print(f"  cold loop              {c:6.2f}s  (fresh VM: boot + build + {args.test} + power-off)")
    ratio = w / c
    print(f"watch/cold = {ratio:.2f}  ({'meets' if ratio <= TARGET_RATIO else 'MISSES'} the target <= {TARGET_RATIO})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
