"""The live kernel-log pane's model: a bounded buffer of lines, filters, severities.

Pure Python (no Textual). Kernel lines are kept as plain ``(vm, line_no, text)`` tuples:
the app's bus listener makes them (C-level, ``line_row``) as lines are published, and a
batch goes into the bounded deque with one ``extend``, so a flood costs next to nothing
per line here. Tuples of strings and ints also drop out of the cyclic GC's tracking;
``KernelLogLine`` objects waiting in a backlog would be promoted to the oldest
generation and walked by every full collection (20-50 ms pauses under a flood).
Classified reports arrive later as ``KernelEventRaised`` (the classifier groups a block
first), so a line's severity is looked up at render time from ``(vm, line_no)`` and
lines already on screen get their colour when the report lands. Each report also adds
a ``Marker`` row (the target of "jump to next event"), whose first three fields are a
line row's.

The view renders rows (only those on screen, each frame) as
``"<label> <line_no><sep> <text>"``; ``sep`` is ``│`` for a kernel line and ``▶`` for a
marker, and ``parse_row`` recovers the key from such a string. With a filter set, the
matching rows are kept in a second bounded deque, extended as lines arrive.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from itertools import repeat
from operator import attrgetter, itemgetter
from typing import NamedTuple

from vexfs_cockpit.engine.events import Event, KernelEventRaised, KernelLogLine
from vexfs_cockpit.klog.model import KernelReport, Severity
from vexfs_cockpit.tui.format import report_text, vm_display_name

LINE_SEP = "│"
MARK_SEP = "▶"
_ROW = re.compile(rf"^(\S+) +(\d+)([{LINE_SEP}{MARK_SEP}]) ")
# Rows the live pane keeps (all, and those matching a filter): memory stays flat after this many.
# Whole test windows live in the store as evidence; the pane is for watching.
LOG_RETAIN = 10_000

SEVERITY_CYCLE: tuple[Severity | None, ...] = (
    None,
    Severity.INFO,
    Severity.WARNING,
    Severity.ERROR,
    Severity.CRITICAL,
)


class Marker(NamedTuple):
    """The row a classified report adds after its block."""

    vm: str
    line_no: int  # the block's first line
    text: str
    report: KernelReport
    expected: bool = False


# A row is a kernel line's (vm, line_no, text) or a report's marker; index with these.
VM, LINE_NO, TEXT = 0, 1, 2
LineRow = tuple[str, int, str]
Row = LineRow | Marker
LogInput = LineRow | Event  # what add() takes: line rows, or events (lines, reports, others)

line_row = attrgetter("vm", "line_no", "text")  # KernelLogLine -> LineRow, in C
_VM = itemgetter(VM)
_TEXT = itemgetter(TEXT)


@dataclass(frozen=True, slots=True)
class LogFilter:
    vm: str | None = None
    min_severity: Severity | None = None  # None: every line; else classified rows only
    text: str = ""

    @property
    def active(self) -> bool:
        return self.vm is not None or self.min_severity is not None or bool(self.text)

    def describe(self) -> str:
        parts = []
        if self.vm is not None:
            parts.append(f"vm={vm_display_name(self.vm)}")
        if self.min_severity is not None:
            parts.append(f"≥{self.min_severity.name.lower()}")
        if self.text:
            parts.append(f"“{self.text}”")
        return " ".join(parts) if parts else "all"


class RowKey(NamedTuple):
    label: str
    line_no: int
    marker: bool
    text_start: int  # index where the kernel text (or marker text) begins


def parse_row(row: str) -> RowKey | None:
    """The key of a formatted row, or None for foreign text."""
    m = _ROW.match(row)
    if m is None:
        return None
    return RowKey(m.group(1), int(m.group(2)), m.group(3) == MARK_SEP, m.end())


class LogModel:
    def __init__(self, retain: int = LOG_RETAIN):
        self.retain = retain
        self.records: deque[Row] = deque(maxlen=retain)
        self.filter = LogFilter()
        self.vms: list[str] = []  # first-seen order (the VM filter cycles through it)
        self._seen: set[str] = set()
        self._label_width = 8
        # (vm, line_no) -> severity of the report covering that line, in two generations:
        # when the newest holds ``retain`` keys it becomes the old one and the old one is
        # dropped whole, so at least the newest ``retain`` keys (all a full buffer can
        # show) are kept, memory stays bounded and eviction costs no per-key work.
        self._marks: dict[tuple[str, int], Severity] = {}
        self._marks_old: dict[tuple[str, int], Severity] = {}
        self._filtered: deque[Row] | None = None  # rows matching an active filter
        self._max_text = 0
        self.lines_seen = 0
        self.events_seen = 0

    @property
    def shown(self) -> deque[Row]:
        """The rows the filter lets through (live, bounded)."""
        return self.records if self._filtered is None else self._filtered

    @property
    def max_width(self) -> int:
        """Cells of the widest row taken so far (kernel text is ASCII)."""
        return self._label_width + 9 + self._max_text

    # -- input -------------------------------------------------------------------
    def add(self, items: Sequence[LogInput]) -> tuple[list[Row], bool]:
        """Take a batch; return the new rows still held and whether any report arrived.

        Line rows go in as they are (slices and ``extend``, C-level); events are looked
        at one by one: ``KernelLogLine`` becomes a row, ``KernelEventRaised`` a marker,
        others are skipped. A flood is nearly all line rows.
        """
        odd = [i for i, it in enumerate(items) if type(it) is not tuple]
        reports = False
        rows: list[Row]
        if not odd:
            self.lines_seen += len(items)
            rows = list(items[-self.retain:])  # type: ignore[arg-type]  # older ones would drop out
        else:
            rows = []
            lines = len(items) - len(odd)
            start = 0
            for i in odd:
                rows.extend(items[start:i])  # type: ignore[arg-type]
                start = i + 1
                ev = items[i]
                if type(ev) is KernelLogLine:
                    rows.append(line_row(ev))
                    lines += 1
                elif isinstance(ev, KernelEventRaised):
                    rows.append(self._report(ev))
                    reports = True
            rows.extend(items[start:])  # type: ignore[arg-type]
            self.lines_seen += lines
            if len(rows) > self.retain:
                rows = rows[-self.retain:]  # only what the deque will still hold
        if not rows:
            return rows, reports
        self.records.extend(rows)
        if not set(map(_VM, rows)) <= self._seen:
            for vm in map(_VM, rows):  # rare: a VM's first lines
                self._see_vm(vm)
        self._max_text = max(self._max_text, max(map(len, map(_TEXT, rows))))
        if self._filtered is not None:
            if reports and self.filter.min_severity is not None:
                self.refilter()  # lines that came before their report now pass
            else:
                self._filtered.extend(filter(self.matches, rows))
        return rows, reports

    def refilter(self) -> None:
        """Rebuild the filtered rows from the buffer (after the filter or severities changed)."""
        self._filtered = deque(filter(self.matches, self.records), maxlen=self.retain) if self.filter.active else None

    def _report(self, ev: KernelEventRaised) -> Marker:
        rep = ev.report
        vm = ev.vm or rep.vm
        self._mark(vm, rep)
        self.events_seen += 1
        return Marker(vm, rep.line, _marker_text(rep, ev.expected), rep, ev.expected)

    # -- filtering and formatting ------------------------------------------------------
    def severity_of(self, vm: str, line_no: int) -> Severity | None:
        key = (vm, line_no)
        new = self._marks.get(key)
        old = self._marks_old.get(key)
        if old is None or (new is not None and new >= old):
            return new
        return old

    def record_severity(self, rec: Row) -> Severity | None:
        return rec.report.severity if type(rec) is Marker else self.severity_of(rec[VM], rec[LINE_NO])

    def matches(self, rec: Row) -> bool:
        f = self.filter
        if f.vm is not None and rec[VM] != f.vm:
            return False
        if f.min_severity is not None:
            sev = self.record_severity(rec)
            if sev is None or sev < f.min_severity:
                return False
        if f.text and f.text.casefold() not in rec[TEXT].casefold():
            return False
        return True

    def split(self, rec: Row) -> tuple[str, str]:
        """``("<label> <line_no><sep> ", text)``: the prefix is dimmed, the text coloured."""
        sep = MARK_SEP if type(rec) is Marker else LINE_SEP
        text = rec[TEXT]
        if "\n" in text or "\r" in text:
            text = _clean(text)  # one row is one line: a stray newline would split it
        return f"{self.label(rec[VM]):<{self._label_width}} {rec[LINE_NO]:>6}{sep} ", text

    def format(self, rec: Row) -> str:
        prefix, text = self.split(rec)
        return prefix + text

    def rows(self, records: Iterable[Row]) -> list[str]:
        if not self.filter.active:
            return [self.format(r) for r in records]
        return [self.format(r) for r in records if self.matches(r)]

    def all_rows(self) -> list[str]:
        return self.rows(self.records)

    def label(self, vm: str) -> str:
        return vm_display_name(vm)

    # -- filter controls -----------------------------------------------------------
    def cycle_vm(self) -> LogFilter:
        order: list[str | None] = [None, *self.vms]
        i = order.index(self.filter.vm) if self.filter.vm in order else 0
        return self.set_filter(LogFilter(order[(i + 1) % len(order)], self.filter.min_severity, self.filter.text))

    def cycle_severity(self) -> LogFilter:
        i = SEVERITY_CYCLE.index(self.filter.min_severity)
        nxt = SEVERITY_CYCLE[(i + 1) % len(SEVERITY_CYCLE)]
        return self.set_filter(LogFilter(self.filter.vm, nxt, self.filter.text))

    def set_text(self, text: str) -> LogFilter:
        return self.set_filter(LogFilter(self.filter.vm, self.filter.min_severity, text.strip()))

    def reset_filter(self) -> LogFilter:
        return self.set_filter(LogFilter())

    def set_filter(self, flt: LogFilter) -> LogFilter:
        self.filter = flt
        self.refilter()
        return flt

    # -- internals -------------------------------------------------------------------
    def _see_vm(self, vm: str) -> None:
        if vm in self._seen:
            return
        self._seen.add(vm)
        self._label_width = max(self._label_width, len(vm_display_name(vm)))
        self.vms.append(vm)

    def _mark(self, vm: str, rep: KernelReport) -> None:
        # Reports span ~40 lines on average: keys are built and stored C-level. The
        # classifier joins a block's lines with "\n".
        count = rep.text.count("\n") + 1 - rep.text.endswith("\n")
        keys = list(zip(repeat(vm), range(rep.line, rep.line + max(1, count))))
        marks = self._marks
        if marks.keys().isdisjoint(keys):
            marks.update(dict.fromkeys(keys, rep.severity))
        else:  # overlaps an earlier report: each line keeps the worse of the two
            for key in keys:
                old = marks.get(key)
                if old is None or rep.severity > old:
                    marks[key] = rep.severity
        if len(marks) >= self.retain:
            self._marks_old, self._marks = marks, {}


def _marker_text(rep: KernelReport, expected: bool) -> str:
    return report_text(rep, expected)


def _clean(text: str) -> str:
    return text.replace("\r", "").replace("\n", " ")
