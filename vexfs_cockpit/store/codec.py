"""Plain-dict (JSON) forms of results, evidence and kernel reports, and back.

One codec for the DB's JSON columns and the JSON report, so both say the same thing.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vexfs_cockpit.engine.results import Attempt, CommandRecord, Evidence, TestResult, TestStatus
from vexfs_cockpit.klog.model import KernelReport, Severity

# A test's kernel-log window is evidence, but a runaway window (a boot's worth of
# noise) must not bloat every row: keep the newest lines, say how many were dropped.
MAX_KERNEL_LOG_LINES = 2000


def cap_kernel_log(lines: list[str], limit: int = MAX_KERNEL_LOG_LINES) -> list[str]:
    if len(lines) <= limit:
        return list(lines)
    dropped = len(lines) - (limit - 1)
    return [f"[vexfs-cockpit: {dropped} earlier kernel log lines not stored]", *lines[-(limit - 1):]]


def kreport_to_dict(r: KernelReport) -> dict[str, Any]:
    return {
        "kind": r.kind,
        "title": r.title,
        "signature": r.signature,
        "severity": r.severity.name.lower(),
        "line": r.line,
        "module": r.module,
        "text": r.text,
        "vm": r.vm,
    }


def severity_from(value: object) -> Severity:
    if isinstance(value, str):
        return Severity[value.upper()]
    return Severity(int(value))  # type: ignore[call-overload]


def kreport_from_dict(d: Mapping[str, Any]) -> KernelReport:
    return KernelReport(
        kind=d["kind"],
        title=d["title"],
        severity=severity_from(d["severity"]),
        line=int(d["line"]),
        module=d.get("module"),
        text=d.get("text", ""),
        vm=d.get("vm", ""),
    )


def command_to_dict(c: CommandRecord) -> dict[str, Any]:
    return {
        "cmd": c.cmd,
        "exit_code": c.exit_code,
        "duration_s": c.duration_s,
        "output_tail": c.output_tail,
        "timed_out": c.timed_out,
        "target": c.target,
    }


def command_from_dict(d: Mapping[str, Any]) -> CommandRecord:
    return CommandRecord(
        cmd=d["cmd"],
        exit_code=d.get("exit_code"),
        duration_s=float(d.get("duration_s", 0.0)),
        output_tail=d.get("output_tail", ""),
        timed_out=bool(d.get("timed_out", False)),
        target=d.get("target", ""),
    )


def evidence_to_dict(e: Evidence) -> dict[str, Any]:
    return {
        "commands": [command_to_dict(c) for c in e.commands],
        "kernel_log": cap_kernel_log(e.kernel_log),
        "kernel_events": [kreport_to_dict(r) for r in e.kernel_events],
        "notes": list(e.notes),
    }


def evidence_from_dict(d: Mapping[str, Any]) -> Evidence:
    return Evidence(
        commands=[command_from_dict(c) for c in d.get("commands", [])],
        kernel_log=list(d.get("kernel_log", [])),
        kernel_events=[kreport_from_dict(r) for r in d.get("kernel_events", [])],
        notes=list(d.get("notes", [])),
    )


def attempt_to_dict(a: Attempt) -> dict[str, Any]:
    return {"number": a.number, "status": str(a.status), "message": a.message, "duration_s": a.duration_s}


def attempt_from_dict(d: Mapping[str, Any]) -> Attempt:
    return Attempt(
        number=int(d["number"]),
        status=TestStatus(d["status"]),
        message=d.get("message", ""),
        duration_s=float(d.get("duration_s", 0.0)),
    )


def result_to_dict(r: TestResult) -> dict[str, Any]:
    return {
        "name": r.name,
        "domain": r.domain,
        "status": str(r.status),
        "message": r.message,
        "started_at": r.started_at,
        "duration_s": r.duration_s,
        "metrics": dict(r.metrics),
        "artifacts": dict(r.artifacts),
        "tags": list(r.tags),
        "attempts": [attempt_to_dict(a) for a in r.attempts],
        "evidence": evidence_to_dict(r.evidence),
    }


def retried_pass(r: TestResult) -> bool:
    """Passed, but only after at least one earlier attempt did not."""
    return r.status is TestStatus.PASSED and any(a.status is not TestStatus.PASSED for a in r.attempts)
