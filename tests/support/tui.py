"""Shared pieces for the TUI tests (no tests here).

``UiBackend`` is the honest unit boundary for UI tests: its ``bus`` is a real
``EventBus`` and the tests publish real engine event objects onto it; commands the
TUI sends are recorded so a test can assert the TUI asked for the right thing.
History queries go to a real SQLite store when ``history`` is given one.
"""

from __future__ import annotations

import asyncio
import dataclasses
import io
import time
from collections.abc import AsyncIterator, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console
from rich.text import Text
from textual.pilot import Pilot
from textual.widgets import DataTable

from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.events import (
    DomainFinished,
    DomainStarted,
    Event,
    KernelEventRaised,
    KernelLogLine,
    RunStarted,
    TestFinished,
    TestStarted,
    VmSample,
    VmStateChanged,
)
from vexfs_cockpit.engine.results import CommandRecord, Evidence, TestResult, TestStatus
from vexfs_cockpit.errors import InfraError
from vexfs_cockpit.klog.model import KernelReport, Severity
from vexfs_cockpit.store.history import History
from vexfs_cockpit.tui.app import CockpitApp
from vexfs_cockpit.tui.backend import ActionResult, RunChoices, RunRequest, VmInfo
from vexfs_cockpit.tui.history_queries import HistoryQueries
from vexfs_cockpit.tui.internals import screen_strips

T0 = 1_764_000_000.0  # fixed wall clock for deterministic screens (2025-11-24)
DOMAINS = (
    "kernel_module",
    "filesystem_operations",
    "vector_operations",
    "performance_metrics",
    "safety_validation",
    "integration_testing",
)


@dataclass
class UiBackend(HistoryQueries):
    """History queries go to a real store DB at ``db_path`` (absent file: empty history)."""

    db_path: Path = Path("/nonexistent/vexfs-cockpit-test/history.db")
    vms: list[VmInfo] = field(default_factory=list)
    vm_error: str | None = None
    kbuild_result: ActionResult = field(default_factory=lambda: ActionResult(True, "built vexfs_selftest.ko"))
    calls: list[tuple[str, tuple[Any, ...]]] = field(default_factory=list)
    watch_feed: asyncio.Queue[str | None] = field(default_factory=asyncio.Queue)
    _bus: EventBus = field(default_factory=EventBus)

    def __post_init__(self) -> None:
        HistoryQueries.__init__(self, History(self.db_path))

    @property
    def bus(self) -> EventBus:
        return self._bus

    async def open(self) -> None:
        import asyncio

        self._bus.bind_loop(asyncio.get_running_loop())
        self.calls.append(("open", ()))

    async def close(self) -> None:
        self.calls.append(("close", ()))

    def run_choices(self) -> RunChoices:
        return RunChoices(domains=DOMAINS, envs=("dev", "test", "ci"), default_env="dev", profile="selftest",
                          module="vexfs_selftest", guest_kernel="auto", db_path=str(self.db_path))

    async def start_run(self, request: RunRequest) -> str:
        self.calls.append(("start_run", (request,)))
        return "run-2"

    async def abort_run(self) -> None:
        self.calls.append(("abort_run", ()))

    async def vm_list(self) -> list[VmInfo]:
        self.calls.append(("vm_list", ()))
        if self.vm_error is not None:
            raise InfraError(self.vm_error)
        return list(self.vms)

    async def vm_start(self, name: str) -> None:
        self.calls.append(("vm_start", (name,)))

    async def vm_stop(self, name: str) -> None:
        self.calls.append(("vm_stop", (name,)))

    async def vm_reset(self, name: str) -> None:
        self.calls.append(("vm_reset", (name,)))

    def console_argv(self, name: str) -> list[str]:
        return ["true", "console", name]

    def ssh_argv(self, name: str) -> list[str]:
        return ["true", "ssh", name]

    async def kbuild(self) -> ActionResult:
        self.calls.append(("kbuild", ()))
        return self.kbuild_result

    async def kload(self, vm: str) -> ActionResult:
        self.calls.append(("kload", (vm,)))
        return ActionResult(True, f"loaded on {vm}")

    async def kunload(self, vm: str) -> ActionResult:
        self.calls.append(("kunload", (vm,)))
        return ActionResult(True, f"unloaded on {vm}")

    async def watch(self, vm: str) -> AsyncIterator[str]:
        """The lines a test puts in ``watch_feed`` (None: the watch ends by itself);
        records ``watch_closed`` when the TUI stops it."""
        self.calls.append(("watch", (vm,)))
        try:
            while (line := await self.watch_feed.get()) is not None:
                yield line
        finally:
            self.calls.append(("watch_closed", (vm,)))

    def called(self, name: str) -> list[tuple[Any, ...]]:
        return [args for n, args in self.calls if n == name]


