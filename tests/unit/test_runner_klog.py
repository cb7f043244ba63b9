"""Runner + kernel log: attribution of real captured reports to the test that was running,
WARN-or-worse failing a PASSED test, expected events, and a panic ending a test at once.

The console is stood in for by feeding real console captures (tests/data/klog) into a
real KernelLogBuffer; sync markers are fed directly instead of via a guest's /dev/kmsg."""

from __future__ import annotations

import asyncio
import time
from contextlib import asynccontextmanager
from pathlib import Path

from vexfs_cockpit import DomainBase, TestResult, TestStatus, test_options
from vexfs_cockpit.config.models import CockpitConfig
from vexfs_cockpit.engine import events as ev
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.provider import Lease
from vexfs_cockpit.engine.runner import Runner, RunRequest
from vexfs_cockpit.engine.klog_buffer import KernelLogBuffer
from vexfs_cockpit.transport.local import LocalTarget

CAPTURES = Path(__file__).parent.parent / "data" / "klog"


class DirectSyncBuffer(KernelLogBuffer):
    async def sync(self, target, tag, timeout=10.0):  # the console is this process
        return self.feed(f"[99999.000000] vexfs-cockpit: {tag}")


def replay(domain: DomainBase, capture: str) -> None:
    """Kernel lines arriving on the console while the test runs."""
    buf = domain.ctx.klog
    for line in (CAPTURES / capture).read_text().splitlines():
        buf.feed(line)  # type: ignore[union-attr]


class Faulty(DomainBase):
    name = "faulty"

    async def test_warns_but_claims_pass(self) -> TestResult:
        replay(self, "warn.log")
        return TestResult(status=TestStatus.PASSED, message="looked fine")

    @test_options(expects_kernel_events=["warning"])
    async def test_expects_the_warning(self) -> TestResult:
        replay(self, "warn.log")
        return TestResult(status=TestStatus.PASSED, message="provoked on purpose")

    @test_options(timeout=120)
    async def test_panics_mid_test(self) -> TestResult:
        replay(self, "sysrq_panic.log")
        await self.target.run("sleep 60", timeout=90)  # would take a minute: the guard ends it
        return TestResult(status=TestStatus.PASSED)

    async def test_next_one_still_runs(self) -> TestResult:
        res = await self.target.run("echo alive", check=True)
        return TestResult(status=TestStatus.PASSED, message=res.output.strip())


class Provider:
    def __init__(self, tmp: Path):
        self.tmp = tmp

    @asynccontextmanager
    async def lease(self, domain: str, index: int):
        yield Lease(vm_name="vm0", target=LocalTarget("local", cwd=self.tmp), klog=DirectSyncBuffer("vm0"))

    async def aclose(self) -> None:
        pass


async def test_kernel_reports_are_attributed_and_judged(tmp_path):
    bus = EventBus()
    sub = bus.subscribe()
    runner = Runner(bus, Provider(tmp_path), {"faulty": Faulty})
    t0 = time.monotonic()
    summary = await runner.execute(
        RunRequest(config=CockpitConfig(), domains=["faulty"], run_id="k1", artifacts_dir=tmp_path / "a")
    )
    elapsed = time.monotonic() - t0
    bus.close()
    events = [e async for e in sub]
    r = {x.name: x for x in summary.results}

    warned = r["warns_but_claims_pass"]
    assert warned.status is TestStatus.FAILED
    assert warned.message == "kernel reported WARNING in vexfs_selftest_warn_knob"
    assert [k.title for k in warned.evidence.kernel_events if k.kind == "warning"] == ["WARNING in vexfs_selftest_warn_knob"]
    assert any("cut here" in ln for ln in warned.evidence.kernel_log)

    expected = r["expects_the_warning"]
    assert expected.status is TestStatus.PASSED and expected.message == "provoked on purpose"

    panicked = r["panics_mid_test"]
    assert panicked.status is TestStatus.ERROR
    assert panicked.message.startswith("Kernel panic - not syncing")
    assert elapsed < 50, "the panic guard must end the test, not the 60 s sleep"

    assert r["next_one_still_runs"].status is TestStatus.PASSED

    raised = [e for e in events if isinstance(e, ev.KernelEventRaised) and e.report.kind == "warning"]
    assert [(e.test, e.expected) for e in raised] == [("warns_but_claims_pass", False), ("expects_the_warning", True)]
    assert all(e.run_id == "k1" and e.domain == "faulty" and e.vm == "vm0" for e in raised)


async def test_a_clean_window_stays_passed(tmp_path):
    class Clean(DomainBase):
        name = "clean"

        async def test_boot_noise_only(self) -> TestResult:
            replay(self, "clean_boot.log")
            return TestResult(status=TestStatus.PASSED, message="ok")

    bus = EventBus()
    summary = await Runner(bus, Provider(tmp_path), {"clean": Clean}).execute(
        RunRequest(config=CockpitConfig(), domains=["clean"], run_id="k2", artifacts_dir=tmp_path / "a")
    )
    (res,) = summary.results
    assert res.status is TestStatus.PASSED, res.message
    assert all(k.kind == "taint" for k in res.evidence.kernel_events)


class StuckVm:
    """A VmControl whose reset never returns (a libvirt call stuck in a thread, say)."""

    name = "vm0"

    async def reset(self, reason: str) -> None:
        await asyncio.Event().wait()

    async def state(self) -> str:
        return "running"

    async def is_responsive(self, timeout: float = 5.0) -> bool:
        return True


async def test_a_reset_that_never_returns_does_not_stall_the_run(tmp_path, monkeypatch):
    from vexfs_cockpit.engine import runner as runner_mod

    monkeypatch.setattr(runner_mod, "RECOVER_SETUP_S", 0.5)

    class StuckProvider(Provider):
        @asynccontextmanager
        async def lease(self, domain: str, index: int):
            yield Lease(vm_name="vm0", target=LocalTarget("local", cwd=self.tmp), klog=DirectSyncBuffer("vm0"), vm=StuckVm())

    class Panics(DomainBase):
        name = "panics"
        test_panics_mid_test = Faulty.test_panics_mid_test
        test_next_one_still_runs = Faulty.test_next_one_still_runs

    cfg = CockpitConfig()
    cfg.fleet.boot_timeout_s = 0.5
    bus = EventBus()
    summary = await asyncio.wait_for(Runner(bus, StuckProvider(tmp_path), {"panics": Panics}).execute(
        RunRequest(config=cfg, domains=["panics"], run_id="k3", artifacts_dir=tmp_path / "a")), 60)
    r = {x.name: x for x in summary.results}
    assert r["panics_mid_test"].status is TestStatus.ERROR
    assert r["next_one_still_runs"].status is TestStatus.SKIPPED
    assert r["next_one_still_runs"].message == "VM vm0 did not come back within 1s of the reset"
