"""The live kernel log of one VM: a bounded ring of lines plus the reports found in it.

Implements ``vexfs_cockpit.engine.plugin.KernelLog``.

Threading: ``feed`` is thread-safe and cheap (one lock, a deque append, one pass
of the header table), so the libvirt console callback thread may call it directly.
``on_report`` runs on the thread whose ``feed`` completed the report (or on the
event loop for the idle flush): from a foreign thread, hand it to asyncio with
``EventBus.publish_threadsafe`` / ``loop.call_soon_threadsafe``. The async methods
(``sync``, ``wait_for``, ``wait_for_text``) are woken through
``loop.call_soon_threadsafe``, never by polling.

Line numbers are absolute since the buffer was created (the first line is 0) and
never reused; a VM reset does not reset them, so windows stay unambiguous.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import shlex
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from vexfs_cockpit.engine.target import Target
from vexfs_cockpit.errors import InfraError
from vexfs_cockpit.klog.classify import Classifier, parse_line
from vexfs_cockpit.klog.model import KernelReport
from vexfs_cockpit.klog.patterns import SYNC_MARKER

log = logging.getLogger(__name__)


class KlogSyncTimeout(InfraError):
    """The sync marker written to /dev/kmsg never came back on the console."""


@dataclass(slots=True, eq=False)
class _Waiter:
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[object]
    check: Callable[[], object | None]  # runs under the buffer lock; non-None resolves


@dataclass(slots=True)
class _LineScan:
    """Finds the first line (at or after ``pos``) whose message equals/contains a needle."""

    buf: KernelLogBuffer
    needle: str
    pos: int
    exact: bool

    def __call__(self) -> int | None:
        first = self.buf._next - len(self.buf._lines)
        self.pos = max(self.pos, first)
        for n, line in enumerate(itertools.islice(self.buf._lines, self.pos - first, None), start=self.pos):
            if (parse_line(line).body.rstrip() == self.needle) if self.exact else (self.needle in line):
                return n
        self.pos = self.buf._next
        return None


@dataclass(slots=True)
class _ReportScan:
    buf: KernelLogBuffer
    kinds: frozenset[str]
    since: int
    seen: int = 0  # reports already examined, counted over the buffer's lifetime

    def __call__(self) -> KernelReport | None:
        new = self.buf._reports_total - self.seen
        self.seen = self.buf._reports_total
        if new <= 0:
            return None
        recent = list(self.buf._reports)[-new:] if new < len(self.buf._reports) else list(self.buf._reports)
        for rep in recent:
            if rep.line >= self.since and (not self.kinds or rep.kind in self.kinds):
                return rep
        return None


class KernelLogBuffer:
    """Bounded kernel log of one VM with an incremental classifier and async waits."""

    def __init__(
        self,
        vm_name: str,
        max_lines: int = 50_000,
        on_report: Callable[[KernelReport], None] | None = None,
        *,
        max_reports: int = 5_000,
        quiet_gap_s: float = 2.0,
        idle_flush_s: float | None = 3.0,
        loop: asyncio.AbstractEventLoop | None = None,
    ):
        self.vm_name = vm_name
        self.max_lines = max_lines
        self.on_report = on_report
        self.idle_flush_s = idle_flush_s
        self._lock = threading.Lock()
        self._lines: deque[str] = deque(maxlen=max_lines)
        self._next = 0
        self._reports: deque[KernelReport] = deque(maxlen=max_reports)
        self._reports_total = 0
        self._clf = Classifier(vm_name, quiet_gap_s=quiet_gap_s)
        self._waiters: list[_Waiter] = []
        self._pokes_pending: set[asyncio.AbstractEventLoop] = set()
        self._last_feed = time.monotonic()
        self._idle_timer: asyncio.TimerHandle | None = None
        self._idle_arming = False
        if loop is None:
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                loop = None
        self._loop = loop

    # -- producer side -------------------------------------------------------------

    def feed(self, line: str) -> int:
        """Append one console line; returns its absolute line number."""
        if "\n" in line.rstrip("\r\n"):
            n = -1
            for part in line.rstrip("\r\n").split("\n"):
                n = self.feed(part)
            return n
        line = line.rstrip("\r\n")
        with self._lock:
            n = self._next
            self._next += 1
            self._lines.append(line)
            done = self._clf.feed(n, line)
            self._store(done)
            self._last_feed = time.monotonic()
            arm_idle = (
                self._clf.open_since is not None and self.idle_flush_s is not None
                and self._idle_timer is None and not self._idle_arming and self._loop is not None
            )
            if arm_idle:
                self._idle_arming = True
            pokes = self._pokes_to_send()
        self._emit(done)
        for lp in pokes:
            self._call_on(lp, self._poke, lp)
        if arm_idle:
            assert self._loop is not None
            if not self._call_on(self._loop, self._arm_idle):
                with self._lock:
                    self._idle_arming = False
        return n

    def flush(self) -> list[KernelReport]:
        """Close the report still being collected (VM stopped, end of stream)."""
        with self._lock:
            done = self._clf.flush()
            self._store(done)
            pokes = self._pokes_to_send()
        self._emit(done)
        for lp in pokes:
            self._call_on(lp, self._poke, lp)
        return done

    # -- KernelLog -----------------------------------------------------------------
    def cursor(self) -> int:
        with self._lock:
            return self._next

    def window(self, start: int, end: int | None = None) -> tuple[list[str], list[KernelReport]]:
        """Lines and completed reports in [start, end). Dropped lines become one marker line."""
        with self._lock:
            stop = self._next if end is None else min(end, self._next)
            first = self._next - len(self._lines)
            lines: list[str] = []
            lo = max(start, first)
            if start < first and start < stop:
                lines.append(f"[vexfs-cockpit: {min(first, stop) - start} earlier lines dropped "
                             f"(ring of {self.max_lines} lines)]")
            if lo < stop:
                lines.extend(itertools.islice(self._lines, lo - first, stop - first))
            reports = [r for r in self._reports if start <= r.line < stop]
        return lines, reports

    def reports(self, since: int = 0) -> list[KernelReport]:
        with self._lock:
            return [r for r in self._reports if r.line >= since]

    async def sync(self, target: Target, tag: str, timeout: float = 10.0) -> int:
        """Write ``vexfs-cockpit: <tag>`` into the guest's /dev/kmsg and wait until it is fed.

        Returns the marker's line number: everything before it happened before the
        write. The marker also closes any report still being collected.
        """
        clean = "".join(c if c.isprintable() else " " for c in tag).strip()
        marker = f"{SYNC_MARKER}{clean}"
        deadline = time.monotonic() + timeout
        fut = self._add_waiter(_LineScan(self, marker, self.cursor(), exact=True))
        try:
            # printf, not echo: some shells' echo interprets backslashes in the tag. A command
            # line, not ["sh", "-c", ...]: the transport's shell runs it without a second sh
            # (one exec less per marker, ~50 ms under TCG, two markers per test).
            res = await target.run(f"printf '%s\\n' {shlex.quote(marker)} > /dev/kmsg", timeout=timeout)
            if not res.ok:
                raise InfraError(
                    f"{self.vm_name}: could not write the sync marker to /dev/kmsg "
                    f"(exit {res.exit_code}: {res.first_line() or 'no output'}); the guest needs a writable /dev/kmsg"
                )
            remaining = max(deadline - time.monotonic(), 0.0)
            try:
                line = await asyncio.wait_for(fut, remaining)
            except TimeoutError:
                raise KlogSyncTimeout(
                    f"{self.vm_name}: sync marker {marker!r} did not reach the console within {timeout:g}s; "
                    "check the guest console loglevel (needs loglevel>4) and the console stream"
                ) from None
            assert isinstance(line, int)
            return line
        finally:
            self._drop_waiter(fut)

    async def wait_for(self, kinds: set[str], since: int, timeout: float) -> KernelReport | None:
        """First completed report of one of ``kinds`` (all kinds if empty) at or after ``since``."""
        fut = self._add_waiter(_ReportScan(self, frozenset(kinds), since))
        try:
            rep = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None
        finally:
            self._drop_waiter(fut)
        assert isinstance(rep, KernelReport)
        return rep

    async def wait_for_text(self, text: str, since: int, timeout: float) -> int | None:
        """Line number of the first line at or after ``since`` containing ``text``, or None."""
        fut = self._add_waiter(_LineScan(self, text, since, exact=False))
        try:
            n = await asyncio.wait_for(fut, timeout)
        except TimeoutError:
            return None
        finally:
            self._drop_waiter(fut)
        assert isinstance(n, int)
        return n

    # -- internals -------------------------------------------------------------------
    def _store(self, done: list[KernelReport]) -> None:
        self._reports.extend(done)
        self._reports_total += len(done)

    def _emit(self, done: list[KernelReport]) -> None:
        if self.on_report is None:
            return
        for rep in done:
            try:
                self.on_report(rep)
            except Exception:  # a consumer bug must not stop the console reader
                log.exception("%s: on_report callback failed", self.vm_name)

    def _pokes_to_send(self) -> list[asyncio.AbstractEventLoop]:
        """Loops with waiters that have no wake-up queued yet (caller holds the lock)."""
        loops = {w.loop for w in self._waiters} - self._pokes_pending
        self._pokes_pending |= loops
        return list(loops)

    @staticmethod
    def _call_on(loop: asyncio.AbstractEventLoop, fn: Callable[..., None], *args: object) -> bool:
        try:
            loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed: its waiters are gone with it
            return False
        return True

    def _add_waiter(self, check: Callable[[], object | None]) -> asyncio.Future[object]:
        loop = asyncio.get_running_loop()
        if self._loop is None or self._loop.is_closed():
            with self._lock:
                self._loop = loop
                self._idle_timer = None  # a timer on a dead loop never fires
                self._idle_arming = False
        fut: asyncio.Future[object] = loop.create_future()
        with self._lock:
            hit = check()
            if hit is not None:
                fut.set_result(hit)
            else:
                self._waiters.append(_Waiter(loop, fut, check))
        return fut

    def _drop_waiter(self, fut: asyncio.Future[object]) -> None:
        with self._lock:
            self._waiters = [w for w in self._waiters if w.future is not fut]
        if not fut.done():
            fut.cancel()

    def _poke(self, loop: asyncio.AbstractEventLoop) -> None:
        """On ``loop``: resolve that loop's waiters whose condition now holds."""
        with self._lock:
            self._pokes_pending.discard(loop)
            keep: list[_Waiter] = []
            for w in self._waiters:
                if w.loop is not loop:
                    keep.append(w)
                    continue
                if w.future.done():
                    continue
                hit = w.check()
                if hit is None:
                    keep.append(w)
                else:
                    w.future.set_result(hit)
            self._waiters = keep

    def _arm_idle(self) -> None:
        """On the loop: flush an open report once no line has arrived for idle_flush_s."""
        assert self._loop is not None and self.idle_flush_s is not None
        with self._lock:
            self._idle_arming = False
            if self._idle_timer is not None:
                return
            self._idle_timer = self._loop.call_later(self.idle_flush_s, self._idle_check)

    def _idle_check(self) -> None:
        assert self._loop is not None and self.idle_flush_s is not None
        with self._lock:
            self._idle_timer = None
            if self._clf.open_since is None:
                return
            quiet_for = time.monotonic() - self._last_feed
            if quiet_for < self.idle_flush_s:
                self._idle_timer = self._loop.call_later(self.idle_flush_s - quiet_for, self._idle_check)
                return
            done = self._clf.flush()
            self._store(done)
            pokes = self._pokes_to_send()
        self._emit(done)
        for lp in pokes:
            self._call_on(lp, self._poke, lp)