# -- deterministic event scripts -------------------------------------------------------

VM_A = "vexfs-dev-kernel_module-0"
VM_B = "vexfs-dev-filesystem_operations-0"

WARN_TEXT = (
    "------------[ cut here ]------------\n"
    "WARNING: CPU: 0 PID: 231 at fs/vexfs_selftest/super.c:88 selftest_write+0x4e/0x90 [vexfs_selftest]\n"
    "Modules linked in: vexfs_selftest(OE) e1000\n"
    "CPU: 0 PID: 231 Comm: sh Tainted: G           OE      6.1.0-56-amd64 #1  Debian 6.1.158-1\n"
    "---[ end trace 0000000000000000 ]---"
)


def boot_lines(vm: str, start: int, count: int, t: float) -> list[KernelLogLine]:
    texts = [
        "Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org) (gcc-12 (Debian 12.2.0-14) 12.2.0)",
        "Command line: console=ttyS0 loglevel=7 panic=-1",
        "x86/fpu: Supporting XSAVE feature 0x001: 'x87 floating point registers'",
        "BIOS-provided physical RAM map:",
        "e1000: Intel(R) PRO/1000 Network Driver",
        "Run /init as init process",
        "vexfs_selftest: loading out-of-tree module taints kernel.",
        "vexfs_selftest: module verification failed: signature and/or required key missing - tainting kernel",
    ]
    return [
        KernelLogLine(vm=vm, line_no=start + i, text=f"[{(start + i) * 0.013:12.6f}] {texts[(start + i) % len(texts)]}", ts=t + i * 0.01)
        for i in range(count)
    ]


def warn_event(vm: str, line: int, t: float, expected: bool = False) -> tuple[list[KernelLogLine], KernelEventRaised]:
    lines = [
        KernelLogLine(vm=vm, line_no=line + i, text=f"[{100 + i * 0.001:12.6f}] {txt}", ts=t)
        for i, txt in enumerate(WARN_TEXT.splitlines())
    ]
    report = KernelReport(
        kind="warning",
        title="WARNING in selftest_write",
        severity=Severity.WARNING,
        line=line,
        module="vexfs_selftest",
        text=WARN_TEXT,
        vm=vm,
    )
    return lines, KernelEventRaised(vm=vm, report=report, run_id="run-1", domain="kernel_module", test="module_load", expected=expected, ts=t)


def result(domain: str, name: str, status: TestStatus, dur: float, t: float, message: str = "", exit_code: int = 0) -> TestResult:
    return TestResult(
        status=status,
        message=message,
        name=name,
        domain=domain,
        duration_s=dur,
        started_at=t,
        evidence=Evidence(
            commands=[
                CommandRecord(cmd=f"insmod /root/vexfs_selftest.ko # {name}", exit_code=exit_code, duration_s=dur / 2, output_tail="insmod: ERROR: could not insert module" if exit_code else "")
            ],
            kernel_log=["[  12.000000] vexfs_selftest: registered filesystem vexfs_selftest"],
        ),
    )


