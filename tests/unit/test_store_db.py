"""Opening the history DB: creation, permissions, migrations, refusing foreign/corrupt files."""

from __future__ import annotations

import asyncio
import hashlib
import os
import sqlite3
import stat
from pathlib import Path

import pytest

from tests.support.store import BACKENDS, F, KM, P, RunSpec, T0, new_history, record, record_sync
from vexfs_cockpit.store.dialect import fetch_tuples
from vexfs_cockpit.errors import StoreError
from vexfs_cockpit.store import db as dbmod
from vexfs_cockpit.store import schema
from vexfs_cockpit.store.history import History
from vexfs_cockpit.store.location import StoreLocation
from vexfs_cockpit.store.recorder import HistoryStore


def _fingerprint(path: Path) -> tuple[str, int, int, list[str]]:
    st = path.stat()
    return (hashlib.sha256(path.read_bytes()).hexdigest(), st.st_size, st.st_mtime_ns,
            sorted(os.listdir(path.parent)))


def _assert_refused(path: Path, *needles: str) -> None:
    before = _fingerprint(path)
    with pytest.raises(StoreError) as err:
        HistoryStore.open(path)
    msg = str(err.value)
    assert "\n" not in msg and str(path) in msg and "--db PATH" in msg
    for n in needles:
        assert n in msg
    assert err.value.exit_code == 3
    with pytest.raises(StoreError):
        History(path).list_runs()
    assert _fingerprint(path) == before, "a refused DB must not be touched"


