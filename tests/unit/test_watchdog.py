"""The hang watchdog without a VM: the verdict rules (pure), the async watch on a real
KernelLogBuffer and EventBus with a guest stand-in whose SSH answers on command, the
evidence capture, and the runner using it end to end (timeout verdict, evidence,
reset, the next test, the summaries). Real guests: tests/vm/test_crash_recovery_vm.py."""

from __future__ import annotations

import asyncio
import io
import json
import time
import xml.etree.ElementTree as ET
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from vexfs_cockpit import DomainBase, TestResult, TestStatus
from vexfs_cockpit.reports.json_report import report_dict
from vexfs_cockpit.reports.junit import junit_xml
from vexfs_cockpit.commands.progress import ProgressPrinter
from vexfs_cockpit.config.models import CockpitConfig, DomainSettings
from vexfs_cockpit.engine import events as ev
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.provider import Lease
from vexfs_cockpit.engine.runner import Runner, RunRequest
from vexfs_cockpit.engine.target import CommandResult, TargetUnavailable
from vexfs_cockpit.fleet.watchdog import (
    KEY_LEFTALT,
    KEY_SYSRQ,
    SYSRQ_KEYCODES,
    CaptureTimings,
    HangJudge,
    HangVerdict,
    HangWatchdog,
    SshHeartbeat,
    heartbeat_interval,
)
from vexfs_cockpit.engine.klog_buffer import KernelLogBuffer
from vexfs_cockpit.store.report import ReportBuilder
from vexfs_cockpit.transport.local import LocalTarget

CAPTURES = Path(__file__).parent.parent / "data" / "klog"
VM = "vm0"

# The first lines a 6.1 guest printed for sysrq w and t (from a real TCG guest's console).
W_DUMP = [
    "[   40.101000] sysrq: Show Blocked State",
    "[   40.101400] task:sh              state:D stack:0     pid:141   ppid:1      flags:0x00004002",
    "[   40.101800] Call Trace:",
    "[   40.102000]  <TASK>",
    "[   40.102300]  __schedule+0x34d/0xa00",
    "[   40.102600]  vexfs_selftest_hang_knob+0x4c/0x90 [vexfs_selftest]",
    "[   40.102900]  </TASK>",
]
T_DUMP = [
    "[   41.385313] sysrq: Show State",
    "[   41.385641] task:init            state:S stack:0     pid:1     ppid:0      flags:0x00000002",
    "[   41.386128] Call Trace:",
    "[   41.397556]  <TASK>",
    "[   41.403319]  __schedule+0x34d/0xa00",
    "[   41.410121]  </TASK>",
    "[   42.143319] Showing busy workqueues and worker pools:",
]
FAST = CaptureTimings(header_s=1.0, quiet_s=0.2, dump_s=2.0)


# ---- the verdict rules -------------------------------------------------------------------


def test_silent_ssh_and_silent_console_is_hung_after_the_timeout():
    j = HangJudge(30.0, start=100.0)
    j.ssh(True, 101.0)
    assert j.verdict(130.9) is None
    assert j.due() == 131.0
    v = j.verdict(132.0)
    assert v is not None and not v.frozen
    assert v.message == "guest hung: no SSH answer for 31 s, console silent 32 s, libvirt state running"


def test_an_answer_or_a_console_line_restarts_the_clock():
    j = HangJudge(10.0, start=0.0)
    j.ssh(True, 9.0)
    assert j.verdict(12.0) is None
    j.console(15.0)
    assert j.verdict(20.0) is None  # SSH silent 11 s, but the console spoke 5 s ago
    assert j.due() == 25.0
    assert j.verdict(25.0) is not None


def test_a_chattering_console_buys_time_but_not_forever():
    j = HangJudge(10.0, start=0.0)
    for t in range(19):
        j.console(float(t))  # e.g. a kernel printing stall reports every second
    assert j.verdict(19.0) is None
    assert j.due() == 20.0  # 2 x hang_after of SSH silence
    v = j.verdict(20.0)
    assert v is not None
    assert v.message == "guest hung: no SSH answer for 20 s, console still printing (last line 2 s ago), libvirt state running"


def test_paused_for_the_timeout_is_frozen_even_with_ssh_answers():
    j = HangJudge(10.0, start=0.0)
    j.state("paused", 5.0)
    j.ssh(True, 14.0)
    assert j.verdict(14.9) is None
    assert j.due() == 15.0
    v = j.verdict(15.0)
    assert v is not None and v.frozen and v.paused_s == 10.0
    assert v.message.startswith("guest hung: libvirt state paused (frozen) for 10 s, no SSH answer for 1 s")


