"""KTAP v1: the report from a run, the live stream of `run --batch --ktap`, read back by a
strict port of kunit_parser's checks (tests/support/report.py parse_ktap) and by tap.py."""

from __future__ import annotations

import dataclasses
import io
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tap.line import Plan, Result
from tap.parser import Parser

from tests.support.faults import CHILD, REPO, batch_argv, batch_env
from tests.support.report import SPEC, KtapError, parse_ktap
from tests.support.store import FS, KM, T0, P, RunSpec, run_events
from vexfs_cockpit.engine.events import DomainFinished, DomainStarted, Event, RunFinished, TestFinished
from vexfs_cockpit.reports.ktap import KtapStream, ktap_text, write_ktap
from vexfs_cockpit.store.report import ReportBuilder, RunReport


def build(events: list[Event]) -> RunReport:
    rep = ReportBuilder().feed_all(events)
    assert rep is not None
    return rep


def stream(events: list[Event]) -> str:
    out = io.StringIO()
    s = KtapStream(out)
    for e in events:
        s.feed(e)
    return out.getvalue()


def check_spec_document(text: str) -> None:
    root = parse_ktap(text)
    assert root.plan == 2
    km, fs = root.subtests
    assert (km.name, km.ok, km.plan) == (KM, False, 4)
    assert (fs.name, fs.ok, fs.plan) == (FS, False, 2)
    got = {t.name: (t.ok, t.directive, t.reason) for t in km.subtests}
    assert got == {
        "module_build": (True, "", ""),
        "load": (False, "", ""),
        "unload": (False, "TIMEOUT", "unload timeout"),
        "leak": (True, "SKIP", "leak skipped"),
    }
    mount, rw = fs.subtests
    assert (mount.name, mount.ok, mount.directive, mount.reason) == ("mount", False, "ERROR", "mount error")
    assert (rw.name, rw.ok) == ("rw", True)
    # the evidence of a bad test precedes its result line as diagnostics
    diag = "\n".join(km.diagnostics)
    assert "# kernel_module.load: FAILED in 1.0s" in diag and "$ run-load  [exit 1, 0.2s on vm-a]" in diag
    assert "[oops] BUG: unable to handle page fault in vexfs_read" in diag
    assert "[hung_task] INFO: task mount blocked" in "\n".join(fs.diagnostics)


def test_report_parses_with_the_right_counts_and_directives(tmp_path: Path) -> None:
    out = write_ktap(build(run_events(SPEC)), tmp_path / "run.ktap")
    text = out.read_text()
    assert text.startswith("KTAP version 1\n")
    check_spec_document(text)
    leaves = parse_ktap(text).leaves()
    assert len(leaves) == 6
    assert sum(not t.ok for t in leaves) == 3 and sum(t.directive == "SKIP" for t in leaves) == 1


def test_top_level_is_plain_tap_for_tap_py() -> None:
    """KTAP promises TAP consumers the top level: tap.py sees the plan and one result per domain."""
    lines = list(Parser().parse_text(ktap_text(build(run_events(SPEC)))))
    plans = [ln for ln in lines if isinstance(ln, Plan)]
    results = [ln for ln in lines if isinstance(ln, Result)]
    assert [p.expected_tests for p in plans] == [2]
    assert [(r.number, r.description, r.ok) for r in results] == [(1, KM, False), (2, FS, False)]


def test_the_parser_catches_broken_ktap() -> None:
    """The checks the tests lean on do fail: a wrong plan, a skipped number, bad nesting."""
    good = ktap_text(build(run_events(SPEC)))
    parse_ktap(good)
    for broken in (good.replace("    1..4\n", "    1..5\n"),
                   good.replace("    ok 4 leak", "    ok 5 leak"),
                   good.replace("    ok 1 module_build", "   ok 1 module_build"),
                   good.replace("not ok 3 unload # TIMEOUT", "ok 3 unload # TIMEOUT"),
                   good.replace("KTAP version 1\n", "", 1)):
        with pytest.raises(KtapError):
            parse_ktap(broken)


def test_the_stream_writes_the_same_document_as_the_report() -> None:
    events = run_events(SPEC)
    assert stream(events) == ktap_text(build(events))


