"""SSH connections that outlive one command.

The kdev agent runs ``kunload``, ``kload`` and ``ktest`` one after another on the
same dev VM; a fresh SSH connection each time costs a key exchange the guest's
emulated CPU is slow at. The pool keeps one connection per VM and role between
commands, as ssh's ControlPersist keeps its master, and lends it out behind a
``close()`` that does nothing: the pool closes it, when the VM instance behind
it is gone (a reset or restart starts a new one) or the pool itself closes.

Connections belong to the event loop that opened them: a pool lives exactly as
long as one loop (``agent.session.KdevSession`` keeps both).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Hashable
from typing import Any

from vexfs_cockpit.transport.ssh import SshTarget


class LentTarget:
    """A pooled ``SshTarget`` lent to one command: all of it but ``close``."""

    __slots__ = ("_target",)

    def __init__(self, target: SshTarget):
        object.__setattr__(self, "_target", target)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._target, name, value)

    async def close(self) -> None:
        """The pool closes the connection; a borrower only stops using it."""


class TargetPool:
    def __init__(self) -> None:
        self._targets: dict[Hashable, tuple[Hashable, SshTarget]] = {}
        self.made = 0  # targets created (each one SSH connection when used)
        self.lent = 0

    async def lend(self, slot: Hashable, instance: Hashable, make: Callable[[], SshTarget]) -> LentTarget:
        """The pooled target for ``slot`` (a VM and role) if it was made for this
        ``instance`` of the VM (its address and boot); else a new one from ``make``."""
        held = self._targets.get(slot)
        if held is not None and held[0] != instance:
            del self._targets[slot]
            with contextlib.suppress(Exception):
                await held[1].close()
            held = None
        if held is None:
            held = self._targets[slot] = (instance, make())
            self.made += 1
        self.lent += 1
        return LentTarget(held[1])

    def __len__(self) -> int:
        return len(self._targets)

    async def aclose(self) -> None:
        targets, self._targets = list(self._targets.values()), {}
        for _, target in targets:
            with contextlib.suppress(Exception):
                await target.close()