def test_new_db_is_created_private_marked_and_migrated(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "dir" / "history.db"
    store = HistoryStore.open(path)
    store.close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    header = path.read_bytes()[:100]
    assert header.startswith(schema.SQLITE_MAGIC)
    assert int.from_bytes(header[68:72], "big") == schema.APPLICATION_ID
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == schema.LATEST_VERSION
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert schema.REQUIRED_TABLES <= tables
    indexes = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='index'")}
    assert {"test_results_trend", "domain_runs_domain_started", "metrics_trend", "runs_started",
            "runs_env_started"} <= indexes
    assert conn.execute("SELECT version, name FROM schema_version").fetchall() == [
        (v, name) for v, (name, _) in enumerate(schema.MIGRATIONS, 1)]
    conn.close()


def test_reopen_keeps_data_and_does_not_remigrate(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    record_sync(path, [RunSpec("r1", T0, outcomes={(KM, "load"): P})])
    HistoryStore.open(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM schema_version").fetchone()[0] == schema.LATEST_VERSION
    assert conn.execute("SELECT count(*) FROM test_results").fetchone()[0] == 1
    conn.close()


def test_existing_empty_file_is_initialised(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    path.touch(mode=0o600)
    HistoryStore.open(path).close()
    assert History(path).list_runs() == []


def test_forward_migration_upgrades_an_old_db_in_place(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "h.db"
    record_sync(path, [RunSpec("r1", T0, outcomes={(KM, "load"): P})])

    def v2_add_note(conn: sqlite3.Connection) -> None:
        conn.execute("ALTER TABLE runs ADD COLUMN note TEXT NOT NULL DEFAULT ''")

    names = [name for name, _ in schema.MIGRATIONS]
    newer = schema.LATEST_VERSION + 1
    monkeypatch.setattr(schema, "MIGRATIONS", (*schema.MIGRATIONS, ("run_note", v2_add_note)))
    monkeypatch.setattr(schema, "LATEST_VERSION", newer)
    monkeypatch.setattr(dbmod, "LATEST_VERSION", newer)
    HistoryStore.open(path).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == newer
    assert conn.execute("SELECT id, note FROM runs").fetchall() == [("r1", "")]
    assert [r[1] for r in conn.execute("SELECT version, name FROM schema_version ORDER BY version")] == [
        *names, "run_note"]
    conn.close()


def test_db_from_a_newer_cockpit_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    HistoryStore.open(path).close()
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {schema.LATEST_VERSION + 1}")
    conn.close()
    _assert_refused(path, "newer")


def test_text_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "notes.db"
    path.write_text("these are my notes, not a database\n" * 20)
    _assert_refused(path, "not an SQLite database")


def test_short_garbage_file_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    path.write_bytes(b"\x00\x01garbage")
    _assert_refused(path, "not an SQLite database")


def test_other_applications_sqlite_db_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "firefox.sqlite"
    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE moz_places (id INTEGER PRIMARY KEY, url TEXT)")
    conn.execute("INSERT INTO moz_places(url) VALUES ('https://example.org')")
    conn.commit()
    conn.close()
    _assert_refused(path, "another application")


def test_our_application_id_without_our_tables_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA application_id = {schema.APPLICATION_ID}")
    conn.execute("PRAGMA user_version = 1")
    conn.execute("CREATE TABLE something_else (x)")
    conn.commit()
    conn.close()
    _assert_refused(path, "lacks the vexfs-cockpit history tables")


def test_corrupt_pages_are_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    record_sync(path, [RunSpec(f"r{i}", T0 + i, outcomes={(KM, f"t{j}"): F for j in range(30)}) for i in range(5)])
    data = bytearray(path.read_bytes())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) > 6 * page
    data[2 * page: 6 * page] = os.urandom(4 * page)  # trash b-tree pages, keep the header
    path.write_bytes(bytes(data))
    _assert_refused(path, "corrupt")


def test_truncated_db_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    record_sync(path, [RunSpec(f"r{i}", T0 + i, outcomes={(KM, f"t{j}"): F for j in range(30)}) for i in range(5)])
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 3])
    _assert_refused(path, "corrupt")


def test_unwritable_location_is_a_store_error(tmp_path: Path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(StoreError) as err:
        HistoryStore.open(blocker / "history.db")
    assert "cannot create history DB" in str(err.value) and "--db PATH" in str(err.value)


def test_directory_as_db_path_is_a_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="is a directory"):
        HistoryStore.open(tmp_path)


def test_reader_of_missing_db_is_empty_and_creates_nothing(tmp_path: Path) -> None:
    path = tmp_path / "none" / "h.db"
    h = History(path)
    assert h.list_runs() == [] and h.crash_signatures() == [] and h.run_detail("x") is None
    assert h.previous_metric(KM, "load", "load_time_ms", "dev") is None
    assert not path.parent.exists()


def test_db_path_precedence(tmp_path: Path) -> None:
    env = {dbmod.DB_ENV_VAR: str(tmp_path / "env.db")}
    assert dbmod.resolve_location("cli.db", "cfg.db", env) == Path("cli.db")
    assert dbmod.resolve_location(None, "cfg.db", env) == tmp_path / "env.db"
    assert dbmod.resolve_location(None, "cfg.db", {}) == Path("cfg.db")
    default = dbmod.resolve_location(None, None, {})
    assert default == dbmod.default_db_path() and default.name == "history.db"
    assert "vexfs-cockpit" in str(default)
    assert dbmod.resolve_location("~/x.db", None, {}) == Path.home() / "x.db"


@pytest.fixture(params=BACKENDS)
def loc(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    return new_history(request, tmp_path)


def test_a_v6_history_of_either_backend_migrates_to_the_latest(loc: StoreLocation,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """v7 (vm_ready) is the first migration after PostgreSQL's baseline: each after it is
    one function for both backends. A v6 history is read as it is, then migrated by a writer."""
    from vexfs_cockpit.engine.events import RunStarted, VmReady
    from vexfs_cockpit.store import dialect, pg
    from vexfs_cockpit.store.db import reading

    with monkeypatch.context() as m:  # a cockpit of v6
        for mod in (schema, dbmod, pg):
            m.setattr(mod, "LATEST_VERSION", 6)
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:6])
        record_sync(loc, [RunSpec("r6", T0, outcomes={(KM, "load"): P})])
    with reading(loc) as conn:
        assert dialect.schema_version(conn) == 6 and not dialect.has_table(conn, "vm_ready")
    detail = History(loc).run_detail("r6")
    assert detail is not None and detail.vm_ready == []  # a v6 history reads as "not measured"

    asyncio.run(record(loc, [RunStarted(run_id="r7", config_path="c", profile="p", env="dev", domains=(KM,), ts=T0 + 9),
                             VmReady(vm="vm-0", mode="boot", seconds=9.5, reset=True, ts=T0 + 10)]))
    with reading(loc) as conn:
        assert dialect.schema_version(conn) == schema.LATEST_VERSION == 8
        assert [r[0] for r in fetch_tuples(conn, "SELECT name FROM schema_version ORDER BY version")][-2:] == [
            "vm ready times", "write batches"]
        assert dialect.has_table(conn, "write_batches")
    detail = History(loc).run_detail("r7")
    assert detail is not None and [(r.mode, r.seconds, r.reset) for r in detail.vm_ready] == [("boot", 9.5, True)]
