"""Finding, validating and opening the history DB file.

Rule one: a file that is not ours is never written to. We read its first 100 bytes
ourselves (magic + application_id) before SQLite touches it, and only then check the
schema through a read-only connection. Anything wrong is a one-line StoreError naming
the file and the fix.

Rule two: say what is wrong, not the first guess. A sound DB that cannot be written
(read-only file or filesystem, directory not writable or gone, disk full) is a
StoreUnwritable naming that cause (``write_failure``); only a file SQLite cannot make
sense of is called corrupt. Readers still read a read-only DB.
"""

from __future__ import annotations

import errno
import os
import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import platformdirs

from vexfs_cockpit.errors import StoreError, StoreUnwritable
from vexfs_cockpit.store.dialect import Conn
from vexfs_cockpit.store.location import PgUrl, StoreLocation, parse_location
from vexfs_cockpit.store.schema import (
    APPLICATION_ID,
    LATEST_VERSION,
    REQUIRED_TABLES,
    SQLITE_MAGIC,
    migrate,
)

if TYPE_CHECKING:
    from vexfs_cockpit.store.pg import Readers

DB_ENV_VAR = "VEXFS_COCKPIT_DB"
BUSY_TIMEOUT_MS = 10_000
_FIX = "move it away or pass --db PATH"
_SQLITE_READONLY = 8
_SQLITE_FULL = 13
# Words of SQLite's messages for a file it cannot make sense of.
_CORRUPT_WORDS = ("malformed", "not a database", "corrupt")


def default_db_path() -> Path:
    return Path(platformdirs.user_data_dir("vexfs-cockpit", appauthor=False)) / "history.db"


def resolve_location(
    cli_db: str | os.PathLike[str] | None = None,
    config_db: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] = os.environ,
) -> StoreLocation:
    """--db beats VEXFS_COCKPIT_DB beats config ``store.url`` (or ``store.db_path``)
    beats the data dir. Each may be an SQLite path or a ``postgresql://`` URL. The
    config's is checked even where it is overridden: a password there is refused (a
    run stores its config in the history)."""
    if config_db:
        parse_location(os.fspath(config_db), "store.url")
    for where, candidate in (("--db", cli_db), (DB_ENV_VAR, environ.get(DB_ENV_VAR) or None),
                             ("store.url", config_db)):
        if candidate:
            return parse_location(os.fspath(candidate), where)
    return default_db_path()


def history_exists(loc: StoreLocation) -> bool:
    """True if the history at ``loc`` exists and is ours; a foreign or corrupt one is a
    StoreError. A PostgreSQL database without our schema counts as absent."""
    if isinstance(loc, PgUrl):
        conn = open_reader(loc)
        if conn is not None:
            conn.close()
        return conn is not None
    return check_file(loc)


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


def _connect_uri(uri: str) -> sqlite3.Connection:
    conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
    conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    conn.row_factory = sqlite3.Row
    return conn


def connect_ro(path: Path) -> sqlite3.Connection:
    """A read-only connection (WAL: readers never block the writer).

    A WAL database needs its -shm beside it even to be read. Where that file is
    absent and cannot be made (read-only filesystem, directory not writable) no
    writer can be at work either, so the file is read as immutable instead.
    """
    uri = path.resolve().as_uri()
    conn = _connect_uri(f"{uri}?mode=ro")
    try:
        conn.execute("PRAGMA user_version").fetchone()  # opens the WAL index, if any
    except sqlite3.OperationalError:
        conn.close()
        shm = path.with_name(path.name + "-shm")
        if shm.exists() or os.access(path.parent, os.W_OK | os.X_OK):
            raise
        conn = _connect_uri(f"{uri}?mode=ro&immutable=1")
    except BaseException:
        conn.close()
        raise
    return conn


