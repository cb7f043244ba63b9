"""Confirmed regressions (issue 16 item 2): the runner reruns each changed test K times
on a fresh lease at the end of the run and names it by what the reruns show. Domains
act on a LocalTarget whose lease directory is the "VM" (FreshLocalProvider: every lease
a new directory), so a counter file there is per-VM state, as in a guest."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from pathlib import Path

import pytest

from tests.support.engine import FreshLocalProvider
from tests.support.store import BACKENDS, new_history
from vexfs_cockpit import DomainBase, TestResult, TestStatus, test_options
from vexfs_cockpit.analysis.known import KnownFailure
from vexfs_cockpit.analysis.triage import triage
from vexfs_cockpit.config.models import CockpitConfig, DomainSettings
from vexfs_cockpit.engine import events as ev
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.confirm import Verdict, decide
from vexfs_cockpit.engine.runner import CONFIRM_VM_INDEX, Runner, RunRequest
from vexfs_cockpit.store.location import PgUrl, StoreLocation

F, P, S = TestStatus.FAILED, TestStatus.PASSED, TestStatus.SKIPPED


class Knob(DomainBase):
    """Each test's behaviour is a fault knob in the domain's options (off | on | odd |
    once); ``odd`` fails on the 1st, 3rd, ... attempt on one VM, counted in a file
    there; ``once`` fails the first attempt on any VM (a flag beside the VMs' dirs)."""

    name = "knob"

    async def _knob(self, test: str) -> TestResult:
        mode = (self.settings.get("options") or {}).get(test, "off")
        res = await self.target.run(f"n=$(( $(cat {test}.count 2>/dev/null || echo 0) + 1 )); echo $n > {test}.count; echo $n")
        n = int(res.output.strip())
        first = (await self.target.run(f"test -e ../{test}.once || {{ touch ../{test}.once; exit 1; }}")).exit_code == 1
        bad = mode == "on" or (mode == "odd" and n % 2 == 1) or (mode == "once" and first)
        return TestResult(status=F if bad else P, message=f"attempt {n} on this VM, knob {mode}")

    async def test_setup_step(self) -> TestResult:
        return await self._knob("setup_step")

    @test_options(depends_on=["setup_step"])
    async def test_a(self) -> TestResult:
        return await self._knob("a")

    async def test_b(self) -> TestResult:
        return await self._knob("b")


def _config(knobs: dict[str, str], reruns: int = 3) -> CockpitConfig:
    cfg = CockpitConfig()
    cfg.execution.retry_count = 0
    cfg.analysis.confirm_reruns = reruns
    cfg.domains["knob"] = DomainSettings(options=knobs)
    return cfg


def _triage(before: dict[str, str], known: Sequence[KnownFailure] = ()):
    refs = {("knob", t): (s, "baseline base-1") for t, s in before.items()}

    async def judge(req: RunRequest, results: Sequence[TestResult]):
        return triage(results, refs, known=known, today=dt.date(2026, 12, 6))

    return judge


async def _run(tmp_path, knobs, before, *, reruns=3, known=(), tests=None):
    bus = EventBus()
    sub = bus.subscribe()
    provider = FreshLocalProvider(tmp_path)
    runner = Runner(bus, provider, {"knob": Knob}, triage=_triage(before, known))
    summary = await runner.execute(RunRequest(
        config=_config(knobs, reruns), domains=["knob"], run_id="r2", artifacts_dir=tmp_path / "art",
        only_tests={"knob": set(tests)} if tests else None))
    bus.close()
    events = [e async for e in sub]
    return summary, events, provider


def _verdicts(events) -> dict[str, ev.TestVerdict]:
    return {e.test: e for e in events if isinstance(e, ev.TestVerdict)}


def _reruns(events, test: str) -> list[TestStatus]:
    return [e.status for e in events if isinstance(e, ev.TestRerun) and e.test == test]


async def test_a_knob_turned_on_is_a_confirmed_regression_on_a_fresh_vm(tmp_path):
    summary, events, provider = await _run(tmp_path, {"a": "on"}, {"setup_step": "PASSED", "a": "PASSED", "b": "PASSED"})
    v = _verdicts(events)
    assert set(v) == {"a"}, v  # only what changed
    assert v["a"].verdict == Verdict.REGRESSION and v["a"].reruns == ("FAILED",) * 3
    assert v["a"].before == "PASSED" and v["a"].reference == "baseline base-1" and v["a"].now == "FAILED"
    assert "3/3 reruns failed on fresh VM local-knob-1" in v["a"].note
    # The reruns ran on a second lease, after the test's dependency ran there once.
    assert provider.leases == [("knob", 0), ("knob", CONFIRM_VM_INDEX)]
    assert (tmp_path / "lease-2" / "setup_step.count").read_text().strip() == "1"
    assert (tmp_path / "lease-2" / "a.count").read_text().strip() == "3"
    assert not (tmp_path / "lease-2" / "b.count").exists()  # b did not change: not rerun
    kinds = [type(e).__name__ for e in events]
    assert kinds.index("ConfirmStarted") < kinds.index("TestRerun") < kinds.index("TestVerdict") < kinds.index("RunFinished")
    # Reruns are not results: the run's counts are the run's own.
    assert summary.counts["FAILED"] == 1 and summary.status == "failed" and summary.exit_code == 1


async def test_a_knob_failing_one_time_in_two_is_flaky_never_a_regression(tmp_path):
    # The run's attempt is the VM's first: it fails; on the fresh VM: fail, pass, fail.
    summary, events, _ = await _run(tmp_path, {"b": "odd"}, {"setup_step": "PASSED", "a": "PASSED", "b": "PASSED"})
    assert {r.name: r.status for r in summary.results}["b"] is F
    v = _verdicts(events)["b"]
    assert v.verdict == Verdict.FLAKY and v.reruns == ("FAILED", "PASSED", "FAILED"), v
    assert "2/3 reruns failed" in v.note


async def test_a_failure_that_does_not_reproduce_is_flaky(tmp_path):
    # Fails once, in the run; passes every rerun: flaky, never a regression (nor fixed).
    summary, events, _ = await _run(tmp_path, {"b": "once"}, {"b": "PASSED"}, tests=["b"])
    assert summary.results[0].status is F
    v = _verdicts(events)["b"]
    assert v.verdict == Verdict.FLAKY and v.reruns == ("PASSED",) * 3, v
    assert "0/3 reruns failed" in v.note
    assert decide(F, [P, P, P])[0] is Verdict.FLAKY
    assert decide(F, [F, P])[0] is Verdict.FLAKY
    assert decide(P, [P, F])[0] is Verdict.FLAKY
    assert decide(F, [F, S])[0] is Verdict.UNCONFIRMED


async def test_fixed_needs_every_rerun_to_pass_and_still_failing_is_not_rerun(tmp_path):
    summary, events, provider = await _run(
        tmp_path, {"a": "on"}, {"setup_step": "FAILED", "a": "FAILED", "b": "PASSED"})
    v = _verdicts(events)
    assert v["setup_step"].verdict == Verdict.FIXED and v["setup_step"].reruns == ("PASSED",) * 3
    assert v["a"].verdict == Verdict.STILL_FAILING and v["a"].reruns == ()
    assert _reruns(events, "a") == []
    assert provider.leases == [("knob", 0), ("knob", CONFIRM_VM_INDEX)]


async def test_reruns_zero_means_no_fresh_vm_and_no_regression_claimed(tmp_path):
    summary, events, provider = await _run(tmp_path, {"a": "on"}, {"setup_step": "PASSED", "a": "PASSED"}, reruns=0)
    v = _verdicts(events)["a"]
    assert v.verdict == Verdict.UNCONFIRMED and "confirm_reruns is 0" in v.note
    assert provider.leases == [("knob", 0)]
    assert not any(isinstance(e, ev.ConfirmStarted) for e in events)


async def test_known_failure_does_not_fail_the_run_and_a_passing_one_says_remove_it(tmp_path):
    known = [KnownFailure("knob", "a", "knob a is on by design", index=1),
             KnownFailure("knob", "b", "b used to fail", index=2)]
    summary, events, provider = await _run(tmp_path, {"a": "on"}, {"setup_step": "PASSED", "a": "PASSED", "b": "PASSED"},
                                           known=known)
    v = _verdicts(events)
    assert v["a"].verdict == Verdict.KNOWN and v["a"].note == "knob a is on by design"
    assert v["b"].verdict == Verdict.KNOWN_FIXED and "fixed, remove it" in v["b"].note
    assert provider.leases == [("knob", 0)]  # known failures are not rerun
    assert summary.status == "passed" and summary.exit_code == 0
    finished = next(e for e in events if isinstance(e, ev.RunFinished))
    assert finished.status == "passed" and finished.reason == "1 known failure: knob/a"
    assert summary.counts["FAILED"] == 1  # still reported as a failure


async def test_an_expired_known_failure_counts_again(tmp_path):
    known = [KnownFailure("knob", "a", "was on", expires=dt.date(2026, 12, 1), index=1)]
    summary, events, _ = await _run(tmp_path, {"a": "on"}, {"setup_step": "PASSED", "a": "PASSED"}, known=known)
    v = _verdicts(events)["a"]
    assert v.verdict == Verdict.REGRESSION
    assert v.note.startswith("known failure expired on 2026-12-01: counts again (was on)")
    assert summary.exit_code == 1


async def test_no_fresh_vm_leaves_the_change_unconfirmed(tmp_path):
    class OneLease(FreshLocalProvider):
        def lease(self, domain, index):
            if index == CONFIRM_VM_INDEX:
                from vexfs_cockpit.errors import InfraError

                raise InfraError("no room for another VM")
            return super().lease(domain, index)

    bus = EventBus()
    sub = bus.subscribe()
    runner = Runner(bus, OneLease(tmp_path), {"knob": Knob}, triage=_triage({"a": "PASSED", "setup_step": "PASSED"}))
    summary = await runner.execute(RunRequest(config=_config({"a": "on"}), domains=["knob"], run_id="r3",
                                              artifacts_dir=tmp_path / "art"))
    bus.close()
    v = _verdicts([e async for e in sub])["a"]
    assert v.verdict == Verdict.UNCONFIRMED and "no room for another VM" in v.note
    assert summary.status == "failed" and not summary.infra_errors  # the run's own outcome stands


@pytest.mark.parametrize("before,now,expected", [
    ("PASSED", "FAILED", None), ("", "FAILED", None), ("FAILED", "TIMEOUT", Verdict.STILL_FAILING),
    ("ERROR", "PASSED", None), ("PASSED", "PASSED", "none"), ("", "PASSED", "none"), ("FAILED", "SKIPPED", "none"),
])
def test_triage_rules(before, now, expected):
    r = TestResult(status=TestStatus(now), name="t", domain="d")
    refs = {("d", "t"): (before, "run x")} if before else {}
    out = triage([r], refs)
    if expected == "none":
        assert out == []
    else:
        assert len(out) == 1 and out[0].verdict == expected and out[0].before == before
    # The env's first run: a failure has nothing to differ from (no reruns); one with a reference still does.
    first = triage([r], refs, first_run=True)
    assert first == ([] if not before else out)


# -- the verdicts in the history, `history show` and the batch lines --------------------
@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    """A new history of each backend."""
    return new_history(request, tmp_path, "h.db")


def _verdict_events(run_id: str = "run-v") -> list[ev.Event]:
    from tests.support.store import FS, KM, T0, RunSpec, run_events

    events = run_events(RunSpec(run_id, T0, env="ci", outcomes={(KM, "build"): P, (FS, "read"): F, (FS, "write"): F}))
    verdicts = [
        ev.TestVerdict(run_id=run_id, domain=FS, test="read", verdict="regression", now="FAILED", before="PASSED",
                       reference="baseline run-b", reruns=("FAILED",) * 3, note="3/3 reruns failed on fresh VM vm-1",
                       ts=T0 + 50),
        ev.TestVerdict(run_id=run_id, domain=FS, test="write", verdict="flaky", now="FAILED", before="PASSED",
                       reference="run run-a", reruns=("FAILED", "PASSED", "FAILED"), note="2/3 reruns failed", ts=T0 + 51),
    ]
    return events[:-1] + verdicts + events[-1:]  # before RunFinished, as the runner publishes them


async def test_verdicts_are_stored_and_history_show_prints_the_badges(db):
    from tests.support.store import FS, record, run_cli
    from vexfs_cockpit.store.history import History

    await record(db, _verdict_events())
    rep = History(db).run_detail("run-v")
    assert rep is not None
    v = rep.verdicts[(FS, "read")]
    assert (v.verdict, v.before, v.reference, v.reruns) == ("regression", "PASSED", "baseline run-b", ("FAILED",) * 3)
    assert rep.verdicts[(FS, "write")].reruns == ("FAILED", "PASSED", "FAILED")
    code, out = run_cli("history", "--db", str(db), "show", "run-v", "--evidence", "none")
    assert code == 0
    lines = out.splitlines()
    read = next(i for i, ln in enumerate(lines) if ln.strip().startswith("FAILED") and " read " in ln)
    assert lines[read + 1].strip() == "[NEW REGRESSION] PASSED in baseline run-b — 3/3 reruns failed on fresh VM vm-1"
    assert "[FLAKY] PASSED in run run-a — 2/3 reruns failed" in out


async def test_a_db_without_the_verdicts_table_stores_the_run_and_skips_the_verdicts(db, monkeypatch):
    from tests.support.store import record
    from vexfs_cockpit.store import schema
    from vexfs_cockpit.store.history import History

    if isinstance(db, PgUrl):
        pytest.skip("a PostgreSQL history starts at v6, which has the verdicts table")
    with monkeypatch.context() as m:  # a DB at schema v5, written by this writer
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:5])
        m.setattr(schema, "LATEST_VERSION", 5)
        await record(db, _verdict_events())
        rep = History(db).run_detail("run-v")
    assert rep is not None and rep.verdicts == {} and len(rep.tests()) == 3


