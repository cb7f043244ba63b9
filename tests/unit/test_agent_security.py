"""The kdev agent trusts no path and no peer (issue 13 items 3 and 10).

The client sends its whole environment to whatever listens on the agent's socket,
so: the socket's directory must be a real directory (not a symlink), ours, mode
0700, or the command runs in-process; both ends check the other's uid on the
socket (SO_PEERCRED); a client that connects and sends nothing neither holds the
agent nor stalls anybody else's command; and a failure inside the agent reaches
the client as one line and exit 3, its traceback only in the agent's log.

Other uids are played by children that drop to nobody (65534): the tests run as root.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from vexfs_cockpit.agent import client
from vexfs_cockpit.agent.protocol import (
    READY_LINE, REQUEST_TIMEOUT_S, code_fingerprint, decode, encode, open_private_dir, socket_path,
)

ROOT = Path(__file__).resolve().parents[2]
NOBODY = 65534

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="plays other users with chown/setresuid: needs root")


def _cli(*argv: str, agent: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, VEXFS_KDEV_AGENT="1" if agent else "0")
    return subprocess.run([sys.executable, "-m", "vexfs_cockpit", *argv], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=timeout)


def _stop_any_agent_in(directory: Path) -> None:
    """Whatever agent a (failing) test left in ``directory``."""
    with socket.socket(socket.AF_UNIX) as s:
        try:
            s.connect(str(socket_path(directory)))
            s.sendall(encode({"control": "stop"}))
            s.recv(4096)
        except OSError:
            pass


# ---------------------------------------------------------------------------- the directory

@pytest.fixture
def runtime_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The agent on, its directory the default one under XDG_RUNTIME_DIR (a temp dir)."""
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.setenv("VEXFS_KDEV_AGENT", "1")
    monkeypatch.delenv("VEXFS_KDEV_AGENT_DIR", raising=False)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(run))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    yield run / f"vexfs-cockpit-{os.getuid()}"


def _assert_runs_here_with_one_line(why: str) -> None:
    """The command runs in this process (as with the agent off) after one line saying why."""
    argv = ("kload", "--env", "test", "nosuch")
    direct, refused = _cli(*argv, agent=False), _cli(*argv)
    first, _, rest = refused.stderr.partition("\n")
    assert first.startswith("vexfs-cockpit: kdev agent not used: ") and why in first, refused.stderr
    assert first.endswith("; running here"), first
    assert (refused.returncode, refused.stdout, rest) == (direct.returncode, direct.stdout, direct.stderr)


def test_a_symlinked_agent_dir_is_refused(runtime_dir: Path, tmp_path: Path) -> None:
    """/tmp/vexfs-cockpit-<uid> made first, as a symlink to somebody's directory: even one
    that is itself ours and 0700 is not used (stat() would have followed it)."""
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    runtime_dir.symlink_to(elsewhere)
    try:
        _assert_runs_here_with_one_line(f"{runtime_dir} is a symlink")
        assert list(elsewhere.iterdir()) == []  # no lock, no log, no socket of ours in there
        with pytest.raises(client.Refused, match="is a symlink"):
            client.control("status")
    finally:
        _stop_any_agent_in(elsewhere)


@pytest.mark.parametrize(("owner", "mode", "why"), [
    (NOBODY, 0o700, f"belongs to uid {NOBODY}, not to this user"),
    (0, 0o777, "has mode 0777, not 0700"),
    (0, 0o755, "has mode 0755, not 0700"),
])
def test_an_agent_dir_not_ours_or_not_0700_is_refused(runtime_dir: Path, owner: int, mode: int, why: str) -> None:
    runtime_dir.mkdir()
    os.chmod(runtime_dir, mode)
    os.chown(runtime_dir, owner, -1)
    try:
        _assert_runs_here_with_one_line(why)
        assert list(runtime_dir.iterdir()) == []
    finally:
        _stop_any_agent_in(runtime_dir)


def test_a_fresh_agent_dir_is_0700_whatever_the_umask(runtime_dir: Path) -> None:
    old = os.umask(0o277)  # mkdir(0o700) alone would make it 0500, refused next time
    try:
        os.close(open_private_dir(runtime_dir))
    finally:
        os.umask(old)
    assert oct(runtime_dir.lstat().st_mode & 0o7777) == "0o700"
    os.close(open_private_dir(runtime_dir))  # and it passes its own check


