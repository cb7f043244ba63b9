"""LocalTarget (host subprocesses), the output helpers and the shell text in quoting.py."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from vexfs_cockpit.engine.target import CommandFailed, Target
from vexfs_cockpit.transport.local import LocalTarget
from vexfs_cockpit.transport.output import CappedOutput, LineSplitter, shell_exit_code, signal_exit_code
from vexfs_cockpit.transport.quoting import GO_EXIT, TOKEN_VAR, kill_command, new_token, wrap_command


def _dead(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")  # this container's pid 1 does not reap orphans


async def _wait_dead(pid: int, within: float = 5.0) -> bool:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:  # SIGKILL delivery is asynchronous
        if _dead(pid):
            return True
        await asyncio.sleep(0.02)
    return _dead(pid)


# ---- LocalTarget ---------------------------------------------------------------------


async def test_local_run_round_trip() -> None:
    t = LocalTarget()
    assert isinstance(t, Target)
    res = await t.run("echo out; echo err >&2; exit 5")
    assert (res.exit_code, res.output.split(), res.timed_out) == (5, ["out", "err"], False)
    res = await t.run(["printf", "%s|", "a b", "$X", "'q'"])
    assert res.output == "a b|$X|'q'|"


async def test_local_input_cwd_env(tmp_path: Path) -> None:
    t = LocalTarget("kbuild", cwd=tmp_path, env={"PATH": os.environ["PATH"], "ONLY": "this"})
    res = await t.run("pwd; echo $ONLY; cat", input=b"\x00bytes\n")
    assert res.output.splitlines() == [str(tmp_path), "this", "\x00bytes"]
    assert (await t.run("cat; echo eof", timeout=5)).output == "eof\n"  # no input: stdin is /dev/null


async def test_local_check_and_signal_exit() -> None:
    t = LocalTarget()
    with pytest.raises(CommandFailed):
        await t.run("false", check=True)
    assert (await t.run("kill -9 $$")).exit_code == 137


async def test_local_timeout_kills_the_process_group(tmp_path: Path) -> None:
    pidfile = tmp_path / "pid"
    res = await LocalTarget().run(f"sh -c 'sleep 300 & echo $! > {pidfile}; wait'", timeout=0.5)
    assert res.timed_out and res.exit_code is None
    assert await _wait_dead(int(pidfile.read_text()))


async def test_local_stream_and_early_close_kills(tmp_path: Path) -> None:
    t = LocalTarget()
    assert [ln async for ln in t.stream("printf 'a\\nb\\nc'")] == ["a", "b", "c"]
    pidfile = tmp_path / "pid"
    gen = t.stream(f"sleep 300 & echo $! > {pidfile}; echo first; wait")
    async with contextlib.aclosing(gen):
        async for line in gen:
            assert line == "first"
            break
    assert await _wait_dead(int(pidfile.read_text()))


async def test_local_stream_timeout(tmp_path: Path) -> None:
    seen = []
    with pytest.raises(TimeoutError):
        async for line in LocalTarget().stream("echo a; sleep 300", timeout=0.5):
            seen.append(line)
    assert seen == ["a"]


async def test_local_put_get(tmp_path: Path) -> None:
    blob = os.urandom(300_000)
    a, b, c = tmp_path / "a", tmp_path / "b", tmp_path / "c"
    a.write_bytes(blob)
    t = LocalTarget()
    await t.put(a, str(b))
    await t.get(str(b), c)
    assert hashlib.sha256(c.read_bytes()).digest() == hashlib.sha256(blob).digest()


# ---- output helpers ------------------------------------------------------------------


def test_capped_output_keeps_head_and_tail() -> None:
    out = CappedOutput(limit=100)
    out.add(b"HEAD" + b"x" * 200)
    out.add(b"y" * 50 + b"TAIL")
    text = out.text()
    assert text.startswith("HEAD") and text.endswith("TAIL")
    assert "bytes of output dropped" in text
    assert len(text) < 200


def test_line_splitter_handles_partial_and_overlong_lines() -> None:
    s = LineSplitter(max_line=8)
    assert s.feed(b"ab") == []
    assert s.feed(b"c\r\nd\xffe\n") == ["abc", "d\ufffde"]
    assert s.feed(b"0123456789") == ["01234567"]
    assert s.flush() == ["89"]
    assert s.flush() == []


def test_exit_code_mapping() -> None:
    assert shell_exit_code(-9) == 137 and shell_exit_code(3) == 3
    assert signal_exit_code("KILL") == 137 and signal_exit_code("SEGV") == 139
    assert signal_exit_code("NOPE") == 255


# ---- quoting: the wrapper and killer run in real shells ------------------------------


@pytest.mark.parametrize("shell", ["sh", "busybox sh"])
def test_wrapper_keeps_exit_status_stdin_and_tags(shell: str) -> None:
    if shell.startswith("busybox") and shutil.which("busybox") is None:
        pytest.skip("no busybox")
    token = new_token()
    r = subprocess.run([*shell.split(), "-c", wrap_command(f'echo "${TOKEN_VAR}"; cat; exit 3', token)],
                       input=b"\nstdin-data", capture_output=True)  # the go line, then the command's stdin
    assert r.returncode == 3, r.stderr
    assert r.stdout.decode() == f"{token}\nstdin-data"


@pytest.mark.parametrize("shell", ["sh", "busybox sh"])
def test_wrapper_without_the_go_line_runs_nothing(shell: str, tmp_path: Path) -> None:
    """A refused session closes stdin before the go line: the command must not run,
    so a retry can never run it twice."""
    if shell.startswith("busybox") and shutil.which("busybox") is None:
        pytest.skip("no busybox")
    marker = tmp_path / "ran"
    r = subprocess.run([*shell.split(), "-c", wrap_command(f"touch {marker}", new_token())],
                       input=b"", capture_output=True)
    assert r.returncode == GO_EXIT
    assert not marker.exists()


@pytest.mark.parametrize("leader", [False, True], ids=["member", "leader"])
async def test_killer_finds_exec_setsid_and_grandchildren(tmp_path: Path, leader: bool) -> None:
    token = new_token()
    pidfile = tmp_path / "pids"
    # a grandchild, a child that leaves our group (setsid), and the shell itself exec'd away
    cmd = (f"sh -c 'sleep 300 & echo $! >> {pidfile}; wait' & "
           f"setsid sh -c 'echo $$ >> {pidfile}; exec sleep 302' & "
           f"echo $$ >> {pidfile}; exec sleep 301")
    proc = await asyncio.create_subprocess_exec(
        "sh", "-c", wrap_command(cmd, token), start_new_session=leader, stdin=asyncio.subprocess.PIPE
    )
    assert proc.stdin is not None
    proc.stdin.write(b"\n")  # the go line
    await proc.stdin.drain()
    deadline = time.monotonic() + 5
    while len(pidfile.read_text().split() if pidfile.exists() else []) < 3:
        assert time.monotonic() < deadline
        await asyncio.sleep(0.02)
    pids = [int(p) for p in pidfile.read_text().split()]
    killer = subprocess.run(["sh", "-c", kill_command(token)], capture_output=True, timeout=30)
    assert killer.returncode == 0, killer.stderr
    await asyncio.wait_for(proc.wait(), 5)
    for pid in pids:
        assert await _wait_dead(pid), pid


def test_killer_spares_untagged(tmp_path: Path) -> None:
    bystander = subprocess.Popen(["sleep", "300"])
    try:
        r = subprocess.run(["sh", "-c", kill_command(new_token())], capture_output=True, timeout=30)
        assert r.returncode == 0
        assert bystander.poll() is None
    finally:
        bystander.kill()
        bystander.wait()
