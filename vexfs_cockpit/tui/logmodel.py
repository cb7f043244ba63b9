"""The live kernel-log pane's model: a bounded buffer of lines, filters, severities.

Pure Python (no Textual). Kernel lines arrive as ``KernelLogLine`` events; classified
reports arrive later as ``KernelEventRaised`` (the classifier groups a block first), so
a line's severity is looked up at render time from ``(vm, line_no)`` and lines already
on screen get their colour when the report lands. Each report also adds a marker row
(the target of "jump to next event").

The view renders records (only the rows on screen, each frame) as
``"<label> <line_no><sep> <text>"``; ``sep`` is ``│`` for a kernel line and ``▶`` for a
marker, and ``parse_row`` recovers the key from such a string. With a filter set, the
matching records are kept in a second bounded deque, extended as lines arrive.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import NamedTuple

from vexfs_cockpit.engine.events import KernelEventRaised, KernelLogLine
from vexfs_cockpit.klog.model import KernelReport, Severity

LINE_SEP = "│"
MARK_SEP = "▶"
_ROW = re.compile(rf"^(\S+) +(\d+)([{LINE_SEP}{MARK_SEP}]) ")
_VM_NAME = re.compile(r"^vexfs-[^-]+-(.+)-(\d+)$")  # vexfs-<env>-<domain>-<n>
# Short tags keep the log's prefix narrow at 80 columns; unknown domains are clipped.
_DOMAIN_TAGS = {
    "kernel_module": "kmod",
    "filesystem_operations": "fsops",
    "vector_operations": "vecops",
    "performance_metrics": "perf",
    "safety_validation": "safety",
    "integration_testing": "integ",
}

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


class LogRecord(NamedTuple):  # a tuple: cheapest to build at flood rates
    vm: str
    line_no: int
    text: str
    report: KernelReport | None = None  # set: this is a marker row for that report
    expected: bool = False


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
            parts.append(f"vm={self.vm}")
        if self.min_severity is not None:
            parts.append(f"≥{self.min_severity.name.lower()}")
        if self.text:
            parts.append(f"“{self.text}”")
        return " ".join(parts) if parts else "all"


def unique_labels(names: Iterable[str]) -> dict[str, str]:
    """Short labels, falling back to the full name where two VMs would share one
    (e.g. the same domain's VM of two envs)."""
    names = list(names)
    short = {n: vm_label(n) for n in names}
    counts: dict[str, int] = {}
    for label in short.values():
        counts[label] = counts.get(label, 0) + 1
    return {n: (lbl if counts[lbl] == 1 else n.removeprefix("vexfs-")) for n, lbl in short.items()}


def vm_label(name: str) -> str:
    """``vexfs-dev-filesystem_operations-0`` -> ``fsops-0``; other names unchanged."""
    m = _VM_NAME.match(name)
    if m is None:
        return name
    domain, index = m.groups()
    return f"{_DOMAIN_TAGS.get(domain, domain[:8])}-{index}"


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
        self.records: deque[LogRecord] = deque(maxlen=retain)
        self.filter = LogFilter()
        self.vms: list[str] = []  # first-seen order (the VM filter cycles through it)
        self._labels: dict[str, str] = {}
        self._vm_by_label: dict[str, str] = {}
        self._label_width = 8
        # (vm, line_no) -> severity of the report covering that line. Bounded: oldest out.
        self._severity: OrderedDict[tuple[str, int], Severity] = OrderedDict()
        self._severity_cap = retain * 2
        self._filtered: deque[LogRecord] | None = None  # records matching an active filter
        self._max_text = 0
        self.lines_seen = 0
        self.events_seen = 0

    @property
    def shown(self) -> deque[LogRecord]:
        """The records the filter lets through (live, bounded)."""
        return self.records if self._filtered is None else self._filtered

    @property
    def max_width(self) -> int:
        """Cells of the widest row built so far (kernel text is ASCII)."""
        return self._label_width + 9 + self._max_text

    # -- input -------------------------------------------------------------------
    def add(self, events: Sequence[KernelLogLine | KernelEventRaised]) -> tuple[list[LogRecord], bool]:
        """Take a batch; return the new records and whether any report arrived.

        Under a flood, records that would fall out of the bounded buffer within this
        same batch are counted but never built.
        """
        new: list[LogRecord] = []
        reports = False
        skip = len(events) - self.retain
        labels = self._labels
        for i, ev in enumerate(events):
            if type(ev) is KernelLogLine:
                self.lines_seen += 1
                if i < skip:
                    continue
                vm, text = ev.vm, ev.text
                if vm not in labels:
                    self._see_vm(vm)
                if "\n" in text or "\r" in text:
                    text = _clean(text)
                new.append(LogRecord(vm, ev.line_no, text))
            elif isinstance(ev, KernelEventRaised):
                rep = ev.report
                vm = ev.vm or rep.vm
                self._mark(vm, rep)
                self.events_seen += 1
                reports = True
                if i < skip:
                    continue
                if vm not in labels:
                    self._see_vm(vm)
                new.append(LogRecord(vm, rep.line, _marker_text(rep, ev.expected), rep, ev.expected))
        self.records.extend(new)
        # Only what the deque still holds can be shown.
        if len(new) > self.retain:
            new = new[-self.retain:]
        if new:
            self._max_text = max(self._max_text, max(map(len, [r.text for r in new])))
        if self._filtered is not None:
            if reports and self.filter.min_severity is not None:
                self.refilter()  # lines that came before their report now pass
            else:
                self._filtered.extend(r for r in new if self.matches(r))
        return new, reports

    def refilter(self) -> None:
        """Rebuild the filtered records from the buffer (after the filter or severities changed)."""
        self._filtered = deque(filter(self.matches, self.records), maxlen=self.retain) if self.filter.active else None

    # -- filtering and formatting ------------------------------------------------------
    def severity_of(self, vm: str, line_no: int) -> Severity | None:
        return self._severity.get((vm, line_no))

    def record_severity(self, rec: LogRecord) -> Severity | None:
        return rec.report.severity if rec.report is not None else self.severity_of(rec.vm, rec.line_no)

    def matches(self, rec: LogRecord) -> bool:
        f = self.filter
        if f.vm is not None and rec.vm != f.vm:
            return False
        if f.min_severity is not None:
            sev = self.record_severity(rec)
            if sev is None or sev < f.min_severity:
                return False
        if f.text and f.text.casefold() not in rec.text.casefold():
            return False
        return True

    def format(self, rec: LogRecord) -> str:
        sep = MARK_SEP if rec.report is not None else LINE_SEP
        return f"{self.label(rec.vm):<{self._label_width}} {rec.line_no:>6}{sep} {rec.text}"

    def rows(self, records: Iterable[LogRecord]) -> list[str]:
        if not self.filter.active:
            return [self.format(r) for r in records]
        return [self.format(r) for r in records if self.matches(r)]

    def all_rows(self) -> list[str]:
        return self.rows(self.records)

    def label(self, vm: str) -> str:
        return self._labels.get(vm) or vm_label(vm)

    def vm_of_label(self, label: str) -> str | None:
        return self._vm_by_label.get(label)

    # -- filter controls -----------------------------------------------------------
    def cycle_vm(self) -> LogFilter:
        order: list[str | None] = [None, *self.vms]
        i = order.index(self.filter.vm) if self.filter.vm in order else 0
        return self._set_filter(LogFilter(order[(i + 1) % len(order)], self.filter.min_severity, self.filter.text))

    def cycle_severity(self) -> LogFilter:
        i = SEVERITY_CYCLE.index(self.filter.min_severity)
        nxt = SEVERITY_CYCLE[(i + 1) % len(SEVERITY_CYCLE)]
        return self._set_filter(LogFilter(self.filter.vm, nxt, self.filter.text))

    def set_text(self, text: str) -> LogFilter:
        return self._set_filter(LogFilter(self.filter.vm, self.filter.min_severity, text.strip()))

    def reset_filter(self) -> LogFilter:
        return self._set_filter(LogFilter())

    def _set_filter(self, flt: LogFilter) -> LogFilter:
        self.filter = flt
        self.refilter()
        return flt

    # -- internals -------------------------------------------------------------------
    def _see_vm(self, vm: str) -> None:
        if vm in self._labels:
            return
        label = vm_label(vm)
        if label in self._vm_by_label:  # two envs' VMs with the same tail
            label = vm
        self._labels[vm] = label
        self._vm_by_label[label] = vm
        self._label_width = max(self._label_width, len(label))
        self.vms.append(vm)

    def _mark(self, vm: str, rep: KernelReport) -> None:
        for n in _block_lines(rep):
            key = (vm, n)
            old = self._severity.get(key)
            if old is None or rep.severity > old:
                self._severity[key] = rep.severity
        while len(self._severity) > self._severity_cap:
            self._severity.popitem(last=False)  # O(1), unlike deleting dict's first key


def _block_lines(rep: KernelReport) -> Iterator[int]:
    count = max(1, len(rep.text.splitlines()))
    return iter(range(rep.line, rep.line + count))


def _marker_text(rep: KernelReport, expected: bool) -> str:
    """``SEVERITY title (kind) [module]``; the first word is what the highlighter styles by."""
    sev = rep.severity.name
    text = rep.title if rep.title.upper().startswith(sev) else f"{sev} {rep.title}"
    if rep.kind.replace("_", " ") not in rep.title.lower().replace("_", " "):
        text += f" ({rep.kind})"
    if rep.module and rep.module not in rep.title:
        text += f" [{rep.module}]"
    return text + (" — expected" if expected else "")


def _clean(text: str) -> str:
    # One record is one row: a stray newline would split it and misalign the keys.
    return text.replace("\r", "").replace("\n", " ")
