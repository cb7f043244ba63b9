"""Fan-out of the event stream to any number of async subscribers.

Publishing never blocks: each subscriber has its own queue. Threads (libvirt's
event loop, sqlite workers) publish with ``publish_threadsafe``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from vexfs_cockpit.engine.events import Event

_CLOSED = object()


class Subscription:
    def __init__(self, bus: EventBus, kinds: tuple[type, ...] | None):
        self._bus = bus
        self._kinds = kinds
        self.queue: asyncio.Queue[object] = asyncio.Queue()

    def wants(self, event: Event) -> bool:
        return self._kinds is None or isinstance(event, self._kinds)

    def close(self) -> None:
        self._bus._subs.discard(self)
        self.queue.put_nowait(_CLOSED)

    def __aiter__(self) -> AsyncIterator[Event]:
        return self._iter()

    async def _iter(self) -> AsyncIterator[Event]:
        while True:
            item = await self.queue.get()
            if item is _CLOSED:
                return
            yield item  # type: ignore[misc]

    def drain_nowait(self) -> list[Event]:
        """Everything queued right now (for batched consumers)."""
        out: list[Event] = []
        while not self.queue.empty():
            item = self.queue.get_nowait()
            if item is _CLOSED:
                self.queue.put_nowait(_CLOSED)
                break
            out.append(item)  # type: ignore[arg-type]
        return out


class EventBus:
    def __init__(self) -> None:
        self._subs: set[Subscription] = set()
        self._listeners: list[Callable[[Event], None]] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop

    def subscribe(self, *kinds: type) -> Subscription:
        sub = Subscription(self, kinds or None)
        self._subs.add(sub)
        return sub

    def listen(self, fn: Callable[[Event], None]) -> None:
        """Synchronous listener called inline on the loop thread; must be cheap."""
        self._listeners.append(fn)

    def unlisten(self, fn: Callable[[Event], None]) -> None:
        if fn in self._listeners:
            self._listeners.remove(fn)

    def publish(self, event: Event) -> None:
        for fn in self._listeners:
            fn(event)
        for sub in tuple(self._subs):
            if sub.wants(event):
                sub.queue.put_nowait(event)

    def publish_threadsafe(self, event: Event) -> None:
        if self._loop is None:
            raise RuntimeError("EventBus.bind_loop() was not called")
        self._loop.call_soon_threadsafe(self.publish, event)

    def close(self) -> None:
        for sub in tuple(self._subs):
            sub.close()
