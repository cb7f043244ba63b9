"""PostgreSQL under the store's one SQL: a psycopg 3 connection that reads like sqlite3's.

The store writes each statement once, in the SQL that SQLite and PostgreSQL share,
with sqlite3's parameter styles (``?`` and ``:name``). This module is the only place
that knows the other server: it turns those into psycopg's ``%s``/``%(name)s``, gives
rows that index by position and by column name (as ``sqlite3.Row`` does), loads
``numeric`` (PostgreSQL's ``sum``/``avg`` of integers) as int or float, creates and
migrates the schema (schema_pg.py), and keeps the liveness of runs in advisory locks.

Checked against psycopg 3.3 (pyproject pins ``psycopg>=3.1,<4``). Imported only when
the history is a ``postgresql://`` URL.
"""

from __future__ import annotations

import hashlib
import logging
import re
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from functools import lru_cache
from typing import Any, Self

import psycopg
from psycopg.adapt import Loader
from psycopg.pq import TransactionStatus
from psycopg.types.string import StrDumperUnknown

from vexfs_cockpit.errors import StoreError
from vexfs_cockpit.store import schema_pg
from vexfs_cockpit.store.dialect import write_tx
from vexfs_cockpit.store.location import PgUrl
from vexfs_cockpit.store.schema import (
    APPLICATION_ID,
    LATEST_VERSION,
    MIGRATIONS,
    REQUIRED_TABLES,
)

CONNECT_TIMEOUT_S = 10
# psycopg-pool logs each failed background connect as a multi-line warning; with no
# handler configured Python prints those on stderr, through the TUI's screen. A
# library's NullHandler: whoever configures logging still gets them, nobody else.
logging.getLogger("psycopg.pool").addHandler(logging.NullHandler())
_CREDENTIALS = "check the server is up and the credentials in PGPASSWORD, ~/.pgpass or the service file"


# -- one SQL, two parameter styles -------------------------------------------------------
_HINT = re.compile(r"\s+INDEXED\s+BY\s+\w+", re.IGNORECASE)


@lru_cache(maxsize=512)
def to_pyformat(sql: str) -> str:
    """sqlite3's ``?`` and ``:name`` as psycopg's ``%s`` and ``%(name)s``; a literal ``%``
    doubled; SQLite's planner hints (``INDEXED BY``) dropped: PostgreSQL plans alone. Quoted text ('...', "...") is left as it is, ``%`` in it doubled too
    (psycopg reads the whole statement); ``::`` (a cast) is not a parameter."""
    sql = _HINT.sub("", sql)
    out: list[str] = []
    i, n = 0, len(sql)
    while i < n:
        c = sql[i]
        if c in "'\"":
            j = sql.find(c, i + 1)
            j = n - 1 if j < 0 else j
            out.append(sql[i:j + 1].replace("%", "%%"))
            i = j + 1
            continue
        if c == "?":
            out.append("%s")
        elif c == "%":
            out.append("%%")
        elif c == ":" and i + 1 < n and sql[i + 1] == ":":
            out.append("::")
            i += 2
            continue
        elif c == ":" and i + 1 < n and (sql[i + 1].isalpha() or sql[i + 1] == "_"):
            j = i + 1
            while j < n and (sql[j].isalnum() or sql[j] == "_"):
                j += 1
            out.append(f"%({sql[i + 1:j]})s")
            i = j
            continue
        else:
            out.append(c)
        i += 1
    return "".join(out)


class PgRow(tuple):  # type: ignore[type-arg]
    """A result row: ``row[0]`` and ``row["column"]``, as sqlite3.Row."""

    __slots__ = ()
    _index: dict[str, int] = {}

    def __getitem__(self, key: Any) -> Any:  # type: ignore[override]
        if isinstance(key, str):
            return tuple.__getitem__(self, self._index[key])
        return tuple.__getitem__(self, key)

    def keys(self) -> list[str]:
        return list(self._index)


