"""`vexfs-cockpit history`, through argparse as cli.py wires it."""

from __future__ import annotations

import asyncio
import json
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from junitparser import JUnitXml

from tests.support.store import (
    BACKENDS,
    DAY,
    FS,
    KM,
    T0,
    F,
    P,
    RunSpec,
    kreport,
    new_history,
    record,
    record_sync,
    run_cli,  # noqa: F401
    run_events,
)
from vexfs_cockpit.cli import main
from vexfs_cockpit.errors import StoreError, UsageError
from vexfs_cockpit.klog.model import Severity
from vexfs_cockpit.store.db import DB_ENV_VAR
from vexfs_cockpit.store.liveness import ProcessIdentity
from vexfs_cockpit.store.location import PgUrl, StoreLocation
from vexfs_cockpit.store.recorder import HistoryStore

OOPS = kreport("oops", "BUG: unable to handle page fault in vexfs_read", Severity.CRITICAL)


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> StoreLocation:
    """The same history on SQLite and on a real PostgreSQL: --db takes a path or a URL."""
    path = new_history(request, tmp_path)
    now = time.time()  # --period is relative to now
    record_sync(path, [
        RunSpec("run-a", now - 10 * DAY, outcomes={(KM, "load"): P, (FS, "mount"): P}),
        RunSpec("run-b", now - 2 * DAY, outcomes={(KM, "load"): F, (FS, "mount"): P}, kernel=[(KM, "load", OOPS, False)],
                ready={KM: ("restore", 1.15), FS: ("boot", 9.8)}),
        RunSpec("run-c", now - 1 * DAY, env="ci", outcomes={(KM, "load"): P, (FS, "mount"): F}),
    ])
    return path


def test_no_db_yet_is_a_friendly_line_and_creates_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "nothing" / "history.db"
    code, out = run_cli("history", "--db", str(path))
    assert code == 0 and out == f"no runs yet (history DB {path} does not exist)\n"
    assert not path.parent.exists()
    monkeypatch.setenv(DB_ENV_VAR, str(path))
    assert run_cli("history") == (0, out)


