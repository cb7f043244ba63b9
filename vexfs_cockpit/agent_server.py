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
``protocol.code_fingerprint``). Commands run one after another, in the main
thread, on one event loop (``agent.session``), where each dev VM's SSH connection
is kept for the next command (a key exchange less each time, as with
ControlPersist); a VM that was reset or restarted gets a new one. Nothing else of
a command outlives it.

Connections are accepted and their requests read on other threads: a connection
from another uid (SO_PEERCRED) is closed unread, a client that sends no whole
request within ``REQUEST_TIMEOUT_S`` is dropped, and neither holds up anybody
else's command; ``kagent status``/``stop`` are answered even while a command runs.
A failure of the agent itself reaches the client as one line and exit code 3; its
traceback goes to the agent's log only.

    python -m vexfs_cockpit.agent_server --socket PATH [--idle SECONDS] [--request-timeout SECONDS]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import logging
import os
import queue
import select
import signal
import socket
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any

from vexfs_cockpit.agent.protocol import (
    AGENT_COMMANDS, READY_LINE, REQUEST_TIMEOUT_S, UnsafeDir, code_fingerprint, decode, encode, log_path,
    open_private_dir, peer_uid,
)
from vexfs_cockpit.agent.session import KdevSession

MAX_REQUEST_BYTES = 16 << 20  # argv + cwd + environment: a few kB


def _log(line: str) -> None:
    """A line for the agent's log (its own stderr), never for a client: while a command
    runs, ``sys.stderr`` is that command's client."""
    log = sys.__stderr__
    if log is not None:
        with contextlib.suppress(OSError, ValueError):
            log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} kdev-agent[{os.getpid()}]: {line}\n")
            log.flush()


def _log_traceback(what: str) -> None:
    log = sys.__stderr__
    _log(f"{what}:")
    if log is not None:
        with contextlib.suppress(OSError, ValueError):
            traceback.print_exc(file=log)
            log.flush()


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
    """Logging to whatever sys.stderr is now (the current client), not the first one.
    A record's traceback goes to the agent's log; the client gets its one line."""

    @property  # type: ignore[override]
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, _value: Any) -> None:
        pass

    def format(self, record: logging.LogRecord) -> str:
        if not (record.exc_info or record.stack_info):
            return super().format(record)
        if sys.__stderr__ is not None and sys.stderr is not sys.__stderr__:
            with contextlib.suppress(OSError, ValueError):
                sys.__stderr__.write(super().format(record) + "\n")
        bare = logging.makeLogRecord(record.__dict__)
        bare.exc_info = bare.exc_text = bare.stack_info = None
        return super().format(bare)


class _Connection:
    def __init__(self, conn: socket.socket):
        self.conn = conn
        self._buf = bytearray()
        self._lock = threading.Lock()  # libvirt's event thread may log while the command prints
        self.open = True

    def readline(self, deadline: float | None = None) -> bytes:
        """The next line, newline included; b"" at the end (a partial last line is
        dropped). TimeoutError when no whole line came by ``deadline`` (monotonic)."""
        scanned = 0
        while (end := self._buf.find(b"\n", scanned)) < 0:
            scanned = len(self._buf)
            if scanned > MAX_REQUEST_BYTES:
                raise ValueError(f"a line of more than {MAX_REQUEST_BYTES} bytes")
            if deadline is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError
                self.conn.settimeout(left)
            chunk = self.conn.recv(1 << 16)
            if not chunk:
                return b""
            self._buf += chunk
        line = bytes(self._buf[:end + 1])
        del self._buf[:end + 1]
        return line

    def send(self, msg: dict[str, Any]) -> None:
        if not self.open:
            return
        with self._lock:
            try:
                self.conn.sendall(encode(msg))
            except OSError:  # the client went away; the command is being interrupted
                self.open = False

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.conn.shutdown(socket.SHUT_RDWR)  # wakes this client's watcher thread
        self.conn.close()


