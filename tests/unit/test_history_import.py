"""`history import` (issue 18 item 5, issue 19 item 4): another history DB (any older
schema, SQLite or PostgreSQL) or a JSON run report merged into this store (either
backend), idempotently, keeping every stored result."""

from __future__ import annotations

import dataclasses
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from tests.support.store import (
    FS,
    KILLED_RUN_CHILD,
    KM,
    T0,
    E,
    F,
    P,
    RunSpec,
    kreport,
    record_sync,
    recorded,
)
from vexfs_cockpit.errors import StoreError
from vexfs_cockpit.reports.json_report import report_dict, write_json_report
from vexfs_cockpit.store import db as dbmod
from vexfs_cockpit.store import dialect, schema
from vexfs_cockpit.store.history import History
from vexfs_cockpit.store.location import PgUrl, StoreLocation
from vexfs_cockpit.store.merge import clash_id, import_history
from vexfs_cockpit.store.recorder import HistoryStore

ROOT = Path(__file__).resolve().parents[2]
TABLES = ("runs", "domain_runs", "test_results", "metrics", "kernel_events", "crash_occurrences", "vm_states",
          "infra_problems", "vm_ready")


def shard_runs(prefix: str, start: float) -> list[RunSpec]:
    return [
        RunSpec(f"{prefix}-1", start, outcomes={(KM, "build"): P, (KM, "load"): F}, metrics={(KM, "build"): {"build_s": 1.5}},
                kernel=[(KM, "load", kreport(), False)], ready={KM: ("restore", 1.25)}),
        RunSpec(f"{prefix}-2", start + 100, outcomes={(FS, "mount"): P, (FS, "write"): E}),
    ]


# (source, destination) backends: SQLite into PostgreSQL (a team's set-up), back, and each into itself.
PAIRS = [("sqlite", "sqlite"), ("sqlite", "postgresql"), ("postgresql", "sqlite"), ("postgresql", "postgresql")]


def history_at(request: pytest.FixtureRequest, backend: str, path: Path) -> StoreLocation:
    """A new, empty history: ``path`` (SQLite) or a fresh database of the session's PostgreSQL."""
    if backend == "postgresql":
        return PgUrl(request.getfixturevalue("pg_server").new_database())
    return path


def query(loc: StoreLocation, sql: str) -> list[Any]:
    with dbmod.reading(loc) as conn:
        assert conn is not None
        return [tuple(r) for r in conn.execute(sql).fetchall()]


def counts(loc: StoreLocation) -> dict[str, int]:
    out = {t: query(loc, f"SELECT count(*) FROM {t}")[0][0] for t in TABLES}
    out["signature_count"] = query(loc, "SELECT coalesce(sum(count), 0) FROM crash_signatures")[0][0]
    # the kept counts (schema v3 triggers) match the results
    out["kept_results"] = query(loc, "SELECT coalesce(sum(n_results), 0) FROM domain_runs")[0][0]
    assert out["kept_results"] == out["test_results"]
    return out