@lru_cache(maxsize=256)
def _row_class(names: tuple[str, ...]) -> type[PgRow]:
    return type("PgRow", (PgRow,), {"__slots__": (), "_index": {n: i for i, n in enumerate(names)}})


def _row_factory(cursor: psycopg.Cursor[Any]) -> Any:
    desc = cursor.description
    if desc is None:
        return tuple
    return _row_class(tuple(d.name for d in desc))


class _NumberLoader(Loader):
    """numeric as int when whole (a sum of integer counts), else float: the store's
    numbers are counts and seconds, never money."""

    def load(self, data: Any) -> int | float:
        text = bytes(data)
        if text in (b"NaN", b"Infinity", b"-Infinity"):
            return float(text)
        value = float(text)
        return int(text) if b"." not in text and b"e" not in text.lower() else value


class _NulFreeStrDumper(StrDumperUnknown):
    """str as PostgreSQL text, a NUL as U+FFFD: PostgreSQL's text cannot hold NUL, SQLite's
    can, and guest output (a test's message, a kernel report's text) may carry one. Its
    result is stored, not lost to a DataError."""

    def dump(self, obj: str) -> Any:
        return super().dump(obj.replace("\x00", "\ufffd") if "\x00" in obj else obj)


def first_line(exc: BaseException) -> str:
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return "; ".join(lines[:2]) or type(exc).__name__


class PgConnection:
    """The subset of sqlite3.Connection the store uses, on a psycopg connection in
    autocommit mode (the store sends BEGIN/COMMIT itself, as it does on SQLite)."""

    dialect = "postgresql"

    def __init__(self, raw: psycopg.Connection[Any], location: PgUrl) -> None:
        self.raw = raw
        self.location = location

    def execute(self, sql: str, params: Sequence[Any] | dict[str, Any] = ()) -> psycopg.Cursor[Any]:
        cur = self.raw.cursor(row_factory=_row_factory)
        try:
            cur.execute(to_pyformat(sql), params)  # type: ignore[arg-type]
        except psycopg.OperationalError as exc:
            if self.raw.broken or self.raw.closed:
                raise StoreError(f"history DB {self.location}: the connection was lost ({first_line(exc)}): "
                                 f"{_CREDENTIALS}") from None
            raise
        return cur

    def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> psycopg.Cursor[Any]:
        cur = self.raw.cursor()
        cur.executemany(to_pyformat(sql), rows)  # type: ignore[arg-type]
        return cur

    @property
    def in_transaction(self) -> bool:
        return self.raw.info.transaction_status != TransactionStatus.IDLE

    @property
    def broken(self) -> bool:
        return self.raw.broken or self.raw.closed

    def close(self) -> None:
        self.raw.close()

    # what dialect.py asks of either backend's connection
    def has_table(self, name: str) -> bool:
        return has_table(self, name)

    def columns(self, table: str) -> list[str]:
        return columns(self, table)

    def schema_version(self) -> int:
        return schema_version(self)


def connect(location: PgUrl) -> PgConnection:
    """A connection, or one line naming the URL and what to check (never a password:
    the URL has none, and libpq's messages do not print the one it was given)."""
    try:
        raw = psycopg.connect(location.url, **_CONNECT_KWARGS, **_client_keepalives(location.url))
        # The server's side of the same: a writer whose machine vanished (powered off, cut
        # off) holds its runs' locks until the server notices the dead connection, which
        # by the kernel's defaults takes two hours; these make it about a minute, so the
        # runs read and get marked aborted (no effect on a Unix socket).
        raw.execute(KEEPALIVE_SQL)
    except psycopg.Error as exc:
        raise StoreError(f"cannot connect to history DB {location} ({first_line(exc)}): {_CREDENTIALS}") from None
    _configure(raw)
    return PgConnection(raw, location)


KEEPALIVE_S = (30, 10, 3)  # idle before the first probe, between probes, probes lost: ~60 s
KEEPALIVE_SQL = ("SET tcp_keepalives_idle = {}; SET tcp_keepalives_interval = {}; "
                 "SET tcp_keepalives_count = {}").format(*KEEPALIVE_S)


