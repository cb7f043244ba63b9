"""What the runner gets from this session's history DB: the Triage over it and the env's
known-failures file (engine/confirm.py says what it is for; analysis/triage.py decides),
and each test's hang deadline (analysis/deadlines.py)."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from pathlib import Path

from vexfs_cockpit.analysis.deadlines import deadlines
from vexfs_cockpit.analysis.known import KnownFailure, known_failures_path, load_known_failures
from vexfs_cockpit.analysis.triage import references, triage
from vexfs_cockpit.config.models import CockpitConfig
from vexfs_cockpit.config.paths import known_failures_dir
from vexfs_cockpit.engine.confirm import Suspect
from vexfs_cockpit.engine.results import TestResult
from vexfs_cockpit.engine.runner import Deadline, RunRequest
from vexfs_cockpit.store.history import History

# Earlier finished runs of the env read for the tests' references (newest first).
REFERENCE_RUNS = 50


def known_failures(cfg: CockpitConfig, project_root: Path) -> tuple[list[KnownFailure], str]:
    """The env's known failures and the file's name for messages; a malformed file is
    one ConfigError line (exit 2, before any VM boots)."""
    path = known_failures_path(known_failures_dir(cfg), cfg.env)
    try:
        label = str(path.relative_to(project_root))
    except ValueError:
        label = str(path)
    return load_known_failures(path, label), label


class HistoryTriage:
    """Reads the history off the event loop; the known failures were loaded up front."""

    def __init__(self, history: History, known: list[KnownFailure], known_label: str) -> None:
        self.history = history
        self.known = known
        self.known_label = known_label

    async def __call__(self, req: RunRequest, results: Sequence[TestResult]) -> Sequence[Suspect]:
        return await asyncio.to_thread(self._triage, req, list(results))

    def _triage(self, req: RunRequest, results: list[TestResult]) -> list[Suspect]:
        baseline = self.history.baselines().get(req.env, (None, 0.0))[0]
        rows = self.history.analysis_rows(env=req.env, limit=REFERENCE_RUNS, include=(baseline,) if baseline else ())
        refs = references(rows, env=req.env, run_id=req.run_id, baseline=baseline,
                          guest_kernel=req.config.fleet.guest_kernel)
        first = not any(r.env == req.env and r.run_id != req.run_id for r in rows.runs)
        return triage(results, refs, known=self.known, known_label=self.known_label,
                      kernel=req.provenance.get("kernel") or None, first_run=first)


def history_deadlines(history: History, cfg: CockpitConfig) -> dict[tuple[str, str], Deadline]:
    """Each test's hang deadline from its durations in the env's recent runs (blocking)."""
    if cfg.execution.deadline_factor <= 0:
        return {}
    return deadlines(history.analysis_rows(env=cfg.env, limit=REFERENCE_RUNS), cfg.env, cfg.execution)
