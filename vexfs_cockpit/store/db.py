"""Finding, validating and opening the history DB file.

Rule one: a file that is not ours is never written to. We read its first 100 bytes
ourselves (magic + application_id) before SQLite touches it, and only then check the
schema through a read-only connection. Anything wrong is a one-line StoreError naming
the file and the fix.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path

import platformdirs

from vexfs_cockpit.errors import StoreError
from vexfs_cockpit.store.schema import (
    APPLICATION_ID,
    LATEST_VERSION,
    REQUIRED_TABLES,
    SQLITE_MAGIC,
    migrate,
)

DB_ENV_VAR = "VEXFS_COCKPIT_DB"
BUSY_TIMEOUT_MS = 10_000
_FIX = "move it away or pass --db PATH"


def default_db_path() -> Path:
    return Path(platformdirs.user_data_dir("vexfs-cockpit", appauthor=False)) / "history.db"


def resolve_db_path(
    cli_db: str | os.PathLike[str] | None = None,
    config_db: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> Path:
    """--db beats VEXFS_COCKPIT_DB beats config ``store.db_path`` beats the data dir."""
    for candidate in (cli_db, environ.get(DB_ENV_VAR) or None, config_db):
        if candidate:
            return Path(candidate).expanduser()
    return default_db_path()


def check_file(path: Path) -> bool:
    """Validate an existing file by its header bytes. Returns False if it is absent/empty.

    Empty counts as new: we create the file (0600) before SQLite first writes it.
    """
    try:
        with open(path, "rb") as fh:
            header = fh.read(100)
    except (FileNotFoundError, NotADirectoryError):
        return False
    except IsADirectoryError:
        raise StoreError(f"history DB {path} is a directory: pass --db PATH to a file") from None
    except OSError as exc:
        raise StoreError(f"cannot read history DB {path}: {exc.strerror}; fix its permissions or pass --db PATH") from None
    if not header:
        return False
    if len(header) < 100 or not header.startswith(SQLITE_MAGIC):
        raise StoreError(f"{path} is not an SQLite database (corrupt or foreign): {_FIX}")
    app_id = int.from_bytes(header[68:72], "big")
    if app_id != APPLICATION_ID:
        raise StoreError(f"{path} is an SQLite database of another application, not a vexfs-cockpit history: {_FIX}")
    return True


def connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection (WAL: readers never block the writer)."""
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.row_factory = sqlite3.Row
    return conn


def verify_schema(path: Path, deep: bool = False) -> int:
    """Read-only check that ``path`` (already past check_file) is a history DB we can use.

    Returns its schema version (0: created, never migrated). ``deep`` adds
    PRAGMA quick_check (O(size); done once when the writer opens). A refused file is
    left exactly as found: SQLite's read-only open of a WAL database creates empty
    -wal/-shm side files, which we remove again if we made them.
    """
    with leave_as_found(path):
        return _verify_schema(path, deep)


@contextmanager
def leave_as_found(path: Path) -> Iterator[None]:
    """On StoreError, remove the empty -wal/-shm a read-only open created."""
    sides = [path.with_name(path.name + s) for s in ("-wal", "-shm")]
    had = any(p.exists() for p in sides)
    try:
        yield
    except StoreError:
        wal = sides[0]
        if not had and (not wal.exists() or wal.stat().st_size == 0):
            for side in sides:
                side.unlink(missing_ok=True)
        raise


def _verify_schema(path: Path, deep: bool) -> int:
    try:
        conn = connect_ro(path)
        try:
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version > LATEST_VERSION:
                raise StoreError(
                    f"history DB {path} has schema v{version}, newer than this vexfs-cockpit "
                    f"(v{LATEST_VERSION}): upgrade vexfs-cockpit or pass --db PATH"
                )
            tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            if version == 0 and not tables:
                return 0  # created but never migrated: ours to initialise
            # v1 created every required table, so any version must have them before a
            # migration touches the file (a foreign file claiming v1 is refused here).
            missing = REQUIRED_TABLES - tables
            if version == 0 or missing:
                raise StoreError(f"{path} lacks the vexfs-cockpit history tables (corrupt or foreign): {_FIX}")
            if deep:
                problems = [r[0] for r in conn.execute("PRAGMA quick_check(3)")]
                if problems != ["ok"]:
                    lines = [ln for p in problems for ln in p.splitlines() if not ln.startswith("***")]
                    raise StoreError(f"history DB {path} is corrupt ({(lines or ['quick_check failed'])[0]}): {_FIX}")
            return version
        finally:
            conn.close()
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"history DB {path} is corrupt ({exc}): {_FIX}") from None


def ensure_file(path: Path) -> None:
    """Create the directory (0700) and an empty DB file (0600) unless they exist."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
        except FileExistsError:
            pass  # another process won the race: check_file/verify will judge it
    except OSError as exc:
        why = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
        raise StoreError(f"cannot create history DB {path}: {why}; pass --db PATH to a writable place") from None


def open_writer(path: Path, deep_check: bool = True) -> sqlite3.Connection:
    """Validate, create if needed, migrate, switch to WAL. Call from the writer thread.

    ``deep_check`` runs PRAGMA quick_check first (a run's open does; a quick CLI
    command may skip it).
    """
    existed = check_file(path)
    if existed:
        verify_schema(path, deep=deep_check)
    else:
        ensure_file(path)
    try:
        conn = sqlite3.connect(str(path))
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        # Migrate before WAL: the first commit then lands in the main file, so its
        # header carries our application_id even if we are killed right after.
        migrate(conn)
        if conn.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = NORMAL")  # WAL + NORMAL: durable at checkpoints, safe
        conn.execute("PRAGMA foreign_keys = OFF")  # events may arrive before their parents
        return conn
    except sqlite3.OperationalError as exc:
        raise StoreError(f"cannot write history DB {path} ({exc}): fix its permissions or pass --db PATH") from None
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"history DB {path} is corrupt ({exc}): {_FIX}") from None


def open_reader(path: Path) -> sqlite3.Connection | None:
    """A validated read-only connection, or None if the DB does not exist yet."""
    if not check_file(path) or verify_schema(path) == 0:
        return None
    try:
        return connect_ro(path)
    except sqlite3.DatabaseError as exc:
        raise StoreError(f"history DB {path} is corrupt ({exc}): {_FIX}") from None
