"""A real PostgreSQL for the tests: Debian's server, initdb + pg_ctl into a temporary
directory, listening on a Unix socket in that directory and on 127.0.0.1 (a free
port) only. No tests here.

initdb refuses to run as root, so as root the cluster belongs to the ``postgres``
user the package creates (runuser); the cluster's superuser is ``cockpit`` and local
connections are trusted: the tests need no password, and no password is stored.
"""

from __future__ import annotations

import contextlib
import itertools
import os
import pwd
import shutil
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg

SUPERUSER = "cockpit"


def pg_bindir() -> Path | None:
    """The newest installed server's bin dir, or None (PostgreSQL not installed)."""
    root = Path("/usr/lib/postgresql")
    found = sorted((p for p in root.glob("*/bin") if (p / "pg_ctl").exists()),
                   key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    return found[-1] if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    root: Path
    port: int
    _ids: Iterator[int] = field(default_factory=itertools.count)

    @property
    def socket_dir(self) -> Path:
        return self.root / "sock"

    def url(self, dbname: str = "postgres") -> str:
        """A socket URL (libpq: host=<dir>)."""
        return f"postgresql://{SUPERUSER}@/{dbname}?host={self.socket_dir}&port={self.port}"

    def tcp_url(self, dbname: str = "postgres") -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self, prefix: str = "t") -> str:
        """A fresh, empty database; returns its socket URL."""
        name = f"{prefix}_{os.getpid()}_{next(self._ids)}"
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')  # our own generated name
        return self.url(name)


def _as_owner(argv: list[str], owner: str | None) -> list[str]:
    return ["runuser", "-u", owner, "--", *argv] if owner else argv


@contextlib.contextmanager
def running_postgres(base: Path, keep: bool = False) -> Iterator[PgServer]:
    """Start a throw-away cluster under ``base``; stopped (fast) and removed on exit.

    ``keep``: the cluster under ``base`` outlives the call (the benchmarks' cached
    history): started again if it is there, stopped cleanly and left on exit."""
    bindir = pg_bindir()
    if bindir is None:
        raise RuntimeError("PostgreSQL is not installed: run scripts/setup.sh (it installs postgresql)")
    owner = "postgres" if os.geteuid() == 0 else None
    root = base / "pg"
    (root / "sock").mkdir(parents=True, exist_ok=keep)
    if owner:
        pw = pwd.getpwnam(owner)
        for p in (base, root, root / "sock"):
            os.chown(p, pw.pw_uid, pw.pw_gid)
    data = root / "data"
    port = _free_port()
    run = lambda argv: subprocess.run(_as_owner(argv, owner), check=True, capture_output=True, text=True)  # noqa: E731
    if not (keep and (data / "PG_VERSION").exists()):
        run([str(bindir / "initdb"), "-D", str(data), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
             "--locale=C", "--no-sync"])
    elif (data / "postmaster.pid").exists():  # a kept cluster whose last user was killed: still up
        subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "stop"], owner),
                       capture_output=True)
    opts = (f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root / 'sock'} "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off -c max_connections=60 "
            "-c shared_buffers=64MB")
    try:
        run([str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-l", str(root / "log"), "-w", "-t", "60", "start"])
    except subprocess.CalledProcessError as exc:
        log = (root / "log").read_text(errors="replace") if (root / "log").exists() else ""
        raise RuntimeError(f"pg_ctl start failed: {exc.stderr}{log[-2000:]}") from None
    try:
        yield PgServer(root, port)
    finally:
        # A kept cluster is stopped cleanly: fsync is off, its files must be whole on disk.
        subprocess.run(_as_owner([str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast" if keep else "immediate",
                                  "stop"], owner), capture_output=True)
        if not keep:
            shutil.rmtree(root, ignore_errors=True)
