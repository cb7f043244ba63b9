"""The JSON result document of one run, from a RunReport (events or store alike).

Shape (``format`` names the version; add keys, never repurpose them)::

    {"format": "vexfs-cockpit-run/1",
     "run": {...}, "domains": [{..., "tests": [{..., "evidence": {...}}]}],
     "kernel_events": [...], "vm_states": [...], "vm_ready": [...], "infra_problems": [...],
     "verdicts": [{"domain", "test", "verdict", "now", "before", "reference", "reruns", "note"}],
     "summary": {"tally": {...}, "ok": bool, "crashes": [...], "hangs": [...], "vm_failures": [...]}}

``summary.ok`` is true only if the run passed, no test is bad and no unexpected fatal
kernel report or hang was seen.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from vexfs_cockpit.reports.output import write_atomic
from vexfs_cockpit.store.codec import kreport_to_dict, result_to_dict
from vexfs_cockpit.store.render import fmt_iso
from vexfs_cockpit.store.report import DomainReport, KernelEventRecord, RunReport

FORMAT = "vexfs-cockpit-run/1"


def _kernel_event(k: KernelEventRecord) -> dict[str, Any]:
    return {**kreport_to_dict(k.report), "ts": k.ts, "vm": k.vm, "domain": k.domain, "test": k.test, "expected": k.expected}


def _domain(d: DomainReport) -> dict[str, Any]:
    return {
        "name": d.name,
        "vm": d.vm,
        "status": d.status,
        "reason": d.reason,
        "started_at": d.started_at,
        "finished_at": d.finished_at,
        "duration_s": d.duration_s,
        "planned_tests": list(d.planned_tests),
        "missing_tests": d.missing_tests(),
        "tally": dict(sorted(d.tally().items())),
        "metrics": dict(d.metrics),
        "tests": [result_to_dict(t) for t in d.tests],
    }


def report_dict(report: RunReport) -> dict[str, Any]:
    run = report.run
    run_vms = report.run_vms()
    tally = dict(sorted(report.tally().items()))
    crashes = report.crashes()
    hangs = report.hangs()
    ok = (
        run.status == "passed"
        and not any(t.status.bad for t in report.tests())
        and not crashes
        and not hangs
        and not any(d.missing_tests() for d in report.domains)
    )
    return {
        "format": FORMAT,
        "run": {
            "run_id": run.run_id,
            "status": run.status,
            "reason": run.reason,
            "env": run.env,
            "profile": run.profile,
            "config_path": run.config_path,
            "host": run.host,
            "started_at": run.started_at,
            "started": fmt_iso(run.started_at),
            "finished_at": run.finished_at,
            "finished": fmt_iso(run.finished_at),
            "duration_s": run.duration_s,
            "planned_domains": list(run.planned_domains),
            "reported_counts": dict(run.counts),
        },
        "domains": [_domain(d) for d in report.domains],
        "kernel_events": [_kernel_event(k) for k in report.kernel_events],
        # every cockpit VM's changes during the run; in_run marks this run's own VMs
        "vm_states": [
            {"vm": s.vm, "state": s.state, "reason": s.reason, "ts": s.ts, "in_run": s.vm in run_vms}
            for s in report.vm_states
        ],
        # how long each VM of the run took to come up (schema v7): boot or snapshot restore
        "vm_ready": [{"vm": r.vm, "mode": r.mode, "seconds": r.seconds, "reset": r.reset, "ts": r.ts}
                     for r in report.vm_ready],
        "infra_problems": [{"message": p.message, "vm": p.vm, "ts": p.ts} for p in report.infra_problems],
        # what each changed test's confirmation reruns showed (engine/confirm.py): regression, flaky, ...
        "verdicts": [
            {"domain": d, "test": t, "verdict": v.verdict, "now": v.now, "before": v.before,
             "reference": v.reference, "reruns": list(v.reruns), "note": v.note}
            for (d, t), v in sorted(report.verdicts.items())
        ],
        "summary": {
            "tally": tally,
            "ok": ok,
            "crashes": [_kernel_event(k) for k in crashes],
            "hangs": [_kernel_event(k) for k in hangs],
            "vm_failures": [{"vm": s.vm, "state": s.state, "reason": s.reason, "ts": s.ts} for s in report.vm_failures()],
        },
    }


def report_json(report: RunReport) -> str:
    return json.dumps(report_dict(report), indent=2, ensure_ascii=False) + "\n"


def write_json_report(report: RunReport, path: str | os.PathLike[str]) -> Path:
    """Write atomically; ReportError (one line) if it cannot be written there."""
    return write_atomic(path, report_json(report), "JSON report")