def mid_run_events(t: float = T0) -> list[Event]:
    """A run two domains into its life: VMs up, some results, a kernel warning."""
    evs: list[Event] = [
        VmStateChanged(vm=VM_A, state="booting", ts=t - 30),
        VmStateChanged(vm=VM_A, state="ready", ts=t - 22),
        VmStateChanged(vm=VM_B, state="booting", ts=t - 29),
        VmStateChanged(vm=VM_B, state="ready", ts=t - 20),
        RunStarted(run_id="run-1", config_path="configs/default.yaml", profile="selftest", env="dev", domains=DOMAINS[:2], ts=t - 31),
        DomainStarted(run_id="run-1", domain="kernel_module", vm=VM_A, planned_tests=("module_build", "module_load", "module_unload", "taint_check"), ts=t - 20),
        DomainStarted(run_id="run-1", domain="filesystem_operations", vm=VM_B, planned_tests=("mount", "create_files", "rename", "unmount"), ts=t - 18),
        TestStarted(run_id="run-1", domain="kernel_module", test="module_build", attempt=1, vm=VM_A, ts=t - 20),
        TestFinished(run_id="run-1", result=result("kernel_module", "module_build", TestStatus.PASSED, 1.2, t - 20), ts=t - 18.8),
        TestStarted(run_id="run-1", domain="kernel_module", test="module_load", attempt=1, vm=VM_A, ts=t - 18),
        TestFinished(run_id="run-1", result=result("kernel_module", "module_load", TestStatus.FAILED, 2.5, t - 18, "insmod exited 1", exit_code=1), ts=t - 15.5),
        TestStarted(run_id="run-1", domain="kernel_module", test="module_unload", attempt=1, vm=VM_A, ts=t - 15),
        TestStarted(run_id="run-1", domain="filesystem_operations", test="mount", attempt=1, vm=VM_B, ts=t - 17),
        TestFinished(run_id="run-1", result=result("filesystem_operations", "mount", TestStatus.PASSED, 0.8, t - 17), ts=t - 16.2),
        TestStarted(run_id="run-1", domain="filesystem_operations", test="create_files", attempt=1, vm=VM_B, ts=t - 16),
    ]
    for i in range(60):
        evs.append(VmSample(vm=VM_A, state="ready", cpu_pct=float((i * 7) % 100), mem_kb=180_000 + i * 100, ts=t - 60 + i))
        evs.append(VmSample(vm=VM_B, state="ready", cpu_pct=float((i * 3) % 40), mem_kb=150_000, ts=t - 60 + i))
    evs.extend(boot_lines(VM_A, 1, 30, t - 25))
    evs.extend(boot_lines(VM_B, 1, 20, t - 24))
    lines, event = warn_event(VM_A, 31, t - 16)
    evs.extend(lines)
    evs.append(event)
    evs.extend(boot_lines(VM_A, 36, 4, t - 14))
    return evs


def finished_run_events(t: float = T0) -> list[Event]:
    return [
        DomainFinished(run_id="run-1", domain="kernel_module", status="failed", counts={"PASSED": 1, "FAILED": 1}, ts=t),
    ]


def screen_text(app: Any) -> str:
    """The screen as plain text, for assertions and debugging."""
    return "\n".join(strip.text for strip in screen_strips(app.screen))


# -- a real history DB, written through the store's public API --------------------------

DAY = 86400.0


def _run_events(run_id: str, env: str, t: float, outcomes: dict[tuple[str, str], tuple[TestStatus, float]],
                kernel: list[KernelEventRaised] = (), metrics: dict[str, float] | None = None,
                retried: frozenset[tuple[str, str]] = frozenset()) -> list[Event]:
    from vexfs_cockpit.engine.events import MetricRecorded, RunFinished
    from vexfs_cockpit.engine.results import Attempt

    domains = tuple(dict.fromkeys(d for d, _ in outcomes))
    evs: list[Event] = [RunStarted(run_id=run_id, config_path="configs/default.yaml", profile="selftest", env=env, domains=domains, ts=t)]
    clock = t
    counts: dict[str, int] = {}
    for dom in domains:
        vm = f"vexfs-{env}-{dom}-0"
        planned = tuple(test for d, test in outcomes if d == dom)
        evs.append(DomainStarted(run_id=run_id, domain=dom, vm=vm, planned_tests=planned, ts=clock))
        dom_bad = False
        for test in planned:
            status, dur = outcomes[(dom, test)]
            evs.append(TestStarted(run_id=run_id, domain=dom, test=test, attempt=1, vm=vm, ts=clock))
            r = result(dom, test, status, dur, clock, message="" if status is TestStatus.PASSED else f"{test}: exit 1",
                       exit_code=0 if status is TestStatus.PASSED else 1)
            if (dom, test) in retried:
                r.attempts = [Attempt(1, TestStatus.FAILED, "flaked", dur), Attempt(2, status, "", dur)]
            for k in kernel:
                if k.domain == dom and k.test == test:
                    evs.append(dataclasses.replace(k, run_id=run_id, ts=clock + dur / 2))
            for name, value in (metrics or {}).items():
                m_dom, m_test, m_name = name.split(".")
                if (m_dom, m_test) == (dom, test):
                    evs.append(MetricRecorded(run_id=run_id, domain=dom, test=test, name=m_name, value=value, ts=clock + dur))
            clock += dur
            evs.append(TestFinished(run_id=run_id, result=r, ts=clock))
            counts[status.value] = counts.get(status.value, 0) + 1
            dom_bad |= status.bad
        evs.append(DomainFinished(run_id=run_id, domain=dom, status="failed" if dom_bad else "passed", counts={}, ts=clock))
    bad = any(s.bad for s, _ in outcomes.values())
    evs.append(RunFinished(run_id=run_id, status="failed" if bad else "passed", counts=counts, ts=clock + 1))
    return evs