class AgentServer:
    def __init__(self, path: Path, idle_s: float, fingerprint: str, request_timeout_s: float = REQUEST_TIMEOUT_S):
        self.path = path
        self.idle_s = idle_s
        self.fingerprint = fingerprint
        self.request_timeout_s = request_timeout_s
        self.started = time.time()
        self.requests = 0
        self._active: _Connection | None = None  # whose command is executing: its Ctrl-C may interrupt it
        self._active_lock = threading.Lock()  # no SIGINT once that command has ended
        # Commands wait here for the main thread (one at a time: they share the process's
        # cwd, environment, stdout and event loop); None only wakes it up.
        self._queue: queue.Queue[tuple[_Connection, dict[str, Any]] | None] = queue.Queue()
        self._queue_lock = threading.Lock()  # "stopping?" and "queue it" as one step
        self._stopping = False
        self._readers: set[threading.Thread] = set()
        self._last_request = time.monotonic()
        self._inode: int | None = None
        self._wake_r, self._wake_w = os.pipe()  # stops the accepting thread
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
        listener.listen(16)
        listener.setblocking(False)
        acceptor = threading.Thread(target=self._accept_loop, args=(listener,), daemon=True, name="kdev-agent-accept")
        acceptor.start()
        if ready_fd is not None:
            os.write(ready_fd, READY_LINE)
            os.close(ready_fd)
        try:
            self._run_queue()
        finally:
            self._stop()
            acceptor.join()
            self._refuse_backlog(listener)
            listener.close()
            for reader in list(self._readers):  # each gives up by its request deadline
                reader.join(self.request_timeout_s + 1)
            self._drain_queue()
            os.close(self._wake_r)
            os.close(self._wake_w)
            self.session.close()  # the kept SSH connections

    def _run_queue(self) -> None:
        """The main thread: run the queued commands in turn; return when stopping or idle."""
        while not self._stopping:
            wait = self._last_request + self.idle_s - time.monotonic()
            if wait <= 0:  # the idle exit: no request for this long
                return
            try:
                item = self._queue.get(timeout=wait)
            except queue.Empty:
                continue
            if item is None:
                continue
            c, req = item
            try:
                self._execute(c, req)
            finally:
                c.close()
                self._last_request = time.monotonic()

    def _stop(self) -> None:
        """Stop taking requests: nobody new reaches this agent (the socket's name goes at
        once, so the next client starts a fresh agent), queued commands are turned away."""
        with self._queue_lock:
            if self._stopping:
                return
            self._stopping = True
        self._unlink_own_socket()
        os.write(self._wake_w, b"x")
        self._queue.put(None)

    def _refuse_backlog(self, listener: socket.socket) -> None:
        """Clients that connected before the name went: told "stale" (ask a fresh agent),
        not reset (which would look to them like an agent that died mid-command)."""
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:  # BlockingIOError: none left
                return
            c = _Connection(conn)
            if peer_uid(conn) == os.geteuid():
                c.send({"stale": True})
            c.close()

    def _drain_queue(self) -> None:
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return
            if item is not None:
                item[0].send({"stale": True})  # its command did not run: the client asks a fresh agent
                item[0].close()

    def _unlink_own_socket(self) -> None:
        # A fresh agent may already listen at the same path: only remove our own socket.
        with contextlib.suppress(OSError):
            if os.stat(self.path).st_ino == self._inode:
                os.unlink(self.path)

    # ------------------------------------------------------------------ connections
    def _accept_loop(self, listener: socket.socket) -> None:
        uid = os.geteuid()
        while True:
            try:
                ready, _, _ = select.select([listener, self._wake_r], [], [])
            except OSError:
                return
            if self._wake_r in ready:
                return
            try:
                conn, _ = listener.accept()
            except OSError:  # gone again before we took it
                continue
            peer = peer_uid(conn)
            if peer != uid:  # the 0700 directory should make this impossible; the kernel's word decides
                _log(f"refused a connection from uid {peer} (this agent serves uid {uid} only)")
                conn.close()
                continue
            conn.setblocking(True)
            reader = threading.Thread(target=self._read_request, args=(_Connection(conn),), daemon=True,
                                      name="kdev-agent-request")
            self._readers.add(reader)
            reader.start()

    def _read_request(self, c: _Connection) -> None:
        """One connection's request, on its own thread: a slow or silent client holds only this."""
        queued = False
        try:
            try:
                line = c.readline(time.monotonic() + self.request_timeout_s)
                req = decode(line) if line else None
                c.conn.settimeout(None)  # from here on blocking: the command's output, the watcher's reads
            except TimeoutError:
                _log(f"dropped a client that sent no request within {self.request_timeout_s:g}s")
                return
            except (OSError, ValueError) as err:
                _log(f"dropped a client: unreadable request ({err})")
                return
            if req is not None:
                queued = self._dispatch(c, req)
        except Exception:
            _log_traceback("internal error reading a request")
            self._internal_error(c)
        finally:
            if not queued:
                c.close()
            self._readers.discard(threading.current_thread())

    def _dispatch(self, c: _Connection, req: dict[str, Any]) -> bool:
        """Answer ``req`` or queue its command (True: queued, the main thread closes ``c``)."""
        control = req.get("control")
        if control is not None:
            self._last_request = time.monotonic()
            self._control(c, str(control))
            return False
        if req.get("fingerprint") != self.fingerprint:
            self._stop()
            c.send({"stale": True})
            return False
        argv = req.get("argv")
        if not isinstance(argv, list) or not argv or argv[0] not in AGENT_COMMANDS:
            c.send({"err": f"vexfs-cockpit: the kdev agent runs only {', '.join(sorted(AGENT_COMMANDS))}\n"})
            c.send({"exit": 2})
            return False
        with self._queue_lock:
            if self._stopping:
                c.send({"stale": True})
                return False
            self._last_request = time.monotonic()
            self._queue.put((c, req))
        return True

    def _control(self, c: _Connection, what: str) -> None:
        if what == "stop":
            self._stop()
        c.send({"status": {
            "pid": os.getpid(), "started": self.started, "requests": self.requests,
            "idle_s": self.idle_s, "fingerprint": self.fingerprint, "stopping": self._stopping,
            "ssh": {"kept": len(self.session.targets), "made": self.session.targets.made, "lent": self.session.targets.lent},
        }})

    def _internal_error(self, c: _Connection) -> None:
        """An exception of the agent's own, its traceback already in the log: one line
        for the client, exit 3."""
        c.send({"err": self._internal_error_line()})
        c.send({"exit": 3})

    def _internal_error_line(self) -> str:
        err = sys.exc_info()[1]
        what = f"{type(err).__name__}: {err}".splitlines()[0] if err is not None else "unknown"
        return (f"vexfs-cockpit: kdev agent: internal error ({what}); the traceback is in "
                f"{log_path(self.path.parent)}\n")

    # ------------------------------------------------------------------ commands
    def _execute(self, c: _Connection, req: dict[str, Any]) -> None:
        """The main thread: run one queued command and send its exit code."""
        try:
            self.requests += 1
            tty = req.get("tty") or {}
            env = {str(k): str(v) for k, v in dict(req.get("env") or {}).items()}
            rc = self._run(
                c, [str(a) for a in req["argv"]], str(req.get("cwd") or "/"), env,
                bool(tty.get("out")), bool(tty.get("err")),
            )
        except Exception:
            _log_traceback(f"internal error running {req.get('argv')}")
            self._internal_error(c)
            return
        c.send({"exit": rc})

    def _watch_client(self, c: _Connection) -> None:
        """Ctrl-C on the client (or the client vanishing) is SIGINT for the running command."""
        try:
            while line := c.readline():
                try:
                    msg = decode(line)
                except ValueError:
                    continue
                if msg.get("signal") == "int":
                    self._interrupt(c)
        except (OSError, ValueError):
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
                except Exception:  # cli.main's own errors are CockpitErrors: this is a bug; the agent lives on
                    _log_traceback(f"internal error in {argv}")
                    stderr.write(self._internal_error_line())
                    rc = 3
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
    ap.add_argument("--request-timeout", type=float, default=REQUEST_TIMEOUT_S,
                    help="drop a client that sends no whole request within this long")
    ap.add_argument("--ready-fd", type=int, default=None, help="write 'ready' here once listening, then close it")
    args = ap.parse_args(argv)
    try:  # the client checked it too; an agent started by hand gets the same check
        os.close(open_private_dir(args.socket.parent, create=False))
    except (UnsafeDir, OSError) as err:
        print(f"vexfs-cockpit: kdev agent: not listening in {args.socket.parent}: {err}", file=sys.stderr)
        return 2
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
    server = AgentServer(args.socket, args.idle, code_fingerprint(), args.request_timeout)
    server.serve(args.ready_fd)
    return 0


if __name__ == "__main__":
    sys.exit(main())
