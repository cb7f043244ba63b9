"""SshTarget against an in-process asyncssh server on 127.0.0.1 (no VM needed).

The server runs each exec request as a real ``sh -c`` subprocess on this host and
behaves like the guests' dropbear where it matters: the session child does not
lead a process group, exec requests beyond ``max_sessions`` concurrent ones or
longer than 9000 bytes are refused with "Session request failed", no signal
forwarding, and (optionally) no SFTP subsystem.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import re
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from vexfs_cockpit.engine.results import Evidence
from vexfs_cockpit.engine.target import (
    CommandFailed,
    RecordingTarget,
    Target,
    TargetUnavailable,
    current_evidence,
)
from vexfs_cockpit.errors import ConfigError
from vexfs_cockpit.transport.asyncssh_import import asyncssh
from vexfs_cockpit.transport.quoting import kill_command
from vexfs_cockpit.transport.ssh import SshTarget

DROPBEAR_MAX_CMD_LEN = 9000


@dataclass
class ServerStats:
    active: int = 0
    peak: int = 0
    refused: int = 0
    commands: list[str] = field(default_factory=list)


class _DropbearLikeProcess(asyncssh.SSHServerProcess):  # type: ignore[type-arg]
    def __init__(self, server: FakeGuest, sftp: bool):
        super().__init__(server.handle, asyncssh.SFTPServer if sftp else None, 3, False)
        self._guest = server

    def exec_requested(self, command: str) -> bool:
        stats = self._guest.stats
        if stats.active >= self._guest.max_sessions or len(command.encode()) > DROPBEAR_MAX_CMD_LEN:
            stats.refused += 1
            return False  # the client sees ChannelOpenError "Session request failed"
        stats.active += 1
        stats.peak = max(stats.peak, stats.active)
        stats.commands.append(command)
        return super().exec_requested(command)


class FakeGuest:
    """An SSH server whose commands run on this host. ``restart()`` keeps the port."""

    def __init__(self, host_key: asyncssh.SSHKey, client_key: asyncssh.SSHKey, *, max_sessions: int = 100,
                 sftp: bool = False, leader: bool = False):
        self.host_key = host_key
        self.client_key = client_key
        self.max_sessions = max_sessions
        self.sftp = sftp
        self.leader = leader  # session shell leads its own group (dropbear 2022.83, OpenSSH) or not (old dropbear)
        self.stats = ServerStats()
        self.frozen = asyncio.Event()  # set: channel opens are never answered, like a hung guest
        self.thaw = asyncio.Event()
        self.port = 0
        self._acceptor: asyncssh.SSHAcceptor | None = None
        self._conns: list[asyncssh.SSHServerConnection] = []
        self._procs: set[asyncio.subprocess.Process] = set()

    async def start(self) -> None:
        guest = self

        class _Server(asyncssh.SSHServer):
            def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
                guest._conns.append(conn)

            def begin_auth(self, username: str) -> bool:
                return True

            def session_requested(self) -> object:
                if guest.frozen.is_set():
                    async def later() -> asyncssh.SSHServerSession:  # type: ignore[type-arg]
                        await guest.thaw.wait()
                        return _DropbearLikeProcess(guest, guest.sftp)
                    return later()
                return _DropbearLikeProcess(guest, guest.sftp)

        self._acceptor = await asyncssh.create_server(
            _Server, "127.0.0.1", self.port,
            server_host_keys=[self.host_key],
            authorized_client_keys=asyncssh.import_authorized_keys(
                self.client_key.export_public_key().decode()
            ),
            encoding=None,
        )
        self.port = self._acceptor.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        self.thaw.set()
        """Stop listening and drop every connection, like a guest's sshd dying."""
        if self._acceptor is not None:
            self._acceptor.close()
            await self._acceptor.wait_closed()
            self._acceptor = None
        for conn in self._conns:
            conn.abort()
        self._conns.clear()

    async def kill_all(self) -> None:
        """Teardown only: reap what the dropped connections left running."""
        await self.stop()
        if self._procs:  # each tagged command's children too (they hold its pipes open)
            tokens = set(re.findall(r"vexfs-cockpit-[0-9a-f]{16}", " ".join(self.stats.commands)))
            for token in tokens:
                killer = await asyncio.create_subprocess_exec("sh", "-c", kill_command(token))
                await killer.wait()
        for proc in list(self._procs):
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()

    async def restart(self) -> None:
        await self.stop()
        await self.start()

    async def handle(self, process: asyncssh.SSHServerProcess) -> None:  # type: ignore[type-arg]
        try:
            await self._run(process)
        finally:
            self.stats.active -= 1

    async def _run(self, process: asyncssh.SSHServerProcess) -> None:  # type: ignore[type-arg]
        proc = await asyncio.create_subprocess_exec(
            "/bin/sh", "-c", process.command or "",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            start_new_session=self.leader,
        )
        assert proc.stdin and proc.stdout and proc.stderr
        self._procs.add(proc)

        async def pump_in() -> None:
            with contextlib.suppress(Exception):
                while data := await process.stdin.read(65536):
                    proc.stdin.write(data)
                    await proc.stdin.drain()
            with contextlib.suppress(Exception):
                proc.stdin.close()

        async def pump_out(src: asyncio.StreamReader, dst: asyncssh.SSHWriter) -> None:  # type: ignore[type-arg]
            with contextlib.suppress(Exception):
                while data := await src.read(65536):
                    dst.write(data)

        feeder = asyncio.create_task(pump_in())
        await asyncio.gather(pump_out(proc.stdout, process.stdout), pump_out(proc.stderr, process.stderr))
        rc = await proc.wait()
        self._procs.discard(proc)
        feeder.cancel()
        if rc < 0:
            import signal as _signal

            process.exit_with_signal(_signal.Signals(-rc).name.removeprefix("SIG"))
        else:
            process.exit(rc)