def test_a_guest_that_went_silent_just_before_libvirt_paused_it_is_frozen():
    j = HangJudge(10.0, start=0.0)
    j.state("paused", 0.4)  # the last answer and console line came at 0.0
    v = j.verdict(10.0)  # silence rule due before pause + 10
    assert v is not None and v.frozen and v.paused_s == pytest.approx(9.6)
    assert v.message == "guest hung: libvirt state paused (frozen) for 10 s, no SSH answer for 10 s, console silent 10 s"


def test_a_paused_state_read_at_the_verdict_makes_it_frozen():
    v = HangVerdict(12.0, 11.0, "paused")
    assert v.frozen
    assert v.message == "guest hung: libvirt state paused (frozen), no SSH answer for 12 s, console silent 11 s"


def test_a_resumed_guest_is_not_frozen_and_cockpit_states_do_not_count():
    j = HangJudge(10.0, start=0.0)
    j.state("paused", 1.0)
    j.state("hung", 2.0)  # the runner's word, not libvirt's: ignored
    j.state("running", 3.0)
    j.ssh(True, 14.0)
    assert j.verdict(15.0) is None
    j.state("stopped", 16.0)
    assert j.libvirt_state == "stopped"


def test_hang_after_must_be_positive_and_beats_come_three_per_timeout():
    with pytest.raises(ValueError):
        HangJudge(0.0, 0.0)
    assert heartbeat_interval(30.0) == 5.0
    assert heartbeat_interval(9.0) == 3.0
    assert heartbeat_interval(0.3) == 0.2


# ---- the watchdog on a real kernel-log buffer and bus ----------------------------------------


class Guest:
    """Stands in for a guest's SSH: answers while ``alive``; a dead one never answers."""

    def __init__(self) -> None:
        self.alive = True
        self.probes = 0
        self._revived = asyncio.Event()

    async def is_responsive(self, timeout: float = 5.0) -> bool:
        self.probes += 1
        if self.alive:
            return True
        try:
            await asyncio.wait_for(self._revived.wait(), timeout)
        except TimeoutError:
            return False
        return True

    def die(self) -> None:
        self.alive = False
        self._revived.clear()

    def revive(self) -> None:
        self.alive = True
        self._revived.set()


class Keyboard:
    """The guest's keyboard: records key presses; ``answer`` says what the kernel prints."""

    def __init__(self, klog: KernelLogBuffer, answer: dict[int, list[str]]):
        self.klog = klog
        self.answer = answer
        self.pressed: list[list[int]] = []

    async def __call__(self, codes: list[int]) -> None:
        self.pressed.append(codes)
        for line in self.answer.get(codes[-1], []):
            self.klog.feed(line)


def make_watchdog(*, state: str = "running", answer: dict[int, list[str]] | None = None, boots: list[int] | None = None):
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    klog = KernelLogBuffer(VM)
    guest = Guest()
    keys = Keyboard(klog, answer if answer is not None else {SYSRQ_KEYCODES["w"]: W_DUMP, SYSRQ_KEYCODES["t"]: T_DUMP})
    states = {"now": state}
    enabled: list[int] = []
    boot = boots if boots is not None else [1]

    async def libvirt_state() -> str:
        return states["now"]

    async def enable_sysrq() -> bool:
        enabled.append(boot[0])
        return True

    wd = HangWatchdog(
        VM, bus, guest, klog, libvirt_state=libvirt_state, send_keys=keys,
        enable_sysrq=enable_sysrq, boot_count=lambda: boot[0], timings=FAST,
    )
    return wd, bus, klog, guest, keys, states, enabled


async def test_a_responsive_guest_is_never_declared_hung():
    wd, _bus, _klog, guest, *_ = make_watchdog()
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(wd.watch(0.6), 2.0)
    assert guest.probes >= 5  # it really kept asking


async def test_a_dead_guest_with_a_silent_console_is_hung_within_the_timeout():
    wd, _bus, klog, guest, *_ = make_watchdog()
    klog.feed("[    5.000000] vexfs_selftest: knob softlockup=60 by sh[140]")
    guest.die()
    t0 = time.monotonic()
    verdict = await asyncio.wait_for(wd.watch(1.0), 5.0)
    took = time.monotonic() - t0
    assert 1.0 <= took < 1.0 + heartbeat_interval(1.0) + 0.5, took
    assert not verdict.frozen and verdict.libvirt_state == "running"
    assert verdict.message.startswith("guest hung: no SSH answer for 1 s, console silent 1 s")


