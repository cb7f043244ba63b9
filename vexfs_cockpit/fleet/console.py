"""The live serial console of a VM, as lines.

The serial console keeps flowing when SSH is dead (panic, hang): it is how the
cockpit sees a kernel die. libvirt streams it; the callback runs on libvirt's
event thread (``events_thread``), reads everything available, splits lines, writes
the raw bytes to the VM's console log file, and hands the lines to the asyncio
loop, where the sink (klog buffer + ``KernelLogLine`` events) runs. So sinks only
ever run on the loop thread.

Start a VM paused, ``attach()``, then resume: no boot line is lost (QEMU drops pty
output nobody reads). After a reset (destroy + create) call ``attach()`` again.
"""

from __future__ import annotations

import asyncio
import codecs
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import libvirt

from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.events import KernelLogLine
from vexfs_cockpit.fleet.console_log import DEFAULT_MAX_BYTES, ConsoleLog
from vexfs_cockpit.errors import InfraError

log = logging.getLogger(__name__)

# Called on the loop thread with a batch of complete lines and their arrival time.
LineSink = Callable[[list[str], float], None]
WOULD_BLOCK = -2
_CHUNK = 65536


class ConsoleClosed(InfraError):
    """The console stream ended (the VM stopped or was destroyed)."""


class LineSplitter:
    """Bytes in, complete lines out: decode incrementally, strip ``\\r``, keep the partial tail."""

    def __init__(self) -> None:
        self._dec = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self._partial = ""

    def feed(self, data: bytes) -> list[str]:
        text = self._partial + self._dec.decode(data)
        parts = text.split("\n")
        self._partial = parts.pop()
        return [p.replace("\r", "") for p in parts]

    def flush(self) -> list[str]:
        """The unterminated last line (at EOF), if any."""
        rest = (self._partial + self._dec.decode(b"", final=True)).replace("\r", "")
        self._partial = ""
        self._dec.reset()
        return [rest] if rest else []


class _Stream(Protocol):  # the parts of libvirt.virStream we use (tests pass a fake)
    def recv(self, nbytes: int) -> bytes | int: ...
    def eventRemoveCallback(self) -> None: ...
    def finish(self) -> None: ...
    def abort(self) -> None: ...


