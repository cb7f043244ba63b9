"""Regression intelligence (issue 16) on generated histories recorded for real:
a planted regression, a flaky test, a duration anomaly, an expired known failure, a
baseline, the expunge audit, and a clean history that reports nothing."""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.support.store import BACKENDS, DAY, FS, KM, T0, E, F, P, RunSpec, history_maker, record_sync
from vexfs_cockpit import cli
from vexfs_cockpit.analysis.known import load_known_failures
from vexfs_cockpit.analysis.regressions import Settings, analyze, audit, outlier_score
from vexfs_cockpit.store.history import History
from vexfs_cockpit.store.location import StoreLocation

TESTS = [(KM, "load"), (KM, "unload"), (FS, "mkdir"), (FS, "write")]


def spec(i: int, env: str = "dev", **status: object) -> RunSpec:
    """Run i of a steady history: everything passes, metrics jitter a little."""
    outcomes = {k: P for k in TESTS}
    outcomes.update({k: v for k, v in status.get("outcomes", {}).items()})  # type: ignore[attr-defined]
    metrics = {(FS, "write"): {"write_mb_s": 100.0 + (i % 3)}}
    metrics.update(status.get("metrics", {}))  # type: ignore[arg-type]
    return RunSpec(f"r{i:02d}", T0 + i * 3600, env=env, outcomes=outcomes, metrics=metrics,
                   test_duration=float(status.get("duration", 1.0)))  # type: ignore[arg-type]


Fresh = Callable[[], StoreLocation]


@pytest.fixture(params=BACKENDS)
def fresh(request: pytest.FixtureRequest, tmp_path: Path) -> Fresh:
    """New, empty histories of each backend."""
    return history_maker(request, tmp_path)


def history(fresh: Fresh, specs: list[RunSpec]) -> History:
    db = fresh()
    record_sync(db, specs)
    return History(db)


def run_analyze(hist: History, env: str = "dev", **kw: object):
    base = hist.baselines().get(env, (None, 0))[0]
    rows = hist.analysis_rows(env=env, include=(base,) if base else ())
    return analyze(rows, env=env, baseline=base, today=dt.date(2026, 12, 6), **kw)  # type: ignore[arg-type]


def test_clean_history_reports_nothing(fresh: Fresh) -> None:
    a = run_analyze(history(fresh, [spec(i) for i in range(8)]))
    assert a.run_id == "r07" and a.reference == "r06" and a.reference_kind == "previous run"
    assert a.verdicts == [] and a.flaky == [] and a.anomalies == []
    assert a.clean and "grouped by env" in a.grouping


def test_flakiness_compares_runs_of_the_same_code_only(fresh: Fresh) -> None:
    """A test that flips with every module commit is a change per commit, not flaky; the
    same flips on one commit are. Code identity comes from each run's provenance."""
    def coded(i: int, commit: str) -> RunSpec:
        s = spec(i, outcomes={(KM, "unload"): P if i % 2 else F})
        s.provenance = {"kernel": "6.1.0-57-amd64", "module_commit": commit, "module_dirty": "no"}
        return s

    per_commit = run_analyze(history(fresh, [coded(i, f"{i}" + "0" * 39) for i in range(6)]))
    assert per_commit.flaky == [] and per_commit.grouping.startswith("env 'dev', same code: kernel 6.1.0-57-amd64 · module ")
    assert per_commit.runs == 1  # no earlier run of that code
    one_commit = run_analyze(history(fresh, [coded(i, "a" * 40) for i in range(6)]))
    assert [(f.domain, f.test, f.flips) for f in one_commit.flaky] == [(KM, "unload", 5)]
    assert one_commit.grouping == "env 'dev', same code: kernel 6.1.0-57-amd64 · module aaaaaaaaaaaa" and one_commit.runs == 6


def test_planted_regression_is_found_and_not_called_flaky(fresh: Fresh) -> None:
    a = run_analyze(history(fresh, [*(spec(i) for i in range(6)), spec(6, outcomes={(KM, "unload"): F})]))
    assert [(v.kind, v.domain, v.test, v.before, v.after) for v in a.verdicts] == [
        ("regression", KM, "unload", "PASSED", "FAILED")]
    assert a.flaky == [] and not a.clean


