"""A watch/bisect cycle (commands/cycle.py) runs the guest's unload while the host
builds, and still reports as when they ran in turn: the build's failure first, a lost
VM as an error once the build is done (no make left running), the time of each. The
new module is loaded after the tests (whose domain unloads and loads it itself), so
it stays in the dev VM; a load that fails still makes the cycle bad."""

from __future__ import annotations

import argparse
import asyncio
import io
import json
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest

from vexfs_cockpit.commands import cycle as cycle_mod
from vexfs_cockpit.errors import InfraError


class _Guest:
    """Stands in for the app operations; records the order things start and end in."""

    def __init__(self, report: Path, *, build_ok: bool = True, unload: Any = 0) -> None:
        self.events: list[str] = []
        self.report, self.build_ok, self.unload = report, build_ok, unload
        self.load: Any = 0
        self.status = "PASSED"
        self.build_gate = asyncio.Event()

    async def build_for(self, cfg: Any, vm: str, *, uri: str | None = None) -> Any:
        self.events.append("build start")
        await self.build_gate.wait()  # the unload must get its turn while this waits
        self.events.append("build end")
        ok = self.build_ok
        return SimpleNamespace(how="fast" if ok else "make: CC [M] m.o exited 1", ok=ok)

    async def kunload(self, cfg: Any, vm: str, *, uri: str | None = None, out: Any = None, targets: Any = None) -> int:
        self.events.append("unload start")
        await asyncio.sleep(0)
        self.events.append("unload end")
        if isinstance(self.unload, BaseException):
            asyncio.get_running_loop().call_later(0.05, self.build_gate.set)  # the build goes on a while
            raise self.unload
        self.build_gate.set()
        if self.unload:
            print("rmmod vexfs_selftest failed: in use", file=out)
        return int(self.unload)

    async def kload(self, cfg: Any, vm: str, *, uri: str | None = None, out: Any = None, targets: Any = None) -> int:
        self.events.append("load")
        if isinstance(self.load, BaseException):
            raise self.load
        if self.load:
            print("insmod vexfs_selftest failed: Invalid argument", file=out)
        return int(self.load)

    async def ktest(self, ns: argparse.Namespace) -> int:
        self.events.append("tests")
        Path(ns.json).write_text(json.dumps({"run": {"run_id": "r1"}, "domains": [
            {"tests": [{"domain": "kernel_module", "name": "module_load_basic", "status": self.status}]}]}))
        return 0


def _report_build(res: Any, mod: Any, out: io.StringIO) -> bool:
    if not res.ok:
        print("build failed for 6.1: m.c:3:1: error: expected ';'", file=out)
    return bool(res.ok)


@pytest.fixture
def guest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> _Guest:
    g = _Guest(tmp_path / "report.json")
    for name in ("build_for", "kunload", "kload", "ktest"):
        monkeypatch.setattr(cycle_mod, name, getattr(g, name))
    monkeypatch.setattr(cycle_mod, "report_build", _report_build)
    monkeypatch.setattr(cycle_mod, "module_of", lambda cfg: None)
    return g


def _cycle(g: _Guest) -> cycle_mod.Cycle:
    args = argparse.Namespace(uri=None, tests="kernel_module/module_load_basic", config=None, env="test", set=[],
                              db=None, name="w1")
    return cycle_mod.Cycle(args, targets=None, report=g.report)


async def test_the_unload_runs_while_the_build_does_and_the_line_says_so(guest: _Guest) -> None:
    c = _cycle(guest)
    line = await c.run(None, "vexfs-test-w1-0")
    assert guest.events[:4] == ["build start", "unload start", "unload end", "build end"], guest.events
    assert guest.events[4:] == ["tests", "load"]
    assert line.startswith("PASS 1/1 (") and "build 0.0 fast, unload 0.0 alongside · tests 0.0 · load 0.0)" in line, line
    assert c.outcome == "good" and c.run_id == "r1"


async def test_a_failed_load_after_passing_tests_makes_the_cycle_bad(guest: _Guest) -> None:
    guest.load = 1
    c = _cycle(guest)
    line = await c.run(None, "vm")
    assert line.startswith("load FAILED: insmod vexfs_selftest failed: Invalid argument; PASS 1/1 ("), line
    assert c.outcome == "bad"


async def test_a_vm_lost_at_the_load_keeps_the_tests_verdict(guest: _Guest) -> None:
    guest.load, guest.status = InfraError("vexfs-test-w1-0 is not running"), "FAILED"
    c = _cycle(guest)
    line = await c.run(None, "vm")
    assert line.startswith("load ERROR: vexfs-test-w1-0 is not running; FAIL 0/1 (") and line.endswith(
        ": kernel_module/module_load_basic"), line
    assert c.outcome == "bad" and c.failing == ["kernel_module/module_load_basic"]
    guest.status = "PASSED"
    await c.run(None, "vm")
    assert c.outcome == "error"  # passed, but the VM is gone: not a verdict on the code


async def test_a_failed_build_is_the_line_even_with_the_unload_done(guest: _Guest) -> None:
    guest.build_ok = False
    c = _cycle(guest)
    line = await c.run(None, "vm")
    assert line.startswith("build FAILED (") and "build 0.0 make: CC [M] m.o exited 1, unload 0.0 alongside" in line
    assert line.endswith("m.c:3:1: error: expected ';'") and c.outcome == "skip"
    assert not any(e.startswith("load") for e in guest.events) and "tests" not in guest.events


async def test_a_refused_unload_is_the_line_after_a_good_build(guest: _Guest) -> None:
    guest.unload = 1
    c = _cycle(guest)
    line = await c.run(None, "vm")
    assert line.startswith("unload FAILED (") and line.endswith("rmmod vexfs_selftest failed: in use")
    assert c.outcome == "error" and not any(e.startswith("load") for e in guest.events)


async def test_a_vm_lost_during_the_build_is_raised_once_the_build_is_done(guest: _Guest) -> None:
    guest.unload = InfraError("vexfs-test-w1-0 is not running")
    with pytest.raises(InfraError, match="not running"):
        await _cycle(guest).run(None, "vm")
    assert guest.events[-1] == "build end"  # the build was not left running


async def test_a_newer_save_cancels_both(guest: _Guest) -> None:
    guest.unload = 0
    gate_never = asyncio.Event()

    async def stuck_unload(*a: Any, **k: Any) -> int:
        guest.events.append("unload start")
        await gate_never.wait()
        return 0

    cycle_mod.kunload = stuck_unload  # type: ignore[assignment]  # restored by monkeypatch
    task = asyncio.create_task(_cycle(guest).run(None, "vm"))
    while "unload start" not in guest.events:
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert "build end" not in guest.events and not any(e.startswith("load") for e in guest.events)
