"""Forward a warm-loop command to the kdev agent, starting it when none is running.

Standard library only (plus ``agent.protocol``): this runs before any engine
import, and must cost tens of milliseconds. Anything unexpected — the agent
cannot start, the socket directory is not ours, the socket is served by another
user — falls back to running the command in this process (``None``), so the
agent can only make a command faster, never make it fail.

Nothing is sent before the kernel has said (SO_PEERCRED) that the process on the
socket runs as this user: the request carries the whole environment.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import select
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from vexfs_cockpit.agent.protocol import (
    AGENT_COMMANDS, READY_LINE, SPAWN_TIMEOUT_S, UnsafeDir, agent_dir, code_fingerprint, decode, enabled,
    encode, idle_seconds, log_path, open_private_dir, peer_uid, socket_path,
)


class _Retry(Exception):
    """The agent runs other code than this client and is exiting, or it closed before
    taking the request: nothing ran; ask a (fresh) agent again."""


class Refused(Exception):
    """The agent's directory or socket is not this user's; ``str()`` is the one line why."""


def forward(argv: Sequence[str]) -> int | None:
    """Run ``argv`` in the agent and return its exit code; None: run it here instead."""
    if not argv or argv[0] not in AGENT_COMMANDS or not enabled():
        return None
    directory = agent_dir()
    try:
        dir_fd = open_private_dir(directory)
    except UnsafeDir as err:
        _say(f"kdev agent not used: {err} (remove it, or point XDG_RUNTIME_DIR at a private directory)")
        return None
    except OSError as err:
        _say(f"kdev agent not used: cannot create {directory} ({err.strerror})")
        return None
    try:
        fingerprint = code_fingerprint()
        for _ in range(2):  # a stale agent exits; the second round starts a fresh one
            conn = _connect(directory) or _spawn(directory, dir_fd)
            if conn is None:
                return None
            try:
                return _session(conn, list(argv), fingerprint, directory)
            except _Retry:
                continue
            finally:
                conn.close()
        return None
    except Refused as err:
        _say(f"kdev agent not used: {err}")
        return None
    finally:
        os.close(dir_fd)


def control(what: str) -> dict[str, Any] | None:
    """``status``/``stop`` of the running agent; None when none is running.
    Raises Refused when the directory or the socket is not this user's."""
    directory = agent_dir()
    try:
        os.close(open_private_dir(directory, create=False))
    except FileNotFoundError:
        return None
    except (UnsafeDir, OSError) as err:
        raise Refused(str(err)) from None
    conn = _connect(directory)
    if conn is None:
        return None
    with conn:
        try:
            conn.sendall(encode({"control": what}))
            line = conn.makefile("rb").readline()
        except OSError:  # it was exiting
            return None
    return decode(line).get("status") if line else None


def _say(line: str) -> None:
    print(f"vexfs-cockpit: {line}; running here", file=sys.stderr)


def _connect(directory: Path) -> socket.socket | None:
    """A connection to the agent, once the kernel says it runs as this user; None when
    none listens. Raises Refused for a socket served by another user."""
    path = socket_path(directory)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(str(path))
    except OSError:  # none listening (no socket, or a dead agent's)
        sock.close()
        return None
    uid = peer_uid(sock)
    if uid != os.geteuid():
        sock.close()
        who = "an unknown user" if uid is None else f"uid {uid}"
        raise Refused(f"{path} is served by {who}, not by this user (uid {os.geteuid()})")
    return sock


def _spawn(directory: Path, dir_fd: int) -> socket.socket | None:
    """Start an agent (one at a time: a lock file) and connect once it says ready."""
    # The lock and the log are opened through the checked directory's fd, never
    # through a symlink.
    flags = os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC
    with open(os.open("spawn.lock", flags, 0o600, dir_fd=dir_fd), "wb") as lock:
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
            with open(os.open(log_path(directory).name, flags | os.O_APPEND, 0o600, dir_fd=dir_fd), "ab") as log:
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
    try:
        conn.sendall(encode({
            "argv": argv, "cwd": os.getcwd(), "env": dict(os.environ), "fingerprint": fingerprint,
            "tty": {"out": sys.stdout.isatty(), "err": sys.stderr.isatty()},
        }))
    except OSError:  # it closed before the whole request arrived: it cannot have run it
        raise _Retry from None
    reader = conn.makefile("rb")
    interrupted = False
    while True:
        try:
            line = reader.readline()
        except OSError:  # reset: gone, as below
            line = b""
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
            raise _Retry
