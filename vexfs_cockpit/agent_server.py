"""The kdev agent: one warm interpreter that runs ``kload``/``kunload``/``kbuild``/``ktest``
for the thin clients, the way ssh's ControlPersist keeps a master connection.

Each of those commands costs ~1 s of imports (pydantic config models, asyncssh,
sqlite-utils, the klog tables) before it does ~0.3 s of work on the dev VM; in
the edit-build-reload-test loop that is most of the wait. The agent imports the
engine once and runs each forwarded command through the very same ``cli.main``
in-process, one at a time, with the client's argv, working directory and
environment, its output streamed back and its exit code returned. Ctrl-C on the
client is a real SIGINT here, so a command stops exactly as it would in its own
process (a ``ktest`` run is stored as aborted).

It is started by the first forwarded command (``agent.client``), listens on a
0600 Unix socket in a 0700 per-user directory, exits after ``VEXFS_KDEV_AGENT_IDLE_S``
without a request, and exits when a client runs other code (see
``protocol.code_fingerprint``). Commands run one after another on one event
loop (``agent.session``), where each dev VM's SSH connection is kept for the next
command (a key exchange less each time, as with ControlPersist); a VM that was
reset or restarted gets a new one. Nothing else of a command outlives it.

    python -m vexfs_cockpit.agent_server --socket PATH [--idle SECONDS]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, BinaryIO

from vexfs_cockpit.agent.protocol import AGENT_COMMANDS, READY_LINE, code_fingerprint, decode, encode
from vexfs_cockpit.agent.session import KdevSession


class _Channel(io.TextIOBase):
    """sys.stdout/sys.stderr for one request: every write goes to the client at once."""

    def __init__(self, send: Any, key: str, tty: bool):
        self._send, self._key, self._tty = send, key, tty

    def write(self, s: str) -> int:
        if s:
            self._send({self._key: s})
        return len(s)

    def isatty(self) -> bool:  # the batch printer colours for the client's terminal
        return self._tty

    def writable(self) -> bool:
        return True

    @property
    def encoding(self) -> str:  # type: ignore[override]
        return "utf-8"


class _CurrentStderr(logging.StreamHandler):  # type: ignore[type-arg]
    """Logging to whatever sys.stderr is now (the current client), not the first one."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass


class _Connection:
    def __init__(self, conn: socket.socket):
        self.conn = conn
        self.reader: BinaryIO = conn.makefile("rb")
        self._lock = threading.Lock()  # libvirt's event thread may log while the command prints
        self.open = True

    def send(self, msg: dict[str, Any]) -> None:
        if not self.open:
            return
        with self._lock:
            try:
                self.conn.sendall(encode(msg))
            except OSError:  # the client went away; the command is being interrupted
                self.open = False