# -- why a DB cannot be written --------------------------------------------------------
def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _mount_point(path: Path) -> Path:
    p = _nearest_existing(path.absolute())
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def is_disk_full(exc: BaseException, path: Path | None = None) -> bool:
    """ENOSPC/EDQUOT, SQLite's SQLITE_FULL, or an I/O error on a filesystem with no space left."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)
    if (code is not None and code & 0xFF == _SQLITE_FULL) or "disk is full" in str(exc):
        return True
    if path is not None and "disk i/o error" in str(exc).lower():
        try:
            return os.statvfs(_nearest_existing(path.parent)).f_bavail == 0
        except OSError:
            return False
    return False


def disk_full_message(path: Path) -> str:
    return (f"history DB {path}: disk full (no space left on the filesystem at {_mount_point(path.parent)}): "
            "free space there or pass --db PATH")


def write_problem(path: Path) -> str | None:
    """Why ``path`` cannot be written, as the filesystem tells it; None if it can.

    Not the disk being full (that shows only when a write fails: see ``write_failure``).
    ``os.access`` answers for this process (root too: it reports read-only mounts and
    immutable files, which root cannot write either).
    """
    parent = path.parent
    if not parent.is_dir():
        return f"history DB {path}: its directory {parent} is gone: recreate it or pass --db PATH"
    try:
        read_only_fs = bool(os.statvfs(parent).f_flag & os.ST_RDONLY)
    except OSError:
        read_only_fs = False
    if read_only_fs:
        return (f"history DB {path} is on a read-only filesystem ({_mount_point(parent)}): "
                "remount it read-write or pass --db PATH")
    if path.exists() and not os.access(path, os.W_OK):
        return f"history DB {path} is read-only: make it writable (chmod u+w, chattr -i) or pass --db PATH"
    for side in (path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")):
        if side.exists() and not os.access(side, os.W_OK):
            return f"history DB {path}: its {side.name} is read-only: make it writable or pass --db PATH"
    if not os.access(parent, os.W_OK | os.X_OK):
        return (f"history DB {path}: its directory {parent} is not writable (SQLite keeps "
                f"{path.name}-wal and -shm beside it): fix the directory's permissions or pass --db PATH")
    return None


def write_failure(path: Path, exc: BaseException) -> StoreError:
    """The one-line error for ``exc``, raised while writing ``path``: disk full, read-only,
    directory not writable or gone (StoreUnwritable), corrupt, or else the error itself."""
    if is_disk_full(exc, path):
        return StoreUnwritable(disk_full_message(path))
    problem = write_problem(path)
    if problem:
        return StoreUnwritable(problem)
    text = str(exc)
    if isinstance(exc, sqlite3.DatabaseError):
        code = getattr(exc, "sqlite_errorcode", None)
        if code is not None and code & 0xFF == _SQLITE_READONLY:
            return StoreUnwritable(f"history DB {path} is read-only ({text}): make it writable or pass --db PATH")
        if not isinstance(exc, sqlite3.OperationalError) or any(w in text.lower() for w in _CORRUPT_WORDS):
            return StoreError(f"history DB {path} is corrupt ({text}): {_FIX}")
    why = exc.strerror if isinstance(exc, OSError) and exc.strerror else text
    return StoreError(f"cannot write history DB {path} ({why}): check the disk and permissions or pass --db PATH")


def read_failure(path: Path, exc: sqlite3.DatabaseError) -> StoreError:
    """The one-line error for ``exc``, raised while reading ``path``: corrupt only when
    SQLite says so, not when the file merely cannot be opened."""
    text = str(exc)
    if isinstance(exc, sqlite3.OperationalError) and not any(w in text.lower() for w in _CORRUPT_WORDS):
        return StoreError(f"cannot read history DB {path} ({text}): check it and its directory's permissions "
                          "or pass --db PATH")
    return StoreError(f"history DB {path} is corrupt ({text}): {_FIX}")


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
                try:
                    side.unlink(missing_ok=True)
                except OSError:
                    pass  # a read-only place: nothing was made there either
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
        raise read_failure(path, exc) from None


def ensure_file(path: Path) -> None:
    """Create the directory (0700) and an empty DB file (0600) unless they exist."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        if is_disk_full(exc):
            raise StoreUnwritable(disk_full_message(path)) from None
        why = exc.strerror or errno.errorcode.get(exc.errno or 0, str(exc))
        raise StoreError(f"cannot create history DB {path}: {why}; pass --db PATH to a writable place") from None
    try:
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600))
    except FileExistsError:
        pass  # another process won the race: check_file/verify will judge it
    except OSError as exc:
        raise write_failure(path, exc) from None