def test_side_by_side_domains_stay_whole_and_stream_in_order() -> None:
    """Two domains' events interleaved (as with parallel domains): each suite's lines stay
    together, the first domain's tests go out as they finish, the second's wait."""
    a = run_events(RunSpec("r", T0, outcomes={(KM, "x"): P, (KM, "y"): P}))
    b = run_events(RunSpec("r", T0, outcomes={(FS, "u"): P, (FS, "v"): P}))
    run_started, rest_a = a[0], a[1:-1]
    rest_b = b[1:-1]
    run_started = dataclasses.replace(run_started, domains=(KM, FS))
    mixed: list[Event] = [run_started]
    for x, y in zip(rest_a, rest_b):
        mixed += [x, y]
    mixed += rest_a[len(rest_b):] + rest_b[len(rest_a):]
    mixed.append(RunFinished(run_id="r", status="passed", counts={"PASSED": 4}, ts=T0 + 99))
    out = io.StringIO()
    s = KtapStream(out)
    seen_after_first_test: str | None = None
    for e in mixed:
        s.feed(e)
        if isinstance(e, TestFinished) and e.result.name == "x":
            seen_after_first_test = out.getvalue()
    assert seen_after_first_test is not None and seen_after_first_test.endswith("    ok 1 x\n")
    root = parse_ktap(out.getvalue())
    assert [(t.name, t.ok, [x.name for x in t.subtests]) for t in root.subtests] == [
        (KM, True, ["x", "y"]), (FS, True, ["u", "v"])]


def test_aborted_run_reports_unstarted_domains_and_missing_tests_as_errors() -> None:
    events = [e for e in run_events(RunSpec("r", T0, outcomes={(KM, "a"): P, (KM, "b"): P}))
              if not isinstance(e, (RunFinished, DomainFinished))]
    events = [e for e in events if not (isinstance(e, TestFinished) and e.result.name == "b")]
    events[0] = dataclasses.replace(events[0], domains=(KM, FS))
    events.append(RunFinished(run_id="r", status="aborted", counts={"PASSED": 1}, reason="VM lost", ts=T0 + 50))
    for text in (stream(events), ktap_text(build(events))):
        root = parse_ktap(text)
        km, fs = root.subtests
        assert (km.ok, [(t.name, t.ok, t.directive) for t in km.subtests]) == (False, [("a", True, ""), ("b", False, "ERROR")])
        assert "no result: domain aborted" in km.subtests[1].reason
        assert (fs.name, fs.ok, fs.directive, fs.reason) == (FS, False, "ERROR", "not run: VM lost")
        assert "# run aborted: VM lost" in root.diagnostics


def test_domain_without_a_plan_is_held_until_it_finishes() -> None:
    events = run_events(RunSpec("r", T0, outcomes={(KM, "a"): P}))
    events = [DomainStarted(run_id="r", domain=KM, vm="vm-0", planned_tests=(), ts=e.ts)
              if isinstance(e, DomainStarted) else e for e in events]
    root = parse_ktap(stream(events))
    assert root.subtests[0].plan == 1 and root.subtests[0].subtests[0].name == "a"


def _cli(tmp_path: Path, *extra: str, **faults: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD.format(repo=str(REPO)), *batch_argv(tmp_path / "h.db", *extra)],
        cwd=REPO, env=batch_env(tmp_path, **faults), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def test_run_batch_ktap_streams_on_stdout_as_tests_finish(tmp_path: Path) -> None:
    """The real CLI: the first tests' lines are on stdout while the last test still runs,
    stdout is KTAP alone, the progress lines went to stderr."""
    ready, block = tmp_path / "ready", tmp_path / "block"
    proc = _cli(tmp_path, "--ktap", FAULTS_TESTS="3", FAULTS_READY=str(ready), FAULTS_BLOCK=str(block))
    try:
        assert proc.stdout is not None
        early = []
        deadline = time.monotonic() + 60
        while not any(ln.strip() == "ok 2 t02" for ln in early):
            assert time.monotonic() < deadline, early
            line = proc.stdout.readline()
            assert line, f"stdout ended early: {early}"
            early.append(line)
        assert not block.exists()  # t03 is still running: these lines were streamed
        block.write_text("go")
        # read(), not communicate(): communicate reads the pipe's fd and would miss what
        # readline() already buffered. stderr is a few lines: no pipe fills meanwhile.
        rest = proc.stdout.read()
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.wait(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    root = parse_ktap("".join(early) + rest)
    (suite,) = root.subtests
    assert (suite.name, suite.ok, [t.name for t in suite.subtests]) == ("faults", True, ["t01", "t02", "t03"])
    assert "faults/t03: PASSED" in err and "3 passed, 0 failed, 0 skipped" in err
    assert "PASSED" not in "".join(early) + rest


def test_run_batch_without_ktap_keeps_progress_on_stdout(tmp_path: Path) -> None:
    proc = _cli(tmp_path, FAULTS_TESTS="2")
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 0, err
    assert "faults/t02: PASSED" in out and "KTAP" not in out


def test_ktap_implies_batch() -> None:
    """`run --ktap` is for CI: it never opens the TUI (which would own stdout)."""
    from vexfs_cockpit import cli

    args = cli.build_parser("run").parse_args(["run", "--ktap"])
    assert args.ktap and not args.wants_tui(args)
    plain = cli.build_parser("run").parse_args(["run"])
    assert plain.wants_tui(plain)
