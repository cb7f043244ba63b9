"""JUnit XML from a RunReport: one <testsuite> per domain, evidence in <system-out>.

Status mapping: FAILED -> <failure>, TIMEOUT -> <failure type="TIMEOUT">, ERROR ->
<error>, SKIPPED -> <skipped>. Nothing that happened is dropped to keep the XML pretty:
- a planned test with no result becomes an <error> ("no result: ...");
- a domain that went bad with no bad test to show for it gets a "(domain)" case;
- a run that errored, aborted or never finished gets a "(run)" suite with its reason,
  its infra problems and the kernel events no domain claimed.
"""

from __future__ import annotations

import os
import re
import socket
import xml.etree.ElementTree as ET
from pathlib import Path

from vexfs_cockpit.engine.results import TestResult, TestStatus
from vexfs_cockpit.reports.output import write_atomic
from vexfs_cockpit.store.render import evidence_text, fmt_iso, kernel_report_text
from vexfs_cockpit.store.report import DomainReport, RunReport

# XML 1.0 forbids most control characters; kernel logs and ANSI output carry them.
_XML_BAD = re.compile("[^\x09\x0a\x0d\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
MESSAGE_ATTR_CHARS = 1000


def xml_safe(text: str) -> str:
    return _XML_BAD.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def _secs(value: float | None) -> str:
    return f"{max(0.0, value or 0.0):.3f}"


def _first_line(text: str) -> str:
    line = next((ln for ln in text.splitlines() if ln.strip()), "")
    return xml_safe(line[:MESSAGE_ATTR_CHARS])


class _Suite:
    def __init__(self, parent: ET.Element, name: str, started_at: float | None, duration: float | None):
        self.el = ET.SubElement(parent, "testsuite", name=xml_safe(name))
        self.counts = {"tests": 0, "failures": 0, "errors": 0, "skipped": 0}
        self.started_at = started_at
        self.duration = duration

    def case(self, classname: str, name: str, time_s: float) -> ET.Element:
        self.counts["tests"] += 1
        return ET.SubElement(self.el, "testcase", classname=xml_safe(classname), name=xml_safe(name), time=_secs(time_s))

    def outcome(self, case: ET.Element, tag: str, kind: str, message: str, body: str = "") -> None:
        self.counts[{"failure": "failures", "error": "errors", "skipped": "skipped"}[tag]] += 1
        el = ET.SubElement(case, tag, message=_first_line(message) or kind, type=kind)
        if body:
            el.text = xml_safe(body)

    def finish(self, host: str, system_out: str = "") -> None:
        for k, v in self.counts.items():
            self.el.set(k, str(v))
        self.el.set("time", _secs(self.duration))
        if self.started_at is not None:
            self.el.set("timestamp", fmt_iso(self.started_at, with_offset=False) or "")
        self.el.set("hostname", xml_safe(host or socket.gethostname()))
        if system_out:
            ET.SubElement(self.el, "system-out").text = xml_safe(system_out)


def _test_case(suite: _Suite, report: RunReport, domain: DomainReport, r: TestResult) -> None:
    case = suite.case(domain.name, r.name, r.duration_s)
    extra = [k for k in report.kernel_events if k.domain == domain.name and k.test == r.name]
    text = evidence_text(r, extra)
    match r.status:
        case TestStatus.FAILED:
            suite.outcome(case, "failure", "FAILED", r.message, text)
        case TestStatus.TIMEOUT:
            suite.outcome(case, "failure", "TIMEOUT", r.message or "timed out", text)
        case TestStatus.ERROR:
            suite.outcome(case, "error", "ERROR", r.message, text)
        case TestStatus.SKIPPED:
            suite.outcome(case, "skipped", "SKIPPED", r.message)
        case TestStatus.PASSED:
            pass
        case _:  # PENDING/RUNNING stored as a final status would be a runner bug: show it
            suite.outcome(case, "error", str(r.status), f"test ended in state {r.status}", text)
    ET.SubElement(case, "system-out").text = xml_safe(text)


def _domain_suite(root: ET.Element, report: RunReport, domain: DomainReport) -> _Suite:
    suite = _Suite(root, domain.name, domain.started_at, domain.duration_s)
    for r in domain.tests:
        _test_case(suite, report, domain, r)
    why = f"domain {domain.status}" + (f": {domain.reason}" if domain.reason else "")
    for name in domain.missing_tests():
        suite.outcome(suite.case(domain.name, name, 0.0), "error", "NO_RESULT", f"no result: {why}")
    if domain.is_bad() and not any(r.status.bad for r in domain.tests) and not domain.missing_tests():
        suite.outcome(suite.case(domain.name, "(domain)", domain.duration_s or 0.0), "error", domain.status.upper(), why)
    unclaimed = [k for k in report.kernel_events if k.domain == domain.name and not k.test]
    lines = [f"domain {domain.name}: {domain.status} on {domain.vm or '?'}" + (f" ({domain.reason})" if domain.reason else "")]
    lines += [f"  {k}={v:g}" for k, v in sorted(domain.metrics.items())]
    lines += [kernel_report_text(k.report, k.expected) for k in unclaimed]
    suite.finish(report.run.host, "\n".join(lines) + "\n")
    return suite


def _run_suite(root: ET.Element, report: RunReport) -> _Suite | None:
    run = report.run
    domains = {d.name for d in report.domains}
    orphans = [k for k in report.kernel_events if k.domain not in domains]
    if run.status not in ("errored", "aborted", "running") and not report.infra_problems:
        return None
    suite = _Suite(root, "(run)", run.started_at, run.duration_s)
    case = suite.case("(run)", "(run)", run.duration_s or 0.0)
    lines = [f"run {run.run_id}: {run.status}" + (f" ({run.reason})" if run.reason else "")]
    lines += [f"infra: {p.message}" + (f" [{p.vm}]" if p.vm else "") for p in report.infra_problems]
    lines += [f"vm {s.vm}: {s.state}" + (f" ({s.reason})" if s.reason else "") for s in report.vm_failures()]
    lines += [kernel_report_text(k.report, k.expected) for k in orphans]
    body = "\n".join(lines) + "\n"
    if run.status in ("errored", "aborted", "running"):
        message = run.reason or ("run did not finish" if run.status == "running" else f"run {run.status}")
        suite.outcome(case, "error", run.status.upper(), message, body)
    suite.finish(report.run.host, body)
    return suite


def junit_tree(report: RunReport) -> ET.ElementTree:
    root = ET.Element("testsuites", name=xml_safe(f"vexfs-cockpit {report.run.run_id}"))
    suites = [_domain_suite(root, report, d) for d in report.domains]
    run_suite = _run_suite(root, report)
    if run_suite is not None:
        suites.append(run_suite)
    for key in ("tests", "failures", "errors", "skipped"):
        root.set(key, str(sum(s.counts[key] for s in suites)))
    root.set("time", _secs(report.run.duration_s))
    tree = ET.ElementTree(root)
    ET.indent(tree)
    return tree


def junit_xml(report: RunReport) -> str:
    body = ET.tostring(junit_tree(report).getroot(), encoding="unicode")
    return '<?xml version="1.0" encoding="utf-8"?>\n' + body


def write_junit(report: RunReport, path: str | os.PathLike[str]) -> Path:
    """Write atomically (CI may pick the file up the moment it appears); ReportError
    (one line) if it cannot be written there."""
    return write_atomic(path, junit_xml(report) + "\n", "JUnit report")
