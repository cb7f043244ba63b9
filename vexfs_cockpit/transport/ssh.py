"""The real Target: commands in a guest over one persistent asyncssh connection.

Why it looks the way it does:
- Key exchange under TCG costs seconds, so one connection per VM is opened once
  and reused; it survives VM resets through :meth:`SshTarget.reconnect`.
- dropbear refuses sessions ("Session request failed") when too many are open on
  one connection, so channels pass a gate (default 4) and queue. A refusal anyway
  lowers the gate to what was open and retries once when that much is free.
- SSH cannot reliably signal a remote process, so each command carries a token
  in its environment (see ``quoting.py``) and a timeout SIGKILLs every tagged
  process through a second, short command.
- Guests built by the image builder have no sftp-server, so files travel through
  ``cat`` unless the guest offers SFTP.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import shlex
import time
import weakref
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vexfs_cockpit.engine.target import (
    Command,
    CommandFailed,
    CommandResult,
    TargetUnavailable,
    render_command,
)
from vexfs_cockpit.errors import ConfigError
from vexfs_cockpit.transport.asyncssh_import import asyncssh
from vexfs_cockpit.transport.output import (
    DEFAULT_MAX_OUTPUT,
    CappedOutput,
    LineSplitter,
    signal_exit_code,
)
from vexfs_cockpit.transport.quoting import (
    MAX_EXEC_BYTES,
    kill_command,
    new_token,
    stage_command,
    wrap_command,
)

log = logging.getLogger(__name__)

_CHUNK = 65536
SFTP_CLOSE_TIMEOUT_S = 5.0  # a session close the guest does not answer within this is abandoned
_KEY_PREFIXES = ("ssh-", "ecdsa-", "sk-", "rsa-")

# What every connection to a guest passes to asyncssh.connect, whatever the caller
# says: the user's ~/.ssh/config (``ForwardAgent yes``, a ProxyCommand, other keys)
# and their agent never reach a test guest (code under test runs there as root).
ISOLATED_CONNECT_OPTIONS: dict[str, Any] = {
    "config": [], "agent_path": None, "agent_forwarding": False, "x11_forwarding": False,
}


# A libvirt host that guests are tunnelled through is the user's own machine: their
# config, keys and agent may log in to it (as libvirt's qemu+ssh does), but nothing is
# forwarded to it, so a guest tunnelled through it can never reach the agent either.
HOST_CONNECT_OPTIONS: dict[str, Any] = {"agent_forwarding": False, "x11_forwarding": False}


async def connect_guest(host: str, port: int, **options: Any) -> asyncssh.SSHClientConnection:
    """``asyncssh.connect`` with ``ISOLATED_CONNECT_OPTIONS`` (one of the two asyncssh.connect
    calls here; ``connect_host`` is the other)."""
    return await asyncssh.connect(host, port, **{**options, **ISOLATED_CONNECT_OPTIONS})


async def connect_host(host: str, port: int, **options: Any) -> asyncssh.SSHClientConnection:
    """``asyncssh.connect`` to a libvirt host (``hosts[].ssh_jump``) with ``HOST_CONNECT_OPTIONS``."""
    return await asyncssh.connect(host, port, **{**options, **HOST_CONNECT_OPTIONS})


def known_host_pattern(host: str, port: int) -> str:
    """The known_hosts host pattern for exactly ``host:port`` (OpenSSH's ``[host]:port``)."""
    return host if port == 22 else f"[{host}]:{port}"


def pinned_known_hosts(host: str, port: int, keys: Sequence[asyncssh.SSHKey | str]) -> str:
    """known_hosts text trusting ``keys`` for ``host:port`` only (never host on any port:
    a VM's key must not vouch for whatever else listens on loopback)."""
    pattern = known_host_pattern(host, port)
    lines = []
    for key in keys:
        text = key.export_public_key().decode() if isinstance(key, asyncssh.SSHKey) else key
        alg, blob = text.split()[:2]
        lines.append(f"{pattern} {alg} {blob}\n")
    return "".join(lines)


# What a caller may pass as trusted host keys: a known_hosts object or file, one
# public key (text or .pub file), a list of public keys, or asyncssh's own forms.
# Bare keys (and asyncssh's (keys, CA keys, revoked keys) tuple) are pinned to the
# target's own host:port; a known_hosts file or object says its own patterns.
KnownHostsSpec = (
    asyncssh.SSHKnownHosts
    | str
    | bytes
    | Path
    | Sequence[asyncssh.SSHKey | str | bytes | Path]
    | Callable[..., Any]
    | None
)
ClientKeysSpec = str | Path | asyncssh.SSHKey | Sequence[str | Path | asyncssh.SSHKey]


@dataclass(slots=True)
class _Box:
    """The channel a guarded body opened, so the guard can close and kill it."""

    proc: asyncssh.SSHClientProcess[bytes] | None = None


_REFUSAL_BACKOFF_S = (0.05, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0)  # ~4.5 s, then the refusal is reported


class _ChannelGate:
    """A semaphore over one connection's channels (dropbear caps sessions).

    ``release`` is synchronous on purpose: an awaiting release (a Condition's lock)
    is a cancellation point, and a test cancelled right there (its guard fired)
    leaked the slot for good; four leaks and every later command queued for
    ``queue_timeout_s``. A slot is handed to the first waiter directly (FIFO).
    """

    def __init__(self, limit: int):
        self.limit = limit
        self.in_use = 0  # slots held: channels open, being opened, or between channels
        self.opening = 0  # slot holders waiting for the server to accept a channel
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    async def acquire(self, timeout: float) -> None:
        if self.in_use < self.limit and not self._waiters:
            self.in_use += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            async with asyncio.timeout(timeout):
                await fut
        except BaseException:
            if fut.done() and not fut.cancelled():
                self.release()  # granted as we gave up: hand it on
            else:
                fut.cancel()
                with contextlib.suppress(ValueError):  # release() may have dropped it already
                    self._waiters.remove(fut)
            raise

    def release(self) -> None:
        self.in_use -= 1
        while self._waiters and self.in_use < self.limit:
            fut = self._waiters.popleft()
            if not fut.done():
                self.in_use += 1  # the slot is the waiter's from here on
                fut.set_result(None)


class SshTarget:
    """A Target over SSH. ``await connect()`` once; every call reuses the connection."""

    def __init__(
        self,
        name: str,
        host: str,
        port: int,
        username: str,
        client_keys: ClientKeysSpec,
        known_hosts: KnownHostsSpec,
        *,
        max_channels: int = 4,
        connect_timeout: float = 20.0,
        reconnect_deadline_s: float = 30.0,
        keepalive_interval: float = 10.0,
        keepalive_count_max: int = 3,
        queue_timeout_s: float = 600.0,
        kill_timeout_s: float = 10.0,
        use_sftp: bool = True,
        max_output: int = DEFAULT_MAX_OUTPUT,
        insecure: bool = False,
        tunnel: Callable[[], Awaitable[asyncssh.SSHClientConnection]] | None = None,
    ):
        if max_channels < 1:
            raise ConfigError(f"SSH target {name}: max_channels must be >= 1, got {max_channels}")
        self.name = name
        self.host = host
        self.port = port
        self.username = username
        self._client_keys = _load_client_keys(name, client_keys)
        self._known_hosts = _trusted_host_keys(name, known_hosts, insecure, host, port)
        self.connect_timeout = connect_timeout
        self.reconnect_deadline_s = reconnect_deadline_s
        self.keepalive_interval = keepalive_interval
        self.keepalive_count_max = keepalive_count_max
        self.queue_timeout_s = queue_timeout_s
        self.kill_timeout_s = kill_timeout_s
        self.max_output = max_output
        self._use_sftp = use_sftp
        # A guest on another libvirt host: its port is on that host's loopback, reached
        # through this SSH connection to the host (transport/jump.py).
        self._tunnel = tunnel
        self._gate = _ChannelGate(max_channels)
        self._conn: asyncssh.SSHClientConnection | None = None
        self._conn_lock = asyncio.Lock()
        self._sftp_ok: bool | None = None  # per connection; None = not probed yet
        # which connection a process runs on (its channel forgets once closed)
        self._proc_conn: weakref.WeakKeyDictionary[Any, asyncssh.SSHClientConnection] = weakref.WeakKeyDictionary()
        self._closed = False

    # ---- connection -------------------------------------------------------------------

    @property
    def where(self) -> str:
        return f"VM {self.name} ({self.username}@{self.host}:{self.port})"

    @property
    def is_connected(self) -> bool:
        return self._conn is not None and not self._conn.is_closed()

    @property
    def channel_limit(self) -> int:
        """Concurrent channels allowed now (lower than max_channels after a refusal)."""
        return self._gate.limit

    async def connect(self) -> None:
        """Connect, retrying with exponential backoff for up to reconnect_deadline_s."""
        self._closed = False
        await self._live_conn()

    async def reconnect(self) -> None:
        """Drop the connection (e.g. the VM was reset) and connect again."""
        async with self._conn_lock:
            await self._drop_conn()
        await self.connect()

    async def close(self) -> None:
        self._closed = True
        async with self._conn_lock:
            await self._drop_conn()

    async def __aenter__(self) -> SshTarget:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def _drop_conn(self) -> None:
        conn, self._conn, self._sftp_ok = self._conn, None, None
        if conn is not None:
            conn.close()
            # A hung guest never answers the close; don't wait for it forever.
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.wait_closed(), 5.0)

    async def _live_conn(self) -> asyncssh.SSHClientConnection:
        if self._closed:
            raise TargetUnavailable(f"{self.where}: SSH target was closed; call connect() first")
        conn = self._conn
        if conn is not None and not conn.is_closed():
            return conn
        async with self._conn_lock:
            if self._conn is not None and not self._conn.is_closed():
                return self._conn
            await self._drop_conn()
            self._conn = await self._connect_with_backoff()
            return self._conn

    async def _connect_with_backoff(self) -> asyncssh.SSHClientConnection:
        started = time.monotonic()
        deadline = started + self.reconnect_deadline_s
        delay = 0.25
        attempts = 0
        while True:
            attempts += 1
            budget = max(1.0, min(self.connect_timeout, deadline - time.monotonic()))
            try:
                conn = await asyncio.wait_for(self._connect_once(), budget)
                log.debug("%s: connected after %d attempt(s), %.2fs", self.where, attempts,
                          time.monotonic() - started)
                return conn
            except asyncssh.HostKeyNotVerifiable as err:
                raise TargetUnavailable(
                    f"{self.where}: host key not trusted ({_reason(err)}); the guest was not built "
                    "with the host key passed as known_hosts: rebuild the image or pass its host key"
                ) from None
            except asyncssh.PermissionDenied as err:
                raise TargetUnavailable(
                    f"{self.where}: SSH login refused ({_reason(err)}); check the client key "
                    "(fleet.ssh_key_path) matches the guest's authorized_keys"
                ) from None
            except (OSError, asyncssh.Error, TimeoutError) as err:
                last = _reason(err) or type(err).__name__
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TargetUnavailable(
                    f"{self.where}: no SSH after {attempts} attempts in "
                    f"{time.monotonic() - started:.0f}s (last: {last}); is the guest up and its sshd running?"
                )
            await asyncio.sleep(min(delay, remaining))  # backoff between attempts, nothing to wait on
            delay = min(delay * 2, 4.0)

    async def _connect_once(self) -> asyncssh.SSHClientConnection:
        via = {"tunnel": await self._tunnel()} if self._tunnel is not None else {}
        return await connect_guest(
            self.host,
            self.port,
            **via,
            username=self.username,
            client_keys=self._client_keys,
            known_hosts=self._known_hosts,
            password=None,
            kbdint_auth=False,
            preferred_auth="publickey",
            keepalive_interval=self.keepalive_interval,
            keepalive_count_max=self.keepalive_count_max,
            connect_timeout=self.connect_timeout,
        )

    def _lost(self, err: BaseException, what: str, conn: Any) -> TargetUnavailable:
        """Forget the connection that failed (the next call reconnects) and say what happened.
        ``conn`` is the failed one, or a process on it: a newer connection is left alone."""
        if isinstance(conn, asyncssh.SSHClientProcess):
            conn = self._proc_conn.get(conn)
        if conn is not None:
            conn.close()
            if self._conn is conn:
                self._conn = None
        return TargetUnavailable(f"{self.where}: SSH connection lost while {what} ({_reason(err)})")

    # ---- channels ---------------------------------------------------------------------

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        try:
            await self._gate.acquire(self.queue_timeout_s)
        except TimeoutError:
            raise TargetUnavailable(
                f"{self.where}: all {self._gate.limit} SSH channels stayed busy for "
                f"{self.queue_timeout_s:g}s; a stream was probably never closed"
            ) from None
        try:
            yield
        finally:
            self._gate.release()

    async def _open(
        self, remote: str, *, merge: bool, what: str, token: str | None = None
    ) -> asyncssh.SSHClientProcess[bytes]:
        """Start ``remote`` on a channel; the caller holds a slot. A wrapped command
        (``token``) is released with its go line once the session is confirmed."""
        conn = await self._live_conn()
        gate = self._gate
        refusals = 0
        while True:
            gate.opening += 1
            try:
                proc = await conn.create_process(
                    remote, encoding=None, stderr=asyncssh.STDOUT if merge else asyncssh.PIPE
                )
            except asyncssh.ChannelOpenError as err:
                accepted = gate.in_use - gate.opening  # channels the server did take
                gate.opening -= 1
                if conn.is_closed():
                    raise self._lost(err, what, conn) from None
                refusals += 1
                if refusals > len(_REFUSAL_BACKOFF_S):
                    raise TargetUnavailable(
                        f"{self.where}: SSH session refused {refusals} times while {what} "
                        f"({_reason(err)}, {accepted} other channel(s) open)"
                    ) from None
                # Refusals here are transient and not about the count (seen with one other
                # channel open), so the cap stays; the go line makes a retry safe.
                log.info("%s: session refused with %d other channel(s) open (%s); retrying",
                         self.where, accepted, _reason(err))
                await asyncio.sleep(_REFUSAL_BACKOFF_S[refusals - 1])
                continue
            except (OSError, asyncssh.Error) as err:
                gate.opening -= 1
                raise self._lost(err, what, conn) from None
            except BaseException:
                gate.opening -= 1
                raise
            gate.opening -= 1
            if token is not None:
                proc.stdin.write(b"\n")  # the go line: the session is confirmed (quoting.wrap_command)
            self._proc_conn[proc] = conn
            return proc

    async def _kill(self, token: str) -> None:
        """SIGKILL every process of a command we gave up on; the caller holds a slot.
        Bounded: a hung guest must not hang the caller too."""
        try:
            async with asyncio.timeout(self.kill_timeout_s):
                proc = await self._open(kill_command(token), merge=True, what="killing a timed-out command")
                await proc.stdout.read()
                await proc.wait_closed()
        except (TargetUnavailable, TimeoutError, OSError, asyncssh.Error) as err:
            log.warning("%s: could not kill remote command %s: %s", self.where, token, _reason(err))

    async def _abandon(self, proc: asyncssh.SSHClientProcess[bytes] | None, token: str) -> None:
        """Close a channel we stopped waiting for and kill what it started."""
        if proc is not None:
            proc.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(proc.wait_closed(), 2.0)
        await self._kill(token)

    def _exit_code(self, proc: asyncssh.SSHClientProcess[bytes], what: str) -> int:
        if proc.exit_signal is not None:
            return signal_exit_code(proc.exit_signal[0])
        if proc.exit_status is not None:
            return proc.exit_status
        conn = self._proc_conn.get(proc)
        if conn is None or conn.is_closed():
            raise self._lost(ConnectionError("channel closed without an exit status"), what, conn)
        return 255  # ssh's own "no status" code

    async def _remote_text(self, command: str, token: str) -> str:
        """The exec text for ``command``; long scripts go through a staged file first."""
        remote = wrap_command(command, token)
        if len(remote.encode()) <= MAX_EXEC_BYTES:
            return remote
        path = f"/tmp/.{token}.sh"
        proc = await self._open(f"cat > {shlex.quote(path)}", merge=True, what="staging a long command")
        try:
            proc.stdin.write(command.encode())
            proc.stdin.write_eof()
            async with asyncio.timeout(self.kill_timeout_s + len(command) / 65536):
                out = await proc.stdout.read()
                await proc.wait_closed()
        except (OSError, asyncssh.Error) as err:
            raise self._lost(err, "staging a long command", proc) from None
        except TimeoutError:
            proc.close()
            raise TargetUnavailable(f"{self.where}: staging a {len(command)}-byte command in {path} timed out") from None
        if proc.exit_status != 0:
            raise TargetUnavailable(
                f"{self.where}: could not stage a {len(command)}-byte command in {path}: "
                f"{out.decode(errors='replace').strip()[:200]}"
            )
        return wrap_command(stage_command(path), token)

    # ---- one command under a deadline ---------------------------------------------------

    async def _guarded(
        self, token: str, timeout: float | None, what: str, box: _Box,
        body: Callable[[_Box], Awaitable[None]],
    ) -> bool:
        """Run ``body`` (which opens its channel into ``box``) within ``timeout``.

        The connection is made first, outside the deadline: an unreachable guest is
        TargetUnavailable after the reconnect budget, not a command timeout. Opening
        the channel is inside it: on a hung guest the open itself never completes.
        On timeout or cancellation the channel is closed and the command killed.
        Returns False on timeout.
        """
        await self._live_conn()
        finished = False
        try:
            await asyncio.wait_for(body(box), timeout)
            finished = True
        except TimeoutError:
            pass
        except TargetUnavailable:
            finished = True  # nothing reachable to kill
            raise
        except (OSError, asyncssh.Error) as err:
            finished = True
            raise self._lost(err, what, box.proc) from None
        finally:
            if not finished:
                await asyncio.shield(self._abandon(box.proc, token))
        return finished

    # ---- Target API -------------------------------------------------------------------

    async def run(
        self,
        cmd: Command,
        *,
        timeout: float = 60.0,
        input: str | bytes | None = None,
        check: bool = False,
    ) -> CommandResult:
        command = render_command(cmd)
        what = f"running `{_short(command)}`"
        data = input.encode() if isinstance(input, str) else input
        out = CappedOutput(self.max_output)
        token = new_token()
        box = _Box()

        async def body(box: _Box) -> None:
            box.proc = proc = await self._open(await self._remote_text(command, token), merge=True, what=what, token=token)
            feeder = asyncio.create_task(_feed(proc, data))
            try:
                while chunk := await proc.stdout.read(_CHUNK):
                    out.add(chunk)
                await proc.wait_closed()
            finally:
                feeder.cancel()
                with contextlib.suppress(asyncio.CancelledError, OSError, asyncssh.Error):
                    await feeder

        async with self._slot():
            started = time.monotonic()
            finished = await self._guarded(token, timeout, what, box, body)
            exit_code = self._exit_code(box.proc, what) if finished and box.proc else None
            duration = time.monotonic() - started
        res = CommandResult(command, exit_code, out.text(), duration, not finished)
        if check and not res.ok:
            raise CommandFailed(res)
        return res

    async def stream(self, cmd: Command, *, timeout: float | None = None) -> AsyncIterator[str]:
        """Yield output lines as they arrive. Close the generator (``contextlib.aclosing``)
        when done early: that kills the remote command and frees its channel."""
        command = render_command(cmd)
        what = f"streaming `{_short(command)}`"
        token = new_token()
        deadline = None if timeout is None else time.monotonic() + timeout
        split = LineSplitter()

        def left() -> float | None:
            if deadline is None:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError
            return remaining

        async with self._slot():
            await self._live_conn()  # outside the deadline, as in _guarded
            proc: asyncssh.SSHClientProcess[bytes] | None = None
            finished = False
            try:
                try:
                    proc = await asyncio.wait_for(
                        self._open(await self._remote_text(command, token), merge=True, what=what, token=token), left()
                    )
                    proc.stdin.write_eof()
                    while chunk := await asyncio.wait_for(proc.stdout.read(_CHUNK), left()):
                        for line in split.feed(chunk):
                            yield line
                except TimeoutError:
                    raise TimeoutError(f"`{_short(command)}` on {self.name} still running after {timeout:g}s") from None
                except (OSError, asyncssh.Error) as err:
                    finished = True
                    raise self._lost(err, what, proc) from None
                for line in split.flush():
                    yield line
                with contextlib.suppress(OSError, asyncssh.Error):
                    await proc.wait_closed()
                finished = True
            except TargetUnavailable:
                finished = True
                raise
            finally:
                if not finished:
                    await asyncio.shield(self._abandon(proc, token))

    async def put(self, local: Path, remote: str, *, mode: int | None = None, timeout: float | None = None) -> None:
        """Copy a host file into the guest, bit-exact. The exec bits of ``local`` are kept
        unless ``mode`` is given. Raises CommandFailed if the guest cannot write it."""
        local = Path(local)
        st = local.stat()
        mode = mode if mode is not None else (st.st_mode & 0o777 if st.st_mode & 0o111 else None)
        timeout = timeout if timeout is not None else _copy_timeout(st.st_size)
        label = f"put {local} -> {remote}"
        started = time.monotonic()
        async with self._slot():
            if await self._sftp_available():
                await self._sftp_copy(label, started, lambda s: s.put(str(local), remote), timeout)
                if mode is not None:
                    await self._sftp_copy(label, started, lambda s: s.chmod(remote, mode), timeout)
                return
            command = f"cat > {shlex.quote(remote)}"
            if mode is not None:
                command += f" && chmod {mode:o} {shlex.quote(remote)}"
            token = new_token()
            out = CappedOutput(64 * 1024)

            async def body(box: _Box) -> None:
                box.proc = proc = await self._open(await self._remote_text(command, token), merge=True, what=label, token=token)
                with local.open("rb") as f:
                    while chunk := f.read(_CHUNK):
                        proc.stdin.write(chunk)
                        await proc.stdin.drain()
                proc.stdin.write_eof()
                while chunk := await proc.stdout.read(_CHUNK):
                    out.add(chunk)
                await proc.wait_closed()

            await self._copy(token, label, body, out, started, timeout)

    async def get(self, remote: str, local: Path, *, timeout: float | None = None) -> None:
        """Copy a guest file to the host, bit-exact (written to a temp name, then renamed)."""
        local = Path(local)
        timeout = timeout if timeout is not None else _copy_timeout(0)
        label = f"get {remote} -> {local}"
        started = time.monotonic()
        token = new_token()
        part = local.with_name(f".{local.name}.{token[-8:]}.part")
        try:
            async with self._slot():
                if await self._sftp_available():
                    await self._sftp_copy(label, started, lambda s: s.get(remote, str(part)), timeout)
                else:
                    err = CappedOutput(64 * 1024)

                    async def body(box: _Box) -> None:
                        command = await self._remote_text(f"cat {shlex.quote(remote)}", token)
                        box.proc = proc = await self._open(command, merge=False, what=label, token=token)
                        proc.stdin.write_eof()

                        async def errors() -> None:
                            while chunk := await proc.stderr.read(_CHUNK):
                                err.add(chunk)

                        err_task = asyncio.create_task(errors())
                        try:
                            with part.open("wb") as f:
                                while chunk := await proc.stdout.read(_CHUNK):
                                    f.write(chunk)
                        finally:
                            with contextlib.suppress(asyncio.CancelledError, OSError, asyncssh.Error):
                                await err_task
                        await proc.wait_closed()

                    await self._copy(token, label, body, err, started, timeout)
            os.replace(part, local)
        finally:
            part.unlink(missing_ok=True)

    # ---- copies -----------------------------------------------------------------------

    async def _copy(
        self, token: str, label: str, body: Callable[[_Box], Awaitable[None]],
        out: CappedOutput, started: float, timeout: float,
    ) -> None:
        box = _Box()
        if not await self._guarded(token, timeout, label, box, body):
            raise CommandFailed(CommandResult(label, None, out.text(), time.monotonic() - started, True))
        code = self._exit_code(box.proc, label) if box.proc else 255
        if code != 0:
            raise CommandFailed(CommandResult(label, code, out.text(), time.monotonic() - started))

    async def _sftp_available(self) -> bool:
        """Probe once per connection whether the guest runs an SFTP server."""
        if not self._use_sftp:
            return False
        conn = await self._live_conn()
        if self._sftp_ok is None:
            try:
                async with asyncio.timeout(self.kill_timeout_s):
                    await _close_sftp(await conn.start_sftp_client())
                self._sftp_ok = True
            except (TimeoutError, OSError, asyncssh.Error) as err:
                if conn.is_closed():
                    raise self._lost(err, "probing for SFTP", conn) from None
                log.debug("%s: no SFTP (%s); copying through cat", self.where, _reason(err))
                self._sftp_ok = False
        return self._sftp_ok

    async def _sftp_copy(
        self, label: str, started: float, op: Callable[[asyncssh.SFTPClient], Any], timeout: float
    ) -> None:
        conn = await self._live_conn()
        try:
            async with asyncio.timeout(timeout):
                sftp = await conn.start_sftp_client()
                try:
                    await op(sftp)
                finally:
                    await _close_sftp(sftp)
        except TimeoutError:
            raise CommandFailed(CommandResult(label, None, "", time.monotonic() - started, True)) from None
        except asyncssh.SFTPError as err:
            raise CommandFailed(CommandResult(label, 1, _reason(err), time.monotonic() - started)) from None
        except (OSError, asyncssh.Error) as err:
            raise self._lost(err, label, conn) from None