async def test_a_dead_guest_whose_console_chatters_is_hung_after_twice_the_timeout():
    wd, _bus, klog, guest, *_ = make_watchdog()
    guest.die()

    async def chatter() -> None:
        n = 0
        while True:  # a kernel printing a line every 0.1 s (paced producer, the test's driver)
            klog.feed(f"[   {n}.000000] rcu: INFO: rcu_preempt self-detected stall on CPU")
            n += 1
            await asyncio.sleep(0.1)

    talker = asyncio.ensure_future(chatter())
    try:
        t0 = time.monotonic()
        verdict = await asyncio.wait_for(wd.watch(1.0), 5.0)
        took = time.monotonic() - t0
    finally:
        talker.cancel()
    assert took >= 2.0, took
    assert "console still printing" in verdict.message


async def test_a_guest_libvirt_shows_paused_is_frozen_within_the_timeout():
    wd, bus, _klog, _guest, _keys, states, _ = make_watchdog()
    watch = asyncio.ensure_future(wd.watch(1.0))
    await asyncio.sleep(0.3)  # let the watch start, then the lifecycle event arrives
    t0 = time.monotonic()
    states["now"] = "paused"
    bus.publish(ev.VmStateChanged(vm=VM, state="paused", reason="paused"))
    bus.publish(ev.VmStateChanged(vm="another-vm", state="running"))  # not ours
    verdict = await asyncio.wait_for(watch, 5.0)
    assert 0.9 <= time.monotonic() - t0 < 1.5
    assert verdict.frozen and verdict.libvirt_state == "paused"
    assert verdict.message.startswith("guest hung: libvirt state paused (frozen) for 1 s")


async def test_a_guest_resumed_before_the_timeout_is_fine():
    wd, bus, *_ = make_watchdog()
    watch = asyncio.ensure_future(wd.watch(1.0))
    await asyncio.sleep(0.2)
    bus.publish(ev.VmStateChanged(vm=VM, state="paused", reason="paused"))
    await asyncio.sleep(0.5)
    bus.publish(ev.VmStateChanged(vm=VM, state="running", reason="unpaused"))
    done, _ = await asyncio.wait([watch], timeout=1.5)
    watch.cancel()
    assert not done


async def test_a_guest_already_paused_when_the_watch_starts_is_frozen():
    wd, *_ = make_watchdog(state="paused")
    verdict = await asyncio.wait_for(wd.watch(0.6), 3.0)
    assert verdict.frozen


async def test_sysrq_is_enabled_once_per_boot():
    boots = [1]
    wd, _bus, _klog, _guest, _keys, _states, enabled = make_watchdog(boots=boots)
    for _ in range(2):
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(wd.watch(3.0), 0.3)
    boots[0] = 2  # the VM was reset
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(wd.watch(3.0), 0.3)
    assert enabled == [1, 2]


async def test_capture_collects_the_last_lines_and_both_sysrq_dumps():
    wd, _bus, klog, _guest, keys, *_ = make_watchdog()
    for i in range(40):
        klog.feed(f"[   {i:2d}.000000] line {i}")
    notes = await wd.capture()
    assert keys.pressed == [[KEY_LEFTALT, KEY_SYSRQ, SYSRQ_KEYCODES["w"]], [KEY_LEFTALT, KEY_SYSRQ, SYSRQ_KEYCODES["t"]]]
    assert notes[0].startswith("last 30 console lines before the hang was declared:")
    assert "line 39" in notes[0] and "line 9\n" not in notes[0]
    assert notes[1].startswith(f"sysrq w (blocked tasks), {len(W_DUMP)} lines:")
    assert "vexfs_selftest_hang_knob" in notes[1]
    assert notes[2] == f"sysrq t (all tasks): {len(T_DUMP)} lines, in the kernel log from 'sysrq: Show State'"
    lines, reports = klog.window(0)
    assert W_DUMP[0] in lines and T_DUMP[-1] in lines
    assert [r for r in reports if r.kind != "taint"] == []  # task dumps are not kernel reports


async def test_capture_says_why_when_the_guest_refuses_sysrq():
    refuse = ["[   40.000000] sysrq: This sysrq operation is disabled."]
    wd, _bus, _klog, _guest, keys, *_ = make_watchdog(answer={SYSRQ_KEYCODES["w"]: refuse})
    notes = await wd.capture()
    assert len(keys.pressed) == 1  # no point asking for t
    assert notes[1] == "sysrq w: no 'sysrq: Show Blocked State' on the console within 1 s (kernel.sysrq forbids it)"


async def test_capture_sends_no_keys_to_a_paused_guest():
    wd, _bus, _klog, _guest, keys, *_ = make_watchdog(state="paused")
    notes = await wd.capture()
    assert keys.pressed == []
    assert notes[-1] == "no sysrq dump: libvirt state paused (the guest's CPUs do not run)"