def open_writer(loc: StoreLocation, deep_check: bool = True) -> Conn:
    """Validate, create if needed, migrate, switch to WAL. Call from the writer thread.

    ``deep_check`` runs PRAGMA quick_check first (a run's open does; a quick CLI
    command may skip it). A sound DB this process cannot write raises StoreUnwritable
    naming why, before anything is written. A PostgreSQL history is created or
    migrated the same way (pg.migrate).
    """
    if isinstance(loc, PgUrl):
        from vexfs_cockpit.store import pg

        pconn = pg.connect(loc)
        try:
            pg.migrate(pconn)
        except pg.psycopg.Error as exc:
            pconn.close()
            raise StoreError(f"history DB {loc}: cannot create or migrate its schema ({pg.first_line(exc)}): "
                             "grant the user CREATE on that database or pass --db elsewhere") from None
        except BaseException:
            pconn.close()
            raise
        return pconn
    path = loc
    existed = check_file(path)
    if existed:
        verify_schema(path, deep=deep_check)
        problem = write_problem(path)
        if problem:
            raise StoreUnwritable(problem)
    else:
        ensure_file(path)
    conn: sqlite3.Connection | None = None
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
        # SQLite opens a file it may not write read-only without a word: ask now, not
        # at the run's first result.
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("UPDATE runs SET id = id WHERE 0")
        conn.execute("ROLLBACK")
        return conn
    except sqlite3.DatabaseError as exc:
        if conn is not None:
            conn.close()
        raise write_failure(path, exc) from None


def open_reader(loc: StoreLocation) -> Conn | None:
    """A validated read-only connection, or None if the DB does not exist yet."""
    if isinstance(loc, PgUrl):
        from vexfs_cockpit.store import pg

        pconn = pg.connect(loc)
        try:
            version = pg.verify(pconn)
        except pg.psycopg.Error as exc:
            pconn.close()
            raise pg.read_error(loc, exc) from None
        except BaseException:
            pconn.close()
            raise
        if version == 0:
            pconn.close()
            return None
        return pconn
    path = loc
    if not check_file(path) or verify_schema(path) == 0:
        return None
    try:
        return connect_ro(path)
    except sqlite3.DatabaseError as exc:
        raise read_failure(path, exc) from None


@contextmanager
def reading(loc: StoreLocation, readers: Readers | None = None) -> Iterator[Conn | None]:
    """A reader's connection for one read (None: no history yet), closed after it; any
    error of the database itself is one line naming it. ``readers``: a pool of open
    connections to ``loc`` (PostgreSQL) to borrow one from instead."""
    if readers is not None:
        with readers.reading() as borrowed:
            yield borrowed
        return
    if isinstance(loc, PgUrl):
        from vexfs_cockpit.store import pg

        pconn = open_reader(loc)
        try:
            yield pconn
        except pg.psycopg.Error as exc:
            raise pg.read_error(loc, exc) from None
        finally:
            if pconn is not None:
                pconn.close()
        return
    with leave_as_found(loc):
        conn = open_reader(loc)
        try:
            yield conn
        except sqlite3.DatabaseError as exc:
            raise read_failure(loc, exc) from None
        finally:
            if conn is not None:
                conn.close()


def store_size(loc: StoreLocation) -> int:
    """What the history takes: an SQLite file with its -wal and -shm (0 if absent), or
    the PostgreSQL database's size on its server (one line if it cannot be read)."""
    if isinstance(loc, PgUrl):
        from vexfs_cockpit.store import pg

        conn = pg.connect(loc)
        try:
            return pg.database_size(conn)
        except pg.psycopg.Error as exc:
            raise StoreError(f"cannot read the size of history DB {loc} ({pg.first_line(exc)})") from None
        finally:
            conn.close()
    total = 0
    for p in (loc, loc.with_name(loc.name + "-wal"), loc.with_name(loc.name + "-shm")):
        try:
            total += os.stat(p).st_size
        except OSError:
            pass
    return total
