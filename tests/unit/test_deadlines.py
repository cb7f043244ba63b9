"""Hang deadlines from history (issue 16 item 6): p95 of a test's recent passing
durations x factor, floored and capped by config, computed in app/ from the history
and applied by the runner where neither the test nor --timeout sets a timeout."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.engine import LocalProvider
from tests.support.store import BACKENDS, new_history
from vexfs_cockpit import DomainBase, TestResult, TestStatus, test_options
from vexfs_cockpit.analysis.deadlines import deadlines
from vexfs_cockpit.config.models import CockpitConfig, ExecutionSettings
from vexfs_cockpit.engine import events as ev
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.runner import Deadline, Runner, RunRequest
from vexfs_cockpit.store.history import AnalysisResult, AnalysisRows, AnalysisRun
from vexfs_cockpit.store.location import StoreLocation


def _rows(durations: dict[str, list[tuple[str, float, int]]], env: str = "ci") -> AnalysisRows:
    """test -> [(status, duration, attempts)] per run, oldest first."""
    n = max(len(v) for v in durations.values())
    runs = [AnalysisRun(f"r{i:02d}", 1000.0 + i, env, "passed", "auto") for i in range(n)]
    results = [AnalysisResult(f"r{i:02d}", "d", test, status, dur, attempts)
               for test, seq in durations.items() for i, (status, dur, attempts) in enumerate(seq)]
    return AnalysisRows(runs, results, [])


def _exec(**kw) -> ExecutionSettings:
    return ExecutionSettings(**{"test_timeout_minutes": 5, "deadline_factor": 4, "deadline_floor_s": 1,
                                "deadline_min_runs": 5, **kw})


def test_p95_times_factor_floored_and_capped():
    ok = [("PASSED", 1.0, 1)] * 19 + [("PASSED", 3.0, 1)]
    rows = _rows({"steady": ok, "slow": [("PASSED", 100.0, 1)] * 6, "young": [("PASSED", 1.0, 1)] * 4})
    got = deadlines(rows, "ci", _exec())
    assert got[("d", "steady")] == Deadline(pytest.approx(4 * 1.1), pytest.approx(1.1), 20)  # p95 of 19 x 1 s + 3 s
    assert got[("d", "slow")].seconds == 300  # 4 x 100 s, capped by test_timeout_minutes
    assert ("d", "young") not in got  # 4 passing runs < deadline_min_runs
    assert deadlines(rows, "ci", _exec(deadline_floor_s=60))[("d", "steady")].seconds == 60
    assert deadlines(rows, "ci", _exec(deadline_factor=0)) == {}
    assert deadlines(rows, "dev", _exec()) == {}  # another env's history is not this one's


def test_only_first_attempt_passes_count_and_only_the_newest_twenty():
    seq = ([("PASSED", 50.0, 1)] * 10          # old and slow: out of the window
           + [("PASSED", 1.0, 1)] * 20
           + [("FAILED", 500.0, 1), ("PASSED", 90.0, 2)])  # a failure and a retried pass: not its duration
    got = deadlines(_rows({"t": seq}), "ci", _exec())
    assert got[("d", "t")].p95_s == pytest.approx(1.0) and got[("d", "t")].runs == 20


class Sleepy(DomainBase):
    name = "sleepy"

    async def test_hangs(self) -> TestResult:
        await self.target.run("exec sleep 30", timeout=60)
        return TestResult(status=TestStatus.PASSED)

    @test_options(timeout=0.3)
    async def test_own_timeout(self) -> TestResult:
        await self.target.run("exec sleep 30", timeout=60)
        return TestResult(status=TestStatus.PASSED)


async def _run(tmp_path, timeout_s=None):
    bus = EventBus()
    sub = bus.subscribe()
    cfg = CockpitConfig()
    cfg.execution.test_timeout_minutes = 0.1  # 6 s: what a test without a deadline would get
    req = RunRequest(config=cfg, domains=["sleepy"], run_id="r", artifacts_dir=tmp_path / "art", timeout_s=timeout_s,
                     deadlines={("sleepy", "hangs"): Deadline(0.5, 0.1, 7), ("sleepy", "own_timeout"): Deadline(5.0, 1.0, 7)})
    summary = await Runner(bus, LocalProvider(tmp_path), {"sleepy": Sleepy}).execute(req)
    bus.close()
    return {r.name: r for r in summary.results}, [e async for e in sub if isinstance(e, ev.TestStarted)]


async def test_the_runner_applies_the_deadline_and_says_where_it_came_from(tmp_path):
    res, started = await _run(tmp_path)
    hangs = res["hangs"]
    assert hangs.status is TestStatus.TIMEOUT and hangs.duration_s < 3
    assert hangs.message == "timed out after 0.5s (its deadline from history: p95 0.1s over 7 runs)"
    # A test's own timeout wins over its history.
    assert res["own_timeout"].message == "timed out after 0.3s"
    by_test = {e.test: e for e in started}
    assert (by_test["hangs"].deadline_s, by_test["hangs"].p95_s) == (0.5, 0.1)
    assert (by_test["own_timeout"].deadline_s, by_test["own_timeout"].p95_s) == (0.3, 0.0)


async def test_timeout_on_the_command_line_wins_over_history(tmp_path):
    res, _ = await _run(tmp_path, timeout_s=0.4)
    assert res["hangs"].message == "timed out after 0.4s"


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    """A new history of each backend."""
    return new_history(request, tmp_path, "h.db")


async def test_the_session_reads_the_deadlines_from_the_history_db(db):
    from tests.support.store import KM, T0, RunSpec, record_sync
    from vexfs_cockpit.app.triage import history_deadlines
    from vexfs_cockpit.store.history import History

    specs = [RunSpec(f"run{i}", T0 + i * 100, env="ci", outcomes={(KM, "load"): TestStatus.PASSED},
                     test_duration=2.0 + i / 10) for i in range(6)]
    await __import__("asyncio").to_thread(record_sync, db, specs)
    cfg = CockpitConfig()
    cfg.env = "ci"
    cfg.execution.deadline_floor_s = 1
    d = history_deadlines(History(db), cfg)[(KM, "load")]
    assert d.runs == 6 and d.p95_s == pytest.approx(2.475) and d.seconds == pytest.approx(4 * 2.475)
    cfg.env = "dev"
    assert history_deadlines(History(db), cfg) == {}