# ---------------------------------------------------------------------------- the peers

@pytest.fixture
def agent_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    d = tmp_path / "agent"
    d.mkdir(mode=0o700)
    monkeypatch.setenv("VEXFS_KDEV_AGENT", "1")
    monkeypatch.setenv("VEXFS_KDEV_AGENT_DIR", str(d))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    yield d
    _stop_any_agent_in(d)


def _start_agent(directory: Path, log: Path, *extra: str, script: str | None = None) -> subprocess.Popen[bytes]:
    """An agent whose stderr (its log) goes to ``log``; ``script``: run it through a driver."""
    r, w = os.pipe()
    args = ["--socket", str(socket_path(directory)), "--idle", "60", "--ready-fd", str(w), *extra]
    cmd = [sys.executable, "-c", script, *args] if script else [sys.executable, "-m", "vexfs_cockpit.agent_server", *args]
    with open(log, "wb") as out:
        proc = subprocess.Popen(cmd, pass_fds=(w,), stderr=out, cwd=ROOT)
    os.close(w)
    with os.fdopen(r, "rb") as ready:
        assert ready.read() == READY_LINE, log.read_text()
    return proc


AS_NOBODY_CONNECT = textwrap.dedent(f"""
    import ctypes, os, socket, sys
    os.setresuid(0, {NOBODY}, 0)            # the kernel's peer credential is the effective uid
    ctypes.CDLL(None).setfsuid(0)           # ... but the 0700 directory is still reachable
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20)
        s.connect(sys.argv[1])
        try:
            s.sendall(b'{{"control":"status"}}\\n')
            got = s.recv(65536)
        except (BrokenPipeError, ConnectionResetError):  # closed before (or after) the request
            got = b""
    print(repr(got))
""")


