"""Where the history lives: an SQLite file (the embedded default) or a PostgreSQL URL.

A ``StoreLocation`` is a ``Path`` or a ``PgUrl``; everything that opens the history
takes one. A PgUrl never holds a password: libpq takes it from ``PGPASSWORD``,
``~/.pgpass`` or a service file (``postgresql:///?service=team``), so neither a config
file, the history (a run stores its config) nor any message can leak it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from vexfs_cockpit.errors import UsageError

PG_SCHEMES = ("postgresql", "postgres")
_FIX = ("put it in PGPASSWORD, ~/.pgpass or a libpq service file (postgresql:///?service=NAME) "
        "and drop it from the URL")


@dataclass(frozen=True, slots=True)
class PgUrl:
    """A libpq connection URL without credentials (checked by ``parse_location``)."""

    url: str

    def __str__(self) -> str:  # safe to print: parse_location refused any password
        return self.url


StoreLocation = Path | PgUrl


def is_pg_url(text: str) -> bool:
    return text.split("://", 1)[0].lower() in PG_SCHEMES and "://" in text


def parse_location(text: str, where: str) -> StoreLocation:
    """``text`` as a history location; ``where`` names its source (``--db``,
    ``store.url``, ...) for the one-line error a URL with a password gets."""
    if not is_pg_url(text):
        return Path(text).expanduser()
    try:
        parts = urlsplit(text)
        query = dict(parse_qsl(parts.query, keep_blank_values=True))
        _ = parts.port  # a malformed port raises here, not at connect time
    except ValueError as exc:
        raise UsageError(f"{where}: {exc} in the PostgreSQL URL; write postgresql://[user@]host[:port]/dbname") from None
    if parts.password is not None or "password" in query:
        # The URL is not echoed: it would print the password.
        raise UsageError(f"{where}: the PostgreSQL URL holds a password; {_FIX}")
    return PgUrl(text)


def describe(loc: StoreLocation) -> str:
    return f"history DB {loc}"