def test_batch_prints_the_reruns_a_badge_per_test_and_the_known_failures():
    import io

    from vexfs_cockpit.commands.progress import ProgressPrinter

    out = io.StringIO()
    p = ProgressPrinter(out, colour=False)
    for e in [
        ev.ConfirmStarted(run_id="r", tests=("fs/read",), reruns=3),
        ev.TestRerun(run_id="r", domain="fs", test="read", number=1, of=3, status=F, message="EIO", duration_s=0.5, vm="vm-1"),
        ev.TestVerdict(run_id="r", domain="fs", test="read", verdict="regression", now="FAILED", before="PASSED",
                       reference="baseline b", reruns=("FAILED",) * 3, note="3/3 reruns failed on fresh VM vm-1"),
        ev.TestVerdict(run_id="r", domain="fs", test="old", verdict="known", now="FAILED", before="FAILED",
                       reference="run a", note="broken on 6.1"),
        ev.RunFinished(run_id="r", status="failed", counts={"PASSED": 1, "FAILED": 2, "SKIPPED": 0}),
    ]:
        p.handle(e)
    lines = [ln.split("] ", 1)[-1] for ln in out.getvalue().splitlines()]
    assert lines[0] == "confirming 1 changed test, 3 reruns each on a fresh VM: fs/read"
    assert lines[1] == "fs/read: rerun 1/3 FAILED (0.50s) on vm-1 — EIO"
    assert lines[2] == "fs/read: [NEW REGRESSION] FAILED now, PASSED in baseline b — 3/3 reruns failed on fresh VM vm-1"
    assert "  fs/old: [KNOWN FAILURE] FAILED now, FAILED in run a — broken on 6.1" in out.getvalue()
    assert lines[-1] == "1 passed, 2 failed (1 known), 0 skipped"