def test_the_agent_drops_a_client_of_another_uid(agent_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    proc = _start_agent(agent_dir, log)
    res = subprocess.run([sys.executable, "-c", AS_NOBODY_CONNECT, str(socket_path(agent_dir))],
                         capture_output=True, text=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == "b''"  # closed unread: no status for uid 65534
    assert f"refused a connection from uid {NOBODY}" in log.read_text()
    status = client.control("status")  # and it serves its own user on
    assert status is not None and status["pid"] == proc.pid


AS_NOBODY_LISTEN = textwrap.dedent(f"""
    import os, socket, sys
    old = os.umask(0o177)
    s = socket.socket(socket.AF_UNIX)
    s.bind(sys.argv[1])                     # root may create it in root's 0700 directory ...
    os.umask(old)
    os.setresuid({NOBODY}, {NOBODY}, {NOBODY})
    s.listen(1)                             # ... but it is listened on (and served) by uid 65534
    print("listening", flush=True)
    s.settimeout(30)
    conn, _ = s.accept()
    conn.settimeout(3)
    got = b""
    try:
        while chunk := conn.recv(65536):
            got += chunk
    except TimeoutError:
        pass
    print(len(got), flush=True)
""")


def test_the_client_sends_nothing_to_an_agent_of_another_uid(agent_dir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fake = subprocess.Popen([sys.executable, "-c", AS_NOBODY_LISTEN, str(socket_path(agent_dir))],
                            stdout=subprocess.PIPE, text=True)
    try:
        assert fake.stdout is not None and fake.stdout.readline() == "listening\n"
        assert client.forward(["kload", "--env", "test", "nosuch"]) is None  # runs here instead
        received = fake.communicate(timeout=60)[0]
    finally:
        fake.kill()
        fake.wait()
    assert received.strip() == "0"  # not one byte of the request (the environment) went out
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"is served by uid {NOBODY}, not by this user" in err, err


# ---------------------------------------------------------------------------- stuck clients

def test_a_silent_client_does_not_stall_another_clients_command(agent_dir: Path, tmp_path: Path) -> None:
    """Connected, sent nothing: the agent reads requests concurrently, so the next
    command runs at once (not after the silent one's read timeout)."""
    proc = _start_agent(agent_dir, tmp_path / "agent.log")
    with socket.socket(socket.AF_UNIX) as silent, socket.socket(socket.AF_UNIX) as partial:
        silent.connect(str(socket_path(agent_dir)))
        partial.connect(str(socket_path(agent_dir)))
        partial.sendall(b'{"argv": ["kload", ')  # half a request, then nothing
        started = time.monotonic()
        try:
            res = _cli("kload", "--env", "test", "nosuch", timeout=REQUEST_TIMEOUT_S + 30)
        except subprocess.TimeoutExpired:
            pytest.fail("a client that sent nothing stalled the next command")
        took = time.monotonic() - started
    assert res.returncode == 3 and "no VM named vexfs-test-nosuch-0" in res.stderr, res.stderr
    assert took < REQUEST_TIMEOUT_S / 2, f"{took:.1f}s: waited for the silent client's timeout"
    status = client.control("status")
    assert status is not None and status["pid"] == proc.pid and status["requests"] == 1


def test_a_client_that_sends_no_whole_request_is_dropped(agent_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    _start_agent(agent_dir, log, "--request-timeout", "0.5")
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(20)
        s.connect(str(socket_path(agent_dir)))
        s.sendall(b'{"argv": ["kload", ')
        started = time.monotonic()
        try:
            assert s.recv(4096) == b""  # closed by the agent
        except TimeoutError:
            pytest.fail("the agent held a connection that sent half a request")
    assert time.monotonic() - started < 10
    assert "dropped a client that sent no request within 0.5s" in log.read_text()


# ---------------------------------------------------------------------------- agent failures

# The agent, with cli.main replaced by a bug: it raises, or logs an exception.
BUGGY_AGENT = textwrap.dedent("""
    import logging, sys
    from vexfs_cockpit import agent_server, cli

    def buggy_main(argv, kdev_session=None):
        if "--log" in argv:
            try:
                raise ValueError("deep down")
            except ValueError:
                logging.getLogger("vexfs_cockpit.fleet").exception("it failed")
            return 1
        raise RuntimeError("boom\\nsecond line")

    cli.main = buggy_main
    sys.exit(agent_server.main(sys.argv[1:]))
""")


def _request(directory: Path, req: dict[str, object]) -> list[dict[str, object]]:
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(60)
        s.connect(str(socket_path(directory)))
        s.sendall(encode(req))
        return [decode(line) for line in s.makefile("rb")]


def _err(msgs: list[dict[str, object]]) -> str:
    return "".join(str(m.get("err", "")) for m in msgs)


@pytest.mark.parametrize("bad", ["command", "request"])
def test_an_agent_failure_reaches_the_client_as_one_line(agent_dir: Path, tmp_path: Path, bad: str) -> None:
    """A bug in the command (``command``) or in the agent's own handling of a request
    (``request``: a malformed tty field): one line and exit 3 for the client, the
    traceback in the agent's log, the agent serving on."""
    log = tmp_path / "agent.log"
    proc = _start_agent(agent_dir, log, script=BUGGY_AGENT)
    req: dict[str, object] = {"argv": ["kload", "x"], "cwd": "/", "env": {}, "fingerprint": code_fingerprint()}
    if bad == "request":
        req["tty"] = "yes"
    msgs = _request(agent_dir, req)
    assert msgs[-1] == {"exit": 3}, msgs
    err = _err(msgs)
    assert err.count("\n") == 1 and err.startswith("vexfs-cockpit: kdev agent: internal error ("), err
    assert "Traceback" not in err and "second line" not in err
    assert f"the traceback is in {agent_dir / 'kdev-agent.log'}" in err
    if bad == "command":
        assert "(RuntimeError: boom)" in err
    assert "Traceback (most recent call last)" in log.read_text()
    status = client.control("status")
    assert status is not None and status["pid"] == proc.pid


def test_a_logged_exception_reaches_the_client_without_its_traceback(agent_dir: Path, tmp_path: Path) -> None:
    log = tmp_path / "agent.log"
    _start_agent(agent_dir, log, script=BUGGY_AGENT)
    msgs = _request(agent_dir, {"argv": ["kload", "--log"], "cwd": "/", "env": {}, "fingerprint": code_fingerprint()})
    assert msgs[-1] == {"exit": 1}, msgs
    assert _err(msgs) == "vexfs-cockpit: vexfs_cockpit.fleet: it failed\n"
    logged = log.read_text()
    assert "it failed" in logged and "ValueError: deep down" in logged