class SlowSsh:
    """A heartbeat's own SSH target: the key exchange takes ``connect_s`` (TCG is slow)."""

    def __init__(self, connect_s: float):
        self.connect_s = connect_s
        self.connects = 0
        self.connected = False
        self.hang = asyncio.Event()  # set: commands never answer
        self.closed = False

    @property
    def is_connected(self) -> bool:
        return self.connected

    async def connect(self) -> None:
        self.connects += 1
        await asyncio.sleep(self.connect_s)  # stands in for the network round trips of a key exchange
        self.connected = True

    async def run(self, command: str, *, timeout: float | None = None) -> CommandResult:
        if self.hang.is_set():
            await asyncio.Event().wait()
        return CommandResult(command, 0, "", 0.01)

    async def close(self) -> None:
        self.closed = True


async def test_the_heartbeat_keeps_one_slow_connect_across_probes():
    ssh = SlowSsh(connect_s=0.5)
    beat = SshHeartbeat(ssh)
    assert await beat.is_responsive(timeout=0.3) is False  # still exchanging keys
    assert await beat.is_responsive(timeout=0.5) is True  # the same connect finished
    assert ssh.connects == 1
    ssh.hang.set()
    assert await beat.is_responsive(timeout=0.3) is False
    await beat.aclose()
    assert ssh.closed


# ---- the runner with a watchdog: verdict, evidence, reset, next test, summaries --------------


class DirectSyncBuffer(KernelLogBuffer):
    async def sync(self, target, tag, timeout=10.0):  # the console is this process
        return self.feed(f"[99999.000000] vexfs-cockpit: {tag}")


class Vm:
    """VmControl of the stand-in guest: a reset brings it back."""

    def __init__(self, guest: Guest):
        self.name = VM
        self.guest = guest
        self.resets: list[str] = []
        self.reset_done = asyncio.Event()

    async def reset(self, reason: str) -> None:
        self.resets.append(reason)
        self.guest.revive()
        self.reset_done.set()

    async def state(self) -> str:
        return "ready"

    async def is_responsive(self, timeout: float = 5.0) -> bool:
        return await self.guest.is_responsive(timeout)


class Wedging(DomainBase):
    name = "wd"
    setups = 0
    cleanup_saw_reset = False

    async def setup_domain(self) -> bool:
        type(self).setups += 1
        return True

    async def test_wedges(self) -> TestResult:
        self.ctx.klog.feed("[   50.000000] vexfs_selftest: knob softlockup=60 by sh[150]")  # type: ignore[union-attr]
        vm = self.ctx.vm
        vm.guest.die()  # type: ignore[union-attr]
        try:
            await self.target.run("sleep 30", timeout=60)  # the watchdog ends this
        except asyncio.CancelledError:
            # Like SSH clean-up on a dead guest: it ends only once the VM is reset, so
            # recovery must not wait for it (bounded, so a runner that does wait fails).
            try:
                await asyncio.wait_for(vm.reset_done.wait(), 10)  # type: ignore[union-attr]
                type(self).cleanup_saw_reset = True
            except TimeoutError:
                pass
            raise
        return TestResult(status=TestStatus.PASSED)

    async def test_oopses(self) -> TestResult:
        for line in (CAPTURES / "oops.log").read_text().splitlines():
            self.ctx.klog.feed(line)  # type: ignore[union-attr]
        await self.target.run("sleep 30", timeout=60)  # the kernel guard ends this
        return TestResult(status=TestStatus.PASSED)

    async def test_link_breaks_in_a_panic(self) -> TestResult:
        # The panic is complete a moment after SSH broke: when libvirt reports the guest
        # stopped, the provider flushes the report its reboot cut short.
        klog = self.ctx.klog
        assert isinstance(klog, KernelLogBuffer)
        for line in (CAPTURES / "sysrq_panic.log").read_text().splitlines():
            klog.feed(line)
        asyncio.get_running_loop().call_later(0.3, klog.flush)
        raise TargetUnavailable("vm0: SSH connection lost while running sleep (connection reset)")

    async def test_runs_on(self) -> TestResult:
        res = await self.target.run("echo alive", check=True)
        return TestResult(status=TestStatus.PASSED, message=res.output.strip())


