"""The kdev agent: forwarded commands behave exactly as in their own process (output,
exit code, Ctrl-C), it restarts when the code changes, and exits when idle.
No VM here; tests/vm/test_kdev.py drives the warm loop through it on a real dev VM."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from vexfs_cockpit.agent import client
from vexfs_cockpit.agent.protocol import READY_LINE, code_fingerprint, decode, encode, socket_path

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def agent_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The agent on, in a private dir; whatever agent the test started is stopped after."""
    d = tmp_path / "agent"
    monkeypatch.setenv("VEXFS_KDEV_AGENT", "1")
    monkeypatch.setenv("VEXFS_KDEV_AGENT_DIR", str(d))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    yield d
    client.control("stop")


def _cli(*argv: str, agent: bool = True) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, VEXFS_KDEV_AGENT="1" if agent else "0")
    return subprocess.run([sys.executable, "-m", "vexfs_cockpit", *argv], capture_output=True, text=True,
                          env=env, cwd=ROOT, timeout=120)


def test_forwarded_commands_match_in_process_runs(agent_env: Path) -> None:
    """Same stdout, stderr and exit code with and without the agent; one agent serves both calls."""
    for argv in (["kload", "--env", "test", "nosuch"], ["kunload", "--env", "nope-env", "x"], ["kload"]):
        direct, forwarded = _cli(*argv, agent=False), _cli(*argv)
        got = (forwarded.returncode, forwarded.stdout, forwarded.stderr)
        assert got == (direct.returncode, direct.stdout, direct.stderr), (argv, got, direct)
    assert _cli("kload", "--env", "test", "nosuch").returncode == 3
    status = client.control("status")
    assert status is not None and status["requests"] == 4  # every forwarded call, one agent
    assert (agent_env / "kdev-agent.sock").exists()
    assert oct((agent_env / "kdev-agent.sock").stat().st_mode & 0o777) == "0o600"
    assert oct(agent_env.stat().st_mode & 0o777) == "0o700"


def test_off_switch_and_other_commands_stay_in_process(agent_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    assert client.forward(["history", "list"]) is None  # not a warm-loop command
    monkeypatch.setenv("VEXFS_KDEV_AGENT", "off")
    assert client.forward(["kload", "x"]) is None
    assert client.control("status") is None and not socket_path(agent_env).exists()


def _start_agent(directory: Path, idle: float = 60.0) -> subprocess.Popen[bytes]:
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    r, w = os.pipe()
    proc = subprocess.Popen(
        [sys.executable, "-m", "vexfs_cockpit.agent_server", "--socket", str(socket_path(directory)),
         "--idle", str(idle), "--ready-fd", str(w)], pass_fds=(w,),
    )
    os.close(w)
    with os.fdopen(r, "rb") as ready:
        assert ready.read() == READY_LINE
    return proc


def test_stale_agent_exits_and_a_fresh_one_takes_over(agent_env: Path) -> None:
    old = _start_agent(agent_env)
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(socket_path(agent_env)))
        s.sendall(encode({"argv": ["kload", "x"], "cwd": "/", "env": {}, "fingerprint": "other-code"}))
        assert decode(s.makefile("rb").readline()) == {"stale": True}
    assert old.wait(timeout=30) == 0 and not socket_path(agent_env).exists()
    # the client's own round: a fresh agent with this code answers
    res = _cli("kload", "--env", "test", "nosuch")
    assert res.returncode == 3 and "no VM named vexfs-test-nosuch-0" in res.stderr
    status = client.control("status")
    assert status is not None and status["pid"] != old.pid and status["fingerprint"] == code_fingerprint()


def test_idle_agent_exits_and_removes_its_socket(agent_env: Path) -> None:
    proc = _start_agent(agent_env, idle=0.3)
    assert proc.wait(timeout=30) == 0
    assert not socket_path(agent_env).exists()


def test_ctrl_c_interrupts_the_command_not_the_agent(agent_env: Path, tmp_path: Path) -> None:
    """A client's Ctrl-C is SIGINT for the running command (exit 130, "interrupted"); the
    agent serves the next command."""
    from vexfs_cockpit.config.load import load_config
    from vexfs_cockpit.images.initramfs import resolve_kernel_version

    kernel = resolve_kernel_version(load_config(None, "test").fleet.guest_kernel)
    if not (Path("/lib/modules") / kernel / "build" / "Makefile").exists():
        pytest.skip(f"no kernel headers for {kernel}")
    src = tmp_path / "src"
    shutil.copytree(ROOT / "tests" / "fixtures" / "selftest_fs", src,
                    ignore=shutil.ignore_patterns("*.o", "*.ko", "*.mod*", ".*", "__pycache__", "*.py"))
    proc = _start_agent(agent_env)
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "xdg"))
    argv = ["kbuild", "--env", "test", "--set", f"module.build_path={src}", "--set", f"fleet.guest_kernel={kernel}"]
    with socket.socket(socket.AF_UNIX) as s:
        s.connect(str(socket_path(agent_env)))
        # a real compile takes seconds: the interrupt lands while it runs
        s.sendall(encode({"argv": argv, "cwd": str(ROOT), "env": env, "fingerprint": code_fingerprint()}))
        s.sendall(encode({"signal": "int"}))
        msgs = [decode(line) for line in s.makefile("rb")]
    assert msgs[-1] == {"exit": 130}, msgs
    assert "vexfs-cockpit: interrupted\n" in "".join(m.get("err", "") for m in msgs)
    assert not any("built vexfs_selftest.ko" in m.get("out", "") for m in msgs)
    status = client.control("status")
    assert status is not None and status["pid"] == proc.pid and status["requests"] == 1
    # and the next command runs to the end
    res = _cli(*argv)
    assert res.returncode == 0 and res.stdout.startswith(f"built vexfs_selftest.ko for {kernel}"), res.stderr
    status = client.control("status")
    assert status is not None and status["pid"] == proc.pid and status["requests"] == 2
