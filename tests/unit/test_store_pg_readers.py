"""store/pg.py Readers: a pool of open reader connections for a long-lived reader
(issue 19 item 6), on the tests' real PostgreSQL."""

from __future__ import annotations

import time
from pathlib import Path

import psycopg
import pytest

from tests.support.postgres import PgServer
from vexfs_cockpit.errors import StoreError
from vexfs_cockpit.store import pg
from vexfs_cockpit.store.db import open_writer, reading
from vexfs_cockpit.store.location import PgUrl


def _backend_pid(readers: pg.Readers) -> int:
    with reading(readers.location, readers) as conn:
        assert conn is not None
        return int(conn.execute("SELECT pg_backend_pid()").fetchone()[0])


def test_readers_lend_one_open_connection_and_see_the_history_once_it_exists(pg_server: PgServer) -> None:
    loc = PgUrl(pg_server.new_database())
    with pg.Readers(loc, max_size=1) as readers:
        with reading(loc, readers) as conn:
            assert conn is None  # an empty database: no history yet, as db.reading says
        open_writer(loc).close()  # a writer creates the schema meanwhile
        with reading(loc, readers) as conn:
            assert conn is not None
            assert conn.execute("SELECT count(*) FROM runs").fetchone()[0] == 0
        # Consecutive reads borrow the same server session: no connect per read.
        assert len({_backend_pid(readers) for _ in range(5)}) == 1


def test_a_connection_the_server_dropped_is_replaced_not_lent(pg_server: PgServer) -> None:
    loc = PgUrl(pg_server.new_database())
    open_writer(loc).close()
    with pg.Readers(loc, max_size=1) as readers:
        before = _backend_pid(readers)
        with psycopg.connect(pg_server.url(), autocommit=True) as admin:
            assert admin.execute("SELECT pg_terminate_backend(%s)", (before,)).fetchone()[0]
            # Wait until the server has ended it (pg_terminate_backend only signals).
            while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (before,)).fetchone()[0]:
                time.sleep(0.01)
        assert _backend_pid(readers) != before


def test_no_server_is_one_line_naming_the_url(tmp_path: Path) -> None:
    loc = PgUrl(f"postgresql://nobody@/history?host={tmp_path}&port=1")
    with pg.Readers(loc, timeout_s=1) as readers, pytest.raises(StoreError) as err, reading(loc, readers):
        pass
    msg = str(err.value)
    assert "\n" not in msg and str(loc) in msg and "cannot connect" in msg and "No such file" in msg  # libpq's reason


def test_every_connection_busy_is_one_line_saying_so(pg_server: PgServer) -> None:
    loc = PgUrl(pg_server.new_database())
    open_writer(loc).close()
    with pg.Readers(loc, max_size=1, timeout_s=0.5) as readers, reading(loc, readers) as held:
        assert held is not None
        with pytest.raises(StoreError, match=r"all 1 reader connections stayed busy for 0.5 s"), reading(loc, readers):
            pass


async def test_a_session_on_postgresql_reads_through_its_own_pool(pg_server: PgServer, tmp_path: Path) -> None:
    """The session's History (its domains' baselines, the TUI's screens) borrows from one
    pool the session owns and closes, instead of connecting per call."""
    import argparse

    from tests.support.engine import LocalProvider
    from vexfs_cockpit.app.session import open_session

    url = pg_server.new_database()
    args = argparse.Namespace(config=None, env=None, set=[], db=url)
    session = await open_session(args, provider_factory=lambda cfg, bus: LocalProvider(tmp_path))
    history = session.history
    assert history is not None and history.readers is not None
    assert history.for_run("r1").readers is history.readers
    assert history.list_runs() == []
    pids = {_backend_pid(history.readers) for _ in range(8)}
    assert len(pids) <= 4  # the pool's connections, again and again: not one per read
    await session.aclose()
    with pytest.raises(StoreError):  # closed with the session
        history.list_runs()


def test_a_connection_over_tcp_has_keepalives_on_both_sides(pg_server: PgServer) -> None:
    """A writer's machine that vanishes must not hold its runs' locks for the kernel's
    default two hours: the server probes the connection after 30 s idle."""
    conn = pg.connect(PgUrl(pg_server.tcp_url()))
    try:
        shown = [conn.execute(f"SHOW tcp_keepalives_{k}").fetchone()[0] for k in ("idle", "interval", "count")]
        assert shown == [str(v) for v in pg.KEEPALIVE_S]
        assert conn.raw.info.get_parameters().get("keepalives") == "1"
    finally:
        conn.close()
