"""The Markdown step summary and the KCIDB document (validated by kcidb-io)."""

from __future__ import annotations

import copy
import dataclasses
import re

import jsonschema
import pytest
from kcidb_io.schema import LATEST, V5_2

from tests.support.report import SPEC
from tests.support.store import FS, KM, T0, F, P, RunSpec, run_events
from vexfs_cockpit.engine.events import RunFinished
from vexfs_cockpit.engine.results import TestStatus
from vexfs_cockpit.reports.kcidb import kcidb_dict
from vexfs_cockpit.reports.markdown import MAX_BYTES, MAX_ROWS, markdown_text
from vexfs_cockpit.store.report import ReportBuilder, RunReport

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def build(events: list) -> RunReport:  # type: ignore[type-arg]
    rep = ReportBuilder().feed_all(events)
    assert rep is not None
    return rep


def tables(md: str) -> dict[str, list[list[str]]]:
    """Each '### ' section's table rows (cells stripped), header and rule left out."""
    out: dict[str, list[list[str]]] = {}
    section = ""
    for line in md.splitlines():
        if line.startswith("### "):
            section = line
            out[section] = []
        elif line.startswith("| ") and not line.startswith("| |") and not line.startswith("|---"):
            out[section].append([c.strip() for c in re.split(r"(?<!\\)\|", line)[1:-1]])
    return out


def test_markdown_summary_header_tables_failures_first() -> None:
    md = markdown_text(build(run_events(SPEC)))
    first = md.splitlines()[0]
    assert first.startswith("## ❌ vexfs-cockpit run `run-1` failed: 2 passed, 3 failed, 1 skipped (env ci,")
    t = tables(md)
    km = next(k for k in t if KM in k)
    fs = next(k for k in t if FS in k)
    assert [r[1:3] for r in t[km]] == [["`unload`", "TIMEOUT"], ["`load`", "FAILED"],
                                       ["`leak`", "SKIPPED"], ["`module_build`", "PASSED"]]
    assert [r[1:3] for r in t[fs]] == [["`mount`", "ERROR"], ["`rw`", "PASSED"]]
    assert t[km][1][4] == "load failed" and t[km][3][4] == ""  # a pass has no message to read
    assert "- **oops** BUG: unable to handle page fault in vexfs_read (kernel_module.load, vm-0)" in md


def test_markdown_bad_domain_comes_first_and_cells_stay_one_line() -> None:
    spec = RunSpec("r", T0, outcomes={(KM, "a"): P, (FS, "b"): P})
    events = run_events(spec)
    rep = build(events)
    rep.domains[1].tests[0].status = TestStatus.FAILED
    rep.domains[1].tests[0].message = "bad | pipe\nsecond line"
    md = markdown_text(rep)
    sections = [ln for ln in md.splitlines() if ln.startswith("### ")]
    assert sections[0].startswith(f"### ❌ {FS}") and sections[1].startswith(f"### ✅ {KM}")
    assert "| bad \\| pipe second line |" in md


def test_markdown_stays_within_a_step_summary() -> None:
    """A domain of many tests keeps its bad rows and cuts the passes; the whole stays under 1 MiB."""
    outcomes = {(KM, f"t{i:04d}"): P for i in range(3000)} | {(KM, "z_bad"): F}
    rep = build(run_events(RunSpec("big", T0, outcomes=outcomes, test_duration=0.01)))
    md = markdown_text(rep)
    rows = tables(md)[next(k for k in tables(md) if KM in k)]
    assert len(rows) == MAX_ROWS + 1 and rows[0][1:3] == ["`z_bad`", "FAILED"]
    assert rows[-1][4].startswith(f"{3001 - MAX_ROWS} more: {3001 - MAX_ROWS} passed")
    for t in rep.tests():
        t.message = "x" * 5000
        t.status = TestStatus.FAILED
    for i in range(60):  # many domains of long messages: well over 1 MiB uncut
        rep.domains.append(dataclasses.replace(rep.domains[0], name=f"d{i}"))
    md = markdown_text(rep)
    assert len(md.encode()) <= MAX_BYTES and md.rstrip().endswith("the HTML and JUnit reports have it all)*")


def test_kcidb_validates_and_maps_statuses() -> None:
    doc = kcidb_dict(build(run_events(SPEC)), git_commit=COMMIT)
    V5_2.validate_exactly(doc)
    LATEST.validate(doc)  # upgradable to the newest schema kcidb-io knows
    (checkout,) = doc["checkouts"]
    assert checkout["git_commit_hash"] == COMMIT and checkout["id"] == f"vexfs_cockpit:{COMMIT}"
    (build_,) = doc["builds"]
    assert build_["status"] == "PASS" and build_["checkout_id"] == checkout["id"] and build_["command"] == "run-module_build"
    tests = {t["path"]: t for t in doc["tests"]}
    assert {p: t["status"] for p, t in tests.items()} == {
        f"vexfs.{KM}.module_build": "PASS", f"vexfs.{KM}.load": "FAIL", f"vexfs.{KM}.unload": "ERROR",
        f"vexfs.{KM}.leak": "SKIP", f"vexfs.{FS}.mount": "ERROR", f"vexfs.{FS}.rw": "PASS"}
    assert tests[f"vexfs.{KM}.unload"]["misc"]["cockpit_status"] == "TIMEOUT"
    load = tests[f"vexfs.{KM}.load"]
    assert load["duration"] == 1.0 and "$ run-load  [exit 1" in load["log_excerpt"]
    assert load["misc"]["metrics"] == {"load_time_ms": 12.0}
    assert all(t["build_id"] == build_["id"] for t in doc["tests"])
    # one issue per kernel signature, one incident per occurrence, on its test
    assert {i["report_subject"] for i in doc["issues"]} == {
        "oops: BUG: unable to handle page fault in vexfs_read", "hung_task: INFO: task mount blocked for more than 5 seconds"}
    assert {i["categories"][0] for i in doc["issues"]} == {"kernel.oops", "kernel.hung_task"}
    assert sorted(i["test_id"] for i in doc["incidents"]) == sorted([load["id"], tests[f"vexfs.{FS}.mount"]["id"]])


def test_kcidb_missing_tests_are_miss_and_no_commit_gives_a_hash() -> None:
    events = run_events(RunSpec("r", T0, outcomes={(KM, "a"): P}, status=""))
    events[1] = dataclasses.replace(events[1], planned_tests=("a", "b"))
    events.append(RunFinished(run_id="r", status="aborted", counts={"PASSED": 1}, reason="VM lost", ts=T0 + 50))
    doc = kcidb_dict(build(events))
    V5_2.validate_exactly(doc)
    assert "git_commit_hash" not in doc["checkouts"][0]
    assert re.fullmatch(r"vexfs_cockpit:[0-9a-f]{40}", doc["checkouts"][0]["id"])
    assert "status" not in doc["builds"][0]  # no module_build in this run
    assert {t["path"]: t["status"] for t in doc["tests"]} == {f"vexfs.{KM}.a": "PASS", f"vexfs.{KM}.b": "MISS"}


def test_kcidb_validation_catches_a_broken_document() -> None:
    """The check the tests rely on does reject what the schema forbids."""
    doc = kcidb_dict(build(run_events(SPEC)))
    bad = copy.deepcopy(doc)
    bad["tests"][0]["status"] = "TIMEOUT"
    with pytest.raises(jsonschema.ValidationError):
        V5_2.validate_exactly(bad)
    bad = copy.deepcopy(doc)
    bad["tests"][0]["path"] = "vexfs.has space"
    with pytest.raises(jsonschema.ValidationError):
        V5_2.validate_exactly(bad)