# -- the session's triage over a real history DB ----------------------------------------
async def test_history_triage_uses_the_baseline_else_the_tests_newest_result(db):
    from tests.support.store import DAY, FS, KM, T0, RunSpec, record, run_events
    from vexfs_cockpit.app.triage import HistoryTriage
    from vexfs_cockpit.store.dialect import write_tx
    from vexfs_cockpit.store.history import History
    from vexfs_cockpit.store.recorder import HistoryStore
    from vexfs_cockpit.store.writer import StoreWriter

    store = await HistoryStore.aopen(db)
    try:
        for spec in (
            RunSpec("base", T0, env="ci", outcomes={(FS, "read"): P, (FS, "write"): P}),
            RunSpec("mid", T0 + DAY, env="ci", outcomes={(FS, "read"): F, (FS, "write"): F, (KM, "load"): F}),
            RunSpec("only-load", T0 + 2 * DAY, env="ci", outcomes={(KM, "load"): S}),  # skipped: no reference
            RunSpec("other-env", T0 + 3 * DAY, env="dev", outcomes={(KM, "load"): P}),
        ):
            await record(db, run_events(spec), store)
        def set_baseline(w: StoreWriter) -> None:
            with write_tx(w.conn):
                w.conn.execute("INSERT INTO baselines(env, run_id, set_at) VALUES ('ci', 'base', 0)")

        store.call(set_baseline)
    finally:
        store.close()
    cfg = CockpitConfig()
    req = RunRequest(config=cfg, domains=[FS, KM], run_id="now", env="ci")
    now = [TestResult(status=F, name="read", domain=FS), TestResult(status=P, name="write", domain=FS),
           TestResult(status=F, name="load", domain=KM)]
    out = {s.test: s for s in await HistoryTriage(History(db), [], "x")(req, now)}
    # read: PASSED in the baseline (the later failure in "mid" does not hide that) -> rerun
    assert (out["read"].before, out["read"].reference, out["read"].verdict) == ("PASSED", "baseline base", None)
    # write passes now, passed in the baseline: nothing changed
    assert "write" not in out
    # load: not in the baseline; its newest non-skipped result in env ci is FAILED in "mid"
    assert (out["load"].before, out["load"].reference, out["load"].verdict) == ("FAILED", "run mid", Verdict.STILL_FAILING)
    # An env's first run has nothing to differ from: no reruns, no verdicts.
    fresh = RunRequest(config=cfg, domains=[FS], run_id="now", env="fresh")
    assert await HistoryTriage(History(db), [], "x")(fresh, now) == []