class AgentServer:
    def __init__(self, path: Path, idle_s: float, fingerprint: str):
        self.path = path
        self.idle_s = idle_s
        self.fingerprint = fingerprint
        self.started = time.time()
        self.requests = 0
        self._active: _Connection | None = None  # whose command is executing: its Ctrl-C may interrupt it
        self._active_lock = threading.Lock()  # no SIGINT once that command has ended
        self._stop = False
        self._inode: int | None = None
        self.session = KdevSession()  # one loop for every command, the dev VMs' SSH kept on it

    # ------------------------------------------------------------------ lifecycle
    def serve(self, ready_fd: int | None = None) -> None:
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        old_umask = os.umask(0o177)
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(old_umask)
        self._inode = os.stat(self.path).st_ino
        listener.listen(8)
        listener.settimeout(self.idle_s)  # the idle exit: no request for this long
        if ready_fd is not None:
            os.write(ready_fd, READY_LINE)
            os.close(ready_fd)
        try:
            while not self._stop:
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    break
                conn.settimeout(None)
                try:
                    self._handle(_Connection(conn))
                finally:
                    with contextlib.suppress(OSError):
                        conn.shutdown(socket.SHUT_RDWR)  # wakes this client's watcher thread
                    conn.close()
        finally:
            listener.close()
            self._unlink_own_socket()
            self.session.close()  # the kept SSH connections

    def _unlink_own_socket(self) -> None:
        # A fresh agent may already listen at the same path: only remove our own socket.
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)

    # ------------------------------------------------------------------ requests
    def _handle(self, c: _Connection) -> None:
        try:
            line = c.reader.readline()
            req = decode(line) if line else None
        except (OSError, ValueError):
            return
        if req is None:
            return
        control = req.get("control")
        if control is not None:
            self._control(c, str(control))
            return
        if req.get("fingerprint") != self.fingerprint:
            c.send({"stale": True})
            self._stop = True
            return
        argv = [str(a) for a in req.get("argv", [])]
        if not argv or argv[0] not in AGENT_COMMANDS:
            c.send({"err": f"vexfs-cockpit: the kdev agent runs only {', '.join(sorted(AGENT_COMMANDS))}\n"})
            c.send({"exit": 2})
            return
        self.requests += 1
        tty = req.get("tty") or {}
        rc = self._run(
            c, argv, str(req.get("cwd") or "/"), dict(req.get("env") or {}),
            bool(tty.get("out")), bool(tty.get("err")),
        )
        c.send({"exit": rc})

    def _control(self, c: _Connection, what: str) -> None:
        if what == "stop":
            self._stop = True
        c.send({"status": {
            "pid": os.getpid(), "started": self.started, "requests": self.requests,
            "idle_s": self.idle_s, "fingerprint": self.fingerprint, "stopping": self._stop,
            "ssh": {"kept": len(self.session.targets), "made": self.session.targets.made, "lent": self.session.targets.lent},
        }})

    def _watch_client(self, c: _Connection) -> None:
        """Ctrl-C on the client (or the client vanishing) is SIGINT for the running command."""
        try:
            for line in c.reader:
                try:
                    msg = decode(line)
                except ValueError:
                    continue
                if msg.get("signal") == "int":
                    self._interrupt(c)
        except OSError:
            pass
        c.open = False  # EOF: the client is gone; if mid-command, stop it
        self._interrupt(c)

    def _interrupt(self, c: _Connection) -> None:
        with self._active_lock:
            if self._active is c:
                os.kill(os.getpid(), signal.SIGINT)

    def _run(self, c: _Connection, argv: list[str], cwd: str, env: dict[str, str], out_tty: bool, err_tty: bool) -> int:
        from vexfs_cockpit import cli

        own_env, own_cwd = dict(os.environ), os.getcwd()
        stdout, stderr = _Channel(c.send, "out", out_tty), _Channel(c.send, "err", err_tty)
        watcher = threading.Thread(target=self._watch_client, args=(c,), daemon=True, name="kdev-agent-client")
        try:
            os.environ.clear()
            os.environ.update(env)
            os.chdir(cwd)
        except OSError as err:
            os.environ.clear()
            os.environ.update(own_env)
            stderr.write(f"vexfs-cockpit: kdev agent: cannot enter {cwd}: {err.strerror}\n")
            return 2
        rc = 1
        old_stdin = sys.stdin
        try:
            with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
                try:
                    sys.stdin = io.StringIO("")
                    # While the command runs, SIGINT is Python's own (asyncio.run turns it
                    # into a cancellation, exactly as for a Ctrl-C in a terminal); between
                    # commands a late one is ignored.
                    signal.signal(signal.SIGINT, signal.default_int_handler)
                    self._active = c
                    watcher.start()
                    rc = cli.main(argv, kdev_session=self.session)
                except SystemExit as exit_:  # argparse usage errors
                    rc = exit_.code if isinstance(exit_.code, int) else (0 if exit_.code is None else 2)
                except KeyboardInterrupt:  # also when it lands before cli.main got to catch it
                    print("vexfs-cockpit: interrupted", file=sys.stderr)
                    rc = 130
                except Exception:  # an in-process run would print this traceback too; the agent lives on
                    traceback.print_exc()
                    rc = 1
                finally:
                    with self._active_lock:
                        self._active = None
                    signal.signal(signal.SIGINT, signal.SIG_IGN)
        except KeyboardInterrupt:  # delivered just after the command ended: it ran to its end
            pass
        finally:
            sys.stdin = old_stdin
            os.environ.clear()
            os.environ.update(own_env)
            os.chdir(own_cwd)
        return rc


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m vexfs_cockpit.agent_server", description=__doc__)
    ap.add_argument("--socket", required=True, type=Path)
    ap.add_argument("--idle", type=float, default=900.0)
    ap.add_argument("--ready-fd", type=int, default=None, help="write 'ready' here once listening, then close it")
    args = ap.parse_args(argv)
    root = logging.getLogger()
    root.handlers[:] = [_CurrentStderr()]
    root.handlers[0].setFormatter(logging.Formatter("vexfs-cockpit: %(name)s: %(message)s"))
    root.setLevel(logging.WARNING)
    # Import the engine before saying "ready": the first command then runs warm too.
    from vexfs_cockpit import cli

    cli.build_parser()
    import vexfs_cockpit.commands.kdev  # noqa: F401
    import vexfs_cockpit.commands.run  # noqa: F401
    import vexfs_cockpit.fleet.attach  # noqa: F401
    import vexfs_cockpit.transport.ssh  # noqa: F401
    from vexfs_cockpit.engine.discovery import discover_domains

    discover_domains()
    os.chdir("/")
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # only a running command is interruptible
    server = AgentServer(args.socket, args.idle, code_fingerprint())
    server.serve(args.ready_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