def _client_keepalives(url: str) -> dict[str, int]:
    """libpq's keepalives for this side (a writer blocked on a server that vanished
    errors out and reconnects), unless the URL or service file sets its own."""
    from psycopg.conninfo import conninfo_to_dict

    given = conninfo_to_dict(url)
    wanted = dict(zip(("keepalives_idle", "keepalives_interval", "keepalives_count"), KEEPALIVE_S, strict=True))
    return {k: v for k, v in {"keepalives": 1, **wanted}.items() if k not in given}


# Every connection of ours, a writer's or a pooled reader's. Client-side binding: the
# store's "(? IS NULL OR env = ?)" filters give the server a NULL whose type it cannot
# infer from a bare parameter.
_CONNECT_KWARGS: dict[str, Any] = {"autocommit": True, "connect_timeout": CONNECT_TIMEOUT_S,
                                   "application_name": "vexfs-cockpit", "cursor_factory": psycopg.ClientCursor}


def read_error(location: PgUrl, exc: psycopg.Error) -> StoreError:
    """The one line for a read the server refused or broke off."""
    return StoreError(f"cannot read history DB {location} ({first_line(exc)}): check the server "
                      "and your rights on that database")


def _configure(raw: psycopg.Connection[Any]) -> None:
    """What every connection of ours loads and dumps differently from psycopg's defaults."""
    raw.adapters.register_loader("numeric", _NumberLoader)
    raw.adapters.register_dumper(str, _NulFreeStrDumper)


class Readers:
    """A pool of reader connections to one PostgreSQL history, for a long-lived reader
    (the TUI's History): a read borrows an open connection instead of making one, which
    costs a socket, authentication and the schema check every call (~10 ms on a local
    socket, a network round trip or more to a team's server). Whoever makes it owns it
    and closes it; nothing here is process-wide.

    A borrowed connection is checked with one round trip (``check``): one the server
    dropped (restart, idle timeout) is replaced, not handed to the read. The schema is
    verified once it exists, as the first read that finds it; before that each read
    looks again (None: no history yet, as ``db.reading``)."""

    def __init__(self, location: PgUrl, max_size: int = 4, timeout_s: float = CONNECT_TIMEOUT_S) -> None:
        from psycopg_pool import ConnectionPool

        self.location = location
        self.timeout_s = timeout_s
        self._version = 0
        self._pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
            location.url, min_size=1, max_size=max_size, open=False, name="vexfs-cockpit-readers",
            kwargs=dict(_CONNECT_KWARGS),
            configure=_configure,
            check=ConnectionPool.check_connection, timeout=timeout_s)
        self._pool.open(wait=False)  # the first connection is made in the background

    @contextmanager
    def reading(self) -> Iterator[PgConnection | None]:
        from psycopg_pool import PoolTimeout

        try:
            with self._pool.connection() as raw:
                conn = PgConnection(raw, self.location)
                if not self._version:
                    self._version = verify(conn)
                yield conn if self._version else None
        except PoolTimeout:
            # Why the pool has none: one direct attempt gives libpq's own reason (down,
            # refused login, ...) as the line a reader without a pool gets.
            connect(self.location).close()
            raise StoreError(f"history DB {self.location}: all {self._pool.max_size} reader connections stayed busy "
                             f"for {self.timeout_s:g} s") from None
        except psycopg.Error as exc:
            raise read_error(self.location, exc) from None

    def close(self) -> None:
        self._pool.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


# -- schema ----------------------------------------------------------------------------
def has_table(conn: PgConnection, name: str) -> bool:
    return conn.execute("SELECT to_regclass(?) IS NOT NULL", (name,)).fetchone()[0]


def columns(conn: PgConnection, table: str) -> list[str]:
    return [r[0] for r in conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
        "AND table_name = ? ORDER BY ordinal_position", (table,))]


def schema_version(conn: PgConnection) -> int:
    """The history's schema version; 0 for a database without one (a new one)."""
    if not has_table(conn, "schema_version"):
        return 0
    return int(conn.execute("SELECT coalesce(max(version), 0) FROM schema_version").fetchone()[0])


