"""Helpers for the store tests: real events with fixed timestamps, recorded for real.

No tests here; the test_store_* modules import it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import io
import itertools
import json
import sys
import textwrap
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from vexfs_cockpit.commands.history import add_parser
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.events import (
    DomainFinished,
    DomainStarted,
    Event,
    KernelEventRaised,
    RunFinished,
    RunStarted,
    TestFinished,
    TestStarted,
    VmReady,
)
from vexfs_cockpit.engine.results import Attempt, CommandRecord, Evidence, TestResult, TestStatus
from vexfs_cockpit.klog.model import KernelReport, Severity
from vexfs_cockpit.store.location import PgUrl, StoreLocation
from vexfs_cockpit.store.recorder import HistoryStore, Recorder

# The two store backends; a test parametrized over them gets its history from
# ``new_history`` (PostgreSQL: a fresh database of the session's real server).
BACKENDS = ("sqlite", "postgresql")


def new_history(request: Any, directory: Path, name: str = "history.db") -> StoreLocation:
    """A new, empty history of the backend ``request.param`` names."""
    if request.param == "postgresql":
        return PgUrl(request.getfixturevalue("pg_server").new_database())
    return directory / name


def history_maker(request: Any, directory: Path) -> Callable[[], StoreLocation]:
    """``new_history`` as a factory, for a test that needs several fresh histories."""
    if request.param == "postgresql":
        server = request.getfixturevalue("pg_server")
        return lambda: PgUrl(server.new_database())
    names = (directory / f"history{i}.db" for i in itertools.count())
    return lambda: next(names)


def query(loc: StoreLocation, sql: str, *params: object) -> list[tuple[Any, ...]]:
    """Rows of ``sql`` (one text for both backends) as plain tuples, read through the
    store's own reader connection of either backend."""
    from vexfs_cockpit.store.db import reading
    from vexfs_cockpit.store.dialect import fetch_tuples

    with reading(loc) as conn:
        assert conn is not None, f"no history at {loc}"
        return [tuple(r) for r in fetch_tuples(conn, sql, params)]


T0 = 1_790_000_000.0  # a fixed epoch (2026-09) so orders and periods are deterministic
DAY = 86400.0


def kreport(kind: str = "warning", title: str = "WARNING in vexfs_write", severity: Severity = Severity.WARNING,
            line: int = 100, vm: str = "vm-a") -> KernelReport:
    return KernelReport(kind=kind, title=title, severity=severity, line=line, module="vexfs_selftest",
                        text=f"{title}\nCall Trace:\n vexfs_write+0x10/0x20", vm=vm)


def result(domain: str, test: str, status: TestStatus, started: float, duration: float = 1.0,
           message: str = "", metrics: dict[str, float] | None = None, retried: bool = False) -> TestResult:
    attempts = [Attempt(1, status, message, duration)]
    if retried:
        attempts = [Attempt(1, TestStatus.FAILED, "flaked", duration), Attempt(2, status, message, duration)]
    return TestResult(
        status=status,
        message=message or ("ok" if status is TestStatus.PASSED else f"{test} {status.lower()}"),
        metrics=dict(metrics or {}),
        name=test,
        domain=domain,
        duration_s=duration,
        started_at=started,
        attempts=attempts,
        evidence=Evidence(
            commands=[CommandRecord(f"run-{test}", 0 if status is TestStatus.PASSED else 1, 0.25,
                                    f"output of {test}\nlast line", target="vm-a")],
            kernel_log=[f"[ {started:.0f}] line for {test}"],
            notes=[f"note {test}"],
        ),
    )


@dataclass
class RunSpec:
    run_id: str
    start: float
    env: str = "dev"
    # (domain, test) -> status; metrics per test; retried tests
    outcomes: dict[tuple[str, str], TestStatus] = field(default_factory=dict)
    metrics: dict[tuple[str, str], dict[str, float]] = field(default_factory=dict)
    retried: set[tuple[str, str]] = field(default_factory=set)
    kernel: list[tuple[str, str, KernelReport, bool]] = field(default_factory=list)  # domain, test, report, expected
    status: str | None = None  # RunFinished status; None: derive; "" : never finishes
    test_duration: float = 1.0
    provenance: dict[str, str] = field(default_factory=dict)  # RunStarted's: kernel, module_commit, ...
    ready: dict[str, tuple[str, float]] = field(default_factory=dict)  # domain -> its VM's (mode, seconds) to come up