def same_report(a: StoreLocation, a_id: str, b: StoreLocation, b_id: str) -> None:
    """The run reads back the same from both stores (every result, its evidence, metrics,
    kernel events), apart from its id."""
    ra, rb = History(a).run_detail(a_id), History(b).run_detail(b_id)
    assert ra is not None and rb is not None
    da, db_ = report_dict(ra), report_dict(rb)
    db_["run"]["run_id"] = a_id
    da["run"].pop("host"), db_["run"].pop("host")
    assert da == db_


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_import_db_twice_adds_nothing_the_second_time(request: pytest.FixtureRequest, tmp_path: Path,
                                                      src: str, dst: str) -> None:
    a, b = history_at(request, src, tmp_path / "a.db"), history_at(request, dst, tmp_path / "b.db")
    record_sync(a, shard_runs("ci-a", T0))
    record_sync(b, shard_runs("ci-b", T0 + 1000))
    before_a, before_b = counts(a), counts(b)
    first = import_history(b, a)
    assert first.added == ["ci-a-1", "ci-a-2"] and first.results == 4 and not first.present
    merged = counts(b)
    assert merged == {k: before_a[k] + before_b[k] for k in merged}  # everything of both, once
    second = import_history(b, a)
    assert (second.added, second.present) == ([], 2)
    assert counts(b) == merged
    assert counts(a) == before_a  # the source is only read
    for rid in ("ci-a-1", "ci-a-2"):
        same_report(a, rid, b, rid)
    # the kept counts (schema v3 triggers) match the results, and trends see both shards
    assert query(b, "SELECT n_passed, n_bad, n_results FROM domain_runs WHERE run_id='ci-a-1'") == [(1, 1, 2)]
    kernel = query(b, "SELECT k.run_id, o.run_id FROM crash_occurrences o JOIN kernel_events k "
                      "ON k.id = o.kernel_event_id ORDER BY k.ts")
    assert kernel == [("ci-a-1", "ci-a-1"), ("ci-b-1", "ci-b-1")]  # the occurrences follow their events' new ids
    assert query(b, "SELECT count, first_seen < last_seen, last_run_id FROM crash_signatures") == [(2, True, "ci-b-1")]
    assert [p.run_id for p in History(b).domain_trend(KM)] == ["ci-a-1", "ci-b-1"]


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_same_id_different_run_is_kept_under_a_stable_id(request: pytest.FixtureRequest, tmp_path: Path,
                                                         src: str, dst: str) -> None:
    """Two CI shards started in the same second can draw the same id."""
    a, b = history_at(request, src, tmp_path / "a.db"), history_at(request, dst, tmp_path / "b.db")
    record_sync(a, shard_runs("same", T0))
    record_sync(b, shard_runs("same", T0 + 0.25))
    s = import_history(b, a)
    new = clash_id("same-1", T0)
    assert s.renamed["same-1"] == new and new in s.added
    assert import_history(b, a).present == 2  # found again under its new id
    assert len(History(b).list_runs()) == 4
    same_report(a, "same-1", b, new)


@pytest.mark.parametrize("dst", ["sqlite", "postgresql"])
def test_import_from_an_older_schema_db(request: pytest.FixtureRequest, tmp_path: Path,
                                        monkeypatch: pytest.MonkeyPatch, dst: str) -> None:
    """A v1 history (before covering indexes, kept counts, baselines, provenance) merges
    into the current one; the old file stays v1 and byte-identical."""
    old, cur = tmp_path / "old.db", history_at(request, dst, tmp_path / "cur.db")
    with monkeypatch.context() as m:
        m.setattr(schema, "MIGRATIONS", schema.MIGRATIONS[:1])
        m.setattr(schema, "LATEST_VERSION", 1)
        m.setattr(dbmod, "LATEST_VERSION", 1)
        record_sync(old, shard_runs("v1", T0))
    conn = sqlite3.connect(old)
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    conn.close()
    raw = old.read_bytes()
    record_sync(cur, shard_runs("now", T0 + 1000))
    s = import_history(cur, old)
    assert s.added == ["v1-1", "v1-2"]
    assert old.read_bytes() == raw
    with dbmod.reading(cur) as conn:
        assert dialect.schema_version(conn) == schema.LATEST_VERSION
    assert query(cur, "SELECT n_passed, n_bad FROM domain_runs WHERE run_id='v1-2'") == [(1, 1)]
    assert query(cur, "SELECT provenance FROM runs WHERE id='v1-1'") == [("{}",)]
    same_report(old, "v1-1", cur, "v1-1")


@pytest.mark.parametrize("dst", ["sqlite", "postgresql"])
def test_import_json_report_then_its_db_adds_it_once(request: pytest.FixtureRequest, tmp_path: Path, dst: str) -> None:
    """A shard's `run --json` report: the run, its results with evidence and metrics and
    kernel events come in; its DB later finds the run already here."""
    a, b = tmp_path / "a.db", history_at(request, dst, tmp_path / "b.db")
    record_sync(a, shard_runs("js", T0))
    rep = History(a).run_detail("js-1")
    assert rep is not None
    write_json_report(rep, tmp_path / "js-1.json")
    s = import_history(b, tmp_path / "js-1.json")
    assert (s.added, s.results) == (["js-1"], 2)
    assert import_history(b, tmp_path / "js-1.json").present == 1
    assert import_history(b, a).added == ["js-2"]  # js-1 is here already
    same_report(a, "js-1", b, "js-1")
    assert History(b).crash_signatures()[0].count == 1


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_running_runs_are_left_out(request: pytest.FixtureRequest, tmp_path: Path, src: str, dst: str) -> None:
    a, b = history_at(request, src, tmp_path / "a.db"), history_at(request, dst, tmp_path / "b.db")
    with recorded(a, [dataclasses.replace(shard_runs("r", T0)[0], status="")]):  # its writer still at work
        s = import_history(b, a)
    assert (s.added, s.running) == ([], 1) and "still running" in s.line()