class ConsoleStream:
    """One VM's serial console: attach/detach, lines to a sink, raw bytes to a log file."""

    def __init__(
        self,
        conn: Callable[[], libvirt.virConnect],
        vm: str,
        sink: LineSink,
        *,
        log_path: Path | None = None,
        log_max_bytes: int = DEFAULT_MAX_BYTES,
        tail_lines: int = 200,
    ):
        self._conn = conn
        self.vm = vm
        self._sink = sink
        self.log_path = log_path
        self._log_max_bytes = log_max_bytes
        self._log: ConsoleLog | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()  # stream ops from the loop (detach) vs libvirt thread (recv)
        self._stream: _Stream | None = None
        self._gen = 0  # attach generation: late callbacks from an old stream are ignored
        self._splitter = LineSplitter()
        self._tail: deque[tuple[int, str]] = deque(maxlen=tail_lines)
        self.lines_seen = 0  # lines delivered since the first attach (console-local count)
        self._watchers: list[tuple[str, int, asyncio.Future[int]]] = []
        self.closed = asyncio.Event()
        self.close_reason = ""

    # -- attach / detach (loop thread) ------------------------------------------------
    async def attach(self, note: str = "") -> None:
        """Open (or re-open after a reset) the console of the running or paused VM."""
        await self.detach()
        self._loop = asyncio.get_running_loop()
        if self.log_path is not None and self._log is None:
            self._log = ConsoleLog(self.log_path, max_bytes=self._log_max_bytes)  # lives as long as the console
        if self._log is not None and note:
            self._log.write(f"\n--- vexfs-cockpit: console attached ({note}) ---\n".encode())
        self.closed.clear()
        self.close_reason = ""
        try:
            await asyncio.to_thread(self._open)
        except libvirt.libvirtError as err:
            raise InfraError(
                f"cannot open the serial console of VM {self.vm}: {err.get_error_message()} — "
                "the domain XML needs <serial type='pty'> + <console type='pty'>"
            ) from None

    def _open(self) -> None:
        conn = self._conn()
        dom = conn.lookupByName(self.vm)
        st = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        dom.openConsole(None, st, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        with self._lock:
            self._gen += 1
            gen = self._gen
            self._stream = st
            self._splitter = LineSplitter()
        events = (
            libvirt.VIR_STREAM_EVENT_READABLE | libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP
        )
        st.eventAddCallback(events, self._on_event, gen)

    async def detach(self) -> None:
        with self._lock:
            st, self._stream = self._stream, None
            self._gen += 1
        if st is not None:
            await asyncio.to_thread(self._end, st, False)

    async def aclose(self) -> None:
        await self.detach()
        if self._log is not None:
            self._log.close()
            self._log = None
        self._fail_watchers("console closed")

    @staticmethod
    def _end(st: _Stream, clean: bool) -> None:
        try:
            st.eventRemoveCallback()
        except libvirt.libvirtError:
            pass
        try:
            st.finish() if clean else st.abort()
        except libvirt.libvirtError:
            pass

    # -- libvirt event thread -----------------------------------------------------------
    def _on_event(self, st: _Stream, events: int, gen: int) -> None:
        with self._lock:
            if gen != self._gen or st is not self._stream:
                return
            lines, eof, err = self._pump(st)
            if eof or err or events & (libvirt.VIR_STREAM_EVENT_ERROR | libvirt.VIR_STREAM_EVENT_HANGUP):
                lines += self._splitter.flush()
                self._stream = None
                self._end(st, clean=eof and not err)
                reason = err or ("end of stream" if eof else "hangup")
            else:
                reason = ""
        if lines:
            self._to_loop(self._deliver, lines, time.time())
        if reason:
            self._to_loop(self._on_closed, reason)

    def _pump(self, st: _Stream) -> tuple[list[str], bool, str]:
        """Read until would-block; returns (lines, eof, error)."""
        lines: list[str] = []
        while True:
            try:
                data = st.recv(_CHUNK)
            except libvirt.libvirtError as e:
                return lines, False, e.get_error_message() or "stream error"
            if data == WOULD_BLOCK:
                return lines, False, ""
            if not isinstance(data, bytes) or not data:
                return lines, True, ""
            if self._log is not None:
                self._log.write(data)
            lines += self._splitter.feed(data)

    def _to_loop(self, fn: Callable[..., None], *args: object) -> None:
        if self._loop is None:
            return
        try:
            self._loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # loop closed
            pass

    # -- loop thread ----------------------------------------------------------------------
    def _deliver(self, lines: list[str], ts: float) -> None:
        start = self.lines_seen
        self.lines_seen += len(lines)
        self._tail.extend(enumerate(lines, start))
        try:
            self._sink(lines, ts)
        except Exception:  # a sink bug must not silence the console
            log.exception("console sink for %s failed", self.vm)
        if self._watchers:
            self._check_watchers(((i, t) for i, t in enumerate(lines, start)))

    def replay(self, lines: list[str], note: str) -> None:
        """Deliver ``lines`` as if the console printed them now (loop thread), under a
        ``note`` line in the log file: a VM restored from a snapshot printed its boot log
        before the save, and its readers (klog, the console log) still want it."""
        if not lines:
            return
        if self._log is not None:
            self._log.write(f"\n--- vexfs-cockpit: {note} ---\n".encode())
            self._log.write(("\n".join(lines) + "\n").encode(errors="replace"))
        self._deliver(list(lines), time.time())

    def _on_closed(self, reason: str) -> None:
        self.close_reason = reason
        self.closed.set()
        self._fail_watchers(f"console of VM {self.vm} closed ({reason})")

    def _fail_watchers(self, why: str) -> None:
        watchers, self._watchers = self._watchers, []
        for _, _, fut in watchers:
            if not fut.done():
                fut.set_exception(ConsoleClosed(why))

    def _check_watchers(self, numbered: object) -> None:
        for idx, text in numbered:  # type: ignore[attr-defined]
            for w in list(self._watchers):
                needle, since, fut = w
                if idx >= since and needle in text and not fut.done():
                    fut.set_result(idx)
                    self._watchers.remove(w)

    def tail(self, n: int = 20) -> list[str]:
        return [t for _, t in list(self._tail)[-n:]]

    async def wait_for_text(self, needle: str, timeout: float, since: int | None = None) -> int:
        """Console-local index of the first line at/after ``since`` containing ``needle``.

        Raises TimeoutError, or ConsoleClosed if the VM's console ends first.
        """
        since = self.lines_seen if since is None else since
        for idx, text in self._tail:
            if idx >= since and needle in text:
                return idx
        if self.closed.is_set():
            raise ConsoleClosed(f"console of VM {self.vm} closed ({self.close_reason})")
        fut: asyncio.Future[int] = asyncio.get_running_loop().create_future()
        entry = (needle, since, fut)
        self._watchers.append(entry)
        try:
            async with asyncio.timeout(timeout):
                return await fut
        finally:
            if entry in self._watchers:
                self._watchers.remove(entry)


class Feedable(Protocol):
    """What a console feeds: ``klog.buffer.KernelLogBuffer.feed`` (returns the line's number)."""

    def feed(self, line: str) -> int: ...


def klog_sink(vm: str, klog: Feedable | None, bus: EventBus) -> LineSink:
    """Feed each console line to the VM's kernel-log buffer and publish it on the bus.

    Line numbers are the buffer's (absolute since the VM's first boot in this lease);
    without a buffer, a local count.
    """
    count = 0

    def sink(lines: list[str], ts: float) -> None:
        nonlocal count
        for text in lines:
            if klog is not None:
                n = klog.feed(text)
            else:
                n = count
                count += 1
            bus.publish(KernelLogLine(vm=vm, line_no=n, text=text, source="console", ts=ts))

    return sink