def test_fixed_and_still_failing(fresh: Fresh) -> None:
    specs = [spec(0, outcomes={(KM, "load"): F, (FS, "mkdir"): E}), spec(1, outcomes={(FS, "mkdir"): F})]
    kinds = {(v.test, v.kind) for v in run_analyze(history(fresh, specs)).verdicts}
    assert kinds == {("load", "fixed"), ("mkdir", "still-failing")}


def test_planted_flaky_test_is_found_with_its_flip_rate(fresh: Fresh) -> None:
    flaky = [P, F, P, P, F, P, F, P]
    a = run_analyze(history(fresh, [spec(i, outcomes={(FS, "mkdir"): s}) for i, s in enumerate(flaky)]))
    assert [(f.test, f.flips, f.outcomes) for f in a.flaky] == [("mkdir", 6, 8)]
    assert a.flaky[0].flip_rate == pytest.approx(6 / 7, abs=1e-3)
    assert a.of("regression") == []  # it passed now
    # failing now as well: a regression against the previous run, marked flaky
    b = run_analyze(history(fresh, [spec(i, outcomes={(FS, "mkdir"): s})
                                             for i, s in enumerate([*flaky, F])]))
    assert [(v.kind, v.test, v.note) for v in b.verdicts] == [("regression", "mkdir", "flaky (88% flip rate)")]


def test_planted_duration_anomaly_is_found(fresh: Fresh) -> None:
    a = run_analyze(history(fresh, [*(spec(i) for i in range(6)), spec(6, duration=10.0)]))
    durations = {(x.domain, x.test) for x in a.anomalies if x.what == "duration_s"}
    assert durations == set(TESTS)  # every test of that run took 10x its history
    x = a.anomalies[0]
    assert x.value == 10.0 and x.median == 1.0 and x.score > 4 and x.history == 6


def test_metric_anomaly_and_minimum_history(fresh: Fresh) -> None:
    slow = {(FS, "write"): {"write_mb_s": 20.0}}
    a = run_analyze(history(fresh, [*(spec(i) for i in range(6)), spec(6, metrics=slow)]))
    assert [(x.test, x.what, x.value) for x in a.anomalies] == [("write", "write_mb_s", 20.0)]
    # with 4 earlier runs (< min_history 5) nothing is judged
    b = run_analyze(history(fresh, [*(spec(i) for i in range(4)), spec(4, metrics=slow)]))
    assert b.anomalies == []


def test_jitter_within_k_mad_is_no_anomaly() -> None:
    hist = [100.0, 101.0, 102.0, 100.0, 101.0, 102.0]
    assert outlier_score(103.0, hist)[0] <= 4
    assert outlier_score(10 * 101.0, hist)[0] > 4


def write_known(tmp_path: Path, text: str) -> Path:
    d = tmp_path / "known"
    d.mkdir(exist_ok=True)
    (d / "dev.yaml").write_text(text)
    return d


KNOWN = """\
known_failures:
  - test: kernel_module/unload
    reason: rmmod busy, bug 12
    expires: 2026-12-31
  - test: filesystem_operations/mkdir
    reason: EEXIST on retry
    expires: 2026-11-30
  - test: filesystem_operations/write
    reason: was slow once
"""


def test_known_failures_known_expired_and_fixed(tmp_path: Path, fresh: Fresh) -> None:
    known = load_known_failures(write_known(tmp_path, KNOWN) / "dev.yaml")
    bad = {(KM, "unload"): F, (FS, "mkdir"): F}
    hist = history(fresh, [*(spec(i) for i in range(6)), spec(6, outcomes=bad)])
    a = run_analyze(hist, known=known)
    kinds = {v.test: (v.kind, v.note) for v in a.verdicts}
    assert kinds["unload"][0] == "known"  # unexpired: not a regression
    assert kinds["mkdir"] == ("known-expired",
                              "known failure expired on 2026-11-30: counts again (EEXIST on retry)")
    assert kinds["write"][0] == "known-fixed" and "remove it" in kinds["write"][1]
    assert a.of("regression") == [] and not a.clean