class Provider:
    def __init__(self, tmp: Path, bus: EventBus):
        self.tmp = tmp
        self.bus = bus
        self.vm: Vm | None = None

    @asynccontextmanager
    async def lease(self, domain: str, index: int):
        klog = DirectSyncBuffer(VM)
        guest = Guest()
        self.vm = Vm(guest)
        keys = Keyboard(klog, {SYSRQ_KEYCODES["w"]: W_DUMP, SYSRQ_KEYCODES["t"]: T_DUMP})

        async def running() -> str:
            return "running"

        wd = HangWatchdog(VM, self.bus, self.vm, klog, libvirt_state=running, send_keys=keys, timings=FAST)
        yield Lease(vm_name=VM, target=LocalTarget("local", cwd=self.tmp), klog=klog, vm=self.vm, extra={"watchdog": wd})

    async def aclose(self) -> None:
        pass


async def test_runner_ends_a_hung_test_with_evidence_resets_and_runs_on(tmp_path):
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    sub = bus.subscribe()
    builder = ReportBuilder()
    bus.listen(builder.feed)
    out = io.StringIO()
    printer = ProgressPrinter(out, colour=False)
    bus.listen(printer.handle)
    cfg = CockpitConfig(domains={"wd": DomainSettings(hang_detection_timeout=1.0)})
    provider = Provider(tmp_path, bus)
    Wedging.setups = 0
    Wedging.cleanup_saw_reset = False
    t0 = time.monotonic()
    summary = await Runner(bus, provider, {"wd": Wedging}).execute(
        RunRequest(config=cfg, domains=["wd"], run_id="w1", artifacts_dir=tmp_path / "a")
    )
    elapsed = time.monotonic() - t0
    bus.close()
    events = [e async for e in sub]
    r = {x.name: x for x in summary.results}
    assert elapsed < 20, "the guards must end the tests, not their 30 s sleeps"

    hung = r["wedges"]
    assert hung.status is TestStatus.TIMEOUT
    assert hung.message.startswith("guest hung: no SSH answer for 1 s, console silent 1 s, libvirt state running"), hung.message
    assert any(n.startswith("sysrq w (blocked tasks)") for n in hung.evidence.notes)
    assert any("knob softlockup=60" in n for n in hung.evidence.notes if n.startswith("last "))
    assert W_DUMP[0] in hung.evidence.kernel_log and T_DUMP[0] in hung.evidence.kernel_log
    assert hung.evidence.notes[-1] == f"VM {VM} was reset: {hung.message}"

    oops = r["oopses"]
    assert oops.status is TestStatus.FAILED
    assert oops.message == "BUG: kernel NULL pointer dereference in vexfs_selftest_oops_knob"
    panic = r["link_breaks_in_a_panic"]
    assert (panic.status, panic.message) == (TestStatus.ERROR, "Kernel panic - not syncing: sysrq triggered crash")
    assert r["runs_on"].status is TestStatus.PASSED and r["runs_on"].message == "alive"

    assert provider.vm is not None and len(provider.vm.resets) == 3
    assert Wedging.cleanup_saw_reset, "recovery waited for the cancelled test's clean-up"
    assert Wedging.setups == 4  # once, then after each reset
    lost = [(e.state, e.reason) for e in events if isinstance(e, ev.VmStateChanged)]
    assert lost == [
        ("hung", f"{hung.message} (during wd/wedges)"),
        ("crashed", "BUG: kernel NULL pointer dereference in vexfs_selftest_oops_knob (during wd/oopses)"),
        ("crashed", "Kernel panic - not syncing: sysrq triggered crash (during wd/link_breaks_in_a_panic)"),
    ]

    # Every summary names each crash and hang with its test.
    text = out.getvalue()
    assert "kernel report: BUG: kernel NULL pointer dereference in vexfs_selftest_oops_knob (wd/oopses)" in text
    assert f"VM {VM} hung, reset: {hung.message} (during wd/wedges)" in text
    assert "VM vm0 crashed, reset" not in text  # named by its kernel report already
    report = builder.report
    assert report is not None
    cases = {c.get("name"): c for c in ET.fromstring(junit_xml(report)).iter("testcase")}
    assert cases["wedges"].find("failure").get("type") == "TIMEOUT"  # type: ignore[union-attr]
    assert cases["wedges"].find("failure").get("message").startswith("guest hung: no SSH answer")  # type: ignore[union-attr]
    assert cases["oopses"].find("failure").get("message") == oops.message  # type: ignore[union-attr]
    doc = json.loads(json.dumps(report_dict(report)))
    assert [(c["title"], c["test"]) for c in doc["summary"]["crashes"]] == [
        (oops.message, "oopses"), (panic.message, "link_breaks_in_a_panic"),
    ]
    assert [f["reason"] for f in doc["summary"]["vm_failures"] if f["state"] == "hung"] == [f"{hung.message} (during wd/wedges)"]
    assert doc["summary"]["ok"] is False
