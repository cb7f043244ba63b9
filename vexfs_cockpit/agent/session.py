"""What the kdev agent keeps from one command to the next: one event loop and, on
it, the dev VMs' SSH connections (a connection works only on the loop that opened
it). Each forwarded command runs on that loop instead of a new ``asyncio.run``."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import Any, TypeVar

from vexfs_cockpit.transport.pool import TargetPool

T = TypeVar("T")


class KdevSession:
    def __init__(self) -> None:
        self._runner = asyncio.Runner()
        self.targets = TargetPool()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        """Run one command's coroutine to its end (Ctrl-C cancels it, as asyncio.run does)."""
        return self._runner.run(coro)

    def close(self) -> None:
        try:
            self._runner.run(self.targets.aclose())
        finally:
            self._runner.close()