def history_runs() -> list[list[Event]]:
    """Three runs over three days: a pass, a regression with a WARNING, a flaky fix with a panic."""
    P, F, TO = TestStatus.PASSED, TestStatus.FAILED, TestStatus.TIMEOUT
    base = {
        ("kernel_module", "module_build"): (P, 1.0),
        ("kernel_module", "module_load"): (P, 2.0),
        ("filesystem_operations", "mount"): (P, 0.5),
    }
    _, warn = warn_event("vexfs-dev-kernel_module-0", 40, T0)
    warn = dataclasses.replace(warn, domain="kernel_module", test="module_load")
    panic_report = KernelReport(kind="panic", title="Kernel panic - not syncing: Fatal exception", severity=Severity.CRITICAL,
                                line=90, module=None, text="Kernel panic - not syncing: Fatal exception\n---[ end Kernel panic ]---",
                                vm="vexfs-ci-filesystem_operations-0")
    panic = KernelEventRaised(vm="vexfs-ci-filesystem_operations-0", report=panic_report, domain="filesystem_operations", test="mount")
    return [
        _run_events("run-a", "dev", T0 - 3 * DAY, base, metrics={"kernel_module.module_load.load_time_ms": 12.0}),
        _run_events("run-b", "dev", T0 - 2 * DAY, {**base, ("kernel_module", "module_load"): (F, 2.6)}, kernel=[warn],
                    metrics={"kernel_module.module_load.load_time_ms": 15.5}),
        _run_events("run-c", "ci", T0 - 1 * DAY, {**base, ("kernel_module", "module_load"): (P, 2.2), ("filesystem_operations", "mount"): (TO, 30.0)},
                    kernel=[panic], metrics={"kernel_module.module_load.load_time_ms": 11.0},
                    retried=frozenset({("kernel_module", "module_load")})),
    ]


async def seed_history(path: Path) -> None:
    """Record ``history_runs()`` into a fresh DB at ``path`` via HistoryStore + Recorder."""
    from vexfs_cockpit.store.recorder import HistoryStore, Recorder

    store = HistoryStore.open(path)
    try:
        bus = EventBus()
        recorder = Recorder(store, bus)
        recorder.start()
        for run in history_runs():
            for ev in run:
                bus.publish(ev)
        await recorder.flush()
        await recorder.aclose()
        assert recorder.error is None, recorder.error
    finally:
        store.close()


# Fixtures of the TUI tests (imported by name where used).
@pytest.fixture
def utc(monkeypatch):
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.fixture
async def db(tmp_path: Path) -> Path:
    path = tmp_path / "seeded.db"
    await seed_history(path)
    return path


@asynccontextmanager
async def cockpit(backend: UiBackend | None = None, size: tuple[int, int] = (80, 24), **kw: Any) -> AsyncIterator[tuple[CockpitApp, Pilot, list[tuple[str, str]]]]:
    app = CockpitApp(backend or UiBackend(), clock=lambda: T0, **kw)
    notes: list[tuple[str, str]] = []
    real_notify = app.notify

    def notify(message: str, **kwargs: Any) -> None:
        notes.append((message, kwargs.get("severity", "information")))
        real_notify(message, **kwargs)

    app.notify = notify  # type: ignore[method-assign]
    async with app.run_test(size=size) as pilot:
        await app.workers.wait_for_complete()
        await pilot.pause()
        yield app, pilot, notes


async def feed(app: CockpitApp, pilot: Pilot, events: Iterable[Event]) -> None:
    for ev in events:
        app.backend.bus.publish(ev)
    app.pump_now()
    await pilot.pause()


async def settle(app: CockpitApp, pilot: Pilot) -> None:
    """Until no worker is pending or running: a message processed on the way (a Select's
    Changed) may start the next one, so check again after each pause."""
    for _ in range(50):  # bounded; a few rounds is the norm
        await pilot.pause()
        if all(w.is_finished for w in app.workers):
            break
        await app.workers.wait_for_complete()
    await pilot.pause()


def rendered(renderable: Any) -> str:
    console = Console(width=200, record=True, file=io.StringIO())
    console.print(renderable)
    return console.export_text()


def cells(table: DataTable, row: int) -> list[str]:
    return [c.plain if isinstance(c, Text) else str(c) for c in table.get_row_at(row)]