def test_a_malformed_known_failures_file_is_one_line_before_the_run(tmp_path):
    from vexfs_cockpit.app.triage import known_failures
    from vexfs_cockpit.errors import ConfigError

    cfg = CockpitConfig()
    cfg.analysis.known_failures_dir = tmp_path
    (tmp_path / f"{cfg.env}.yaml").write_text("known_failures:\n  - test: knob\n    reason: x\n")
    with pytest.raises(ConfigError, match=r"known_failures\[1\]\.test: 'knob' is not DOMAIN/TEST"):
        known_failures(cfg, tmp_path)
    (tmp_path / f"{cfg.env}.yaml").write_text("known_failures:\n  - test: knob/a\n    reason: on by design\n")
    known, label = known_failures(cfg, tmp_path)
    assert [k.key for k in known] == [("knob", "a")] and label == f"{cfg.env}.yaml"


async def test_a_provider_with_one_shared_vm_gets_no_reruns(tmp_path):
    class DevVm(FreshLocalProvider):
        shares_one_vm = True  # as ktest's AttachProvider: every lease is the dev VM

    bus = EventBus()
    sub = bus.subscribe()
    provider = DevVm(tmp_path)
    runner = Runner(bus, provider, {"knob": Knob}, triage=_triage({"a": "PASSED", "setup_step": "PASSED"}))
    await runner.execute(RunRequest(config=_config({"a": "on"}), domains=["knob"], run_id="r4",
                                    artifacts_dir=tmp_path / "art"))
    bus.close()
    v = _verdicts([e async for e in sub])["a"]
    assert v.verdict == Verdict.UNCONFIRMED and "no fresh VM to confirm on" in v.note
    assert provider.leases == [("knob", 0)]


