"""A Target on this host: ``sh -c`` in asyncio subprocesses.

Used by engine tests and for host-side work (building the module against the
guest's headers). Never a stand-in for a guest: nothing here pretends to be a VM.
Each command leads its own session, so a timeout kills it and every child it
started (``make`` -> ``gcc`` ...) with one ``killpg``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import time
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

from vexfs_cockpit.engine.target import Command, CommandFailed, CommandResult, render_command
from vexfs_cockpit.transport.output import DEFAULT_MAX_OUTPUT, CappedOutput, LineSplitter, shell_exit_code

_CHUNK = 65536


class LocalTarget:
    def __init__(
        self,
        name: str = "host",
        *,
        cwd: Path | None = None,
        env: Mapping[str, str] | None = None,
        max_output: int = DEFAULT_MAX_OUTPUT,
    ):
        self.name = name
        self.cwd = cwd
        self.env = dict(env) if env is not None else None
        self._max_output = max_output

    async def _spawn(self, command: str, *, stdin: bool) -> asyncio.subprocess.Process:
        return await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", command,
            stdin=asyncio.subprocess.PIPE if stdin else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            cwd=self.cwd,
            env=self.env,
            start_new_session=True,
        )

    async def run(
        self,
        cmd: Command,
        *,
        timeout: float = 60.0,
        input: str | bytes | None = None,
        check: bool = False,
    ) -> CommandResult:
        command = render_command(cmd)
        started = time.monotonic()
        proc = await self._spawn(command, stdin=input is not None)
        out = CappedOutput(self._max_output)

        async def feed() -> None:
            assert proc.stdin is not None
            data = input.encode() if isinstance(input, str) else input
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(data or b"")
                await proc.stdin.drain()
            proc.stdin.close()

        async def drive() -> int:
            assert proc.stdout is not None
            feeder = asyncio.create_task(feed()) if input is not None else None
            try:
                while chunk := await proc.stdout.read(_CHUNK):
                    out.add(chunk)
                return await proc.wait()
            finally:
                if feeder is not None:
                    feeder.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await feeder

        timed_out, finished = False, False
        exit_code: int | None = None
        try:
            exit_code = shell_exit_code(await asyncio.wait_for(drive(), timeout))
            finished = True
        except TimeoutError:
            timed_out = True
        finally:
            if not finished:  # timed out or cancelled from outside: leave nothing behind
                await _kill_group(proc)
        res = CommandResult(command, exit_code, out.text(), time.monotonic() - started, timed_out)
        if check and not res.ok:
            raise CommandFailed(res)
        return res

    async def stream(self, cmd: Command, *, timeout: float | None = None) -> AsyncIterator[str]:
        command = render_command(cmd)
        deadline = None if timeout is None else time.monotonic() + timeout
        proc = await self._spawn(command, stdin=False)
        assert proc.stdout is not None
        split = LineSplitter()
        finished = False
        try:
            while True:
                remaining = None if deadline is None else deadline - time.monotonic()
                if remaining is not None and remaining <= 0:
                    raise TimeoutError(f"`{command}` on {self.name} still running after {timeout:g}s")
                try:
                    chunk = await asyncio.wait_for(proc.stdout.read(_CHUNK), remaining)
                except TimeoutError:
                    raise TimeoutError(f"`{command}` on {self.name} still running after {timeout:g}s") from None
                if not chunk:
                    break
                for line in split.feed(chunk):
                    yield line
            for line in split.flush():
                yield line
            await proc.wait()
            finished = True
        finally:
            if not finished:
                await _kill_group(proc)

    async def put(self, local: Path, remote: str) -> None:
        await asyncio.to_thread(shutil.copy2, local, remote)

    async def get(self, remote: str, local: Path) -> None:
        await asyncio.to_thread(shutil.copy2, remote, local)


async def _kill_group(proc: asyncio.subprocess.Process) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)  # pid == pgid: start_new_session=True
    await proc.wait()
