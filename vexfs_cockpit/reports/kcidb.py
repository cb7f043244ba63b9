"""A run as a KCIDB I/O document (kernelci's kcidb-io schema, v5), for submission to
KernelCI's common database with ``kcidb-submit``.

- checkout: the module source at ``git_commit`` when known (``--git-commit``, or CI's
  GITHUB_SHA / CI_COMMIT_SHA), its id then the commit; else its id is a hash of the run.
- build: the out-of-tree module build, ``kernel_module/module_build`` when the run has it
  (status, duration, command, log excerpt), else a build with no status.
- tests: ``vexfs.<domain>.<test>``; PASSED PASS, FAILED FAIL, TIMEOUT and ERROR ERROR
  (the cockpit's own status is in misc), SKIPPED SKIP, a planned test with no result MISS.
  Each carries its duration, start time, the VM, its metrics and its evidence as the
  log excerpt (the tail, if over the schema's 16 KiB).
- issues and incidents: one issue per unexpected kernel-report signature (category
  ``kernel.<kind>``), one incident per occurrence, linked to the test it happened in
  (else to the build).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from vexfs_cockpit.engine.results import TestResult, TestStatus
from vexfs_cockpit.reports.output import write_atomic
from vexfs_cockpit.store.render import evidence_text
from vexfs_cockpit.store.report import RunReport

ORIGIN = "vexfs_cockpit"
SCHEMA_VERSION = {"major": 5, "minor": 2}  # 5.2: issues got categories
BUILD_TEST = ("kernel_module", "module_build")
LOG_EXCERPT_CHARS = 16384
COMMIT_RE = re.compile(r"^[0-9a-f]{40}$")
STATUS = {
    TestStatus.PASSED: "PASS",
    TestStatus.FAILED: "FAIL",
    TestStatus.TIMEOUT: "ERROR",
    TestStatus.ERROR: "ERROR",
    TestStatus.SKIPPED: "SKIP",
}
_PATH_BAD = re.compile(r"[^a-zA-Z0-9_-]+")


def path_part(name: str) -> str:
    """One node of a KCIDB dotted path: [a-zA-Z0-9_-]+."""
    return _PATH_BAD.sub("_", name).strip("_") or "unnamed"


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, timezone.utc).isoformat()


def _excerpt(text: str) -> str:
    text = text.replace("\0", "")
    return text if len(text) <= LOG_EXCERPT_CHARS else "…" + text[-(LOG_EXCERPT_CHARS - 1):]


def _drop_none(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in d.items() if v is not None}


def _hash(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def kcidb_dict(report: RunReport, git_commit: str | None = None, repository_url: str | None = None) -> dict[str, Any]:
    run = report.run
    commit = git_commit if git_commit and COMMIT_RE.match(git_commit) else None
    checkout_id = f"{ORIGIN}:{commit or _hash('run ' + run.run_id)}"
    build_id = f"{ORIGIN}:{run.run_id}:module_build"
    misc = {"run_id": run.run_id, "env": run.env, "profile": run.profile, "host": run.host, "run_status": run.status}
    checkout = _drop_none({
        "id": checkout_id, "origin": ORIGIN, "tree_name": "vexfs", "git_commit_hash": commit,
        "git_repository_url": repository_url if repository_url and repository_url.startswith("https://") else None,
        "start_time": _iso(run.started_at), "valid": True, "misc": misc,
    })
    build_result = next((t for t in report.tests() if (t.domain, t.name) == BUILD_TEST), None)
    build: dict[str, Any] = {"id": build_id, "checkout_id": checkout_id, "origin": ORIGIN,
                             "comment": "out-of-tree module build (kernel_module/module_build)", "misc": misc}
    if build_result is not None:
        build |= _drop_none({
            "status": STATUS.get(build_result.status, "MISS"),
            "start_time": _iso(build_result.started_at),
            "duration": build_result.duration_s,
            "command": build_result.evidence.commands[0].cmd if build_result.evidence.commands else None,
            "log_excerpt": _excerpt(evidence_text(build_result)),
        })
    else:
        build["comment"] += ": not part of this run"

    tests: list[dict[str, Any]] = []
    test_ids: dict[tuple[str, str], str] = {}

    def test_id(domain: str, name: str) -> str:
        return f"{ORIGIN}:{run.run_id}:{path_part(domain)}.{path_part(name)}"

    for d in report.domains:
        env = {"comment": f"{d.vm or 'no VM'} ({run.env or '-'} env)"}
        for t in d.tests:
            extra = [k for k in report.kernel_events if k.domain == d.name and k.test == t.name]
            tid = test_id(d.name, t.name)
            test_ids[(d.name, t.name)] = tid
            tests.append(_test(t, tid, build_id, env, _excerpt(evidence_text(t, extra))))
        why = f"domain {d.status}" + (f": {d.reason}" if d.reason else "")
        for name in d.missing_tests():
            tid = test_id(d.name, name)
            test_ids[(d.name, name)] = tid
            tests.append({"id": tid, "build_id": build_id, "origin": ORIGIN,
                          "path": f"vexfs.{path_part(d.name)}.{path_part(name)}", "status": "MISS",
                          "environment": env, "comment": f"no result: {why}", "misc": {"cockpit_status": "NO_RESULT"}})

    issues: dict[str, dict[str, Any]] = {}
    incidents: list[dict[str, Any]] = []
    for n, k in enumerate(report.kernel_events, 1):
        if k.expected:
            continue
        sig = k.report.signature
        issue_id = f"{ORIGIN}:{_hash(sig)[:20]}"
        issues.setdefault(issue_id, {
            "id": issue_id, "version": 1, "origin": ORIGIN,
            "categories": [f"kernel.{path_part(k.report.kind)}"],
            "report_subject": sig[:1000], "culprit": {"code": True},
            "comment": f"{k.report.severity.name.lower()} kernel report {sig}"[:1000],
        })
        incident = {"id": f"{ORIGIN}:{run.run_id}:kernel-{n}", "origin": ORIGIN, "issue_id": issue_id,
                    "issue_version": 1, "present": True,
                    "comment": f"line {k.report.line} on {k.vm or '-'}"}
        tid = test_ids.get((k.domain, k.test))
        if tid:
            incident["test_id"] = tid
        else:
            incident["build_id"] = build_id
        incidents.append(incident)

    return {"version": dict(SCHEMA_VERSION), "checkouts": [checkout], "builds": [build], "tests": tests,
            "issues": list(issues.values()), "incidents": incidents}


def _test(t: TestResult, tid: str, build_id: str, env: dict[str, Any], excerpt: str) -> dict[str, Any]:
    misc: dict[str, Any] = {"cockpit_status": str(t.status), "attempts": len(t.attempts) or 1}
    if t.message:
        misc["message"] = t.message
    if t.metrics:
        misc["metrics"] = dict(t.metrics)
    return _drop_none({
        "id": tid, "build_id": build_id, "origin": ORIGIN,
        "path": f"vexfs.{path_part(t.domain)}.{path_part(t.name)}",
        "status": STATUS.get(t.status, "MISS"),
        "start_time": _iso(t.started_at), "duration": max(0.0, t.duration_s),
        "environment": env, "log_excerpt": excerpt, "comment": t.message[:1000] or None, "misc": misc,
    })


def kcidb_json(report: RunReport, git_commit: str | None = None, repository_url: str | None = None) -> str:
    return json.dumps(kcidb_dict(report, git_commit, repository_url), indent=2, ensure_ascii=False) + "\n"


def write_kcidb(report: RunReport, path: str | os.PathLike[str], git_commit: str | None = None) -> Path:
    return write_atomic(path, kcidb_json(report, git_commit), "KCIDB report")
