"""Where the kdev agent listens, how a client recognises a stale one, and the wire format.

Standard library only: the client imports this on every ``kload``/``kunload``/
``kbuild``/``ktest``, and the point of the agent is that those start in tens of
milliseconds instead of paying the engine's imports (~1 s) each time.

Wire format: newline-delimited JSON over a Unix socket.
  client -> agent: one request line ``{"argv", "cwd", "env", "fingerprint", "tty"}``
                   (or ``{"control": "status"|"stop"}``), then ``{"signal": "int"}``
                   lines when the user presses Ctrl-C;
  agent -> client: ``{"out": text}`` / ``{"err": text}`` as the command prints,
                   then ``{"exit": code}``; or ``{"stale": true}`` when the agent
                   runs other code than the client (it exits; the client starts a
                   fresh one).
"""

from __future__ import annotations

import errno
import json
import os
import socket
import stat
import struct
import sys
import sysconfig
import zlib
from pathlib import Path
from typing import Any

# The warm-loop commands: short, run many times an hour against one dev VM.
AGENT_COMMANDS = frozenset({"kbuild", "kload", "kunload", "ktest"})

ENV_SWITCH = "VEXFS_KDEV_AGENT"  # 0/off/no/false: every command runs in its own process
ENV_DIR = "VEXFS_KDEV_AGENT_DIR"  # where the socket and the log live
ENV_IDLE = "VEXFS_KDEV_AGENT_IDLE_S"  # the agent exits after this long without a request
DEFAULT_IDLE_S = 900.0
SPAWN_TIMEOUT_S = 60.0  # the agent imports the engine before it says "ready"
REQUEST_TIMEOUT_S = 10.0  # a client sends its request right after connecting; one that does not is dropped

READY_LINE = b"ready\n"


def enabled(environ: dict[str, str] | os._Environ[str] = os.environ) -> bool:
    return environ.get(ENV_SWITCH, "1").strip().lower() not in {"0", "off", "no", "false"}


def idle_seconds(environ: dict[str, str] | os._Environ[str] = os.environ) -> float:
    raw = environ.get(ENV_IDLE, "")
    try:
        value = float(raw) if raw else DEFAULT_IDLE_S
    except ValueError:
        return DEFAULT_IDLE_S
    return value if value > 0 else DEFAULT_IDLE_S


def agent_dir(environ: dict[str, str] | os._Environ[str] = os.environ) -> Path:
    """Per-user directory (0700, see ``open_private_dir``); both ends also check each
    other's uid on the socket (``peer_uid``)."""
    explicit = environ.get(ENV_DIR)
    if explicit:
        return Path(explicit)
    base = environ.get("XDG_RUNTIME_DIR") or environ.get("TMPDIR") or "/tmp"  # not tempfile: 10 ms of imports
    return Path(base) / f"vexfs-cockpit-{os.getuid()}"


class UnsafeDir(Exception):
    """The agent's directory is not a private directory of ours; ``str()`` says why, in one line."""


def open_private_dir(directory: Path, *, create: bool = True) -> int:
    """Create (``create``) or open the agent's directory and return an fd on it, after
    checking that it is a real directory (not a symlink), ours, and mode 0700.

    Without XDG_RUNTIME_DIR the directory sits in /tmp, where anyone can create
    ``vexfs-cockpit-<uid>`` first: as a symlink to their own directory, or as their
    own directory, holding a socket of theirs that would receive our environment.
    The checks are on the opened fd (``O_NOFOLLOW``), not on the path, so the
    directory cannot be swapped between the check and its use through the fd.
    Raises UnsafeDir, or OSError when it cannot be created or opened."""
    created = False
    if create:
        os.makedirs(directory.parent, mode=0o700, exist_ok=True)
        try:
            os.mkdir(directory, 0o700)
            created = True
        except FileExistsError:
            pass
    st = os.lstat(directory)
    if stat.S_ISLNK(st.st_mode):
        raise UnsafeDir(f"{directory} is a symlink")
    if not stat.S_ISDIR(st.st_mode):
        raise UnsafeDir(f"{directory} is not a directory")
    try:
        fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except OSError as err:
        if err.errno in (errno.ELOOP, errno.ENOTDIR):  # swapped for a symlink since the lstat
            raise UnsafeDir(f"{directory} is a symlink") from None
        raise
    try:
        if created:  # mkdir's mode went through the umask
            os.fchmod(fd, 0o700)
        st = os.fstat(fd)
        uid = os.geteuid()
        if st.st_uid != uid:
            raise UnsafeDir(f"{directory} belongs to uid {st.st_uid}, not to this user (uid {uid})")
        mode = stat.S_IMODE(st.st_mode)
        if mode != 0o700:
            raise UnsafeDir(f"{directory} has mode {mode:04o}, not 0700")
    except BaseException:
        os.close(fd)
        raise
    return fd


def peer_uid(sock: socket.socket) -> int | None:
    """The uid of the process at the other end of a connected Unix socket (SO_PEERCRED:
    the kernel's word, taken when it connected or listened); None where unknown."""
    opt = getattr(socket, "SO_PEERCRED", None)
    if opt is None:
        return None
    try:
        _pid, uid, _gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, opt, struct.calcsize("3i")))
    except OSError:
        return None
    return uid


def socket_path(directory: Path) -> Path:
    return directory / "kdev-agent.sock"


def log_path(directory: Path) -> Path:
    return directory / "kdev-agent.log"


def _py_files(root: Path) -> list[tuple[str, int, int]]:
    found = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith((".", "__pycache__"))]
        for name in filenames:
            if name.endswith((".py", ".yaml", ".tcss")):
                st = os.stat(os.path.join(dirpath, name))
                found.append((os.path.join(dirpath, name), st.st_mtime_ns, st.st_size))
    return sorted(found)


def code_fingerprint() -> str:
    """Which code a process runs: the cockpit's and the domains' source files (path,
    mtime, size), the interpreter, and the installed packages (site-packages' mtime
    moves on every install). A developer who edits a domain or pulls a new cockpit
    gets a fresh agent on the next command, never the old code."""
    parts = [sys.executable, sys.version]
    roots = [Path(__file__).resolve().parent.parent]
    spec = _find_spec("domains")
    if spec is not None and spec.submodule_search_locations:
        roots += [Path(p) for p in spec.submodule_search_locations]
    for root in roots:
        parts += map(repr, _py_files(root))
    try:
        parts.append(str(os.stat(sysconfig.get_paths()["purelib"]).st_mtime_ns))
    except OSError:
        pass
    # Not a secret, only "same code?": two zlib checksums (hashlib's OpenSSL load costs
    # ~6 ms of every client's start).
    data = "\0".join(parts).encode()
    return f"{zlib.crc32(data):08x}{zlib.adler32(data):08x}"


def _find_spec(name: str) -> Any:
    """``importlib.util.find_spec`` for a top-level name, without importing importlib.util."""
    for finder in sys.meta_path:
        find = getattr(finder, "find_spec", None)
        spec = find(name, None) if find is not None else None
        if spec is not None:
            return spec
    return None


def encode(msg: dict[str, Any]) -> bytes:
    return json.dumps(msg, separators=(",", ":")).encode() + b"\n"


def decode(line: bytes) -> dict[str, Any]:
    msg = json.loads(line)
    if not isinstance(msg, dict):
        raise ValueError(f"expected a JSON object, got {type(msg).__name__}")
    return msg
