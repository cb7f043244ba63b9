"""KTAP v1 (the kernel's Documentation/dev-tools/ktap.rst) from a run: one subtest
(suite) per domain, one test line per result.

    KTAP version 1
    1..2
    # vexfs-cockpit run r1 env=ci profile=selftest
        KTAP version 1
        # Subtest: kernel_module
        1..3
        ok 1 module_build
        # module_load: FAILED in 1.0s
        # message: insmod exited 1
        not ok 2 module_load
        ok 3 module_stress # SKIP no stress tool
    not ok 1 kernel_module
    ...

Statuses: PASSED ``ok``; FAILED ``not ok``; SKIPPED ``ok N name # SKIP reason``;
TIMEOUT ``not ok N name # TIMEOUT msg``; ERROR (and a planned test with no result)
``not ok N name # ERROR msg`` -- the spec says TIMEOUT and ERROR results are ``not ok``.
A bad test's evidence (evidence_text) precedes its result line as ``#`` diagnostic lines,
at the suite's indentation. A domain is ``not ok`` when it has a bad or missing test or
ended badly (``# ERROR reason`` when it errored/aborted without a bad test to show),
``ok ... # SKIP reason`` when it was skipped.

``KtapStream`` writes the same document while a run goes, from its events: each test's
line when it finishes. Domains run side by side, and a suite's lines must stay together,
so one domain is streamed live and the others are held until it finishes.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from vexfs_cockpit.engine import events as ev
from vexfs_cockpit.engine.results import TestResult, TestStatus
from vexfs_cockpit.reports.output import write_atomic
from vexfs_cockpit.store.render import evidence_text, kernel_report_text
from vexfs_cockpit.store.report import RUN_ENDED_EARLY, Attribution, DomainReport, KernelEventRecord, RunReport, kernel_record

INDENT = "    "  # one nesting level (the spec's four spaces)
MAX_DIAGNOSTIC_LINES = 200  # per test: a 300-line kernel log window stays in the evidence files
_UNSAFE_NAME = re.compile(r"[\s#]+")
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")


def ktap_name(name: str) -> str:
    """A test description safe on a result line: no '#', no whitespace, never empty."""
    return _UNSAFE_NAME.sub("_", name).strip("_") or "unnamed"


def _one_line(text: str, limit: int = 300) -> str:
    line = " ".join(_CONTROL.sub(" ", text).split())
    return line if len(line) <= limit else line[: limit - 1] + "…"


def diagnostics(text: str, limit: int = MAX_DIAGNOSTIC_LINES) -> list[str]:
    lines = [_CONTROL.sub(" ", ln).rstrip() for ln in text.rstrip("\n").splitlines()]
    if len(lines) > limit:
        lines = lines[:limit] + [f"... {len(lines) - limit} more lines in the JSON/HTML report"]
    return [f"# {ln}".rstrip() for ln in lines]


def _directive(word: str, why: str) -> str:
    why = _one_line(why)
    return f" # {word}" + (f" {why}" if why else "")


def test_lines(number: int, r: TestResult, extra: Iterable[KernelEventRecord] = ()) -> list[str]:
    """One result: its evidence as diagnostics (bad results only), then its line."""
    name = ktap_name(r.name)
    match r.status:
        case TestStatus.PASSED:
            return [f"ok {number} {name}"]
        case TestStatus.SKIPPED:
            return [f"ok {number} {name}" + _directive("SKIP", r.message)]
        case TestStatus.FAILED:
            tail = ""
        case TestStatus.TIMEOUT:
            tail = _directive("TIMEOUT", r.message or "timed out")
        case TestStatus.ERROR:
            tail = _directive("ERROR", r.message)
        case _:  # a PENDING/RUNNING final status is a runner bug: show it as an error
            tail = _directive("ERROR", f"test ended in state {r.status}")
    return diagnostics(evidence_text(r, list(extra))) + [f"not ok {number} {name}{tail}"]


def missing_line(number: int, name: str, why: str) -> str:
    return f"not ok {number} {ktap_name(name)}" + _directive("ERROR", f"no result: {why}")


def suite_line(number: int, name: str, status: str, reason: str, bad: bool) -> str:
    if status == "skipped" and not bad:
        return f"ok {number} {ktap_name(name)}" + _directive("SKIP", reason)
    if status in ("errored", "aborted", "running") and not bad:
        return f"not ok {number} {ktap_name(name)}" + _directive("ERROR", reason or f"domain {status}")
    if bad or status != "passed":
        return f"not ok {number} {ktap_name(name)}"
    return f"ok {number} {ktap_name(name)}"


def _indent(lines: Iterable[str]) -> list[str]:
    return [INDENT + ln for ln in lines]


def _suite(number: int, report: RunReport, d: DomainReport) -> list[str]:
    missing = d.missing_tests()
    why = f"domain {d.status}" + (f": {d.reason}" if d.reason else "")
    body = ["KTAP version 1", f"# Subtest: {ktap_name(d.name)}", f"1..{len(d.tests) + len(missing)}"]
    body += diagnostics(f"domain {d.name} on {d.vm or '?'}")
    for k in report.kernel_events:
        if k.domain == d.name and not k.test:
            body += diagnostics(kernel_report_text(k.report, k.expected))
    for i, r in enumerate(d.tests, 1):
        extra = [k for k in report.kernel_events if k.domain == d.name and k.test == r.name]
        body += test_lines(i, r, extra)
    for i, name in enumerate(missing, len(d.tests) + 1):
        body.append(missing_line(i, name, why))
    bad = bool(missing) or any(r.status.bad for r in d.tests)
    return _indent(body) + [suite_line(number, d.name, d.status, d.reason, bad)]


def _run_header(run_id: str, env: str, profile: str, domains: int) -> list[str]:
    return ["KTAP version 1", f"1..{domains}", f"# vexfs-cockpit run {run_id} env={env or '-'} profile={profile or '-'}"]


def _run_footer(status: str, reason: str, problems: Iterable[str], orphans: Iterable[KernelEventRecord]) -> list[str]:
    lines = [f"# run {status}" + (f": {_one_line(reason)}" if reason else "")]
    lines += [f"# infra: {_one_line(p)}" for p in problems]
    for k in orphans:
        lines += diagnostics(kernel_report_text(k.report, k.expected))
    return lines


def ktap_text(report: RunReport) -> str:
    run = report.run
    names = [d.name for d in report.domains]
    never = [n for n in run.planned_domains if n not in names]
    out = _run_header(run.run_id, run.env, run.profile, len(names) + len(never))
    for i, d in enumerate(report.domains, 1):
        out += _suite(i, report, d)
    why = run.reason or f"run {run.status}"
    for i, name in enumerate(never, len(names) + 1):
        out.append(f"not ok {i} {ktap_name(name)}" + _directive("ERROR", f"not run: {why}"))
    orphans = [k for k in report.kernel_events if k.domain not in names]
    out += _run_footer(run.status, run.reason, [p.message for p in report.infra_problems], orphans)
    return "\n".join(out) + "\n"


def write_ktap(report: RunReport, path: str | os.PathLike[str]) -> Path:
    return write_atomic(path, ktap_text(report), "KTAP report")


@dataclass
class _Block:
    name: str
    planned: tuple[str, ...]
    lines: list[str] = field(default_factory=list)  # written or waiting, without the suite's indentation
    written: int = 0  # how many of ``lines`` are out
    results: list[str] = field(default_factory=list)
    bad: bool = False
    done: bool = False
    ended: str = ""  # the suite line, once finished


class KtapStream:
    """Writes KTAP to ``out`` as a run's events arrive (``run --batch --ktap``).

    Feed it every event (``bus.listen(stream.feed)``). The top-level plan is the run's
    planned domains; a domain that never starts is a ``not ok ... # ERROR not run`` line
    when the run finishes. A domain's plan is its planned tests, so its lines can go out
    as they come; a domain that announces no plan is held until it finishes.
    """

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.broken = False
        self._attr = Attribution()
        self._reset()

    def _reset(self) -> None:
        self.run_id = ""
        self.planned_domains: tuple[str, ...] = ()
        self.blocks: dict[str, _Block] = {}
        self.order: list[str] = []  # domains by start
        self.live: str | None = None  # the domain whose lines go out as they come
        self.closed: list[str] = []  # domains whose suite line is out, in output order
        self.finished = False
        self.problems: list[str] = []
        self.orphans: list[KernelEventRecord] = []
        self.test_events: dict[tuple[str, str], list[KernelEventRecord]] = {}

    def _write(self, lines: Iterable[str]) -> None:
        text = "".join(f"{ln}\n" for ln in lines)
        if text and not self.broken:
            try:
                self.out.write(text)
                self.out.flush()
            except (OSError, ValueError):  # `| head` left, or stdout closed: the run goes on
                self.broken = True

    def feed(self, e: ev.Event) -> None:
        e = self._attr.fill(e)  # a kernel report often knows only its VM: find its domain/test
        if self.finished and not isinstance(e, ev.RunStarted):
            return
        match e:
            case ev.RunStarted():
                self._reset()  # a new run: a new document
                self.run_id, self.planned_domains = e.run_id, tuple(e.domains)
                self._write(_run_header(e.run_id, e.env, e.profile, len(self.planned_domains)))
            case _ if getattr(e, "run_id", self.run_id) not in (self.run_id, ""):
                pass
            case ev.DomainStarted() if e.domain not in self.blocks:
                b = _Block(e.domain, tuple(e.planned_tests))
                b.lines = ["KTAP version 1", f"# Subtest: {ktap_name(e.domain)}"]
                if b.planned:  # else the plan goes in here when the domain finishes
                    b.lines.append(f"1..{len(b.planned)}")
                b.lines += diagnostics(f"domain {e.domain} on {e.vm or '?'}")
                self.blocks[e.domain] = b
                self.order.append(e.domain)
                self._pump()
            case ev.TestFinished() if e.result.domain in self.blocks:
                b = self.blocks[e.result.domain]
                b.results.append(e.result.name)
                b.bad |= e.result.status.bad
                extra = self.test_events.pop((e.result.domain, e.result.name), [])
                b.lines += test_lines(len(b.results), e.result, extra)
                self._pump()
            case ev.KernelEventRaised():
                rec = kernel_record(e)
                b = self.blocks.get(rec.domain)
                if b is None or b.done:
                    self.orphans.append(rec)
                elif rec.test:  # shown with the test's evidence when it finishes
                    self.test_events.setdefault((rec.domain, rec.test), []).append(rec)
                else:
                    b.lines += diagnostics(kernel_report_text(rec.report, rec.expected))
                    self._pump()
            case ev.DomainFinished() if e.domain in self.blocks:
                self._finish(self.blocks[e.domain], e.status, e.reason)
            case ev.InfraProblem():
                self.problems.append(e.message)
            case ev.RunFinished():
                for name in list(self.order):
                    if not self.blocks[name].done:
                        self._finish(self.blocks[name], "aborted", RUN_ENDED_EARLY)
                why = e.reason or f"run {e.status}"
                never = [n for n in self.planned_domains if n not in self.blocks]
                for n in never:
                    self.closed.append(n)
                    self._write([f"not ok {len(self.closed)} {ktap_name(n)}" + _directive("ERROR", f"not run: {why}")])
                self._write(_run_footer(e.status, e.reason, self.problems, self.orphans))
                self.finished = True
            case _:
                pass

    def _finish(self, b: _Block, status: str, reason: str) -> None:
        why = f"domain {status}" + (f": {reason}" if reason else "")
        have = set(b.results)
        missing = [t for t in b.planned if t not in have]
        if not b.planned:  # held until now (nothing written): the plan is what came
            b.lines.insert(2, f"1..{len(b.results)}")
        for name in missing:
            b.lines.append(missing_line(len(b.results) + 1, name, why))
            b.results.append(name)
        b.done = True
        b.ended = f"{status}\0{reason}\0{int(b.bad or bool(missing))}"
        self._pump()

    def _pump(self) -> None:
        """Write what can go out: the live domain's new lines; when it has finished, its
        suite line, then the next started domain becomes live (its held lines go out)."""
        while True:
            if self.live is None:
                waiting = [n for n in self.order if n not in self.closed]
                # a domain with no plan cannot stream; prefer one that can
                ready = [n for n in waiting if self.blocks[n].planned or self.blocks[n].done]
                if not ready:
                    return
                self.live = ready[0]
            b = self.blocks[self.live]
            self._write(_indent(b.lines[b.written:]))
            b.written = len(b.lines)
            if not b.done:
                return
            status, reason, bad = b.ended.split("\0")
            self.closed.append(b.name)
            self._write([suite_line(len(self.closed), b.name, status, reason, bad == "1")])
            self.live = None
