"""Helpers for the monitoring tests: a generated history with known figures, and the
CLI run as a real process. No tests here."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path

from tests.support.store import DAY, FS, KM, T0, E, F, P, RunSpec, S, T, kreport, record, record_sync
from vexfs_cockpit.engine.events import VmSample
from vexfs_cockpit.klog.model import Severity

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "docs" / "grafana" / "cockpit.json"
GRAFANA_VARS = {"$__rate_interval": "1m", "$__range": "5m", "$env": ".*"}

# Two finished runs and one in progress. r2 is the newest finished one.
R1 = RunSpec("r1", T0, outcomes={(KM, "load"): P, (KM, "unload"): P, (FS, "mount"): P},
             metrics={(KM, "load"): {"load_p50_ms": 10.0}}, test_duration=0.3)
R2 = RunSpec("r2", T0 + DAY, outcomes={(KM, "load"): P, (KM, "unload"): F, (KM, "params"): E,
                                       (FS, "mount"): T, (FS, "skipme"): S, (FS, "write"): P},
             metrics={(KM, "load"): {"load_p50_ms": 25.0, "load_p99_ms": 40.0}, (KM, "unload"): {"unload_p50_ms": 5.0}},
             kernel=[(KM, "unload", kreport("oops", "BUG: unable to handle page fault", Severity.CRITICAL), False),
                     (KM, "params", kreport("warning", "WARNING in vexfs_params"), True)],
             test_duration=4.0)
# never finishes: this (live) process wrote it, so it reads as running
R3 = RunSpec("r3", T0 + 2 * DAY, outcomes={(KM, "load"): P}, status="", test_duration=0.3)

VM_SAMPLES = [
    VmSample(vm="vm-0", state="running", cpu_pct=12.5, mem_kb=1000, run_id="r2", ts=T0 + DAY + 1),
    VmSample(vm="vm-0", state="running", cpu_pct=37.5, mem_kb=2048, run_id="r2", ts=T0 + DAY + 2),
    VmSample(vm="vm-1", state="running", cpu_pct=80.0, mem_kb=4096, run_id="r2", ts=T0 + DAY + 3),
]


def make_history(db: Path, specs: list[RunSpec] | None = None, samples: bool = True) -> Path:
    record_sync(db, specs if specs is not None else [R1, R2, R3])
    if samples:
        asyncio.run(record(db, VM_SAMPLES))
    return db


def cli(*argv: str, env: dict[str, str] | None = None, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    """The real console entry point in a child process."""
    return subprocess.run([sys.executable, "-m", "vexfs_cockpit", *argv], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, **(env or {})}, timeout=timeout)


__all__ = ["DAY", "FS", "KM", "T0", "R1", "R2", "R3", "VM_SAMPLES", "make_history", "cli", "ROOT"]


def dashboard_exprs() -> list[str]:
    dash = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dash["panels"] for t in p["targets"]]
    exprs += [v["definition"] for v in dash["templating"]["list"] if v.get("definition")]
    return exprs


def as_promql(expr: str) -> str:
    for var, value in GRAFANA_VARS.items():
        expr = expr.replace(var, value)
    expr = re.sub(r"^label_values\((\w+), \w+\)$", r"\1", expr)  # a template query: its metric
    assert "$" not in expr, expr
    return expr
