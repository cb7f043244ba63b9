"""Environments side by side: the latest run of each, per domain and test.

A row is marked different when the statuses differ (a test missing from one env's run
counts as a status, ``-``), when a duration differs by more than ``tolerance`` (relative,
and by at least MIN_DURATION_DIFF_S, so 0.01 s against 0.02 s is not news), or when a
metric both runs have differs by more than ``tolerance`` (or is in only one of them).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from vexfs_cockpit.errors import UsageError
from vexfs_cockpit.store.history import History
from vexfs_cockpit.store.render import fmt_duration
from vexfs_cockpit.store.report import RunReport

MIN_DURATION_DIFF_S = 0.5
FORMAT = "vexfs-cockpit-compare/1"


@dataclass
class Cell:
    status: str  # a TestStatus value, NO_RESULT, or "-" (not in that env's run)
    duration_s: float | None = None
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class Row:
    domain: str
    test: str
    cells: dict[str, Cell]  # env -> its cell
    differences: list[str] = field(default_factory=list)  # "status", "duration", "metric NAME"

    @property
    def differs(self) -> bool:
        return bool(self.differences)


@dataclass
class EnvComparison:
    envs: list[str]
    runs: dict[str, dict[str, Any]]  # env -> {run_id, status, started_at}
    rows: list[Row]


def latest_run_of(history: History, env: str) -> str | None:
    """The newest finished run of ``env``, else its newest run (still going or aborted)."""
    runs = history.list_runs(env=env, limit=20)
    finished = [r for r in runs if r.status != "running"]
    pick = finished or runs
    return pick[0].run_id if pick else None


def _relative_diff(values: list[float]) -> float:
    lo, hi = min(values), max(values)
    base = max(abs(lo), abs(hi))
    return 0.0 if base == 0 else (hi - lo) / base


def _cells(report: RunReport) -> dict[tuple[str, str], Cell]:
    out: dict[tuple[str, str], Cell] = {}
    for d in report.domains:
        for t in d.tests:
            out[(d.name, t.name)] = Cell(str(t.status), t.duration_s, dict(t.metrics))
        for name in d.missing_tests():
            out[(d.name, name)] = Cell("NO_RESULT")
    return out


def compare_envs(history: History, envs: list[str], tolerance: float = 0.2) -> EnvComparison:
    """UsageError (one line) for an env with no run, or fewer than two envs."""
    envs = list(dict.fromkeys(envs))
    if len(envs) < 2:
        raise UsageError("compare: give at least two different environments, e.g. `compare dev ci`")
    reports: dict[str, RunReport] = {}
    for env in envs:
        run_id = latest_run_of(history, env)
        report = history.run_detail(run_id) if run_id else None
        if report is None:
            known = sorted({r.env for r in history.list_runs(limit=1000) if r.env})
            raise UsageError(f"compare: no run of env {env!r} in {history.path}"
                             + (f" (envs with runs: {', '.join(known)})" if known else " (no runs at all)"))
        reports[env] = report
    per_env = {env: _cells(rep) for env, rep in reports.items()}
    keys: list[tuple[str, str]] = []
    for env in envs:  # first env's order, then what only later envs have
        keys += [k for k in per_env[env] if k not in keys]
    rows = []
    for key in keys:
        cells = {env: per_env[env].get(key, Cell("-")) for env in envs}
        row = Row(key[0], key[1], cells)
        if len({c.status for c in cells.values()}) > 1:
            row.differences.append("status")
        durations = [c.duration_s for c in cells.values() if c.duration_s is not None]
        if (len(durations) == len(cells) and max(durations) - min(durations) >= MIN_DURATION_DIFF_S
                and _relative_diff(durations) > tolerance):
            row.differences.append("duration")
        for name in sorted({m for c in cells.values() for m in c.metrics}):
            values = [c.metrics.get(name) for c in cells.values() if c.status != "-"]
            have = [v for v in values if v is not None]
            if len(have) != len(values) or (have and _relative_diff(have) > tolerance):
                row.differences.append(f"metric {name}")
        rows.append(row)
    runs = {env: {"run_id": r.run.run_id, "status": r.run.status, "started_at": r.run.started_at}
            for env, r in reports.items()}
    return EnvComparison(envs, runs, rows)


def comparison_dict(comp: EnvComparison) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "envs": comp.envs,
        "runs": comp.runs,
        "rows": [{"domain": r.domain, "test": r.test, "differs": r.differs, "differences": r.differences,
                  "cells": {env: asdict(c) for env, c in r.cells.items()}} for r in comp.rows],
        "differing": sum(r.differs for r in comp.rows),
    }


def comparison_json(comp: EnvComparison) -> str:
    return json.dumps(comparison_dict(comp), indent=2) + "\n"


def _cell_text(c: Cell, metric_names: list[str]) -> str:
    if c.status == "-":
        return "-"
    text = c.status if c.duration_s is None else f"{c.status} {fmt_duration(c.duration_s)}"
    ms = [f"{m}={c.metrics[m]:g}" for m in metric_names if m in c.metrics]
    return " ".join([text, *ms])


def comparison_text(comp: EnvComparison) -> str:
    """A table: one column per env, ``*`` in the first column where they differ."""
    head = ["", "DOMAIN", "TEST"] + [f"{env} ({comp.runs[env]['run_id']})" for env in comp.envs] + ["DIFFERS IN"]
    rows = [head]
    for r in comp.rows:
        names = [d.removeprefix("metric ") for d in r.differences if d.startswith("metric ")]
        rows.append(["*" if r.differs else "", r.domain, r.test]
                    + [_cell_text(r.cells[e], names) for e in comp.envs] + [", ".join(r.differences)])
    widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip() for row in rows]
    n = sum(r.differs for r in comp.rows)
    lines.append(f"{n} of {len(comp.rows)} tests differ between {', '.join(comp.envs)}")
    return "\n".join(lines) + "\n"
