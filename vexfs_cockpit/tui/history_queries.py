"""The history half of ``CockpitBackend`` over the store's read API.

Blocking (an SQLite file or a PostgreSQL server: History takes either location): the
TUI calls these from thread workers. A backend delegates its history methods here:
``HistoryQueries(History(location))``.
"""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from typing import TYPE_CHECKING

from vexfs_cockpit.engine.results import TestStatus
from vexfs_cockpit.store.history import (
    CrashSignature,
    DomainTrendPoint,
    DurationPoint,
    History,
    MetricPoint,
    PassRatePoint,
    RunComparison,
    RunSummary,
)
from vexfs_cockpit.store.report import RunReport
from vexfs_cockpit.tui.backend import HistoryCatalog, MetricKey, RunFilter

if TYPE_CHECKING:
    from vexfs_cockpit.analysis.known import KnownFailure
    from vexfs_cockpit.analysis.standing import DomainStanding

CATALOG_RUNS = 8  # the newest runs whose tests fill the trend pickers
CATALOG_ENV_RUNS = 1000  # the newest runs whose envs fill the env filter
ETA_SAMPLES = 5  # ETAs use the median of this many latest durations


class HistoryQueries:
    def __init__(self, history: History):
        self.history = history

    def history_catalog(self) -> HistoryCatalog:
        # One read of names only: decoding whole runs (run_detail) cost ~1 s at 10k runs.
        cat = self.history.recent_catalog(env_runs=CATALOG_ENV_RUNS, test_runs=CATALOG_RUNS)
        tests = cat.tests
        metrics = tuple(MetricKey(name, domain, test) for domain, test, name in cat.metrics)
        return HistoryCatalog(
            envs=tuple(cat.envs),
            domains=tuple(sorted(tests)),
            tests={d: tuple(sorted(ts)) for d, ts in tests.items()},
            metrics=metrics,
        )

    def list_runs(self, flt: RunFilter) -> list[RunSummary]:
        return self.history.list_runs(
            env=flt.env, domain=flt.domain, status=flt.status, since=flt.since, text=flt.text or None, limit=flt.limit,
            before=flt.before,
        )

    def run_detail(self, run_id: str) -> RunReport | None:
        return self.history.run_detail(run_id)

    def domain_trend(self, domain: str, since: float | None) -> list[DomainTrendPoint]:
        return self.history.domain_trend(domain, since)

    def domain_pass_rate(self, domain: str, since: float | None) -> list[PassRatePoint]:
        return self.history.domain_pass_rate(domain, since)

    def test_duration_trend(self, domain: str, test: str, since: float | None) -> list[DurationPoint]:
        return self.history.test_duration_trend(domain, test, since)

    def metric_trend(self, key: MetricKey, since: float | None) -> list[MetricPoint]:
        return self.history.metric_trend(key.name, key.domain or None, key.test or None, since)

    def compare_runs(self, a: str, b: str) -> RunComparison:
        return self.history.compare_runs(a, b)

    def run_console(self, run_id: str) -> str | None:
        """The run's console logs as kept under the data dir (None once `gc` removed them)."""
        from vexfs_cockpit.store.artifacts import console_text

        return console_text(run_id)

    def crash_signatures(self, limit: int = 200) -> list[CrashSignature]:
        return self.history.crash_signatures(limit)

    def standing(self, env: str, domains: Sequence[str]) -> list[DomainStanding]:
        """Where each of ``domains`` stands in ``env``: the dashboard before a run."""
        from vexfs_cockpit.analysis.standing import TREND_RUNS, domain_standing

        baseline = self.history.baselines().get(env, (None, 0.0))[0]
        # The env's newest runs only (a 10k-run history reads in ~50 ms): a domain left out
        # of some of them has a shorter sparkline.
        rows = self.history.analysis_rows(env=env, limit=TREND_RUNS, include=(baseline,) if baseline else ())
        return domain_standing(rows, env=env, domains=domains, baseline=baseline, known=self.known_failures(env))

    def known_failures(self, env: str) -> list[KnownFailure]:
        """The env's known-failures entries; none without a config to find them by."""
        return []

    def expected_durations(self, env: str, domain: str, tests: Sequence[str]) -> dict[str, float]:
        out: dict[str, float] = {}
        for test in tests:
            # This environment's runs first; a test never run here takes its time from any
            # (a first ci run after dev runs still gets an ETA).
            for where in (env or None, None) if env else (None,):
                points = [
                    p.duration_s
                    for p in self.history.test_duration_trend(domain, test, env=where)
                    if p.status != TestStatus.SKIPPED.value and p.duration_s is not None
                ]
                if points:
                    out[test] = statistics.median(points[-ETA_SAMPLES:])
                    break
        return out
