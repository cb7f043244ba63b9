"""Crash and hang recovery on real guests: the real LibvirtProvider and Runner, in-process,
with a throwaway domain whose tests break the guest through the self-test module's knobs
(none of them declared expected), each followed by a test that must pass on the reset VM.

One run (one VM, five resets, ~3-4 min under TCG) feeds every test here:
- a guest whose test holds every SSH channel longer than the timeout is busy, not hung;
- (a) an oops mid-test: FAILED with the report's title, VM reset, the next test passes;
- (b) a hung task: the kernel's hung-task report ends the test (TIMEOUT, its title);
      a soft lockup that stops the 1-vCPU guest answering SSH: the watchdog's heartbeat
      + console-silence verdict ends it, with sysrq w/t dumps as evidence;
- (c) a guest suspended through libvirt: frozen, detected within hang_detection_timeout;
- a panic (libvirt stops the guest): ERROR with the panic's title, VM reset, run goes on;
- the batch lines, JUnit and JSON list every crash and hang with its test, and
  ``history crashes`` lists the signatures from the DB the Recorder wrote.
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import libvirt
import pytest

from tests.conftest_vm import _check_host, vm_config, within
from vexfs_cockpit import DomainBase, TestResult, TestStatus, test_options
from vexfs_cockpit.reports.json_report import report_dict
from vexfs_cockpit.reports.junit import junit_xml
from vexfs_cockpit.commands.progress import ProgressPrinter
from vexfs_cockpit.config.models import DomainSettings
from vexfs_cockpit.engine import events as ev
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.runner import Runner, RunRequest, RunSummary
from vexfs_cockpit.builds.kbuild import kbuild
from vexfs_cockpit.fleet.provider import LibvirtProvider
from vexfs_cockpit.fleet.watchdog import heartbeat_interval
from vexfs_cockpit.commands.history import cmd_history
from vexfs_cockpit.store.history import History
from vexfs_cockpit.store.recorder import HistoryStore, Recorder
from vexfs_cockpit.store.report import ReportBuilder
from vexfs_cockpit.transport.local import LocalTarget

pytestmark = [pytest.mark.vm, pytest.mark.timeout(900)]  # one shared run of ~2-4 min

ROOT = Path(__file__).resolve().parents[2]
FIXTURE = ROOT / "tests" / "fixtures" / "selftest_fs"
KNOBS = "/sys/kernel/debug/vexfs_selftest"
REMOTE_KO = "/tmp/vexfs_selftest.ko"
MNT = "/mnt/crashrec"
HANG_AFTER = 10.0  # hang_detection_timeout for this domain: keeps each scenario short
TAINT_DIE = 1 << 7  # 'D': the kernel oopsed since boot
OOPS_TITLE = "BUG: kernel NULL pointer dereference in vexfs_selftest_oops_knob"
HANG_TITLE = "INFO: task hung in vexfs_selftest_hang_knob"
PANIC_TITLE = "Kernel panic - not syncing: sysrq triggered crash"
RUN_LIMIT_S = 600.0  # ~150 s here; past this it is stuck, and `within` says where
DOMAIN = f"crashrec{os.getpid()}"  # VM vexfs-pytest-crashrec<pid>-0: no clash with other sessions


class CrashRecovery(DomainBase):
    """Breaks the guest on purpose; every `after_*` test proves the reset VM is whole."""

    name = DOMAIN
    marks: ClassVar[dict[str, float]] = {}  # wall-clock time each fault was injected
    ko: ClassVar[Path | None] = None  # built once per run, pushed after every reset

    async def setup_domain(self) -> bool:
        assert self.ctx.host is not None
        if type(self).ko is None:
            res = await kbuild(FIXTURE, self.ctx.guest_kernel, self.ctx.workdir / "kbuild", self.ctx.host)
            if res.ko is None:
                self.prerequisite_missing = f"vexfs_selftest did not build: {res.message}"
                return False
            type(self).ko = res.ko
        await self.target.run(["mkdir", "-p", MNT], check=True)
        await self.target.put(type(self).ko, REMOTE_KO)
        await self.target.run(["insmod", REMOTE_KO], check=True)
        return True

    async def teardown_domain(self) -> bool:
        await self.target.run(f"umount -l {MNT} 2>/dev/null; rmmod vexfs_selftest; true")
        return True

    async def _fresh_and_working(self) -> TestResult:
        """A kernel that never oopsed, the module loaded, the filesystem reading back what it wrote."""
        tainted = int((await self.target.run("cat /proc/sys/kernel/tainted", check=True)).output)
        assert not tainted & TAINT_DIE, f"kernel still tainted D ({tainted}): the VM was not reset"
        assert (await self.target.run("grep -q '^vexfs_selftest ' /proc/modules")).ok, "module not loaded after the reset"
        await self.target.run(["mount", "-t", "vexfs_selftest", "none", MNT], check=True)
        try:
            await self.target.run(f"echo whole > {MNT}/f", check=True)
            got = (await self.target.run(["cat", f"{MNT}/f"], check=True)).output.strip()
        finally:
            await self.target.run(["umount", MNT])
        assert got == "whole", f"read back {got!r}"
        return TestResult(status=TestStatus.PASSED, message=f"fresh kernel (taint {tainted}), module and fs work")

    def _mark(self, what: str) -> None:
        type(self).marks[what] = time.time()

    # the control: busy is not hung ----------------------------------------------------------
    @test_options(timeout=120)
    async def test_busy_but_alive(self) -> TestResult:
        # Every channel of the test's SSH connection held for longer than HANG_AFTER: a
        # heartbeat queued behind them would call this guest hung (it did, in an e2e run).
        t0 = time.monotonic()
        runs = await asyncio.gather(*(self.target.run("sleep 15", timeout=60) for _ in range(4)))
        assert all(r.ok for r in runs), [r.first_line() for r in runs]
        return TestResult(status=TestStatus.PASSED, message=f"4 x sleep 15 took {time.monotonic() - t0:.0f} s")

    # (a) an oops nobody declared ---------------------------------------------------------
    @test_options(timeout=120)
    async def test_oops_mid_test(self) -> TestResult:
        self._mark("oops")
        await self.target.run(f"echo 1 > {KNOBS}/oops")  # the shell is killed (exit 137)
        await self.target.run("sleep 100", timeout=110)  # the kernel guard must end this
        return TestResult(status=TestStatus.PASSED, message="the oops went unnoticed")

    async def test_after_oops(self) -> TestResult:
        return await self._fresh_and_working()

    # (b) a hung task (the guest still answers SSH) ------------------------------------------
    @test_options(timeout=120)
    async def test_hang_mid_test(self) -> TestResult:
        self._mark("hang")
        await self.target.run(f"(echo 100 > {KNOBS}/hang &) ; true")
        await self.target.run("sleep 100", timeout=110)  # the hung-task report must end this
        return TestResult(status=TestStatus.PASSED, message="the hang went unnoticed")

    async def test_after_hang(self) -> TestResult:
        return await self._fresh_and_working()

    # (b) a soft lockup long enough that the 1-vCPU guest stops answering -------------------
    @test_options(timeout=120)
    async def test_softlockup_mid_test(self) -> TestResult:
        self._mark("softlockup")
        # Default watchdog_thresh (10): the first soft-lockup report would come at ~20 s,
        # so the watchdog's verdict (SSH and console silent for HANG_AFTER) comes first.
        await self.target.run(f"(echo 100 > {KNOBS}/softlockup &) ; true", timeout=110)
        await self.target.run("sleep 100", timeout=110)
        return TestResult(status=TestStatus.PASSED, message="the lockup went unnoticed")

    async def test_after_softlockup(self) -> TestResult:
        return await self._fresh_and_working()

    # (c) libvirt suspends the guest ----------------------------------------------------------
    @test_options(timeout=120)
    async def test_suspended_mid_test(self) -> TestResult:
        assert self.ctx.config is not None and self.ctx.vm is not None
        uri, name = self.ctx.config.fleet.libvirt_uri, self.ctx.vm.name

        def suspend() -> None:  # what `virsh suspend` does, on a connection of our own
            conn = libvirt.open(uri)
            try:
                conn.lookupByName(name).suspend()
            finally:
                conn.close()

        await asyncio.to_thread(suspend)
        self._mark("suspend")
        await self.target.run("sleep 100", timeout=110)
        return TestResult(status=TestStatus.PASSED, message="the frozen guest went unnoticed")

    async def test_after_suspend(self) -> TestResult:
        return await self._fresh_and_working()

    # a panic: libvirt stops the guest (panic=-1 + on_reboot=destroy) -------------------------
    @test_options(timeout=120)
    async def test_panic_mid_test(self) -> TestResult:
        self._mark("panic")
        await self.target.run("echo c > /proc/sysrq-trigger", timeout=30)  # SSH breaks under it
        await self.target.run("sleep 100", timeout=110)
        return TestResult(status=TestStatus.PASSED, message="the panic went unnoticed")

    async def test_after_panic(self) -> TestResult:
        return await self._fresh_and_working()


class _LiveLog(io.StringIO):
    """The batch lines, kept in memory and appended to a file line by line."""

    def __init__(self, path: Path):
        super().__init__()
        self._file = path.open("a", encoding="utf-8")

    def write(self, s: str) -> int:
        self._file.write(s)
        self._file.flush()
        return super().write(s)


@dataclass
class CrashRun:
    summary: RunSummary
    events: list[ev.Event]
    printed: str
    junit: ET.Element
    json: dict
    crashes_cli: str
    stored: dict[str, tuple[TestStatus, str]]  # test -> (status, message) read back from the DB
    marks: dict[str, float]
    results: dict[str, TestResult] = field(default_factory=dict)

    def lost(self, test: str) -> ev.VmStateChanged:
        hits = [e for e in self.events if isinstance(e, ev.VmStateChanged) and e.state in ("hung", "crashed")
                and e.reason.endswith(f"(during {DOMAIN}/{test})")]
        assert len(hits) == 1, [e for e in self.events if isinstance(e, ev.VmStateChanged)]
        return hits[0]


async def _run(tmp: Path) -> CrashRun:
    cfg = vm_config()
    cfg.domains[DOMAIN] = DomainSettings(hang_detection_timeout=HANG_AFTER)
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    sub = bus.subscribe()
    out = _LiveLog(tmp / "batch.log")  # on disk as it happens: a stuck run shows how far it got
    printer = ProgressPrinter(out, colour=False)
    bus.listen(printer.handle)
    builder = ReportBuilder()
    bus.listen(builder.feed)
    db = tmp / "history.db"
    store = await HistoryStore.aopen(db)
    recorder = Recorder(store, bus)
    recorder.start()
    provider = LibvirtProvider(cfg, bus, tmp / "artifacts", env="pytest")
    runner = Runner(bus, provider, {DOMAIN: CrashRecovery}, host=LocalTarget("host"))
    CrashRecovery.marks = {}
    CrashRecovery.ko = None
    try:
        summary = await within(runner.execute(RunRequest(
            config=cfg, domains=[DOMAIN], run_id=f"crashrec-{os.getpid()}", env="test",
            artifacts_dir=tmp / "artifacts", project_root=ROOT,
        )), RUN_LIMIT_S, "the crash-recovery run", tail=lambda: "\n".join(out.getvalue().splitlines()[-40:]))
    finally:
        await provider.aclose()
        await recorder.aclose()
        store.close()
        bus.close()
    events = [e async for e in sub]
    assert builder.report is not None
    detail = History(db).run_detail(summary.run_id)
    assert detail is not None
    stored = {t.name: (t.status, t.message) for t in detail.tests()}
    cli_out = io.StringIO()
    assert cmd_history(argparse.Namespace(db=db, history_cmd="crashes", runs=True), cli_out) == 0
    run = CrashRun(
        summary=summary, events=events, printed=out.getvalue(),
        junit=ET.fromstring(junit_xml(builder.report)), json=report_dict(builder.report),
        crashes_cli=cli_out.getvalue(), stored=stored, marks=dict(CrashRecovery.marks),
    )
    run.results = {r.name: r for r in summary.results}
    return run


@pytest.fixture(scope="module")
def crash_run(tmp_path_factory: pytest.TempPathFactory) -> CrashRun:
    _check_host(vm_config())
    return asyncio.run(_run(tmp_path_factory.mktemp("crashrec")))


def _explain(run: CrashRun) -> str:
    return "run's batch lines:\n" + run.printed


def _detected_after(run: CrashRun, test: str, mark: str) -> float:
    """Seconds from injecting the fault to the runner declaring the VM lost."""
    return run.lost(test).ts - run.marks[mark]


def test_every_test_after_a_reset_passes_and_nothing_recorded_is_lost(crash_run: CrashRun) -> None:
    assert crash_run.results["busy_but_alive"].status is TestStatus.PASSED, _explain(crash_run)
    after = {n: r for n, r in crash_run.results.items() if n.startswith("after_")}
    assert sorted(after) == ["after_hang", "after_oops", "after_panic", "after_softlockup", "after_suspend"]
    assert all(r.status is TestStatus.PASSED for r in after.values()), _explain(crash_run)
    boots = [e for e in crash_run.events if isinstance(e, ev.VmStateChanged) and e.state == "ready"]
    assert len(boots) == 6, "one boot and five resets"
    if vm_config().fleet.restore == "auto":  # the default: the VM and every reset restore the golden snapshot
        restored = [e for e in crash_run.events if isinstance(e, ev.VmStateChanged) and e.reason.startswith("restored from snapshot")]
        assert len(restored) == 6, _explain(crash_run)
    assert crash_run.stored == {n: (r.status, r.message) for n, r in crash_run.results.items()}
    assert len(crash_run.stored) == 11


def test_a_panic_errors_the_test_with_its_title_and_the_run_goes_on(crash_run: CrashRun) -> None:
    r = crash_run.results["panic_mid_test"]
    assert (r.status, r.message) == (TestStatus.ERROR, PANIC_TITLE), _explain(crash_run)
    assert _detected_after(crash_run, "panic_mid_test", "panic") < 30, _explain(crash_run)
    assert crash_run.lost("panic_mid_test").state == "crashed"


def test_an_undeclared_oops_fails_the_test_with_its_title_and_resets_the_vm(crash_run: CrashRun) -> None:
    r = crash_run.results["oops_mid_test"]
    assert (r.status, r.message) == (TestStatus.FAILED, OOPS_TITLE), _explain(crash_run)
    assert _detected_after(crash_run, "oops_mid_test", "oops") < 30, "the kernel guard ends the test, not its 100 s sleep"
    assert [k.title for k in r.evidence.kernel_events if k.kind == "oops"] == [OOPS_TITLE]
    assert any("knob oops=1" in ln for ln in r.evidence.kernel_log)
    assert r.evidence.notes[-1].startswith(f"VM vexfs-pytest-{DOMAIN}-0 was reset: {OOPS_TITLE}")
    assert crash_run.lost("oops_mid_test").state == "crashed"


def test_a_hung_task_ends_the_test_as_timeout_with_the_reports_title(crash_run: CrashRun) -> None:
    r = crash_run.results["hang_mid_test"]
    assert (r.status, r.message) == (TestStatus.TIMEOUT, HANG_TITLE), _explain(crash_run)
    assert _detected_after(crash_run, "hang_mid_test", "hang") < 40, _explain(crash_run)  # hung_task_timeout_secs=5: ~10 s
    lost = crash_run.lost("hang_mid_test")
    assert lost.state == "hung" and lost.reason.startswith(HANG_TITLE)


def test_a_guest_that_stops_answering_is_declared_hung_with_sysrq_evidence(crash_run: CrashRun) -> None:
    r = crash_run.results["softlockup_mid_test"]
    assert r.status is TestStatus.TIMEOUT, _explain(crash_run)
    assert r.message.startswith("guest hung: no SSH answer for "), r.message
    assert "console silent" in r.message and r.message.endswith("libvirt state running"), r.message
    took = _detected_after(crash_run, "softlockup_mid_test", "softlockup")
    # verdict after HANG_AFTER (+ one heartbeat), then ~2-3 s of sysrq dumps before the reset
    assert HANG_AFTER <= took <= HANG_AFTER + heartbeat_interval(HANG_AFTER) + 15, _explain(crash_run)
    notes = "\n".join(r.evidence.notes)
    assert "last 30 console lines before the hang was declared" in notes and "knob softlockup=100" in notes
    assert "sysrq w (blocked tasks)" in notes, notes
    assert "sysrq t (all tasks)" in notes, notes
    log = "\n".join(r.evidence.kernel_log)
    assert "sysrq: Show Blocked State" in log and "sysrq: Show State" in log
    assert "vexfs_selftest_softlockup_knob" in log, "the t dump shows the spinning task"


def test_a_suspended_guest_is_frozen_and_detected_within_the_timeout(crash_run: CrashRun) -> None:
    r = crash_run.results["suspended_mid_test"]
    assert r.status is TestStatus.TIMEOUT, _explain(crash_run)
    assert r.message.startswith("guest hung: libvirt state paused (frozen) for 1"), r.message
    assert "no sysrq dump: libvirt state paused" in "\n".join(r.evidence.notes)
    took = _detected_after(crash_run, "suspended_mid_test", "suspend")
    # Silence counts from the last answer before the pause: at most HANG_AFTER after it.
    assert took <= HANG_AFTER + 5, _explain(crash_run)


def test_batch_lines_junit_and_json_list_every_crash_and_hang_with_its_test(crash_run: CrashRun) -> None:
    text = crash_run.printed
    assert f"kernel report: {OOPS_TITLE} ({DOMAIN}/oops_mid_test)" in text
    assert f"kernel report: {HANG_TITLE} ({DOMAIN}/hang_mid_test)" in text
    for test in ("softlockup_mid_test", "suspended_mid_test"):
        assert "reset: guest hung: " in text and f"(during {DOMAIN}/{test})" in text, text
    assert f"kernel report: {PANIC_TITLE} ({DOMAIN}/panic_mid_test)" in text
    assert "6 passed, 5 failed, 0 skipped" in text

    cases = {c.get("name"): c for c in crash_run.junit.iter("testcase")}
    for test, kind, message in (
        ("oops_mid_test", "FAILED", OOPS_TITLE),
        ("hang_mid_test", "TIMEOUT", HANG_TITLE),
        ("softlockup_mid_test", "TIMEOUT", "guest hung: no SSH answer"),
        ("suspended_mid_test", "TIMEOUT", "guest hung: libvirt state paused (frozen)"),
    ):
        failure = cases[test].find("failure")
        assert failure is not None and failure.get("type") == kind
        assert (failure.get("message") or "").startswith(message)
    error = cases["panic_mid_test"].find("error")
    assert error is not None and error.get("message") == PANIC_TITLE

    summary = crash_run.json["summary"]
    assert summary["ok"] is False
    crashes = [(c["title"], c["test"]) for c in summary["crashes"]]
    assert (OOPS_TITLE, "oops_mid_test") in crashes and (PANIC_TITLE, "panic_mid_test") in crashes
    assert (HANG_TITLE, "hang_mid_test") in [(h["title"], h["test"]) for h in summary["hangs"]]
    reasons = [f["reason"] for f in summary["vm_failures"]]
    for test in ("oops_mid_test", "hang_mid_test", "softlockup_mid_test", "suspended_mid_test", "panic_mid_test"):
        assert any(x.endswith(f"(during {DOMAIN}/{test})") for x in reasons), reasons


def test_history_crashes_lists_the_signatures(crash_run: CrashRun) -> None:
    text = crash_run.crashes_cli
    assert f"oops: {OOPS_TITLE}" in text, text
    assert f"hung_task: {HANG_TITLE}" in text, text
    assert f"panic: {PANIC_TITLE}" in text, text
    assert f"{DOMAIN}.oops_mid_test" in text and f"{DOMAIN}.hang_mid_test" in text, text
