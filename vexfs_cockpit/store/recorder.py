"""The store's write side: one writer thread, and the event-stream consumer feeding it.

sqlite3 connections belong to the thread that made them, so ``HistoryStore`` runs a
single-worker executor that opens the connection and does every write; the asyncio
side only ever hands it work. Readers (history.py) open their own connections: WAL
lets them read while we write.

Usage (the runner)::

    store = await HistoryStore.aopen(path)     # validates, migrates, marks dead runs aborted
    recorder = Recorder(store, bus); recorder.start()   # before the first event is published
    ... run ...
    await recorder.aclose(); store.close()     # aclose writes everything already published
    if recorder.lost: print(recorder.loss_line())   # what could not be stored, and why
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from vexfs_cockpit.engine.bus import EventBus, Subscription
from vexfs_cockpit.engine.events import (
    ConfirmStarted,
    DomainFinished,
    DomainStarted,
    InfraProblem,
    KernelEventRaised,
    MetricRecorded,
    RunFinished,
    RunStarted,
    TestFinished,
    TestRerun,
    TestStarted,
    TestVerdict,
    VmReady,
    VmSample,
    VmStateChanged,
)
from vexfs_cockpit.errors import StoreError
from vexfs_cockpit.store.db import write_failure
from vexfs_cockpit.store.history import History
from vexfs_cockpit.store.liveness import ProcessIdentity
from vexfs_cockpit.store.location import StoreLocation
from vexfs_cockpit.store.report import Attribution
from vexfs_cockpit.store.writer import Item, Lost, StoreWriter

log = logging.getLogger(__name__)
T = TypeVar("T")

# Everything but KernelLogLine: raw log lines (~200k per run) are not history; the
# lines that matter are in each test's evidence window and in KernelEventRaised.
RECORDED_KINDS: tuple[type, ...] = (
    RunStarted,
    RunFinished,
    DomainStarted,
    DomainFinished,
    TestStarted,
    TestFinished,
    MetricRecorded,
    KernelEventRaised,
    VmStateChanged,
    VmReady,
    VmSample,
    InfraProblem,
    ConfirmStarted,  # the reruns' progress: keeps the run's last_event_at moving
    TestRerun,
    TestVerdict,
)


class HistoryStore:
    """Owns the history DB's one writer connection and the thread it lives on."""

    def __init__(self, path: StoreLocation, me: ProcessIdentity | None = None, deep_check: bool = True) -> None:
        self.path = path
        self._me = me
        self._deep_check = deep_check
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vexfs-store")
        self._writer: StoreWriter | None = None
        self.aborted_on_open: list[str] = []

    @classmethod
    def open(cls, path: StoreLocation, me: ProcessIdentity | None = None, deep_check: bool = True) -> HistoryStore:
        """Blocking open (validate, create 0600, migrate, WAL, mark dead runs aborted).

        Raises StoreError (one line, names the file and the fix) and leaves a foreign
        or corrupt file untouched. ``me`` stands in for this process (tests).
        """
        store = cls(path, me, deep_check)
        try:
            store._pool.submit(store._open).result()
            store.aborted_on_open = store.call(lambda w: w.mark_aborted_runs())
        except (sqlite3.Error, OSError) as exc:  # e.g. the disk filled up: one line, not a traceback
            store.close()
            if not isinstance(store.path, Path):
                raise
            raise write_failure(store.path, exc) from None
        except BaseException:
            store.close()
            raise
        return store

    @classmethod
    async def aopen(cls, path: StoreLocation, me: ProcessIdentity | None = None) -> HistoryStore:
        return await asyncio.to_thread(cls.open, path, me)

    def _open(self) -> None:
        self._writer = StoreWriter(self.path, self._me, self._deep_check)

    def _run(self, fn: Callable[[StoreWriter], T]) -> T:
        if self._writer is None:
            raise StoreError(f"history DB {self.path} is not open")
        return fn(self._writer)

    def submit(self, fn: Callable[[StoreWriter], T]) -> Future[T]:
        """Run ``fn(writer)`` on the writer thread."""
        return self._pool.submit(self._run, fn)

    def call(self, fn: Callable[[StoreWriter], T]) -> T:
        return self.submit(fn).result()

    async def acall(self, fn: Callable[[StoreWriter], T]) -> T:
        return await asyncio.wrap_future(self.submit(fn))

    def history(self) -> History:
        """A reader on the same file (its own connections; safe from any thread)."""
        return History(self.path)

    def close(self) -> None:
        """Close the connection on its own thread, then stop the thread. Idempotent."""

        def _close() -> None:
            if self._writer is not None:
                self._writer.close()
                self._writer = None

        try:
            self._pool.submit(_close).result()
        except RuntimeError:
            pass  # already shut down
        self._pool.shutdown(wait=True)