def verify(conn: PgConnection) -> int:
    """The schema version of a database we may use, or one line why not."""
    version = schema_version(conn)
    if version > LATEST_VERSION:
        raise StoreError(f"history DB {conn.location} has schema v{version}, newer than this vexfs-cockpit "
                         f"(v{LATEST_VERSION}): upgrade vexfs-cockpit or point --db elsewhere")
    ours = sum(has_table(conn, t) for t in REQUIRED_TABLES)
    if (version == 0 and ours) or (version and ours < len(REQUIRED_TABLES)):
        raise StoreError(f"history DB {conn.location}: its schema {_schema_name(conn)} holds tables that are not "
                         "a vexfs-cockpit history: use another database or schema (options=-csearch_path=NAME)")
    return version


def _schema_name(conn: PgConnection) -> str:
    return str(conn.execute("SELECT current_schema()").fetchone()[0])


def migrate(conn: PgConnection) -> list[int]:
    """Create (at the baseline, v6) or migrate the schema, under a lock that makes two
    cockpits opening a new database at once apply it once. Returns versions applied."""
    with write_tx(conn):
        conn.execute("SELECT pg_advisory_xact_lock(?)", (APPLICATION_ID,))
        version = verify(conn)
        applied: list[int] = []
        if version == 0:
            for stmt in schema_pg.statements():
                conn.raw.execute(stmt)  # type: ignore[arg-type]  # DDL: no parameters to convert
            now = time.time()
            for v in range(1, schema_pg.BASELINE_VERSION + 1):
                conn.execute("INSERT INTO schema_version(version, name, applied_at) VALUES (?, ?, ?)",
                             (v, MIGRATIONS[v - 1][0], now))
            applied = list(range(1, schema_pg.BASELINE_VERSION + 1))
            version = schema_pg.BASELINE_VERSION
        # Migrations after the baseline are written for both backends (schema.MIGRATIONS).
        for v in range(version, LATEST_VERSION):
            name, fn = MIGRATIONS[v]
            fn(conn)  # type: ignore[arg-type]
            conn.execute("INSERT INTO schema_version(version, name, applied_at) VALUES (?, ?, ?)",
                         (v + 1, name, time.time()))
            applied.append(v + 1)
    return applied


# -- which runs have a live writer -------------------------------------------------------
# A writer holds a session advisory lock per run it is writing; the lock goes with its
# connection, so a killed cockpit's runs are free the moment PostgreSQL sees the socket
# close, on whatever host it ran. Readers and writers elsewhere then show and mark them
# aborted, the way the pid check does on one host.
def run_lock_key(run_id: str) -> int:
    return int.from_bytes(hashlib.blake2b(run_id.encode(), digest_size=8).digest(), "big") >> 1


def hold_run(conn: PgConnection, run_id: str) -> None:
    conn.execute("SELECT pg_try_advisory_lock(?)", (run_lock_key(run_id),))


def release_run(conn: PgConnection, run_id: str) -> None:
    conn.execute("SELECT pg_advisory_unlock(?)", (run_lock_key(run_id),))


def release_all(conn: PgConnection) -> None:
    """Every run lock this session holds (a writer closing)."""
    conn.execute("SELECT pg_advisory_unlock_all()")


def held_run_keys(conn: PgConnection) -> set[int]:
    """The run keys some session of this database holds now (bigint advisory locks are
    listed as classid = high 32 bits, objid = low 32 bits, objsubid = 1)."""
    rows = conn.execute(
        "SELECT classid::bigint, objid::bigint FROM pg_locks WHERE locktype = 'advisory' AND granted "
        "AND objsubid = 1 AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
    ).fetchall()
    return {(int(hi) << 32) | int(lo) for hi, lo in rows}


def database_size(conn: PgConnection) -> int:
    """Bytes the history's database takes on the server (tables, indexes, TOAST)."""
    return int(conn.execute("SELECT pg_database_size(current_database())").fetchone()[0])
