"""docs/ci: the GitHub Actions workflow and the GitLab CI job.

Each file is valid against its CI system's JSON schema (as vendored by check-jsonschema,
the schemas SchemaStore publishes), has the steps the README's set-up needs in order,
names only options our CLI has, and its run-and-report steps, run for real by bash on
this host (the `faults` domain without VMs, as in the fault tests), leave the JUnit,
KTAP, HTML and Markdown files the upload steps collect.
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shlex
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml
from junitparser import JUnitXml

from tests.support.faults import CHILD, REPO, batch_env
from tests.support.report import parse_ktap
from vexfs_cockpit import cli
from vexfs_cockpit.commands.report import FORMATS

GITHUB = REPO / "docs" / "ci" / "github-actions.yml"
GITLAB = REPO / "docs" / "ci" / "gitlab-ci.yml"


def load(path: Path) -> dict[str, Any]:
    doc = yaml.safe_load(path.read_text())
    if True in doc:  # PyYAML reads YAML 1.1, where a bare `on` key is the boolean true
        doc["on"] = doc.pop(True)
    return doc


def schema(name: str) -> jsonschema.protocols.Validator:
    text = (importlib.resources.files("check_jsonschema.builtin_schemas.vendor") / f"{name}.json").read_text()
    s = json.loads(text)
    return jsonschema.validators.validator_for(s)(s)


def github_steps() -> list[dict[str, Any]]:
    return load(GITHUB)["jobs"]["kernel-tests"]["steps"]


def gitlab_job() -> dict[str, Any]:
    return load(GITLAB)["vexfs-cockpit"]


def cockpit_commands(script: str) -> list[list[str]]:
    """Each `vexfs-cockpit ...` command in a script, as argv (up to a pipe or redirect)."""
    out = []
    for line in script.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0].endswith("/vexfs-cockpit"):
            argv = []
            for w in words[1:]:
                if w in ("|", ">", ">>") or w.startswith(("|", ">")):
                    break
                argv.append(w)
            out.append(argv)
    return out


@pytest.mark.parametrize("path, name", [(GITHUB, "github-workflows"), (GITLAB, "gitlab-ci")])
def test_valid_against_the_ci_systems_schema(path: Path, name: str) -> None:
    validator = schema(name)
    doc = load(path)
    assert not [e.message for e in validator.iter_errors(doc)]
    # and the schema does catch a misspelt key (the check is not vacuous)
    broken = json.loads(json.dumps(doc))
    job = broken["jobs"]["kernel-tests"] if name == "github-workflows" else broken["vexfs-cockpit"]
    job["scriptt" if name == "gitlab-ci" else "runs_on"] = job.pop("script" if name == "gitlab-ci" else "runs-on")
    assert list(validator.iter_errors(broken))


def test_github_workflow_steps() -> None:
    doc = load(GITHUB)
    job = doc["jobs"]["kernel-tests"]
    assert job["defaults"]["run"]["shell"] == "bash"  # -eo pipefail: `run | tee` keeps the run's failure
    assert job["env"]["VEXFS_COCKPIT_DB"].endswith("/.history/history.db")
    steps = job["steps"]
    uses = [s.get("uses", "").split("@")[0] for s in steps]
    runs = [s.get("run", "") for s in steps]
    order = [uses.index("actions/checkout"), uses.index("actions/cache"),
             next(i for i, r in enumerate(runs) if "make setup" in r),
             next(i for i, r in enumerate(runs) if "vexfs-cockpit image build" in r),
             next(i for i, r in enumerate(runs) if "vexfs-cockpit run --batch --env ci" in r),
             next(i for i, r in enumerate(runs) if "--format html" in r),
             uses.index("actions/upload-artifact")]
    assert order == sorted(order)
    run = runs[order[4]]
    assert "--junit reports/junit.xml" in run and "--ktap | tee reports/run.ktap" in run
    report = steps[order[5]]
    assert report["if"] == "${{ always() }}" and steps[order[6]]["if"] == "${{ always() }}"
    assert '--format markdown --output - >> "$GITHUB_STEP_SUMMARY"' in report["run"]
    uploaded = steps[order[6]]["with"]["path"].split()
    assert {"reports/junit.xml", "reports/report.html", "reports/run.ktap"} <= set(uploaded)


def test_gitlab_job_steps() -> None:
    job = gitlab_job()
    script = job["script"]
    assert script[0] == "make setup" and ".venv/bin/vexfs-cockpit image build" in script
    run = next(i for i, s in enumerate(script) if "vexfs-cockpit run --batch --env ci" in s)
    assert script.index("set -o pipefail") < run
    assert "--junit reports/junit.xml" in script[run] and "--ktap | tee reports/run.ktap" in script[run]
    after = "\n".join(job["after_script"])
    assert "report latest --format html --output reports/report.html" in after
    assert "report latest --format markdown --output reports/summary.md" in after
    art = job["artifacts"]
    assert art["when"] == "always" and art["reports"]["junit"] == "reports/junit.xml"
    assert {"reports/report.html", "reports/summary.md", "reports/junit.xml"} <= set(art["paths"])


def test_every_command_they_run_is_one_our_cli_takes() -> None:
    scripts = [s.get("run", "") for s in github_steps()]
    job = gitlab_job()
    scripts += job["script"] + job["after_script"]
    commands = [argv for s in scripts for argv in cockpit_commands(s)]
    assert len(commands) >= 8
    for argv in commands:
        args = cli.build_parser(argv[0]).parse_args(argv)  # SystemExit on an unknown option
        if argv[0] == "report":
            assert args.format in FORMATS


def _wrapper(tmp: Path) -> Path:
    """A `vexfs-cockpit` that is the real CLI with the faults domain on the host."""
    child = tmp / "child.py"
    child.write_text(CHILD.format(repo=str(REPO)))
    exe = tmp / "vexfs-cockpit"
    exe.write_text(f'#!/bin/sh\nif [ "$1" = run ]; then exec {sys.executable} {child} "$@" --domains faults\n'
                   f'else exec {sys.executable} {child} "$@"; fi\n')
    exe.chmod(exe.stat().st_mode | stat.S_IXUSR)
    return exe


def _bash(script: str, tmp: Path, exe: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = script.replace(".venv/bin/vexfs-cockpit", str(exe))
    script = script.replace("reports", str(tmp / "reports")).replace(".history", str(tmp / ".history"))
    return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", script], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=180)


def test_github_run_and_report_steps_leave_the_files_they_upload(tmp_path: Path) -> None:
    exe = _wrapper(tmp_path)
    summary = tmp_path / "step-summary.md"
    env = {**batch_env(tmp_path, FAULTS_TESTS="3"), "VEXFS_COCKPIT_DB": str(tmp_path / ".history" / "history.db"),
           "GITHUB_STEP_SUMMARY": str(summary)}
    steps = {s.get("name"): s for s in github_steps()}
    for name in ("Run the domains", "HTML report and step summary"):
        done = _bash(steps[name]["run"], tmp_path, exe, env)
        assert done.returncode == 0, (name, done.stderr)
    reports = tmp_path / "reports"
    xml = JUnitXml.fromfile(str(reports / "junit.xml"))
    xml.update_statistics()
    assert (xml.tests, xml.failures, xml.errors) == (3, 0, 0)
    assert [t.name for t in parse_ktap((reports / "run.ktap").read_text()).subtests[0].subtests] == ["t01", "t02", "t03"]
    assert "faults" in (reports / "report.html").read_text()
    assert summary.read_text().startswith("## ✅ vexfs-cockpit run `")
    for path in github_steps()[-1]["with"]["path"].split():
        assert (tmp_path / path).exists(), path


def test_a_failing_run_fails_the_step_despite_the_pipe(tmp_path: Path) -> None:
    """pipefail: `run ... | tee` fails when the run does (here: a --junit path that is a directory)."""
    exe = _wrapper(tmp_path)
    env = {**batch_env(tmp_path), "VEXFS_COCKPIT_DB": str(tmp_path / "h.db")}
    (tmp_path / "reports" / "junit.xml").mkdir(parents=True)
    run = next(s["run"] for s in github_steps() if s.get("name") == "Run the domains")
    done = _bash(run, tmp_path, exe, env)
    assert done.returncode == 2 and "is a directory" in done.stderr
    assert os.path.exists(tmp_path / "reports" / "run.ktap")
