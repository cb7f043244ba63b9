"""The few things the two backends spell differently, for code that holds either
connection (``sqlite3.Connection`` or ``pg.PgConnection``).

Everything else the store says is one SQL text both run: ``ON CONFLICT`` upserts,
``RETURNING``, ``count(*) FILTER``, ``CASE`` instead of SQLite's two-argument
``max``/``min``, ``lower(x) LIKE lower(?)`` for SQLite's case-blind LIKE.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

Conn = Any  # sqlite3.Connection | pg.PgConnection (pg is imported only for PostgreSQL)


def is_pg(conn: Conn) -> bool:
    """A pg.PgConnection (it answers has_table/columns/schema_version itself)."""
    return getattr(conn, "dialect", "") == "postgresql"


def has_table(conn: Conn, name: str) -> bool:
    if is_pg(conn):
        return bool(conn.has_table(name))
    return conn.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?", (name,)).fetchone() is not None


def table_columns(conn: Conn, table: str) -> list[str]:
    if is_pg(conn):
        return list(conn.columns(table))
    return [r[1] for r in conn.execute(f"PRAGMA table_info({table})")]  # our own table names


def schema_version(conn: Conn) -> int:
    if is_pg(conn):
        return int(conn.schema_version())
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


@contextmanager
def write_tx(conn: Conn) -> Iterator[None]:
    """One write transaction. On SQLite IMMEDIATE: it takes the write lock up front, so
    WAL never has to upgrade a read snapshot and fail with BUSY_SNAPSHOT."""
    conn.execute("BEGIN" if is_pg(conn) else "BEGIN IMMEDIATE")
    try:
        yield
    except BaseException:
        if not getattr(conn, "broken", False) and conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def fetch_tuples(conn: Conn, sql: str, params: Any = ()) -> list[tuple[Any, ...]]:
    """Rows as plain tuples (a long trend builds NamedTuples from them at C speed)."""
    if is_pg(conn):
        return conn.execute(sql, params).fetchall()  # its rows are tuples already
    cur = conn.cursor()
    cur.row_factory = None
    return cur.execute(sql, params).fetchall()


def json_text(conn: Conn, column: str, *keys: str) -> str:
    """An SQL expression: the text at ``keys`` in the JSON of ``column`` (NULL if absent)."""
    if is_pg(conn):
        return f"({column}::jsonb #>> '{{{','.join(keys)}}}')"
    return f"json_extract({column}, '$.{'.'.join(keys)}')"