def test_the_json_report_carries_the_verdicts():
    from vexfs_cockpit.reports.json_report import report_dict
    from vexfs_cockpit.store.report import ReportBuilder

    rep = ReportBuilder().feed_all(_verdict_events())
    assert rep is not None
    doc = report_dict(rep)
    assert [(v["test"], v["verdict"], v["reruns"]) for v in doc["verdicts"]] == [
        ("read", "regression", ["FAILED"] * 3), ("write", "flaky", ["FAILED", "PASSED", "FAILED"])]


async def test_analyze_names_a_change_by_the_runs_own_reruns(db):
    from tests.support.store import DAY, FS, KM, T0, RunSpec, record, run_events
    from vexfs_cockpit.analysis.regressions import analyze
    from vexfs_cockpit.analysis.render import analysis_text
    from vexfs_cockpit.store.history import History

    await record(db, run_events(RunSpec("run-a", T0 - DAY, env="ci", outcomes={(KM, "build"): P, (FS, "read"): P, (FS, "write"): P})))
    await record(db, _verdict_events())
    a = analyze(History(db).analysis_rows(env="ci"), env="ci")
    kinds = {v.test: (v.kind, v.note) for v in a.verdicts}
    assert kinds["read"] == ("regression", "confirmed: 3/3 reruns failed on fresh VM vm-1")
    assert kinds["write"] == ("flaky", "did not reproduce (2/3 reruns failed)")  # never a regression
    assert not a.clean
    text = analysis_text(a)
    assert "1 regression(s)" in text and "1 flaky" in text