@dataclass(slots=True)
class _Flush:
    """A marker put in our own queue: resolved once everything before it is written."""

    done: asyncio.Future[None] = field(default_factory=lambda: asyncio.get_running_loop().create_future())


class Recorder:
    """Consumes the event stream and writes it to a HistoryStore as it arrives.

    Events waiting in the queue are written together in one transaction, so a burst
    (1 Hz samples of many VMs plus results) costs one commit, and a quiet stream
    commits each result as soon as it comes. If the store fails, the run goes on:
    every event that could not be stored is counted in ``lost`` (``lost_results`` of
    them test results), and the first failure's one line is kept in ``error`` and
    published once as an InfraProblem (the front ends show it; nothing is logged, no
    traceback). After ``aclose``, ``loss_line()`` says it all in one line.
    """

    def __init__(self, store: HistoryStore, bus: EventBus) -> None:
        self.store = store
        self.bus = bus
        self.error: str | None = None
        self.written = 0
        self.lost = 0
        self.lost_results = 0
        self._attr = Attribution()
        self._notice: InfraProblem | None = None  # ours, about the store: not written to it
        self._sub: Subscription | None = None
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Subscribe now (so no later event is missed) and start consuming."""
        if self._sub is not None:
            raise RuntimeError("Recorder already started")
        self._sub = self.bus.subscribe(*RECORDED_KINDS)
        self._task = asyncio.get_running_loop().create_task(self._consume(), name="history-recorder")

    async def flush(self) -> None:
        """Return once every event published before this call is committed."""
        if self._sub is None or self._task is None or self._task.done():
            return
        marker = _Flush()
        self._sub.queue.put_nowait(marker)
        await marker.done

    async def aclose(self) -> None:
        """Write what is queued, then stop. The store stays open (the caller owns it)."""
        if self._sub is None or self._task is None:
            return
        self._sub.close()  # queued after pending events: they are all written first
        await self._task

    def loss_line(self) -> str:
        """One line: why the store failed and how much of the stream it lost ('' if nothing)."""
        if not self.lost:
            return ""
        results = f", {self.lost_results} of them test results" if self.lost_results else ""
        return f"{self.error}; {self.lost} events not stored{results}"

    async def _consume(self) -> None:
        assert self._sub is not None
        sub = self._sub
        async for first in sub:
            batch: list[Item] = []
            markers: list[_Flush] = []
            events = [first, *sub.drain_nowait()]
            try:
                for ev in events:
                    if isinstance(ev, _Flush):
                        markers.append(ev)
                        continue
                    if ev is self._notice:
                        continue
                    filled = self._attr.fill(ev)
                    batch.append((filled, self._attr.current_run))
                if batch:
                    await self._write(batch)
            except Exception as exc:  # never die silently with the queue still filling
                log.debug("history recorder", exc_info=True)
                unwritten = [(ev, "") for ev in events if not isinstance(ev, _Flush) and ev is not self._notice]
                self._fail([Lost.of(unwritten, f"history recorder: {type(exc).__name__}: {exc}")])
            for m in markers:
                if not m.done.done():
                    m.done.set_result(None)

    async def _write(self, batch: list[Item]) -> None:
        try:
            lost = await self.store.acall(lambda w: w.write_batch(batch))
        except Exception as exc:  # the writer thread itself failed (store closed...)
            lost = [Lost.of(batch, f"history DB {self.store.path}: {exc}")]
        self.written += len(batch) - sum(x.events for x in lost)
        self._fail(lost)

    def _fail(self, lost: list[Lost]) -> None:
        if not lost:
            return
        self.lost += sum(x.events for x in lost)
        self.lost_results += sum(x.results for x in lost)
        if self.error is None:
            self.error = lost[0].message
            # The run the lost events belong to: it may have finished before they failed.
            self._notice = InfraProblem(message=self.error, run_id=lost[0].run_id or self._attr.current_run)
            self.bus.publish(self._notice)
