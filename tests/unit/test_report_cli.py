"""`vexfs-cockpit report` and `vexfs-cockpit compare` through the real CLI entry point."""

from __future__ import annotations

import json
from pathlib import Path

import html5lib
import pytest
from junitparser import JUnitXml
from kcidb_io.schema import V5_2

from tests.support.report import history, parse_ktap
from tests.support.store import BACKENDS, FS, KM, T0, DAY, F, P, RunSpec, new_history, record_sync
from vexfs_cockpit import cli
from vexfs_cockpit.store.location import StoreLocation


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> StoreLocation:
    """The same history in an SQLite file and in a real PostgreSQL (--db takes either)."""
    monkeypatch.delenv("VEXFS_COCKPIT_DB", raising=False)
    monkeypatch.delenv("GITHUB_SHA", raising=False)
    monkeypatch.delenv("CI_COMMIT_SHA", raising=False)
    return history(new_history(request, tmp_path, "h.db"))


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = cli.main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_every_format_to_a_file(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    outs = {}
    for fmt in ("html", "markdown", "junit", "json", "ktap", "kcidb"):
        path = tmp_path / "reports" / f"run.{fmt}"
        code, out, err = run_cli(capsys, "report", "run-1", "--format", fmt, "--output", str(path), "--db", str(db))
        assert (code, out) == (0, ""), err
        assert err == f"wrote {path}\n"
        outs[fmt] = path.read_text()
    xml = JUnitXml.fromstring(outs["junit"].encode())
    xml.update_statistics()
    assert (xml.tests, xml.failures, xml.errors, xml.skipped) == (6, 2, 1, 1)
    assert json.loads(outs["json"])["run"]["run_id"] == "run-1"
    assert [s.name for s in parse_ktap(outs["ktap"]).subtests] == [KM, FS]
    V5_2.validate_exactly(json.loads(outs["kcidb"]))
    assert outs["markdown"].startswith("## ❌ vexfs-cockpit run `run-1` failed")
    html5lib.HTMLParser(strict=True).parse(outs["html"])
    assert "<svg" in outs["html"]


def test_latest_to_stdout_and_kcidb_commit_from_ci(db: Path, capsys: pytest.CaptureFixture[str],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    code, out, _ = run_cli(capsys, "report", "latest", "-f", "ktap", "--db", str(db))
    assert code == 0 and out.startswith("KTAP version 1\n1..2\n# vexfs-cockpit run dev-2 ")
    monkeypatch.setenv("GITHUB_SHA", "ab" * 20)
    code, out, _ = run_cli(capsys, "report", "prev", "-f", "kcidb", "-o", "-", "--db", str(db))
    assert code == 0 and json.loads(out)["checkouts"][0]["git_commit_hash"] == "ab" * 20


@pytest.mark.parametrize("argv, message", [
    (["report", "nope"], "report: no run 'nope' in "),
    (["report", "latest", "--format", "pdf"], "report: unknown format 'pdf': choose one of html, markdown, junit"),
    (["report", "latest", "--output", "{tmp}"], "--output {tmp} is a directory: give a file path"),
    (["report", "latest", "-f", "kcidb", "--git-commit", "abc"], "--git-commit 'abc' is not a full commit hash"),
    (["report", "latest", "--db", "{tmp}/none.db"], "no history DB at {tmp}/none.db"),
    (["compare", "dev"], "compare: give at least two different environments"),
    (["compare", "dev", "qa"], "compare: no run of env 'qa' in "),
])
def test_bad_input_is_one_line_and_exit_2(db: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                          argv: list[str], message: str) -> None:
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    if "--db" not in argv:
        argv += ["--db", str(db)]
    code, out, err = run_cli(capsys, *argv)
    assert code == 2 and out == ""
    assert err.count("\n") == 1 and err.startswith("vexfs-cockpit: ")
    assert message.replace("{tmp}", str(tmp_path)) in err
    assert "Traceback" not in err


def test_compare_finds_the_planted_difference(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Latest ci (run-1) against latest dev (dev-2): same statuses, one metric halved."""
    code, out, _ = run_cli(capsys, "compare", "ci", "dev", "--json", "--db", str(db))
    assert code == 0
    doc = json.loads(out)
    assert doc["runs"]["ci"]["run_id"] == "run-1" and doc["runs"]["dev"]["run_id"] == "dev-2"
    differing = [(r["domain"], r["test"], r["differences"]) for r in doc["rows"] if r["differs"]]
    assert differing == [(FS, "rw", ["metric write_mb_s"])]
    rw = next(r for r in doc["rows"] if r["test"] == "rw")
    assert rw["cells"]["ci"]["metrics"] == {"write_mb_s": 100.0} and rw["cells"]["dev"]["metrics"] == {"write_mb_s": 50.0}
    assert len(doc["rows"]) == 6 and doc["differing"] == 1
    code, out, _ = run_cli(capsys, "compare", "ci", "dev", "--db", str(db))
    lines = out.splitlines()
    marked = [ln for ln in lines if ln.startswith("*")]
    assert len(marked) == 1 and " rw " in marked[0] and "write_mb_s=100" in marked[0] and "write_mb_s=50" in marked[0]
    assert lines[-1] == "1 of 6 tests differ between ci, dev"


def test_compare_three_envs_marks_status_and_missing_tests(db: Path, capsys: pytest.CaptureFixture[str]) -> None:
    record_sync(db, [RunSpec("qa-1", T0 + 3 * DAY, env="qa", outcomes={(KM, "load"): P, (FS, "rw"): F})])
    code, out, _ = run_cli(capsys, "compare", "ci", "dev", "qa", "--json", "--db", str(db))
    assert code == 0
    rows = {(r["domain"], r["test"]): r for r in json.loads(out)["rows"]}
    assert rows[(KM, "load")]["differences"][0] == "status"  # FAILED, FAILED, PASSED
    assert rows[(KM, "unload")]["cells"]["qa"]["status"] == "-" and rows[(KM, "unload")]["differs"]
    assert rows[(FS, "rw")]["cells"]["qa"]["status"] == "FAILED"