async def _close_sftp(sftp: asyncssh.SFTPClient) -> None:
    """End an SFTP session without waiting on the guest for ever: ``async with`` waits
    for the close unbounded, after its timeout already fired (a hung guest never answers)."""
    sftp.exit()
    with contextlib.suppress(Exception):
        await asyncio.wait_for(asyncio.shield(sftp.wait_closed()), SFTP_CLOSE_TIMEOUT_S)


async def _feed(proc: asyncssh.SSHClientProcess[bytes], data: bytes | None) -> None:
    """Send stdin (if any) then EOF, so commands that read stdin don't wait forever."""
    with contextlib.suppress(OSError, asyncssh.Error):
        if data:
            for i in range(0, len(data), _CHUNK):
                proc.stdin.write(data[i : i + _CHUNK])
                await proc.stdin.drain()
        proc.stdin.write_eof()


def _copy_timeout(size: int) -> float:
    # TCG guests move a few MB/s over SSH; allow 256 KiB/s plus a minute.
    return 60.0 + size / (256 * 1024)


def _short(command: str, limit: int = 80) -> str:
    line = command.strip().splitlines()[0] if command.strip() else command
    return line if len(line) <= limit and "\n" not in command.strip() else line[:limit] + "…"


def _reason(err: BaseException) -> str:
    reason = getattr(err, "reason", None) or str(err) or type(err).__name__
    return " ".join(str(reason).split())


