"""Incremental kernel-log classifier: raw lines in, grouped ``KernelReport``s out.

A report opens at a header line from the table in ``patterns.py`` (or at the
``[ cut here ]`` / ``=====`` line just before it) and closes at its row's end marker,
at the next header, at our sync marker, after a quiet gap in kernel time, at a line
cap, or on ``flush()``. Lines without a kernel timestamp inside a timestamped report
are user-space output interleaved on the console: they neither extend nor end it.

Not thread-safe; ``KernelLogBuffer`` serialises access.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from vexfs_cockpit.klog import patterns as P
from vexfs_cockpit.klog.model import KernelReport

# `<4>[   12.345678][  T123] msg`; also `kern  :warn  : [ ...` (util-linux dmesg -x).
_PREFIX_RE = re.compile(
    r"(?:[a-z]+\s*:[a-z]+\s*: )?(?:<(?P<level>\d+)>)?"
    r"(?:\[\s*(?P<sec>\d+)\.(?P<frac>\d+)\])?(?:\[\s*(?P<caller>[CT]\d+)\])?"
)
# A console line glued to a shell prompt: `/ # [   45.1] WARNING: ...`.
_EMBEDDED_TS_RE = re.compile(r"(?:<\d+>)?\[\s*\d+\.\d+\](?: |$)")
# /dev/kmsg record: `4,523,45123456,-;msg` (level is the low 3 bits of the first field).
KMSG_RE = re.compile(r"^(?P<pri>\d+),(?P<seq>\d+),(?P<usec>\d+),[^;]*;(?P<msg>.*)$")


@dataclass(frozen=True, slots=True)
class ParsedLine:
    raw: str
    body: str  # the message after any level/timestamp/caller prefix
    ts_us: int | None  # kernel timestamp in microseconds, None if the line has none
    level: int | None = None


def parse_line(raw: str) -> ParsedLine:
    """Split one console/dmesg/kmsg line into prefix fields and message."""
    raw = raw.rstrip("\r\n")
    km = KMSG_RE.match(raw)
    if km:
        return ParsedLine(raw, km["msg"], int(km["usec"]), int(km["pri"]) & 7)
    m = _PREFIX_RE.match(raw)
    if m and m["sec"] is None:
        e = _EMBEDDED_TS_RE.search(raw)
        if e:
            m = _PREFIX_RE.match(raw, e.start())
    assert m is not None  # every group is optional
    ts_us = None
    if m["sec"] is not None:
        frac = (m["frac"] + "000000")[:6]
        ts_us = int(m["sec"]) * 1_000_000 + int(frac)
    body = raw[m.end():]
    if m.end() > 0 and body.startswith(" "):
        body = body[1:]  # printk puts exactly one space after the prefix; frames keep theirs
    return ParsedLine(raw, body, ts_us, int(m["level"]) if m["level"] else None)


@dataclass(slots=True)
class _Open:
    pattern: P.ReportPattern
    match: re.Match[str]
    line: int
    lines: list[ParsedLine] = field(default_factory=list)
    has_ts: bool = False
    last_ts: int | None = None
    n_prefix: int = 0  # leading pre-header lines (cut here / =====)

    def add(self, pl: ParsedLine) -> None:
        self.lines.append(pl)
        if pl.ts_us is not None:
            self.has_ts = True
            self.last_ts = pl.ts_us


def _clean(func: str) -> str:
    return P.FUNC_SUFFIX_RE.sub("", func)


def _guilty(rep: _Open) -> tuple[str | None, str | None]:
    """(function, module): first non-skipped frame, kernel RIPs before stack frames.

    RIPs go first wherever they appear: an RCU stall report may dump an idle
    kthread's stack before the RIP of the CPU that is actually stuck. The module
    falls back to the first frame that names one (never `Modules linked in:`).
    """
    rips: list[tuple[str, str | None]] = []
    stack: list[tuple[str, str | None]] = []
    in_stack = False
    for pl in rep.lines[rep.n_prefix + 1:]:
        body = pl.body
        rip = P.RIP_RE.match(body)
        if rip:
            rips.append((rip["func"], rip["mod"]))
            continue
        if P.STACK_START_RE.match(body):
            in_stack = True
            continue
        if in_stack:
            fm = P.FRAME_RE.match(body)
            if fm and not fm["q"]:
                stack.append((fm["func"], fm["mod"]))
    frames = rips + stack
    func = mod = None
    for f, m in frames:
        if not rep.pattern.skip_re.match(f):
            func, mod = _clean(f), m
            break
    if mod is None:
        mod = next((m for _, m in frames if m), None)
    return func, mod


def _title(pattern: P.ReportPattern, fields: dict[str, str]) -> str:
    for fmt in pattern.titles:
        try:
            return fmt.format(**fields)
        except (KeyError, IndexError):
            continue
    return pattern.kind


def build_report(rep: _Open, vm: str = "") -> KernelReport:
    func, module = _guilty(rep)
    fields: dict[str, str] = {}
    if func:
        fields["func"] = func
    if module:
        fields["module"] = module
    fields.update({k: v for k, v in rep.match.groupdict().items() if v})
    if "func" in rep.match.groupdict() and rep.match["func"]:
        fields["func"] = _clean(rep.match["func"])
    if rep.pattern.details:
        text = "\n".join(pl.body for pl in rep.lines)
        for d in rep.pattern.details:
            dm = d.search(text)
            if dm:
                fields.update({k: (_clean(v) if k == "func" else v) for k, v in dm.groupdict().items() if v})
    return KernelReport(
        kind=rep.pattern.kind,
        title=_title(rep.pattern, fields),
        severity=rep.pattern.severity,
        line=rep.line,
        module=fields.get("module"),
        text="\n".join(pl.raw for pl in rep.lines),
        vm=vm,
    )


class Classifier:
    """Feed lines one by one with their absolute numbers; completed reports come back."""

    def __init__(self, vm: str = "", *, quiet_gap_s: float = 2.0, max_report_lines: int = 800):
        self.vm = vm
        self.quiet_gap_us = int(quiet_gap_s * 1_000_000)
        self.max_report_lines = max_report_lines
        self._open: _Open | None = None
        self._pending: list[tuple[int, ParsedLine]] = []  # pre-header lines and what followed

    @property
    def open_since(self) -> int | None:
        """Line number of the report still being collected, if any."""
        return self._open.line if self._open else None

    def feed(self, line_no: int, raw: str) -> list[KernelReport]:
        pl = parse_line(raw)
        out: list[KernelReport] = []
        rep = self._open
        if rep is not None:
            if pl.ts_us is None and rep.has_ts:
                return out  # user-space chatter between kernel lines
            gap = pl.ts_us is not None and rep.last_ts is not None and pl.ts_us - rep.last_ts > self.quiet_gap_us
            if gap or pl.body.startswith(P.SYNC_MARKER) or len(rep.lines) >= self.max_report_lines:
                out.append(self._close())
            elif rep.pattern.end is not None and rep.pattern.end.match(pl.body):
                rep.add(pl)
                out.append(self._close())
                return out
            else:
                hit = P.match_header(pl.body, inside_report=True)
                if hit is None:
                    rep.add(pl)
                    return out
                # A new report: a trailing cut-here/===== line belongs to it, not to the old one.
                carried: list[ParsedLine] = []
                while rep.lines[rep.n_prefix + 1:] and P.PRE_HEADER_RE.match(rep.lines[-1].body):
                    carried.insert(0, rep.lines.pop())
                first = line_no - len(carried)
                out.append(self._close())
                self._start(hit, first, carried + [pl], len(carried), out)
                return out
        if pl.ts_us is None and self._pending and self._pending[0][1].ts_us is not None:
            return out
        hit = P.match_header(pl.body)
        if hit is not None:
            first = self._pending[0][0] if self._pending else line_no
            prefix = [p for _, p in self._pending]
            self._pending.clear()
            self._start(hit, first, prefix + [pl], len(prefix), out)
        elif P.PRE_HEADER_RE.match(pl.body):
            self._pending = [(line_no, pl)]
        elif self._pending:
            self._pending.append((line_no, pl))
            if len(self._pending) > P.PRE_HEADER_SPAN:
                self._pending.clear()
        return out

    def flush(self) -> list[KernelReport]:
        """Close whatever report is open (end of file, quiet gap, VM gone)."""
        self._pending.clear()
        return [self._close()] if self._open else []

    def _start(self, hit: tuple[P.ReportPattern, re.Match[str]], first: int,
               lines: list[ParsedLine], n_prefix: int, out: list[KernelReport]) -> None:
        pattern, m = hit
        rep = _Open(pattern, m, first, n_prefix=n_prefix)
        for pl in lines:
            rep.add(pl)
        self._open = rep
        if pattern.single_line:
            out.append(self._close())

    def _close(self) -> KernelReport:
        assert self._open is not None
        rep, self._open = self._open, None
        return build_report(rep, self.vm)


def classify_lines(lines: Iterable[str], *, vm: str = "", first_line: int = 1) -> list[KernelReport]:
    """Classify a whole log (e.g. a file); line numbers start at ``first_line``."""
    clf = Classifier(vm)
    out: list[KernelReport] = []
    n = first_line
    for n, raw in enumerate(lines, start=first_line):
        out.extend(clf.feed(n, raw))
    out.extend(clf.flush())
    return out


def split_lines(text: str) -> list[str]:
    """Split on newlines only (str.splitlines also splits on \\f, \\x1c...: line numbers would drift)."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def classify_text(text: str, *, vm: str = "", first_line: int = 1) -> list[KernelReport]:
    return classify_lines(split_lines(text), vm=vm, first_line=first_line)
