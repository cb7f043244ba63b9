#!/usr/bin/env python3
"""A fresh guest, cold-booted against restored from the golden snapshot (issue 15).

Measures, in one run, on the configured image and VM shape:
  cold     lease start -> the first SSH command answered, booting the guest
  restore  the same with fleet.restore=auto (the golden snapshot built beforehand,
           its build time printed separately: a run pays it once per image)
Each is the provider's real path (LibvirtProvider.lease: name, VM, console, SSH,
`uname -r`), then `true` over SSH. Target: restore/cold <= 0.15.

With --full it also times the whole `ci` run of the six domains both ways
(`vexfs-cockpit run --batch --env ci --set fleet.restore=off|auto`, process start to
exit), target <= 0.5, and says how much of each run was spent inside the domains
(their setup and tests) and how much outside (VMs coming up and going away, start-up).
Both runs must pass every test. With --rounds N the two modes alternate N times and
the medians are compared (the host is shared: alternating spreads its load over both).

Usage:
  python bench/boot.py [--iterations 3] [--env test] [--full [--rounds 1]]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

BOOT_TARGET = 0.15
RUN_TARGET = 0.5


async def _lease_to_first_command(restore: str, env: str, iterations: int, art: Path) -> tuple[list[float], float | None]:
    from vexfs_cockpit.config.load import load_config
    from vexfs_cockpit.engine.bus import EventBus
    from vexfs_cockpit.fleet.provider import LibvirtProvider

    cfg = load_config(None, env)
    cfg.fleet.restore = restore  # type: ignore[assignment]
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    provider = LibvirtProvider(cfg, bus, art, env="bench", run_id=f"bench-boot-{restore}")
    golden_s = None
    times: list[float] = []
    try:
        await provider.prepare()
        if restore == "auto":
            t = time.monotonic()
            snap = await provider.golden_snapshot()
            golden_s = time.monotonic() - t
            if snap is None:
                raise SystemExit(f"no golden snapshot: {provider._golden_why}")
        for i in range(iterations):
            t = time.monotonic()
            async with provider.lease(f"boot{os.getpid()}", i) as lease:
                res = await lease.target.run("true", timeout=30)
                dt = time.monotonic() - t
                if not res.ok:
                    raise SystemExit(f"first command failed on {lease.vm_name}: {res.output}")
                kind = lease.extra.get("boot")
                if kind != ("restored" if restore == "auto" else "cold"):
                    raise SystemExit(f"{lease.vm_name} came up {kind}, expected {restore}")
            times.append(dt)
            print(f"  {restore:4} #{i + 1}: {dt:6.2f} s to the first command ({kind})", flush=True)
    finally:
        await provider.aclose()
    return times, golden_s


def _full_run(restore: str, env: str, art: Path, n: int) -> tuple[float, bool]:
    """(wall seconds, every test passed) of one `run --batch` in a fresh history DB."""
    out = art / f"{restore}-{n}.json"
    cmd = [str(ROOT / ".venv" / "bin" / "vexfs-cockpit"), "run", "--batch", "--env", env,
           "--set", f"fleet.restore={restore}", "--json", str(out)]
    t = time.monotonic()
    db = art / f"{restore}-{n}.db"
    proc = subprocess.run(cmd, cwd=ROOT, env=os.environ | {"VEXFS_COCKPIT_DB": str(db)}, capture_output=True, text=True)
    dt = time.monotonic() - t
    lines = (proc.stdout + proc.stderr).strip().splitlines()
    tail = [ln for ln in lines if " passed, " in ln][-1:] or lines[-1:] or [""]  # the summary line
    inside, boots = 0.0, 0
    try:
        doc = json.loads(out.read_text())
        inside = sum(float(d.get("duration_s") or 0) for d in doc["domains"])
        boots = sum(1 for s in doc["vm_states"] if s["state"] == "ready")
    except (OSError, ValueError, KeyError):
        pass
    print(f"  run --batch --env {env} fleet.restore={restore}: {dt:6.1f} s, exit {proc.returncode} ({tail[0][:60]}); "
          f"inside the domains {inside:.1f} s, outside {dt - inside:.1f} s; {boots} times a VM got ready", flush=True)
    if proc.returncode != 0:  # the temp dir goes away: show why here
        for line in (proc.stdout + proc.stderr).strip().splitlines()[-25:]:
            print(f"    | {line[:160]}")
    return dt, proc.returncode == 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--env", default="test")
    ap.add_argument("--full", action="store_true", help="also time the full ci run both ways (~5 min)")
    ap.add_argument("--full-env", default="ci")
    ap.add_argument("--rounds", type=int, default=1, help="with --full: alternate the two runs this many times")
    args = ap.parse_args()

    print(f"load average {os.getloadavg()[0]:.2f}; {args.iterations} leases each way", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench-boot-") as tmp:
        art = Path(tmp)
        cold, _ = asyncio.run(_lease_to_first_command("off", args.env, args.iterations, art))
        warm, golden_s = asyncio.run(_lease_to_first_command("auto", args.env, args.iterations, art))
        c, w = statistics.median(cold), statistics.median(warm)
        ratio = w / c
        print(f"golden snapshot ready in {golden_s:.2f} s (built once per image and VM shape, or found)")
        print(f"cold boot -> first command: median {c:.2f} s")
        print(f"restore   -> first command: median {w:.2f} s")
        print(f"ratio restore/cold: {ratio:.3f} (target <= {BOOT_TARGET}) {'OK' if ratio <= BOOT_TARGET else 'MISSED'}")
        ok = ratio <= BOOT_TARGET
        if args.full:
            offs, autos, passed = [], [], True
            for n in range(args.rounds):
                for restore, times in (("off", offs), ("auto", autos)):
                    dt, green = _full_run(restore, args.full_env, art, n)
                    times.append(dt)
                    passed = passed and green
            off, auto = statistics.median(offs), statistics.median(autos)
            r = auto / off
            print(f"full {args.full_env} run: median {off:.1f} s cold, {auto:.1f} s restored")
            print(f"full run ratio auto/off: {r:.3f} (target <= {RUN_TARGET}) {'OK' if r <= RUN_TARGET else 'MISSED'}"
                  f"{'' if passed else '; NOT every run passed'}")
            ok = ok and r <= RUN_TARGET and passed
        print(f"load average {os.getloadavg()[0]:.2f}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
