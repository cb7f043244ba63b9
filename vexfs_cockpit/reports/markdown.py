"""A run as GitHub-flavoured Markdown, sized for a CI step summary ($GITHUB_STEP_SUMMARY
takes up to 1 MiB): one header line, then a table per domain, bad domains and bad tests
first, then the unexpected kernel reports. Evidence stays in the JUnit/HTML reports: a
cell holds a test's message, cut to one line."""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from vexfs_cockpit.engine.confirm import Verdict, badge
from vexfs_cockpit.engine.results import TestStatus
from vexfs_cockpit.reports.output import write_atomic
from vexfs_cockpit.store.render import fmt_duration, fmt_time
from vexfs_cockpit.store.report import DomainReport, RunReport

MAX_CELL = 200
MAX_ROWS = 100  # per domain: bad rows first, so a long tail of passes is what gets cut
MAX_BYTES = 1_000_000  # GitHub refuses a step summary over 1 MiB
ICON = {"PASSED": "✅", "FAILED": "❌", "ERROR": "💥", "TIMEOUT": "⏱️", "SKIPPED": "⏭️", "NO RESULT": "❓"}
_ORDER = {"ERROR": 0, "TIMEOUT": 1, "FAILED": 2, "NO RESULT": 3, "SKIPPED": 4, "PASSED": 5}
_VERDICT_ORDER = {v.value: i for i, v in enumerate(Verdict)}  # most urgent first


def cell(text: str, limit: int = MAX_CELL) -> str:
    """One table cell: one line, pipes escaped, cut to ``limit``."""
    line = " ".join(text.split())
    if len(line) > limit:
        line = line[: limit - 1] + "…"
    return line.replace("\\", "\\\\").replace("|", "\\|").replace("<", "&lt;")


def _domain_bad(d: DomainReport) -> bool:
    return d.is_bad() or bool(d.missing_tests()) or any(t.status.bad for t in d.tests)


def _counts_text(tally: dict[str, int]) -> str:
    passed = tally.get("PASSED", 0)
    bad = sum(tally.get(s, 0) for s in ("FAILED", "ERROR", "TIMEOUT"))
    return f"{passed} passed, {bad} failed, {tally.get('SKIPPED', 0)} skipped"


def markdown_text(report: RunReport) -> str:
    run = report.run
    tally = dict(report.tally())
    missing = sum(len(d.missing_tests()) for d in report.domains)
    ok = run.status == "passed" and not any(_domain_bad(d) for d in report.domains) and not report.crashes()
    head = (f"## {'✅' if ok else '❌'} vexfs-cockpit run `{run.run_id}` {run.status}: {_counts_text(tally)}"
            + (f", {missing} without result" if missing else "")
            + f" (env {run.env or '-'}, profile {run.profile or '-'}, {fmt_time(run.started_at)}, "
            + f"{fmt_duration(run.duration_s)})")
    out = [head, ""]
    if run.reason:
        out += [f"> {cell(run.reason, 500)}", ""]
    for p in report.infra_problems:
        out.append(f"- infrastructure: {cell(p.message, 500)}")
    if report.infra_problems:
        out.append("")
    if report.verdicts:  # "what did I break?" first: each changed test as its reruns judged it
        out += ["### What changed (confirmed by reruns on fresh VMs)", ""]
        for (domain, test), v in sorted(report.verdicts.items(), key=lambda kv: (_VERDICT_ORDER.get(kv[1].verdict, 99), kv[0])):
            was = f"{v.before} in {v.reference}" if v.before else "not run before in this env"
            out.append(f"- **{badge(v.verdict)}** `{cell(f'{domain}/{test}', 100)}`: {v.now} now, {cell(was, 100)}"
                       + (f" — {cell(v.note, 300)}" if v.note else ""))
        out.append("")
    for d in sorted(report.domains, key=lambda d: not _domain_bad(d)):  # stable: bad first
        counts = ", ".join(f"{v} {k.lower()}" for k, v in sorted(d.tally().items()))
        line = f"### {'❌' if _domain_bad(d) else '✅'} {d.name}: {d.status}"
        line += f" ({counts or 'no results'}; {fmt_duration(d.duration_s)} on {d.vm or '-'})"
        out += [line, ""]
        if d.reason:
            out += [f"> {cell(d.reason, 500)}", ""]
        rows = [(str(t.status), t.name, fmt_duration(t.duration_s), t.message) for t in d.tests]
        why = f"domain {d.status}" + (f": {d.reason}" if d.reason else "")
        rows += [("NO RESULT", name, "-", why) for name in d.missing_tests()]
        if not rows:
            continue
        rows.sort(key=lambda r: _ORDER.get(r[0], 0))
        out += ["| | test | status | duration | message |", "|---|---|---|---|---|"]
        for status, name, dur, msg in rows[:MAX_ROWS]:
            shown = "" if status == str(TestStatus.PASSED) else cell(msg)
            out.append(f"| {ICON.get(status, '❔')} | `{cell(name, 100)}` | {status} | {dur} | {shown} |")
        if len(rows) > MAX_ROWS:
            cut = Counter(r[0].lower() for r in rows[MAX_ROWS:])
            out.append(f"| … | | | | {len(rows) - MAX_ROWS} more: "
                       + ", ".join(f"{n} {k}" for k, n in sorted(cut.items())) + " (all in the HTML/JUnit report) |")
        out.append("")
    kernel = report.crashes() + [k for k in report.hangs() if k not in report.crashes()]
    if kernel:
        out += ["### Kernel reports", ""]
        for k in kernel:
            where = ".".join(x for x in (k.domain, k.test) if x) or "no test running"
            out.append(f"- **{cell(k.report.kind, 40)}** {cell(k.report.title)} ({cell(where, 100)}, {k.vm or '-'})")
        out.append("")
    text = "\n".join(out)
    if len(text.encode()) > MAX_BYTES:
        text = text.encode()[: MAX_BYTES - 200].decode(errors="ignore").rsplit("\n", 1)[0]
        text += "\n\n*(summary cut to fit a CI step summary: the HTML and JUnit reports have it all)*\n"
    return text


def write_markdown(report: RunReport, path: str | os.PathLike[str]) -> Path:
    return write_atomic(path, markdown_text(report), "Markdown report")
