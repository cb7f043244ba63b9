"""Where each domain stands before a run (analysis.standing), over generated rows and a real store."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tests.support.tui import UiBackend, db  # noqa: F401 - db: the seeded history fixture
from vexfs_cockpit.analysis.known import KnownFailure
from vexfs_cockpit.analysis.standing import TREND_RUNS, domain_standing
from vexfs_cockpit.store.history import AnalysisResult, AnalysisRows, AnalysisRun

P, F = "PASSED", "FAILED"


def rows(outcomes: list[dict[tuple[str, str], str]], env: str = "dev") -> AnalysisRows:
    runs = [AnalysisRun(f"r{i:02d}", 1000.0 + i, env, "failed" if F in o.values() else "passed", "auto")
            for i, o in enumerate(outcomes)]
    results = [AnalysisResult(f"r{i:02d}", d, t, s, 1.0, 1) for i, o in enumerate(outcomes) for (d, t), s in o.items()]
    return AnalysisRows(runs, results, [])


CLEAN = {("kernel_module", "load"): P, ("kernel_module", "unload"): P, ("vector_operations", "search"): P}


def test_a_clean_history_stands_clean_and_a_never_run_domain_says_so():
    got = domain_standing(rows([CLEAN, CLEAN]), env="dev", domains=["kernel_module", "vector_operations", "safety_validation"])
    km, vec, safety = got
    assert (km.last_status, km.last_passed, km.last_bad, km.runs, km.regressions) == ("passed", 2, 0, 2, ())
    assert km.pass_rates == (1.0, 1.0) and km.last_run_id == "r01" and km.last_at == 1001.0
    assert vec.last_status == "passed" and vec.regressions == ()
    assert safety.last_status is None and safety.runs == 0
    assert km.reference == "previous run r00"


def test_a_planted_regression_is_open_on_its_domain_only():
    broken = {**CLEAN, ("kernel_module", "unload"): F}
    km, vec = domain_standing(rows([CLEAN, CLEAN, broken]), env="dev", domains=["kernel_module", "vector_operations"])
    assert km.last_status == "failed" and km.last_bad == 1 and km.regressions == ("unload",)
    assert km.pass_rates == (1.0, 1.0, 0.5)
    assert vec.regressions == () and vec.last_status == "passed"
    # against a baseline that failed too: still failing, not a regression
    km2, = domain_standing(rows([broken, CLEAN, broken]), env="dev", domains=["kernel_module"], baseline="r00")
    assert km2.regressions == () and km2.last_bad == 1 and km2.reference == "baseline r00"


def test_known_failures_are_not_open_regressions():
    broken = {**CLEAN, ("kernel_module", "unload"): F}
    entry = KnownFailure("kernel_module", "unload", "upstream bug", expires=dt.date.today() + dt.timedelta(days=30), index=1)
    km, = domain_standing(rows([CLEAN, broken]), env="dev", domains=["kernel_module"], known=[entry])
    assert km.regressions == () and km.known == 1


def test_other_envs_and_old_runs_do_not_count():
    many = rows([CLEAN] * (TREND_RUNS + 3))
    other = rows([{**CLEAN, ("kernel_module", "load"): F}], env="ci")
    mixed = AnalysisRows(many.runs + [other.runs[0]._replace(run_id="ci-0", started_at=5000.0)],
                         many.results + [r._replace(run_id="ci-0") for r in other.results], [])
    km, = domain_standing(mixed, env="dev", domains=["kernel_module"])
    assert km.last_status == "passed" and len(km.pass_rates) == TREND_RUNS and km.runs == TREND_RUNS + 3


def test_the_real_store_answers_through_history_queries(db: Path):  # noqa: F811
    # the seeded history: dev run-a passes, dev run-b fails module_load (a regression), ci run-c
    be = UiBackend(db_path=db)
    km, fs, vec = be.standing("dev", ["kernel_module", "filesystem_operations", "vector_operations"])
    assert km.last_run_id == "run-b" and km.regressions == ("module_load",) and km.pass_rates == (1.0, 0.5)
    assert fs.last_status == "passed" and fs.regressions == ()
    assert vec.last_status is None
    ci_km, = be.standing("ci", ["kernel_module"])
    assert ci_km.last_run_id == "run-c" and ci_km.regressions == ()  # one ci run: nothing to compare with