def test_expunge_audit_drops_expired_and_passing(tmp_path: Path, fresh: Fresh) -> None:
    known = load_known_failures(write_known(tmp_path, KNOWN) / "dev.yaml")
    hist = history(fresh, [spec(i, outcomes={(KM, "unload"): F}) for i in range(4)])
    lines = {x.entry.test: (x.verdict, x.why) for x in audit(
        hist.analysis_rows(env="dev"), known, env="dev", settings=Settings(audit_runs=3), today=dt.date(2026, 12, 6))}
    assert lines == {"unload": ("keep", "still FAILED in the latest run that ran it"),
                     "mkdir": ("drop", "expired on 2026-11-30"),
                     "write": ("drop", "passed in the last 3 runs that ran it")}


def test_known_failure_kernel_range() -> None:
    from vexfs_cockpit.analysis.known import VersionRange

    rng = VersionRange.parse(">=6.1, <6.8")
    assert rng is not None and rng.contains((6, 1, 0)) and not rng.contains((6, 8)) and not rng.contains((5, 10))
    assert VersionRange.parse("6.1+") is None


def test_baseline_is_the_reference(fresh: Fresh) -> None:
    # r00 passes everything; r01..r06 have 'load' failing; r07 still fails:
    # against the previous run it is still failing, against the r00 baseline a regression.
    specs = [spec(0), *(spec(i, outcomes={(KM, "load"): F}) for i in range(1, 8))]
    hist = history(fresh, specs)
    assert [v.kind for v in run_analyze(hist).verdicts] == ["still-failing"]
    assert cli.main(["baseline", "set", "r00", "--db", str(hist.path)]) == 0
    assert hist.baselines()["dev"][0] == "r00"
    a = run_analyze(hist)
    assert a.reference == "r00" and a.reference_kind == "baseline"
    assert [(v.kind, v.test) for v in a.verdicts] == [("regression", "load")]
    assert cli.main(["baseline", "clear", "--db", str(hist.path)]) == 0
    assert hist.baselines() == {}


def test_cli_analyze_text_json_and_check(tmp_path: Path, fresh: Fresh, capsys: pytest.CaptureFixture[str]) -> None:
    hist = history(fresh, [*(spec(i) for i in range(6)), spec(6, outcomes={(KM, "unload"): F}, duration=10.0)])
    args = ["analyze", "--db", str(hist.path), "--known-failures", str(tmp_path / "none")]
    assert cli.main(args) == 0
    text = capsys.readouterr().out
    assert re.search(r"^regression +kernel_module/unload +PASSED +FAILED$", text, re.M), text
    assert re.search(r"^kernel_module/load duration_s +10 +1 +0 +180 +6$", text, re.M), text
    assert "1 regression(s)" in text and "4 anomalies" in text
    assert cli.main([*args, "--json", "--check"]) == 1
    data = json.loads(capsys.readouterr().out)
    assert data["run_id"] == "r06" and data["verdicts"][0]["kind"] == "regression"
    assert len(data["anomalies"]) == 4
    assert cli.main([*args, "--domain", FS, "--json"]) == 0
    assert {v["domain"] for v in json.loads(capsys.readouterr().out)["verdicts"]} <= {FS}