async def test_a_triage_that_fails_costs_the_run_its_verdicts_not_its_outcome(tmp_path):
    from vexfs_cockpit.errors import StoreError

    for exc in (StoreError("history DB h.db: database disk image is malformed"), KeyError("boom")):
        async def broken(req, results, exc=exc):
            raise exc

        bus = EventBus()
        sub = bus.subscribe()
        summary = await Runner(bus, FreshLocalProvider(tmp_path / type(exc).__name__), {"knob": Knob},
                               triage=broken).execute(
            RunRequest(config=_config({"a": "on"}), domains=["knob"], run_id="r5", artifacts_dir=tmp_path / "art"))
        bus.close()
        events = [e async for e in sub]
        problems = [e.message for e in events if isinstance(e, ev.InfraProblem)]
        assert len(problems) == 1 and problems[0].startswith("no regression verdicts for this run: "), problems
        assert not _verdicts(events) and summary.status == "failed" and not summary.infra_errors


def test_the_markdown_summary_leads_with_what_changed():
    from vexfs_cockpit.reports.markdown import markdown_text
    from vexfs_cockpit.store.report import ReportBuilder

    rep = ReportBuilder().feed_all(_verdict_events())
    assert rep is not None
    lines = markdown_text(rep).splitlines()
    at = lines.index("### What changed (confirmed by reruns on fresh VMs)")
    assert lines[at + 2:at + 4] == [
        "- **NEW REGRESSION** `filesystem_operations/read`: FAILED now, PASSED in baseline run-b — 3/3 reruns failed on fresh VM vm-1",
        "- **FLAKY** `filesystem_operations/write`: FAILED now, PASSED in run run-a — 2/3 reruns failed",
    ]
    assert at < next(i for i, ln in enumerate(lines) if ln.startswith("### ❌ filesystem_operations"))


async def test_reruns_stop_when_the_fresh_vm_is_lost_and_say_so(tmp_path):
    class LosesItsVm(Knob):
        name = "knob"

        async def test_b(self) -> TestResult:
            res = await self._knob("b")
            if self.ctx.vm is None and "lease-2" in str(await self.target.run("pwd")):
                # the fresh VM "did not come back" after this rerun, as Runner._recover says it
                self.prerequisite_missing = "VM local-knob-1 did not come back after reset: gone"
            return res

    bus = EventBus()
    sub = bus.subscribe()
    runner = Runner(bus, FreshLocalProvider(tmp_path), {"knob": LosesItsVm}, triage=_triage({"b": "PASSED"}))
    await runner.execute(RunRequest(config=_config({"b": "on"}), domains=["knob"], run_id="r6",
                                    artifacts_dir=tmp_path / "art", only_tests={"knob": {"b"}}))
    bus.close()
    events = [e async for e in sub]
    v = _verdicts(events)["b"]
    assert v.verdict == Verdict.UNCONFIRMED and v.reruns == ("FAILED",), v  # not three failures on a dead VM
    assert "did not come back after reset: gone: stopped after 1 of 3 reruns" in v.note
