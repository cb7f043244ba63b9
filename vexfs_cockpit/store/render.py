"""Plain-text renderings shared by the JUnit <system-out>, the history CLI and logs."""

from __future__ import annotations

import time

from vexfs_cockpit.engine.results import TestResult
from vexfs_cockpit.klog.model import KernelReport
from vexfs_cockpit.store.codec import cap_kernel_log
from vexfs_cockpit.store.report import KernelEventRecord, VmReadyRecord


def fmt_duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    m, s = divmod(int(round(seconds)), 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


def vms_text(vms: str, ready: list[VmReadyRecord]) -> str:
    """A domain's VMs ("a, b") with how each came up, as the run measured it:
    ``vexfs-ci-km-0 (restore 1.1s, reset: boot 9.5s)``; '-' for none."""
    out = []
    for vm in filter(None, vms.split(", ")):
        times = [f"{'reset: ' if r.reset else ''}{r.mode} {r.seconds:.1f}s" for r in ready if r.vm == vm]
        out.append(f"{vm} ({', '.join(times)})" if times else vm)
    return ", ".join(out) or "-"


def fmt_time(ts: float | None) -> str:
    return "-" if ts is None else time.strftime("%Y-%m-%d %H:%M", time.localtime(ts))


def fmt_iso(ts: float | None, with_offset: bool = True) -> str | None:
    """Local time, ISO 8601. JUnit's schema wants it without the UTC offset."""
    fmt = "%Y-%m-%dT%H:%M:%S%z" if with_offset else "%Y-%m-%dT%H:%M:%S"
    return None if ts is None else time.strftime(fmt, time.localtime(ts))


def _indent(text: str, prefix: str = "    ") -> str:
    return "\n".join(prefix + line for line in text.rstrip("\n").splitlines())


def kernel_report_text(r: KernelReport, expected: bool = False) -> str:
    head = f"[{r.kind}] {r.title} (line {r.line}" + (f", {r.vm}" if r.vm else "") + ")"
    if expected:
        head += " expected"
    return head + ("\n" + _indent(r.text) if r.text else "")


def evidence_text(result: TestResult, extra_events: list[KernelEventRecord] | None = None) -> str:
    """Everything backing one result, as a human reads it: commands, output, kernel."""
    out: list[str] = [f"{result.domain}.{result.name}: {result.status} in {fmt_duration(result.duration_s)}"]
    if result.message:
        out.append(f"message: {result.message}")
    if len(result.attempts) > 1 or any(a.status != result.status for a in result.attempts):
        out.append("attempts:")
        out += [f"  #{a.number} {a.status} {fmt_duration(a.duration_s)}: {a.message}" for a in result.attempts]
    ev = result.evidence
    if ev.commands:
        out.append("commands:")
        for c in ev.commands:
            code = "timed out" if c.timed_out else ("no exit code" if c.exit_code is None else f"exit {c.exit_code}")
            where = f" on {c.target}" if c.target else ""
            out.append(f"  $ {c.cmd}  [{code}, {fmt_duration(c.duration_s)}{where}]")
            if c.output_tail.strip():
                out.append(_indent(c.output_tail))
    seen = {(r.kind, r.title, r.line) for r in ev.kernel_events}
    more = [k for k in (extra_events or []) if (k.report.kind, k.report.title, k.report.line) not in seen]
    if ev.kernel_events or more:
        out.append("kernel events:")
        out += [_indent(kernel_report_text(r), "  ") for r in ev.kernel_events]
        out += [_indent(kernel_report_text(k.report, k.expected), "  ") for k in more]
    if result.metrics:
        out.append("metrics:")
        out += [f"  {k} = {v:g}" for k, v in sorted(result.metrics.items())]
    if result.artifacts:
        out.append("artifacts:")
        out += [f"  {k}: {v}" for k, v in sorted(result.artifacts.items())]
    if ev.notes:
        out.append("notes:")
        out += [f"  {n}" for n in ev.notes]
    if ev.kernel_log:
        window = cap_kernel_log(ev.kernel_log)  # as stored: live and stored reports agree
        out.append(f"kernel log ({len(window)} lines):")
        out += [f"  {line}" for line in window]
    return "\n".join(out) + "\n"


def provenance_line(prov: dict[str, str]) -> str:
    """One line saying where a run came from ("" when it was recorded without)."""
    if not prov:
        return ""
    parts = []
    if prov.get("kernel") or prov.get("kernel_from"):
        parts.append(f"kernel {prov.get('kernel', '?')} ({prov.get('kernel_from', '?')})")
    if "module_commit" in prov:
        dirty = " + local changes" if prov.get("module_dirty") == "yes" else ""
        parts.append(f"module {prov['module_commit'][:12]}{dirty} at {prov.get('module_source', '?')}")
    elif "module_tree" in prov:
        parts.append(f"module tree {prov['module_tree']} at {prov.get('module_source', '?')} (not a git checkout)")
    parts.append(f"config {prov.get('profile', '?')}/{prov.get('env', '?')} {prov.get('config_sha256', '?')}")
    parts.append(f"cockpit {prov.get('cockpit', '?')} on {prov.get('host', '?')}")
    if "shard" in prov:  # run --shard I/N: which part of which partition
        parts.append(f"shard {prov['shard']} (partition {prov.get('shard_partition', '?')})")
    return " · ".join(parts)
