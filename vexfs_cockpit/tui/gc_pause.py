"""Python's cyclic garbage collector held off while a screen opens, run once its data
is on screen.

A full collection in the cockpit takes 70-190 ms on the UI thread (~100-150k tracked
objects: Textual's widgets, styles and strip caches; most of the time is pointer
chasing, not garbage), and the churn of building a screen set one off in about every
second open of the history or trends screen (bench/history_screen.py). Held while the
screen fills, then run right after the frame with its data: the same work, out of the
wait between key press and data. Textual does the same while it scrolls
(App.PAUSE_GC_ON_SCROLL).
"""

from __future__ import annotations

import asyncio
import contextvars
import gc

from textual.message_pump import MessagePump

HOLD_AT_MOST_S = 5.0  # a query that never answers must not leave the collector off


class GcPause:
    """One hold per screen open. Holds only if the collector is on (an outer hold, or
    an app that turned it off, stays in charge)."""

    def __init__(self) -> None:
        self._holding = False
        self._deadline: asyncio.TimerHandle | None = None

    def hold(self) -> None:
        """Call on the UI thread (its event loop keeps the deadline)."""
        if gc.isenabled():
            gc.disable()
            self._holding = True
            # A bare loop timer in an empty context: a cancelled timer stays in the loop
            # until it is due, and a Textual timer's context (the active screen) would
            # keep a closed screen alive that long.
            self._deadline = asyncio.get_running_loop().call_later(
                HOLD_AT_MOST_S, self.release, context=contextvars.Context())

    def release(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        if self._holding:
            self._holding = False
            gc.enable()

    def release_after_paint(self, node: MessagePump) -> None:
        """Collect right after the next frame: the one that shows the data."""
        if self._holding:
            node.call_after_refresh(self._collect)

    def _collect(self) -> None:
        if self._holding:
            self.release()
            gc.collect()
