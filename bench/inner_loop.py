#!/usr/bin/env python3
"""The kernel developer's warm loop against the cold loop, in one run. Target: warm/cold <= 0.2.

Each iteration first EDITS the module source (a copy of the self-test module; the
edit changes the .ko's bytes), as a developer does before rebuilding, so every
loop compiles for real and pushes a new module. Then:

Warm (a dev VM that stays up, `vm start` once), the four commands as typed:
    vexfs-cockpit kbuild --vm NAME; kunload NAME; kload NAME; ktest NAME --tests TEST
    - served by the kdev agent (the default: a warm interpreter started by the first
      command, see vexfs_cockpit/agent/), and
    - again with VEXFS_KDEV_AGENT=0 (every command imports the engine itself).
Warm, one command (the same work in one process: ktest's module_build builds and
pushes, the test itself unloads and reloads):
    vexfs-cockpit ktest NAME --tests TEST
Cold (a fresh VM per iteration, what `run` does):
    vexfs-cockpit run --batch --domains D --tests D/module_build,TEST
    (boot, build, push, the test, power off)

Every step is the real CLI in its own process, as a developer types it, and must
exit 0 (a failing step aborts the bench: a fast wrong loop proves nothing). The
loops alternate, so a change in host load hits all alike; the load average is
printed alongside because TCG guests slow down with it. Runs go to a temporary
history DB unless --db is given. The bench starts its own dev VM and kdev agent
and stops both at the end (also on failure or Ctrl-C).

Usage:
  python bench/inner_loop.py [--iterations 3] [--env test] [--config FILE]
                             [--test kernel_module/module_load_basic]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from _kdev import BenchFailed, cli, copy_fixture, edit_source, timed

TARGET_RATIO = 0.2


@dataclass
class Step:
    label: str
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)  # on top of the bench's environment


@dataclass
class Loop:
    name: str
    totals: list[float] = field(default_factory=list)
    steps: dict[str, list[float]] = field(default_factory=dict)


def run_step(step: Step, env: dict[str, str], timeout: float) -> float:
    return timed(step.argv, {**env, **step.env}, timeout, step.label)


def run_loop(loop: Loop, steps: list[Step], env: dict[str, str], timeout: float) -> float:
    total = 0.0
    parts = []
    for step in steps:
        took = run_step(step, env, timeout)
        loop.steps.setdefault(step.label, []).append(took)
        total += took
        parts.append(f"{step.label} {took:.1f}s")
    loop.totals.append(total)
    print(f"  {loop.name:<14} {total:6.1f}s  ({', '.join(parts)})  load {os.getloadavg()[0]:.1f}", flush=True)
    return total


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=3, help="iterations of each loop (default 3)")
    ap.add_argument("--env", default="test", help="config environment overlay (default: test)")
    ap.add_argument("--config", default=None, help="profile YAML or name (default: configs/default.yaml)")
    ap.add_argument("--test", default="kernel_module/module_load_basic", help="the one test of each loop (DOMAIN/TEST)")
    ap.add_argument("--db", default=None, help="history DB (default: a temporary one)")
    ap.add_argument("--timeout", type=float, default=900.0, help="seconds any one step may take")
    args = ap.parse_args()
    if args.iterations < 1:
        ap.error("--iterations must be >= 1")
    domain = args.test.split("/", 1)[0]
    tmp = tempfile.TemporaryDirectory(prefix="vexfs-bench-loop-")
    src = Path(tmp.name) / "selftest_fs"
    copy_fixture(src)
    vm_common = ["--env", args.env] + (["--config", args.config] if args.config else [])
    common = [*vm_common, "--set", f"module.build_path={src}"]  # the edited copy
    name = f"vexfs-{args.env}-bench{os.getpid()}-0"
    env = dict(os.environ, VEXFS_COCKPIT_DB=args.db or str(Path(tmp.name) / "history.db"), NO_COLOR="1",
               VEXFS_KDEV_AGENT="1", VEXFS_KDEV_AGENT_DIR=str(Path(tmp.name) / "agent"))

    warm_steps = [
        Step("kbuild", cli("kbuild", *common, "--vm", name)),  # the dev VM's kernel
        Step("kunload", cli("kunload", *common, name)),
        Step("kload", cli("kload", *common, name)),
        Step("ktest", cli("ktest", *common, name, "--tests", args.test)),
    ]
    off = {"VEXFS_KDEV_AGENT": "0"}  # `run` never goes through the agent; said for the cold loop too
    noagent_steps = [Step(st.label, st.argv, off) for st in warm_steps]
    one_steps = [Step("ktest", cli("ktest", *common, name, "--tests", args.test))]
    cold_steps = [
        Step("run", cli("run", "--batch", *common, "--domains", domain, "--tests", f"{domain}/module_build,{args.test}"),
             off),
    ]
    warm, noagent, one, cold = Loop("warm"), Loop("warm, no agent"), Loop("one"), Loop("cold")
    print(f"load average before: {os.getloadavg()[0]:.2f}")
    try:
        boot = run_step(Step("vm start", cli("vm", "start", *vm_common, name)), env, args.timeout)
        print(f"dev VM {name} up in {boot:.1f}s (once, not counted)")
        run_step(Step("kload", cli("kload", *common, name)), env, args.timeout)  # iteration 1 has a module to unload
        for i in range(args.iterations):
            print(f"iteration {i + 1}/{args.iterations}")
            for loop, steps in ((warm, warm_steps), (noagent, noagent_steps), (one, one_steps), (cold, cold_steps)):
                edit_source(src, f"{i}-{loop.name}")  # what the developer changed before rebuilding
                run_loop(loop, steps, env, args.timeout)
    except BenchFailed as err:
        print(f"bench aborted: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("bench interrupted", file=sys.stderr)
        return 130
    finally:
        subprocess.run(cli("kagent", "stop"), capture_output=True, env=env, timeout=60)
        subprocess.run(cli("vm", "stop", "--force", *vm_common, name), capture_output=True, env=env, timeout=120)
        tmp.cleanup()
    print(f"load average after:  {os.getloadavg()[0]:.2f}")
    w, c = statistics.median(warm.totals), statistics.median(cold.totals)
    print(f"\nmedian of {args.iterations} iterations:")
    for label, times in warm.steps.items():
        print(f"  warm {label:<8} {statistics.median(times):6.2f}s")
    print(f"  warm loop     {w:6.2f}s  (served by the kdev agent)")
    print(f"  warm loop     {statistics.median(noagent.totals):6.2f}s  (VEXFS_KDEV_AGENT=0: each command imports the engine)")
    o = statistics.median(one.totals)
    print(f"  warm, one cmd {o:6.2f}s  (ktest alone: build + reload + {args.test})")
    print(f"  cold loop     {c:6.2f}s  (fresh VM: boot + build + {args.test} + power-off)")
    for label, value in (("warm/cold", w / c), ("warm one-command/cold", o / c)):
        verdict = "meets" if value <= TARGET_RATIO else "MISSES"
        print(f"{label} = {value:.2f}  ({verdict} the target <= {TARGET_RATIO})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
