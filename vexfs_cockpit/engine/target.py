"""What a domain acts on: a ``Target`` runs commands, streams output and copies files.

The SSH-backed target (``transport/ssh.py``) is the real one; ``transport/local.py``
exists for engine tests only. Domains get a ``RecordingTarget`` so that every
command they run lands in the running test's evidence without them asking.
"""

from __future__ import annotations

import contextlib
import contextvars
import shlex
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NoReturn, Protocol, runtime_checkable

from vexfs_cockpit.engine.results import CommandRecord, Evidence, tail
from vexfs_cockpit.errors import InfraError

Command = str | Sequence[str]


def render_command(cmd: Command) -> str:
    """A string command is shell text as written; a sequence is quoted word by word."""
    return cmd if isinstance(cmd, str) else shlex.join(str(c) for c in cmd)


@dataclass(slots=True)
class CommandResult:
    cmd: str
    exit_code: int | None  # None when killed by the timeout
    output: str  # stdout and stderr interleaved, as a terminal would show them
    duration_s: float
    timed_out: bool = False

    @property
    def ok(self) -> bool:
        return self.exit_code == 0

    def first_line(self) -> str:
        return next((ln for ln in self.output.splitlines() if ln.strip()), "")


class CommandFailed(Exception):
    """Raised by ``run(..., check=True)``: a test failure, not an infrastructure one."""

    def __init__(self, result: CommandResult):
        self.result = result
        why = "timed out" if result.timed_out else f"exit {result.exit_code}"
        super().__init__(f"`{result.cmd}` {why}: {tail(result.output.strip(), 300)}")


class TargetUnavailable(InfraError):
    """The link to the target is gone (VM dead, SSH dropped and not back)."""


@runtime_checkable
class Target(Protocol):
    name: str

    async def run(
        self,
        cmd: Command,
        *,
        timeout: float = 60.0,
        input: str | bytes | None = None,
        check: bool = False,
    ) -> CommandResult: ...

    def stream(self, cmd: Command, *, timeout: float | None = None) -> AsyncIterator[str]:
        """Yield output lines as they come; the remote process is killed on exit/timeout."""
        ...

    async def put(self, local: Path, remote: str) -> None: ...

    async def get(self, remote: str, local: Path) -> None: ...


class NoGuestTarget:
    """The target of a domain before its VM exists (``DomainBase.prepare_host``): every
    guest operation is a programming error that names the domain, not a hang."""

    def __init__(self, domain: str):
        self.name = f"{domain} (no VM yet)"

    def _refuse(self, what: str) -> NoReturn:
        raise RuntimeError(f"{self.name}: {what} on the guest before it booted; prepare_host may only use ctx.host")

    async def run(self, cmd: Command, *, timeout: float = 60.0, input: str | bytes | None = None,
                  check: bool = False) -> CommandResult:
        self._refuse(f"ran {render_command(cmd)!r}")

    def stream(self, cmd: Command, *, timeout: float | None = None) -> AsyncIterator[str]:
        self._refuse(f"streamed {render_command(cmd)!r}")

    async def put(self, local: Path, remote: str) -> None:
        self._refuse(f"put {remote}")

    async def get(self, remote: str, local: Path) -> None:
        self._refuse(f"get {remote}")


# The evidence list of the test attempt running in this asyncio context. The runner
# sets it; tasks a test spawns inherit it (contextvars are copied into tasks).
current_evidence: contextvars.ContextVar[Evidence | None] = contextvars.ContextVar(
    "current_evidence", default=None
)


class RecordingTarget:
    """Wraps a Target and appends every command it runs to the current test's evidence."""

    def __init__(self, inner: Target):
        self.inner = inner
        self.name = inner.name

    def _record(self, rec: CommandRecord) -> None:
        ev = current_evidence.get()
        if ev is not None:
            ev.commands.append(rec)

    async def run(
        self,
        cmd: Command,
        *,
        timeout: float = 60.0,
        input: str | bytes | None = None,
        check: bool = False,
    ) -> CommandResult:
        started = time.monotonic()
        try:
            res = await self.inner.run(cmd, timeout=timeout, input=input, check=False)
        except TargetUnavailable as err:
            self._record(
                CommandRecord(render_command(cmd), None, time.monotonic() - started, str(err), target=self.name)
            )
            raise
        self._record(
            CommandRecord(res.cmd, res.exit_code, res.duration_s, tail(res.output), res.timed_out, self.name)
        )
        if check and not res.ok:
            raise CommandFailed(res)
        return res

    async def stream(self, cmd: Command, *, timeout: float | None = None) -> AsyncIterator[str]:
        started = time.monotonic()
        lines: list[str] = []
        exit_note = None
        try:
            # aclosing: leaving early closes the inner stream now, which kills the remote process.
            async with contextlib.aclosing(self.inner.stream(cmd, timeout=timeout)) as inner:
                async for line in inner:
                    lines.append(line)
                    if len(lines) > 400:
                        del lines[:200]
                    yield line
        except TimeoutError:
            exit_note = "timed out"
            raise
        finally:
            self._record(
                CommandRecord(
                    render_command(cmd), None, time.monotonic() - started,
                    tail("\n".join(lines)), exit_note is not None, self.name,
                )
            )

    async def put(self, local: Path, remote: str) -> None:
        started = time.monotonic()
        await self.inner.put(local, remote)
        self._record(CommandRecord(f"put {local} -> {remote}", 0, time.monotonic() - started, "", target=self.name))

    async def get(self, remote: str, local: Path) -> None:
        started = time.monotonic()
        await self.inner.get(remote, local)
        self._record(CommandRecord(f"get {remote} -> {local}", 0, time.monotonic() - started, "", target=self.name))