def _load_client_keys(name: str, spec: ClientKeysSpec) -> list[asyncssh.SSHKeyPair]:
    items = [spec] if isinstance(spec, (str, Path, asyncssh.SSHKey)) else list(spec)
    if not items:
        raise ConfigError(f"SSH target {name}: no client key given; set fleet.ssh_key_path or build the image")
    try:
        return asyncssh.load_keypairs([str(k) if isinstance(k, Path) else k for k in items])
    except (OSError, asyncssh.KeyImportError) as err:
        raise ConfigError(
            f"SSH target {name}: cannot load client key {items!r}: {err}; fix fleet.ssh_key_path or rebuild the image"
        ) from None


def _trusted_host_keys(name: str, spec: KnownHostsSpec, insecure: bool, host: str, port: int) -> Any:
    """Normalise ``known_hosts`` to what asyncssh takes, bare keys pinned to ``host:port``.
    ``None`` only with insecure=True."""
    if spec is None:
        if insecure:
            return None
        raise ConfigError(
            f"SSH target {name}: no trusted host key given; pass the image's host public key "
            "(known_hosts=...) or insecure=True for throwaway tests"
        )
    if isinstance(spec, tuple) and len(spec) == 3 and all(
        isinstance(part, (list, tuple)) and all(isinstance(k, asyncssh.SSHKey) for k in part) for part in spec
    ):
        trusted, cas, revoked = spec
        pattern = known_host_pattern(host, port)
        text = pinned_known_hosts(host, port, trusted)
        text += "".join(f"@cert-authority {ln}" for ln in pinned_known_hosts(host, port, cas).splitlines(True))
        text += "".join(f"@revoked {ln}" for ln in pinned_known_hosts(host, port, revoked).splitlines(True))
        if not text:
            raise ConfigError(f"SSH target {name}: no trusted host key given for {pattern}")
        return asyncssh.import_known_hosts(text)
    if isinstance(spec, (asyncssh.SSHKnownHosts, tuple)) or callable(spec):
        return spec
    try:
        if isinstance(spec, bytes):
            spec = spec.decode()
        if isinstance(spec, str) and spec.lstrip().startswith(_KEY_PREFIXES):
            return asyncssh.import_known_hosts(pinned_known_hosts(host, port, [_one_host_key(spec)]))
        if isinstance(spec, (str, Path)):
            text = Path(spec).read_text()
            lines = [ln.strip() for ln in text.splitlines() if ln.strip() and not ln.lstrip().startswith("#")]
            if lines and all(ln.startswith(_KEY_PREFIXES) for ln in lines):
                keys = [asyncssh.import_public_key(ln) for ln in lines]
                return asyncssh.import_known_hosts(pinned_known_hosts(host, port, keys))
            return asyncssh.import_known_hosts(text)
        keys = [_one_host_key(k) for k in spec]
        if not keys:
            raise ValueError("empty list of host keys")
        return asyncssh.import_known_hosts(pinned_known_hosts(host, port, keys))
    except (OSError, ValueError, asyncssh.KeyImportError) as err:
        raise ConfigError(
            f"SSH target {name}: cannot use host key {spec!r}: {err}; pass the image's host public key"
        ) from None


def _one_host_key(key: asyncssh.SSHKey | str | bytes | Path) -> asyncssh.SSHKey:
    if isinstance(key, asyncssh.SSHKey):
        return key
    if isinstance(key, bytes):
        key = key.decode()
    if isinstance(key, str) and key.lstrip().startswith(_KEY_PREFIXES):
        return asyncssh.import_public_key(key.strip())
    return asyncssh.read_public_key(str(key))
