"""Forward a warm-loop command to the kdev agent, starting it when none is running.

Standard library only (plus ``agent.protocol``): this runs before any engine
import, and must cost tens of milliseconds. Anything unexpected — the agent
cannot start, the socket directory is not ours — falls back to running the
command in this process (``None``), so the agent can only make a command faster,
never make it fail.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import socket
import stat
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vexfs_cockpit.agent.protocol import (
    AGENT_COMMANDS, READY_LINE, SPAWN_TIMEOUT_S, agent_dir, code_fingerprint, decode, enabled, encode,
    idle_seconds, log_path, socket_path,
)


class _Stale(Exception):
    """The agent runs other code than this client; it is exiting."""


def forward(argv: Sequence[str]) -> int | None:
    """Run ``argv`` in the agent and return its exit code; None: run it here instead."""
    if not argv or argv[0] not in AGENT_COMMANDS or not enabled():
        return None
    directory = agent_dir()
    if not _private_dir(directory):
        return None
    fingerprint = code_fingerprint()
    for _ in range(2):  # a stale agent exits; the second round starts a fresh one
        conn = _connect(directory) or _spawn(directory)
        if conn is None:
            return None
        try:
            return _session(conn, list(argv), fingerprint, directory)
        except _Stale:
            continue
        finally:
            conn.close()
    return None


def control(what: str) -> dict[str, Any] | None:
    """``status``/``stop`` of the running agent; None when none is running."""
    conn = _connect(agent_dir())
    if conn is None:
        return None
    with conn:
        conn.sendall(encode({"control": what}))
        line = conn.makefile("rb").readline()
    return decode(line).get("status") if line else None


def _private_dir(directory: Path) -> bool:
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        st = directory.stat()
    except OSError:
        return False
    # Another user's directory (or a world-writable one) could hold someone else's agent.
    return st.st_uid == os.getuid() and not st.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def _connect(directory: Path) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(socket_path(directory)))
    except OSError:  # none listening (no socket, or a dead agent's)
        sock.close()
        return None
    return sock


def _spawn(directory: Path) -> socket.socket | None:
    """Start an agent (one at a time: a lock file) and connect once it says ready."""
    with open(directory / "spawn.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        conn = _connect(directory)  # another client started one while we waited
        if conn is not None:
            return conn
        path = socket_path(directory)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # a dead agent's socket: nobody answered on it
        import subprocess  # only to start an agent: not on every command's path

        read_fd, write_fd = os.pipe()
        try:
            with open(log_path(directory), "ab") as log:
                subprocess.Popen(
                    [sys.executable, "-m", "vexfs_cockpit.agent_server", "--socket", str(path),
                     "--idle", str(idle_seconds()), "--ready-fd", str(write_fd)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log, pass_fds=(write_fd,),
                    start_new_session=True,  # the terminal's Ctrl-C is for the client, not the agent
                    cwd="/",
                )
        except OSError as err:
            os.close(read_fd)
            print(f"vexfs-cockpit: kdev agent did not start ({err.strerror}); running here", file=sys.stderr)
            return None
        finally:
            os.close(write_fd)
        try:
            ready, _, _ = select.select([read_fd], [], [], SPAWN_TIMEOUT_S)
            said = os.read(read_fd, len(READY_LINE)) if ready else b""
        finally:
            os.close(read_fd)
        if said != READY_LINE:
            print(f"vexfs-cockpit: kdev agent did not start (see {log_path(directory)}); running here",
                  file=sys.stderr)
            return None
        return _connect(directory)


def _session(conn: socket.socket, argv: list[str], fingerprint: str, directory: Path) -> int:
    conn.sendall(encode({
        "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "fingerprint": fingerprint,
        "tty": {"out": sys.stdout.isatty(), "err": sys.stderr.isatty()},
    }))
    reader = conn.makefile("rb")
    interrupted = False
    while True:
        try:
            line = reader.readline()
        except KeyboardInterrupt:
            if interrupted:  # a second Ctrl-C: leave now, the agent cleans up on its own
                return 130
            interrupted = True
            with contextlib.suppress(OSError):
                conn.sendall(encode({"signal": "int"}))
            continue
        if not line:
            print(f"vexfs-cockpit: the kdev agent died mid-command (see {log_path(directory)}); "
                  f"run it again, or set VEXFS_KDEV_AGENT=0 to run without it", file=sys.stderr)
            return 3
        msg = decode(line)
        if "out" in msg:
            sys.stdout.write(msg["out"])
            sys.stdout.flush()
        elif "err" in msg:
            sys.stderr.write(msg["err"])
            sys.stderr.flush()
        elif "exit" in msg:
            return int(msg["exit"])
        elif msg.get("stale"):
            raise _Stale