def test_cli_clean_history_exit_0_with_check(tmp_path: Path, fresh: Fresh, capsys: pytest.CaptureFixture[str]) -> None:
    hist = history(fresh, [spec(i) for i in range(7)])
    assert cli.main(["analyze", "--db", str(hist.path), "--check", "--known-failures", str(tmp_path)]) == 0
    assert "nothing new" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "needle"),
    [
        (["analyze", "--env", "nope"], "--env nope: no runs of that env"),
        (["analyze", "--domain", "nope"], "--domain nope: no results"),
        (["analyze", "--period", "7x"], "bad period '7x'"),
        (["baseline", "set", "zz-missing"], "baseline set zz-missing: no such run"),
        (["baseline", "set", "latest", "--env", "nope"], "--env nope: no runs of that env"),
        (["baseline", "set", "r00", "--env", "ci"], "run r00 is of env 'dev', not 'ci'"),
        (["expunge", "audit", "--env", "nope"], "--env nope: no runs of that env"),
    ],
)
def test_bad_input_is_one_line_exit_2(fresh: Fresh, capsys: pytest.CaptureFixture[str],
                                      argv: list[str], needle: str) -> None:
    hist = history(fresh, [spec(0), spec(1, env="ci")])
    assert cli.main([*argv, "--db", str(hist.path)]) == 2
    err = capsys.readouterr().err
    assert needle in err and err.count("\n") == 1 and "Traceback" not in err


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("known_failures:\n  - test: load\n    reason: x\n", "known_failures[1].test: 'load' is not DOMAIN/TEST"),
        ("known_failures:\n  - test: a/b\n", "known_failures[1].reason: missing"),
        ("known_failures:\n  - test: a/b\n    reason: x\n    expires: soon\n", "known_failures[1].expires: 'soon'"),
        ("known_failures:\n  - test: a/b\n    reason: x\n    kernel: 6.1+\n", "known_failures[1].kernel: '6.1+'"),
        ("known_failures:\n  - test: a/b\n    reason: x\n    why: y\n", "unknown key `why`"),
        ("known_failures: [\n", "not valid YAML"),
        ("- test: a/b\n", "one top-level key `known_failures:`"),
    ],
)
def test_malformed_known_failures_file_names_file_and_fix(tmp_path: Path, fresh: Fresh, capsys: pytest.CaptureFixture[str],
                                                          text: str, needle: str) -> None:
    hist = history(fresh, [spec(0)])
    d = write_known(tmp_path, text)
    for argv in (["analyze"], ["expunge", "audit"]):
        assert cli.main([*argv, "--db", str(hist.path), "--known-failures", str(d)]) == 2
        err = capsys.readouterr().err
        assert "dev.yaml" in err and needle in err and err.count("\n") == 1, err


def test_missing_db_is_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for argv in (["analyze"], ["baseline", "show"], ["expunge", "audit"]):
        assert cli.main([*argv, "--db", str(tmp_path / "none.db")]) == 2
        assert "no history DB there" in capsys.readouterr().err


def test_old_runs_outside_period_are_not_history(fresh: Fresh) -> None:
    old = [RunSpec(f"o{i}", T0 - 30 * DAY + i * 60, outcomes={k: P for k in TESTS}, test_duration=10.0)
           for i in range(6)]
    hist = history(fresh, [*old, *(spec(i) for i in range(6))])
    rows = hist.analysis_rows(env="dev", since=T0 - DAY)
    assert [r.run_id for r in rows.runs] == [f"r{i:02d}" for i in range(6)]
    # an old baseline is read as the reference, but its 10 s durations are not history
    rows = hist.analysis_rows(env="dev", since=T0 - DAY, include=("o0",))
    a = analyze(rows, env="dev", baseline="o0", since=T0 - DAY)
    assert a.run_id == "r05" and a.reference == "o0" and a.runs == 6 and a.anomalies == []


def test_known_failures_dir_on_the_command_line_is_relative_to_the_cwd(
        tmp_path: Path, fresh: Fresh, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    hist = history(fresh, [spec(i) for i in range(3)])
    write_known(tmp_path, KNOWN)
    monkeypatch.chdir(tmp_path)
    assert cli.main(["expunge", "audit", "--db", str(hist.path), "--known-failures", "known"]) == 1
    out = capsys.readouterr().out
    assert out.startswith("known/dev.yaml:") and "3 of 3 entries to remove" in out
    assert cli.main(["expunge", "audit", "--db", str(hist.path), "--known-failures", "elsewhere"]) == 0
    assert "elsewhere/dev.yaml: no such file" in capsys.readouterr().out