def test_empty_db_says_no_runs_yet(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    HistoryStore.open(path).close()
    code, out = run_cli("history", "--db", str(path))
    assert code == 0 and out.startswith("no runs yet")
    assert run_cli("history", "crashes", "--db", str(path)) == (0, "no crash signatures recorded\n")


def test_lists_runs_newest_first_with_counts(db: Path) -> None:
    code, out = run_cli("history", "--db", str(db))
    lines = out.splitlines()
    assert code == 0
    assert lines[0].split() == ["RUN", "STARTED", "ENV", "PROFILE", "STATUS", "PASS", "FAIL", "SKIP", "DURATION"]
    assert [ln.split()[0] for ln in lines[1:]] == ["run-c", "run-b", "run-a"]
    b = lines[2].split()
    assert b[3:8] == ["dev", "selftest", "failed", "1", "1"]
    code, out = run_cli("history", "--db", str(db), "--env", "ci")
    assert [ln.split()[0] for ln in out.splitlines()[1:]] == ["run-c"]
    assert run_cli("history", "--db", str(db), "--search", "nothing-like-this") == (0, "no runs match these filters\n")


def test_domain_period_shows_pass_rate_and_duration(db: Path) -> None:
    code, out = run_cli("history", "--db", str(db), "--domain", KM, "--period", "7d")
    lines = out.splitlines()
    assert code == 0 and lines[0].split()[:4] == ["RUN", "STARTED", "ENV", "STATUS"]
    rows = [ln.split() for ln in lines[1:-1]]
    assert [(r[0], r[5], r[6], r[7]) for r in rows] == [("run-b", "0/1", "0%", "3.5s"), ("run-c", "1/1", "100%", "3.0s")]
    assert lines[-1] == "2 runs, mean pass rate 50%"
    assert run_cli("history", "--db", str(db), "--domain", "nope")[1] == "no runs of domain nope\n"


def test_crashes_newest_first(db: Path) -> None:
    code, out = run_cli("history", "crashes", "--db", str(db), "--runs")
    lines = out.splitlines()
    assert code == 0 and "SIGNATURE" in lines[0]
    assert OOPS.signature in lines[1] and lines[1].split()[4] == "1" and "run-b" in lines[1]
    assert any("run-b" in ln and f"{KM}.load" in ln for ln in lines[2:])


def test_show_compare_and_report(db: Path, tmp_path: Path) -> None:
    code, out = run_cli("history", "show", "run-b", "--db", str(db))
    assert code == 0 and out.startswith("run run-b  failed")
    assert f"\n{KM}  failed  vm=vm-0 (restore 1.1s)  " in out and f"\n{FS}  passed  vm=vm-1 (boot 9.8s)  " in out
    assert "FAILED   load" in out and "$ run-load  [exit 1" in out and "[oops]" in out
    # a --db before the subcommand name counts too
    code, out = run_cli("history", "--db", str(db), "compare", "run-a", "run-b")
    assert "new failures: 1" in out and f"{KM}.load: PASSED -> FAILED" in out
    junit, js = tmp_path / "j.xml", tmp_path / "r.json"
    code, out = run_cli("history", "report", "run-b", "--db", str(db), "--junit", str(junit), "--json", str(js))
    assert code == 0 and out.splitlines() == [f"wrote {junit}", f"wrote {js}"]
    xml = JUnitXml.fromfile(str(junit))
    xml.update_statistics()
    assert (xml.tests, xml.failures) == (2, 1)
    assert json.loads(js.read_text())["run"]["run_id"] == "run-b"
    with pytest.raises(UsageError, match="no run 'zzz'"):
        run_cli("history", "show", "zzz", "--db", str(db))
    with pytest.raises(UsageError, match="--junit"):
        run_cli("history", "report", "run-b", "--db", str(db))


def test_listing_marks_runs_of_dead_processes_aborted(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    me = ProcessIdentity.current()
    dead = ProcessIdentity(proc.pid, None, me.hostname, me.boot_id)
    proc.wait()
    store = HistoryStore.open(path, me=dead)
    asyncio.run(record(path, run_events(RunSpec("lost", T0, outcomes={(KM, "a"): P}, status="")), store))
    store.close()
    code, out = run_cli("history", "--db", str(path))
    row = out.splitlines()[1].split()
    assert code == 0 and row[0] == "lost" and row[3:6] == ["dev", "selftest", "aborted"]


def test_errors_are_one_line_cockpit_errors(tmp_path: Path) -> None:
    foreign = tmp_path / "foreign.db"
    foreign.write_text("not a db\n" * 20)
    with pytest.raises(StoreError) as err:
        run_cli("history", "--db", str(foreign))
    assert err.value.exit_code == 3 and "\n" not in str(err.value)
    HistoryStore.open(tmp_path / "ok.db").close()
    with pytest.raises(UsageError, match="bad period"):
        run_cli("history", "--db", str(tmp_path / "ok.db"), "--period", "a week")


def test_latest_and_prev_go_wherever_a_run_id_goes(db: Path) -> None:
    code, out = run_cli("history", "show", "latest", "--db", str(db))
    assert code == 0 and out.startswith("run run-c ")
    code, out = run_cli("history", "show", "prev", "--db", str(db))
    assert code == 0 and out.startswith("run run-b ")
    code, out = run_cli("history", "compare", "prev", "latest", "--db", str(db))
    assert code == 0 and out.startswith("run-b -> run-c")


def test_history_help_shows_no_internal_notes() -> None:
    proc = subprocess.run([sys.executable, "-m", "vexfs_cockpit", "history", "--help"], capture_output=True, text=True, check=True)
    assert "StoreError" not in proc.stdout and "latest" in proc.stdout


def test_history_log_shows_a_runs_console_and_a_tests_window(db: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 20 item 12: a past run's kernel log is one command away."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    console = tmp_path / "xdg" / "vexfs-cockpit" / "runs" / "run-c" / "console"
    console.mkdir(parents=True)
    (console / "vexfs-ci-kernel_module-0.log").write_text("[    1.0] Linux version 6.1.0\n[    2.0] vexfs: loaded\n")
    code, out = run_cli("history", "log", "latest", "--db", str(db))
    assert code == 0 and "==> vexfs-ci-kernel_module-0.log <==" in out and "vexfs: loaded" in out
    code, out = run_cli("history", "log", "run-c", "--test", "kernel_module/load", "--db", str(db))
    assert code == 0 and out  # the window stored with the result (or a line saying it is empty)
    with pytest.raises(UsageError, match="has no such test"):
        run_cli("history", "log", "run-c", "--test", "kernel_module/nope", "--db", str(db))
    with pytest.raises(UsageError, match="no console logs for run run-b"):
        run_cli("history", "log", "run-b", "--db", str(db))


def test_the_history_env_var_takes_either_backend(db: StoreLocation, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DB_ENV_VAR, str(db))
    code, out = run_cli("history")
    assert code == 0 and [ln.split()[0] for ln in out.splitlines()[1:]] == ["run-c", "run-b", "run-a"]


def test_a_password_in_the_url_is_refused_in_one_line_that_never_shows_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 19 item 5: credentials come from PGPASSWORD, ~/.pgpass or a service file,
    never from --db, store.url or VEXFS_COCKPIT_DB, and are never printed."""
    monkeypatch.delenv(DB_ENV_VAR)  # it would replace the config's store.url
    url = "postgresql://u:secret@127.0.0.1:5/team"
    cfg = tmp_path / "team.yaml"
    cfg.write_text(f"store:\n  url: {url}\n")
    for argv in (["history", "--db", url], ["report", "latest", "--db", url], ["analyze", "--db", url],
                 ["baseline", "show", "--db", url], ["metrics", "export", str(tmp_path / "m.prom"), "--db", url],
                 ["history", "--db", "postgresql://u@127.0.0.1/team?password=secret"],
                 ["metrics", "export", str(tmp_path / "m.prom"), "--config", str(cfg)],
                 ["alerts", "check", "latest", "--config", str(cfg)],
                 ["gc", "--dry-run", "--config", str(cfg)],
                 ["config", "check", str(cfg)]):
        assert main(argv) == 2, argv
        out, err = capsys.readouterr()
        assert "secret" not in out + err and err.count("\n") == 1, (argv, err)
        assert "PGPASSWORD" in err and ("--db" in err or "store.url" in err), err
    monkeypatch.setenv(DB_ENV_VAR, url)
    assert main(["history"]) == 2
    err = capsys.readouterr().err
    assert "secret" not in err and err.startswith(f"vexfs-cockpit: {DB_ENV_VAR}: ") and err.count("\n") == 1


def test_an_unreachable_server_is_one_line_exit_3(capsys: pytest.CaptureFixture[str]) -> None:
    with socket.socket() as s:  # a port nothing listens on: bound, never listening
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
        for argv in (["history"], ["history", "show", "latest"], ["report", "latest"], ["baseline", "show"],
                     ["metrics", "export", "/dev/null"]):
            assert main([*argv, "--db", f"postgresql://cockpit@127.0.0.1:{port}/team"]) == 3, argv
            out, err = capsys.readouterr()
            assert err.count("\n") == 1 and "Traceback" not in err, err
            assert err.startswith(f"vexfs-cockpit: cannot connect to history DB postgresql://cockpit@127.0.0.1:{port}/team (")


def test_run_batch_against_an_unreachable_server_is_one_line_exit_3(tmp_path: Path) -> None:
    from tests.support.faults import cockpit_batch

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"postgresql://cockpit@127.0.0.1:{s.getsockname()[1]}/team"
        proc = cockpit_batch(PgUrl(url), tmp_path, tests="1")
    assert proc.returncode == 3 and proc.stdout == ""
    assert proc.stderr.startswith(f"vexfs-cockpit: cannot connect to history DB {url} (") and proc.stderr.count("\n") == 1


def test_run_batch_records_into_postgresql_and_history_reads_it(pg_server, tmp_path: Path) -> None:
    """Issue 19: `run --batch --db postgresql://...` (the real CLI in a child, a host
    domain instead of VMs) stores the run, `history` reads it, the URL is printed as is."""
    from tests.support.faults import cockpit_batch
    from vexfs_cockpit.store.history import History

    url = pg_server.new_database()
    proc = cockpit_batch(PgUrl(url), tmp_path, tests="2")
    assert proc.returncode == 0, proc.stderr
    assert "faults/t02: PASSED" in proc.stdout and "Traceback" not in proc.stderr
    (run,) = History(PgUrl(url)).list_runs()
    assert (run.status, run.env, run.counts) == ("passed", "ci", {"PASSED": 2})
    code, out = run_cli("history", "--db", url)
    assert code == 0 and out.splitlines()[1].split()[0] == run.run_id
    code, out = run_cli("history", "show", "latest", "--db", url, "--evidence", "none")
    assert code == 0 and out.startswith(f"run {run.run_id}  passed")


def test_baseline_analyze_and_gc_take_either_backend(db: StoreLocation, capsys: pytest.CaptureFixture[str],
                                                     tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))  # gc: nothing of this machine's
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert main(["baseline", "set", "run-a", "--db", str(db)]) == 0
    assert main(["baseline", "set", "run-b", "--db", str(db)]) == 0  # replaces dev's (ON CONFLICT on both)
    assert main(["baseline", "show", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[-1].startswith("dev: run-b (set ")
    assert main(["analyze", "--db", str(db), "--env", "dev"]) in (0, 1)
    out, err = capsys.readouterr()
    assert "run-b" in out and err == ""
    assert main(["gc", "--dry-run", "--db", str(db)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("gc: 0 item(s)") and f"; history DB {db} kept (" in out
    size_mb = float(out.rsplit("kept (", 1)[1].split(" MB)")[0])
    # PostgreSQL's pg_database_size (an empty database is ~7 MB), or the small SQLite file
    assert size_mb > 5 if isinstance(db, PgUrl) else 0 < size_mb < 1, out


def test_history_and_report_read_the_configs_store_url(db: StoreLocation, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """Without --db or VEXFS_COCKPIT_DB, the project's configs/default.yaml names the history."""
    project = tmp_path / "project"
    (project / "configs" / "env").mkdir(parents=True)
    (project / "configs" / "default.yaml").write_text(f"store:\n  url: '{db}'\n")
    (project / "configs" / "env" / "dev.yaml").write_text("")
    monkeypatch.chdir(project)  # the working directory's configs/ come first
    monkeypatch.delenv(DB_ENV_VAR)
    code, out = run_cli("history")
    assert code == 0 and [ln.split()[0] for ln in out.splitlines()[1:]] == ["run-c", "run-b", "run-a"]
    assert main(["report", "latest", "-f", "json"]) == 0
    assert json.loads(capsys.readouterr().out)["run"]["run_id"] == "run-c"
