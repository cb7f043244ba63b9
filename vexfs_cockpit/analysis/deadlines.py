"""Hang deadlines from history (issue 16 item 6): each test's deadline is the p95 of
its recent passing, first-attempt durations in the env times ``execution.deadline_factor``,
at least ``deadline_floor_s`` and at most ``test_timeout_minutes`` (the fixed timeout,
which a test without enough history keeps). A test that declares its own timeout, or a
run given --timeout, is not touched (the runner decides that)."""

from __future__ import annotations

from vexfs_cockpit.config.models import ExecutionSettings
from vexfs_cockpit.engine.plugin import percentile
from vexfs_cockpit.engine.results import TestStatus
from vexfs_cockpit.engine.runner import Deadline
from vexfs_cockpit.store.history import AnalysisRows

WINDOW = 20  # newest passing durations per test the p95 is over


def deadlines(rows: AnalysisRows, env: str, execution: ExecutionSettings) -> dict[tuple[str, str], Deadline]:
    """(domain, test) -> its deadline, for the tests of ``env`` with enough history."""
    if execution.deadline_factor <= 0:
        return {}
    cap = execution.test_timeout_minutes * 60
    order = {r.run_id: i for i, r in enumerate(rows.runs) if r.env == env}  # oldest first
    samples: dict[tuple[str, str], list[tuple[int, float]]] = {}
    for res in rows.results:
        # A retried pass took its failed attempts' time too: not the test's own duration.
        if res.run_id in order and res.status == TestStatus.PASSED.value and res.attempts <= 1:
            samples.setdefault((res.domain, res.test), []).append((order[res.run_id], res.duration_s))
    out: dict[tuple[str, str], Deadline] = {}
    for key, seq in samples.items():
        newest = [d for _, d in sorted(seq, reverse=True)[:WINDOW]]
        if len(newest) < execution.deadline_min_runs:
            continue
        p95 = percentile(newest, 95)
        out[key] = Deadline(min(cap, max(execution.deadline_floor_s, p95 * execution.deadline_factor)), p95, len(newest))
    return out