@pytest.mark.parametrize("dst", ["sqlite", "postgresql"])
@pytest.mark.parametrize("kind", ["garbage", "truncated_db", "foreign_db", "corrupt_db", "other_json", "bad_json_report"])
def test_bad_source_is_one_line_and_nothing_is_lost(request: pytest.FixtureRequest, tmp_path: Path,
                                                    kind: str, dst: str) -> None:
    a, b = tmp_path / "a.db", history_at(request, dst, tmp_path / "b.db")
    record_sync(a, shard_runs("src", T0))
    record_sync(b, shard_runs("keep", T0 + 1000))
    if isinstance(b, Path):
        conn = sqlite3.connect(b)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
    before = counts(b)
    bad = tmp_path / "bad"
    if kind == "garbage":
        bad.write_bytes(bytes(range(256)) * 8)
    elif kind == "truncated_db":
        conn = sqlite3.connect(a)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        bad.write_bytes(a.read_bytes()[:4096 + 50])
    elif kind == "foreign_db":
        conn = sqlite3.connect(bad)
        conn.execute("CREATE TABLE t(x)")
        conn.commit()
        conn.close()
    elif kind == "corrupt_db":
        conn = sqlite3.connect(a)
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        conn.close()
        data = bytearray(a.read_bytes())
        data[4096 * 3:4096 * 6] = b"\xa5" * (4096 * 3)  # pages of the tables, overwritten
        bad.write_bytes(bytes(data))
    elif kind == "other_json":
        bad.write_text('{"format": "something-else/2", "runs": []}')
    else:
        rep = History(a).run_detail("src-1")
        assert rep is not None
        write_json_report(rep, bad)
        bad.write_text(bad.read_text().replace('"status": "FAILED"', '"status": "MAYBE"'))
    with pytest.raises(StoreError) as err:
        import_history(b, bad)
    msg = str(err.value)
    assert "\n" not in msg and str(bad) in msg, msg
    assert counts(b) == before


def test_cli_import_prints_one_line_each(tmp_path: Path) -> None:
    a, b = tmp_path / "a.db", tmp_path / "b.db"
    record_sync(a, shard_runs("cli", T0))
    exe = str(ROOT / ".venv/bin/vexfs-cockpit")
    first = subprocess.run([exe, "history", "import", str(a), "--db", str(b)], capture_output=True, text=True, timeout=60, check=False)
    assert first.returncode == 0, first.stderr
    assert first.stdout == f"imported 2 run(s) with 4 test result(s) from {a}\n"
    again = subprocess.run([exe, "history", "--db", str(b), "import", str(a)], capture_output=True, text=True, timeout=60, check=False)
    assert again.stdout == f"imported 0 run(s) with 0 test result(s) from {a}; 2 already here\n"
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "x.toml")
    bad = subprocess.run([exe, "history", "import", str(tmp_path / "x.toml"), "--db", str(b)],
                         capture_output=True, text=True, timeout=60, check=False)
    assert bad.returncode == 3 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "neither a vexfs-cockpit history DB nor a JSON run report" in bad.stderr