def run_events(spec: RunSpec) -> list[Event]:
    """The events a runner would publish for ``spec``, at fixed times."""
    ts = spec.start
    domains = list(dict.fromkeys(d for d, _ in spec.outcomes))
    evs: list[Event] = [RunStarted(run_id=spec.run_id, config_path="configs/default.yaml", profile="selftest",
                                   env=spec.env, domains=tuple(domains), ts=ts, provenance_json=json.dumps(spec.provenance))]
    totals: dict[str, int] = {}
    for i, domain in enumerate(domains):
        vm = f"vm-{i}"
        tests = [t for d, t in spec.outcomes if d == domain]
        ts += 1
        if domain in spec.ready:  # the VM came up just before the domain started on it
            mode, seconds = spec.ready[domain]
            evs.append(VmReady(vm=vm, mode=mode, seconds=seconds, ts=ts - 0.5))
        evs.append(DomainStarted(run_id=spec.run_id, domain=domain, vm=vm, planned_tests=tuple(tests), ts=ts))
        dcounts: dict[str, int] = {}
        for test in tests:
            status = spec.outcomes[(domain, test)]
            ts += 1
            evs.append(TestStarted(run_id=spec.run_id, domain=domain, test=test, attempt=1, vm=vm, ts=ts))
            for kd, kt, rep, expected in spec.kernel:
                if (kd, kt) == (domain, test):
                    ts += 0.5
                    # the classifier often knows only the VM: attribution fills domain/test
                    evs.append(KernelEventRaised(vm=vm, report=rep, expected=expected, ts=ts))
            started = ts
            ts += spec.test_duration
            r = result(domain, test, status, started, spec.test_duration,
                       metrics=spec.metrics.get((domain, test)), retried=(domain, test) in spec.retried)
            evs.append(TestFinished(run_id=spec.run_id, result=r, ts=ts))
            dcounts[str(status)] = dcounts.get(str(status), 0) + 1
        bad = any(TestStatus(s).bad for s in dcounts)
        ts += 1
        evs.append(DomainFinished(run_id=spec.run_id, domain=domain, status="failed" if bad else "passed",
                                  counts=dcounts, ts=ts))
        for k, v in dcounts.items():
            totals[k] = totals.get(k, 0) + v
    if spec.status != "":
        status = spec.status or ("failed" if any(TestStatus(s).bad for s in totals) else "passed")
        evs.append(RunFinished(run_id=spec.run_id, status=status, counts=totals, ts=ts + 1))
    return evs


async def record(path: StoreLocation, events: Iterable[Event], store: HistoryStore | None = None) -> None:
    """Publish ``events`` on a real bus with a real Recorder writing to ``path``."""
    own = store is None
    store = store or await HistoryStore.aopen(path)
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    rec = Recorder(store, bus)
    rec.start()
    for ev in events:
        bus.publish(ev)
    await rec.aclose()
    assert rec.error is None, rec.error
    if own:
        store.close()


@contextlib.contextmanager
def recorded(path: StoreLocation, specs: Sequence[RunSpec]) -> Iterator[StoreLocation]:
    """``specs`` recorded, with the writer kept open until the end of the block: a run
    left unfinished reads as still running (on PostgreSQL a run is live while its
    writer's connection holds its lock; on SQLite while its process lives)."""
    store = HistoryStore.open(path)
    try:
        async def go() -> None:
            for spec in specs:
                await record(path, run_events(spec), store)

        asyncio.run(go())
        yield path
    finally:
        store.close()


def record_sync(path: StoreLocation, specs: Sequence[RunSpec]) -> None:
    async def go() -> None:
        store = await HistoryStore.aopen(path)
        try:
            for spec in specs:
                await record(path, run_events(spec), store)
        finally:
            store.close()

    asyncio.run(go())


P, F, S, T, E = TestStatus.PASSED, TestStatus.FAILED, TestStatus.SKIPPED, TestStatus.TIMEOUT, TestStatus.ERROR
KM, FS = "kernel_module", "filesystem_operations"


ROOT = Path(__file__).resolve().parents[2]


def dbgen() -> ModuleType:
    spec = importlib.util.spec_from_file_location("_dbgen", ROOT / "bench" / "_dbgen.py")
    assert spec is not None and spec.loader is not None
    mod = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("_dbgen", mod)
    spec.loader.exec_module(mod)
    return mod


def run_cli(*argv: str) -> tuple[int, str]:
    parser = argparse.ArgumentParser(prog="vexfs-cockpit")
    add_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(list(argv))
    out = io.StringIO()
    code = args.func(args, out)
    return code, out.getvalue()


# A process that records a run's first results and a started test, says "ready" and waits
# to be SIGKILLed (argv[1]: the DB): what a dead cockpit leaves behind.
KILLED_RUN_CHILD = textwrap.dedent(
    """
    import asyncio, sys
    from pathlib import Path
    from tests.support.store import KM, T0, P, F, RunSpec, run_events
    from vexfs_cockpit.engine.bus import EventBus
    from vexfs_cockpit.engine.events import TestStarted
    from vexfs_cockpit.store.location import parse_location
    from vexfs_cockpit.store.recorder import HistoryStore, Recorder

    async def main() -> None:
        store = await HistoryStore.aopen(parse_location(sys.argv[1], "argv[1]"))
        bus = EventBus()
        bus.bind_loop(asyncio.get_running_loop())
        rec = Recorder(store, bus)
        rec.start()
        events = run_events(RunSpec("killed", T0, outcomes={(KM, "build"): P, (KM, "load"): F}, status=""))
        for ev in events[:-1]:  # everything but DomainFinished
            bus.publish(ev)
        bus.publish(TestStarted(run_id="killed", domain=KM, test="unload", attempt=1, vm="vm-0", ts=T0 + 60))
        await rec.flush()
        print("ready", flush=True)
        sys.stdin.readline()  # until SIGKILLed

    asyncio.run(main())
    """
)
