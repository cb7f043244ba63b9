"""`vexfs-cockpit gc` applies the retention policy and keeps what is young or running."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from vexfs_cockpit import cli
from vexfs_cockpit.app.gc import DAY_S, apply_gc, plan_gc
from vexfs_cockpit.config.load import load_config


def _aged(path: Path, days: float, size: int = 100) -> Path:
    if path.suffix or "." in path.name:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"x" * size)
    else:
        path.mkdir(parents=True, exist_ok=True)
        (path / "console.log").write_bytes(b"x" * size)
    t = time.time() - days * DAY_S
    os.utime(path, (t, t))
    return path


def test_old_artifacts_go_young_and_running_ones_stay(tmp_path: Path) -> None:
    data, cache = tmp_path / "data", tmp_path / "cache"
    old_run = _aged(data / "runs" / "20200101-000000-aaaa", 40)
    running = _aged(data / "runs" / "20200101-000000-bbbb", 40)
    young = _aged(data / "runs" / "20260101-000000-cccc", 1)
    old_build = _aged(cache / "0123abcd", 20)
    fresh_build = _aged(cache / "4567efgh", 2)
    (data / "vms").mkdir(parents=True)
    (data / "vms" / "vexfs-dev-alive-0.json").write_text("{}")
    alive_log = _aged(data / "vms" / "vexfs-dev-alive-0.console.log", 0)
    dead_log = _aged(data / "vms" / "vexfs-dev-gone-0.console.log.1", 0)

    items = plan_gc(load_config(None, "ci"), data=data, build_cache=cache, running=[running.name])
    assert {i.path for i in items} == {old_run, old_build, dead_log}
    assert apply_gc(items) == sum(i.bytes for i in items) > 0
    assert not old_run.exists() and not old_build.exists() and not dead_log.exists()
    assert running.exists() and young.exists() and fresh_build.exists() and alive_log.exists()


def test_the_policy_comes_from_config(tmp_path: Path) -> None:
    data = tmp_path / "data"
    run = _aged(data / "runs" / "r1", 5)
    assert plan_gc(load_config(None, "ci"), data=data, build_cache=tmp_path / "c") == []
    cfg = load_config(None, "ci", {"store.keep_runs_days": 3})
    assert [i.path for i in plan_gc(cfg, data=data, build_cache=tmp_path / "c")] == [run]


def test_gc_command_dry_run_removes_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    run = _aged(tmp_path / "xdg" / "vexfs-cockpit" / "runs" / "r-old", 100)
    assert cli.main(["gc", "--dry-run", "--db", str(tmp_path / "h.db")]) == 0
    out = capsys.readouterr().out
    assert f"would remove {run}" in out and run.exists()
    assert cli.main(["gc", "--db", str(tmp_path / "h.db")]) == 0
    assert not run.exists()
    assert cli.main(["gc", "--set", "store.keep_runs_days=-1"]) == 2