def test_cli_moves_a_history_into_postgresql_and_back(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    """The team set-up: a developer's SQLite history into the shared PostgreSQL with
    `--db postgresql://...`, and a PostgreSQL history out into a file again."""
    a, back = tmp_path / "a.db", tmp_path / "back.db"
    team = history_at(request, "postgresql", tmp_path)
    record_sync(a, shard_runs("dev", T0))
    exe = str(ROOT / ".venv/bin/vexfs-cockpit")

    def cli(*argv: str) -> str:
        done = subprocess.run([exe, "history", *argv], capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0 and not done.stderr, done.stderr
        return done.stdout

    assert cli("import", str(a), "--db", str(team)) == f"imported 2 run(s) with 4 test result(s) from {a}\n"
    assert cli("--db", str(team), "import", str(a)).endswith("; 2 already here\n")
    assert cli("import", str(team), "--db", str(back)) == f"imported 2 run(s) with 4 test result(s) from {team}\n"
    assert counts(back) == counts(a) == counts(team)
    for rid in ("dev-1", "dev-2"):
        same_report(a, rid, back, rid)


def test_two_imports_at_once_into_postgresql_store_each_run_once(request: pytest.FixtureRequest,
                                                                 tmp_path: Path) -> None:
    """Two CI jobs importing the same shard into the team's database at the same moment:
    the one that loses the race for a run finds it there (its insert waits for the
    other's commit), so every run, result and crash occurrence is stored once."""
    a = tmp_path / "a.db"
    team = history_at(request, "postgresql", tmp_path)
    record_sync(a, [spec for k in range(8) for spec in shard_runs(f"job{k}", T0 + 1000 * k)])
    record_sync(team, [])  # the schema made once, before the race
    barrier = threading.Barrier(2)
    summaries: list[Any] = []

    def job() -> None:
        barrier.wait()
        try:
            summaries.append(import_history(team, a))
        except StoreError as exc:  # shown by the assert below, not lost in the thread
            summaries.append(exc)

    threads = [threading.Thread(target=job) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert len(summaries) == 2 and not any(isinstance(s, StoreError) for s in summaries), summaries
    assert sorted(r for s in summaries for r in s.added) == sorted(r for (r,) in query(a, "SELECT id FROM runs"))
    assert sum(s.present for s in summaries) == 16 and not any(s.renamed for s in summaries)
    assert counts(team) == counts(a)


def test_an_unusable_postgresql_side_is_one_line(request: pytest.FixtureRequest, tmp_path: Path) -> None:
    a = tmp_path / "a.db"
    record_sync(a, shard_runs("keep", T0))
    before = counts(a)
    empty = history_at(request, "postgresql", tmp_path)  # a database without a history
    with pytest.raises(StoreError, match="holds no vexfs-cockpit history yet; nothing was imported") as err:
        import_history(a, empty)
    assert str(empty) in str(err.value)
    nobody = PgUrl("postgresql://cockpit@127.0.0.1:1/team")  # no server there
    for dest, source in ((nobody, a), (a, nobody)):
        with pytest.raises(StoreError) as err:
            import_history(dest, source)
        assert "\n" not in str(err.value) and str(nobody) in str(err.value), err.value
    assert counts(a) == before


@pytest.mark.parametrize(("src", "dst"), PAIRS)
def test_a_run_whose_cockpit_was_killed_comes_in_aborted_as_readers_show_it(
        request: pytest.FixtureRequest, tmp_path: Path, src: str, dst: str) -> None:
    """A run left `running` by a SIGKILLed cockpit never finishes: it is imported as the
    source's readers show it (aborted, with the writer's reason and end time), and once a
    writer has marked it so in the source, importing again finds it here."""
    a, b = history_at(request, src, tmp_path / "a.db"), history_at(request, dst, tmp_path / "b.db")
    child = subprocess.Popen([sys.executable, "-c", KILLED_RUN_CHILD, str(a)], cwd=ROOT,
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "ready"
        child.kill()
        assert child.wait(timeout=30) == -signal.SIGKILL
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
    assert query(a, "SELECT status FROM runs") == [("running",)]  # nobody marked it yet
    s = import_history(b, a)
    assert (s.added, s.running, s.results) == (["killed"], 0, 2)
    same_report(a, "killed", b, "killed")  # what a reader of the source shows
    assert query(b, "SELECT status FROM runs") == [("aborted",)]
    assert query(b, "SELECT status, current_test FROM domain_runs") == [("aborted", "unload")]
    HistoryStore.open(a).close()  # a writer marks it in the source
    assert import_history(b, a).present == 1
    same_report(a, "killed", b, "killed")