@pytest.fixture(scope="module")
def keys() -> tuple[asyncssh.SSHKey, asyncssh.SSHKey]:
    return asyncssh.generate_private_key("ssh-ed25519"), asyncssh.generate_private_key("ssh-ed25519")


@pytest.fixture(params=[False, True], ids=["member", "leader"])
async def guest(keys: tuple[asyncssh.SSHKey, asyncssh.SSHKey], request: pytest.FixtureRequest) -> AsyncIterator[FakeGuest]:
    g = FakeGuest(keys[0], keys[1], leader=request.param)
    await g.start()
    yield g
    await g.kill_all()


def make_target(g: FakeGuest, **kw: object) -> SshTarget:
    return SshTarget(
        "fake", "127.0.0.1", g.port, "root",
        client_keys=[g.client_key],
        known_hosts=[g.host_key.export_public_key().decode()],
        **kw,  # type: ignore[arg-type]
    )


@pytest.fixture
async def target(guest: FakeGuest) -> AsyncIterator[SshTarget]:
    t = make_target(guest)
    await t.connect()
    yield t
    await t.close()


def _dead(pid: int) -> bool:
    """Gone, or a zombie nobody reaps (this container's pid 1 does not reap)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


async def _wait_dead(pid: int, within: float = 5.0) -> bool:
    # SIGKILL delivery is asynchronous; poll /proc briefly with a deadline.
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if _dead(pid):
            return True
        await asyncio.sleep(0.02)
    return _dead(pid)


# ---- basics ---------------------------------------------------------------------------


async def test_satisfies_protocol(target: SshTarget) -> None:
    assert isinstance(target, Target)
    assert target.is_connected


async def test_round_trip_exit_code_and_interleaved_output(target: SshTarget) -> None:
    res = await target.run("echo out; echo err >&2; exit 3")
    assert res.exit_code == 3 and not res.ok and not res.timed_out
    assert res.output.split() == ["out", "err"]
    assert res.duration_s > 0


async def test_sequence_is_quoted_word_by_word(target: SshTarget) -> None:
    words = ["a b", "$HOME", "it's", "`id`", ";", "*", '"q"', "\\n"]
    res = await target.run(["printf", "%s\\n", *words])
    assert res.ok
    assert res.output.splitlines() == words


async def test_string_is_shell_text(target: SshTarget) -> None:
    res = await target.run("x=5; echo $((x * 2)) | tr 1 I")
    assert res.output.strip() == "I0"


async def test_input_feeds_stdin_and_eof_is_sent(target: SshTarget) -> None:
    res = await target.run("cat", input="hello\nworld\n")
    assert res.output == "hello\nworld\n"
    # no input: stdin is closed at once, so a reader of stdin does not hang
    res = await target.run("cat; echo done", timeout=5)
    assert res.output.strip() == "done" and not res.timed_out


async def test_bad_bytes_are_replaced_not_fatal(target: SshTarget) -> None:
    res = await target.run("printf 'a\\377b\\n'")
    assert res.output == "a\ufffdb\n"


async def test_signal_death_is_128_plus_n(target: SshTarget) -> None:
    res = await target.run("kill -9 $$")
    assert res.exit_code == 137


async def test_check_raises_command_failed(target: SshTarget) -> None:
    with pytest.raises(CommandFailed, match="exit 4"):
        await target.run("echo nope; exit 4", check=True)


async def test_long_command_is_staged_past_dropbears_limit(target: SshTarget, guest: FakeGuest) -> None:
    payload = "x" * 12000
    res = await target.run(f"echo {payload} | wc -c")
    assert res.ok, res.output
    assert res.output.strip() == str(len(payload) + 1)
    assert guest.stats.refused == 0
    assert all(len(c) <= DROPBEAR_MAX_CMD_LEN for c in guest.stats.commands)


# ---- timeouts kill the remote process ------------------------------------------------


async def test_timeout_kills_the_remote_process_tree(target: SshTarget, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    # a grandchild (sh -> sh -> sleep) must die too, not only the direct child
    cmd = f"sh -c 'sleep 300 & echo $! > {pidfile}; wait'"
    started = time.monotonic()
    res = await target.run(cmd, timeout=1.0)
    assert res.timed_out and res.exit_code is None
    assert time.monotonic() - started < 10
    pid = int(pidfile.read_text())
    assert await _wait_dead(pid), f"sleep {pid} survived the timeout"
    # the connection is still usable afterwards
    assert (await target.run("echo ok")).output == "ok\n"


async def test_timeout_kills_a_command_that_execs(target: SshTarget, tmp_path: Path) -> None:
    # `exec` replaces the tagged shell's argv; the exported token still finds it
    pidfile = tmp_path / "pid"
    res = await target.run(f"echo $$ > {pidfile}; exec sleep 300", timeout=1.0)
    assert res.timed_out
    assert await _wait_dead(int(pidfile.read_text()))


async def test_hung_guest_times_out_within_bounds(guest: FakeGuest) -> None:
    async with make_target(guest, kill_timeout_s=1.0) as t:
        guest.frozen.set()  # connection up, but no channel open is ever answered
        started = time.monotonic()
        res = await t.run("true", timeout=1.0)
        elapsed = time.monotonic() - started
        assert res.timed_out and res.exit_code is None
        assert elapsed < 5, elapsed  # timeout + bounded kill attempt, not a keepalive/TCP timeout
        with pytest.raises(TimeoutError):
            async for _ in t.stream("true", timeout=1.0):
                pass
        guest.frozen.clear()
        guest.thaw.set()
        assert (await t.run("echo thawed")).output == "thawed\n"


async def test_cancelling_run_kills_the_remote_process(target: SshTarget, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    task = asyncio.create_task(target.run(f"sleep 300 & echo $! > {pidfile}; wait", timeout=60))
    deadline = time.monotonic() + 10
    while not pidfile.exists() or not pidfile.read_text().strip():
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert await _wait_dead(int(pidfile.read_text()))


# ---- streaming -----------------------------------------------------------------------


async def test_stream_yields_lines_as_they_come(target: SshTarget, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    started = time.monotonic()
    got: list[tuple[str, float]] = []
    gen = target.stream(f"sleep 300 & echo $! > {pidfile}; echo first; echo second >&2; wait")
    async with contextlib.aclosing(gen):
        async for line in gen:
            got.append((line, time.monotonic() - started))
            if len(got) == 2:
                break
    assert sorted(g[0] for g in got) == ["first", "second"]  # stdout/stderr order is not guaranteed
    assert got[1][1] < 10  # arrived long before the command could end
    assert await _wait_dead(int(pidfile.read_text())), "closing the stream must kill the command"


async def test_recording_target_records_and_early_break_still_kills(target: SshTarget, tmp_path: Path) -> None:
    ev = Evidence()
    token = current_evidence.set(ev)
    try:
        rec = RecordingTarget(target)
        assert (await rec.run(["echo", "a b"])).output == "a b\n"
        pidfile = tmp_path / "pid"
        async for line in rec.stream(f"sleep 300 & echo $! > {pidfile}; echo first; wait"):
            assert line == "first"
            break  # no aclose: the generators are finalized by the event loop's hook
        assert await _wait_dead(int(pidfile.read_text())), "an abandoned stream must still kill its command"
    finally:
        current_evidence.reset(token)
    assert [c.cmd for c in ev.commands][0] == "echo 'a b'"
    assert ev.commands[0].exit_code == 0 and ev.commands[0].target == "fake"


async def test_stream_to_the_end_and_partial_last_line(target: SshTarget) -> None:
    lines = [ln async for ln in target.stream("printf 'a\\nb\\nc'")]
    assert lines == ["a", "b", "c"]


async def test_stream_timeout_raises_and_kills(target: SshTarget, tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    seen: list[str] = []
    with pytest.raises(TimeoutError):
        async for line in target.stream(f"echo a; sleep 300 & echo $! > {pidfile}; wait", timeout=1.0):
            seen.append(line)
    assert seen == ["a"]
    assert await _wait_dead(int(pidfile.read_text()))


# ---- concurrency ---------------------------------------------------------------------


async def test_channels_are_capped_and_queued(guest: FakeGuest) -> None:
    async with make_target(guest, max_channels=3) as t:
        results = await asyncio.gather(*(t.run(f"sleep 0.3; echo {i}") for i in range(9)))
    assert [r.output.strip() for r in results] == [str(i) for i in range(9)]
    assert guest.stats.peak == 3
    assert guest.stats.refused == 0


async def test_refused_sessions_are_retried_and_every_command_runs_once(guest: FakeGuest, tmp_path: Path) -> None:
    guest.max_sessions = 2  # the "guest" refuses a third concurrent exec, as dropbear did
    log = tmp_path / "ran"
    async with make_target(guest, max_channels=4) as t:
        results = await asyncio.gather(*(t.run(f"echo {i} >> {log}; sleep 0.3; echo {i}") for i in range(8)))
        assert all(r.ok for r in results), [r.output for r in results]
        assert t.channel_limit == 4  # refusals are retried, not taken as a smaller cap
    assert guest.stats.refused >= 1
    assert guest.stats.peak <= 2
    assert sorted(log.read_text().split()) == [str(i) for i in range(8)]  # none ran twice


async def test_queue_is_bounded(guest: FakeGuest) -> None:
    async with make_target(guest, max_channels=1, queue_timeout_s=0.5) as t:
        gen = t.stream("sleep 300")
        first = asyncio.create_task(gen.__anext__())
        while t._gate.in_use == 0:  # wait until the stream holds the only channel
            await asyncio.sleep(0.01)
        with pytest.raises(TargetUnavailable, match="channels stayed busy"):
            await t.run("true")
        first.cancel()
        with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
            await first
        await gen.aclose()


# ---- files ---------------------------------------------------------------------------


@pytest.mark.parametrize("sftp", [False, True], ids=["cat", "sftp"])
async def test_put_get_binary_round_trip(keys: tuple[asyncssh.SSHKey, asyncssh.SSHKey], tmp_path: Path,
                                         sftp: bool) -> None:
    g = FakeGuest(*keys, sftp=sftp)
    await g.start()
    try:
        blob = os.urandom(1024 * 1024) + bytes(range(256)) + b"\r\n\x00\xff"
        src, remote, back = tmp_path / "src.bin", tmp_path / "remote.bin", tmp_path / "back.bin"
        src.write_bytes(blob)
        async with make_target(g) as t:
            await t.put(src, str(remote))
            assert hashlib.sha256(remote.read_bytes()).hexdigest() == hashlib.sha256(blob).hexdigest()
            await t.get(str(remote), back)
            assert t._sftp_ok is sftp
        assert hashlib.sha256(back.read_bytes()).hexdigest() == hashlib.sha256(blob).hexdigest()
        assert not list(tmp_path.glob(".*.part"))
    finally:
        await g.kill_all()


async def test_put_keeps_exec_bit(target: SshTarget, tmp_path: Path) -> None:
    src = tmp_path / "tool"
    src.write_bytes(b"#!/bin/sh\necho tool-ran\n")
    src.chmod(0o755)
    dst = tmp_path / "remote-tool"
    await target.put(src, str(dst))
    assert (await target.run(str(dst))).output == "tool-ran\n"


async def test_get_missing_file_fails_and_leaves_nothing(target: SshTarget, tmp_path: Path) -> None:
    local = tmp_path / "never"
    with pytest.raises(CommandFailed, match="No such file"):
        await target.get(str(tmp_path / "missing"), local)
    assert not local.exists()
    assert list(tmp_path.iterdir()) == []


async def test_put_to_unwritable_place_fails(target: SshTarget, tmp_path: Path) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    with pytest.raises(CommandFailed):
        await target.put(src, str(tmp_path / "no" / "such" / "dir" / "f"))


# ---- connection loss and reconnect ---------------------------------------------------


async def test_reconnects_after_the_server_restarts(guest: FakeGuest) -> None:
    async with make_target(guest, reconnect_deadline_s=20) as t:
        assert (await t.run("echo one")).output == "one\n"
        await guest.stop()
        deadline = time.monotonic() + 5
        while t.is_connected:  # the client notices the dropped TCP connection
            assert time.monotonic() < deadline
            await asyncio.sleep(0.01)
        pending = asyncio.create_task(t.run("echo two"))  # retries with backoff meanwhile
        await guest.start()
        res = await pending
        assert res.output == "two\n"
        assert t.is_connected


async def test_connection_lost_mid_command_is_target_unavailable(guest: FakeGuest) -> None:
    async with make_target(guest, reconnect_deadline_s=2) as t:
        task = asyncio.create_task(t.run("sleep 30", timeout=60))
        while guest.stats.active == 0:
            await asyncio.sleep(0.01)
        await guest.stop()
        with pytest.raises(TargetUnavailable, match=r"VM fake .*127\.0\.0\.1:\d+.*lost"):
            await task


async def test_explicit_reconnect_keeps_the_object(target: SshTarget, guest: FakeGuest) -> None:
    await guest.restart()
    await target.reconnect()
    assert (await target.run("echo again")).output == "again\n"


async def test_gives_up_after_deadline_with_one_line(keys: tuple[asyncssh.SSHKey, asyncssh.SSHKey]) -> None:
    g = FakeGuest(*keys)
    await g.start()
    port = g.port
    await g.stop()  # nothing listens on this port now
    t = SshTarget("vm-a", "127.0.0.1", port, "root", [keys[1]], [keys[0].export_public_key()],
                  reconnect_deadline_s=1.0)
    started = time.monotonic()
    with pytest.raises(TargetUnavailable) as info:
        await t.connect()
    msg = str(info.value)
    assert "\n" not in msg and "vm-a" in msg and f"127.0.0.1:{port}" in msg
    assert 0.9 < time.monotonic() - started < 5


async def test_wrong_host_key_fails_fast(guest: FakeGuest) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519")
    t = SshTarget("vm-b", "127.0.0.1", guest.port, "root", [guest.client_key], [other.export_public_key()],
                  reconnect_deadline_s=30)
    started = time.monotonic()
    with pytest.raises(TargetUnavailable, match="host key not trusted"):
        await t.connect()
    assert time.monotonic() - started < 5  # not retried for the whole deadline


async def test_wrong_client_key_fails_fast(guest: FakeGuest) -> None:
    other = asyncssh.generate_private_key("ssh-ed25519")
    t = SshTarget("vm-c", "127.0.0.1", guest.port, "root", [other], [guest.host_key.export_public_key()])
    with pytest.raises(TargetUnavailable, match="login refused"):
        await t.connect()


async def test_closed_target_refuses_work(target: SshTarget) -> None:
    await target.close()
    with pytest.raises(TargetUnavailable, match="closed"):
        await target.run("true")


# ---- host key inputs -----------------------------------------------------------------


def test_host_keys_are_required(keys: tuple[asyncssh.SSHKey, asyncssh.SSHKey]) -> None:
    with pytest.raises(ConfigError, match="no trusted host key"):
        SshTarget("v", "127.0.0.1", 22, "root", [keys[1]], None)
    SshTarget("v", "127.0.0.1", 22, "root", [keys[1]], None, insecure=True)


async def test_known_hosts_forms(guest: FakeGuest, tmp_path: Path) -> None:
    pub = guest.host_key.export_public_key().decode()
    pubfile = tmp_path / "host.pub"
    pubfile.write_text(pub)
    khfile = tmp_path / "known_hosts"
    khfile.write_text(f"[127.0.0.1]:{guest.port} {pub}")
    forms: list[object] = [pub, pubfile, str(pubfile), [pubfile], khfile,
                           asyncssh.import_known_hosts(khfile.read_text())]
    for form in forms:
        async with SshTarget("v", "127.0.0.1", guest.port, "root", [guest.client_key], form) as t:  # type: ignore[arg-type]
            assert (await t.run("echo k")).output == "k\n", form


async def test_a_host_key_vouches_for_its_own_port_only(guest: FakeGuest, tmp_path: Path) -> None:
    """Bare keys are pinned to the target's port; a known_hosts line for another port (another
    VM's, or the one this VM had before) is not trusted here."""
    from vexfs_cockpit.transport.ssh import pinned_known_hosts

    elsewhere = tmp_path / "elsewhere"
    elsewhere.write_text(pinned_known_hosts("127.0.0.1", guest.port + 1, [guest.host_key]))
    with pytest.raises(TargetUnavailable, match="host key not trusted"):
        async with SshTarget("v", "127.0.0.1", guest.port, "root", [guest.client_key], elsewhere,
                             reconnect_deadline_s=1):
            pass
    here = tmp_path / "here"
    here.write_text(pinned_known_hosts("127.0.0.1", guest.port, [guest.host_key]))
    async with SshTarget("v", "127.0.0.1", guest.port, "root", [guest.client_key], here) as t:
        assert (await t.run("echo k")).output == "k\n"
    # the same key given bare to a target for another port matches nothing on this one
    other = SshTarget("v", "127.0.0.1", guest.port + 1, "root", [guest.client_key],
                      guest.host_key.export_public_key().decode())
    assert other._known_hosts.match("127.0.0.1", "127.0.0.1", guest.port)[0] == []


def test_missing_key_file_is_a_config_error(tmp_path: Path, keys: tuple[asyncssh.SSHKey, asyncssh.SSHKey]) -> None:
    with pytest.raises(ConfigError, match="client key"):
        SshTarget("v", "127.0.0.1", 22, "root", tmp_path / "nokey", [keys[0].export_public_key()])
    with pytest.raises(ConfigError, match="host key"):
        SshTarget("v", "127.0.0.1", 22, "root", [keys[1]], tmp_path / "nohostkey")
