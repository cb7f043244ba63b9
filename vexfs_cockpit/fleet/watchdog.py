"""Hang watchdog of one guest: is it hung or frozen, and what does it still tell us?

Three signals, judged together (``HangJudge``, pure and clock-free):
- SSH heartbeat: a paced ``true`` round trip (``VmControl.is_responsive``);
- console activity: the last line the serial console delivered (``KernelLogBuffer``);
- libvirt state: a domain libvirt shows ``paused`` is frozen, whatever the guest
  would say (lifecycle events on the bus, one ``dom.state()`` read at the start).

A guest is hung when SSH has not answered for ``hang_after`` seconds and the console
has been silent as long; or when SSH has not answered for twice that, however much
the console still prints (a kernel that only prints stall reports is no use to a
test); or when libvirt has shown it paused for ``hang_after`` seconds. A console
that still talks buys a slow guest time; it never hides a dead one.

Once hung, ``capture`` collects what the guest still gives: its last console lines,
then a sysrq ``w`` (blocked tasks) and ``t`` (every task) dump sent as key presses
through libvirt, which the kernel handles in interrupt context, so they work while
a CPU spins with preemption off or every task is stuck. A paused guest runs no
code: no sysrq then. Debian kernels allow only some sysrq functions from the
keyboard (kernel.sysrq=438 lacks the process dumps): guests we boot directly get
``sysrq_always_enabled`` on their command line (``WATCHDOG_CMDLINE``), and ``watch``
also enables them over SSH once per boot (guests booted from a disk image).
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

import libvirt

from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.events import VmStateChanged
from vexfs_cockpit.engine.target import CommandResult
from vexfs_cockpit.errors import CockpitError, InfraError

if TYPE_CHECKING:
    from vexfs_cockpit.fleet.libvirt import FleetManager
    from vexfs_cockpit.fleet.vmctl import GuestVm

log = logging.getLogger(__name__)

# Linux input keycodes (include/uapi/linux/input-event-codes.h).
KEY_LEFTALT, KEY_SYSRQ = 56, 99
SYSRQ_KEYCODES = {"w": 17, "t": 20}
# What the kernel prints first for each (drivers/tty/sysrq.c action_msg).
SYSRQ_HEADERS = {"w": "sysrq: Show Blocked State", "t": "sysrq: Show State"}
SYSRQ_DISABLED = "This sysrq operation is disabled"
SYSRQ_ENABLE_CMD = "echo 1 > /proc/sys/kernel/sysrq"

TAIL_LINES = 30  # console lines before the hang, in the notes
W_DUMP_NOTE_LINES = 200  # blocked-task dump lines copied into the notes (all are in the kernel log)
LIBVIRT_STATE_TIMEOUT_S = 5.0


def heartbeat_interval(hang_after: float) -> float:
    """Seconds between SSH probes (each may take as long): at least three per ``hang_after``."""
    return max(0.2, min(5.0, hang_after / 3))


@dataclass(frozen=True, slots=True)
class HangVerdict:
    """Why the watchdog declared the guest hung (all durations in seconds)."""

    ssh_silent_s: float
    console_silent_s: float
    libvirt_state: str
    paused_s: float | None = None  # how long libvirt has shown the domain paused, if it has

    @property
    def frozen(self) -> bool:
        return self.libvirt_state == "paused"

    @property
    def message(self) -> str:
        """One line for the test result: what was seen, e.g.
        ``guest hung: no SSH answer for 31 s, console silent 30 s, libvirt state running``."""
        ssh = f"no SSH answer for {self.ssh_silent_s:.0f} s"
        console = f"console silent {self.console_silent_s:.0f} s"
        if self.frozen:
            since = f" for {self.paused_s:.0f} s" if self.paused_s is not None else ""
            return f"guest hung: libvirt state paused (frozen){since}, {ssh}, {console}"
        if self.console_silent_s < self.ssh_silent_s / 2:
            console = f"console still printing (last line {self.console_silent_s:.0f} s ago)"
        return f"guest hung: {ssh}, {console}, libvirt state {self.libvirt_state}"


class HangJudge:
    """The verdict from observations with timestamps; no clock, no I/O (unit-testable).

    ``hang_after`` is the domain's hang_detection_timeout. Silence is measured from
    the last successful SSH answer / the last console line, or from ``start``.
    """

    def __init__(self, hang_after: float, start: float):
        if hang_after <= 0:
            raise ValueError("hang_after must be positive")
        self.hang_after = hang_after
        self.last_ssh_ok = start
        self.last_console = start
        self.paused_since: float | None = None
        self.libvirt_state = "running"

    def ssh(self, ok: bool, at: float) -> None:
        if ok:
            self.last_ssh_ok = max(self.last_ssh_ok, at)

    def console(self, at: float) -> None:
        self.last_console = max(self.last_console, at)

    def state(self, state: str, at: float) -> None:
        """A libvirt state ("paused", "running", "stopped", ...) seen at ``at``."""
        if state == "paused":
            if self.paused_since is None:
                self.paused_since = at
        elif state in ("running", "ready", "booting", "stopped", "crashed", "undefined"):
            self.paused_since = None
        else:  # hung/defined/...: cockpit words, not libvirt's: keep what we know
            return
        self.libvirt_state = "running" if state in ("ready", "booting") else state

    def verdict(self, now: float) -> HangVerdict | None:
        t = self.hang_after
        ssh_silent = now - self.last_ssh_ok
        console_silent = now - self.last_console
        paused = None if self.paused_since is None else now - self.paused_since
        if paused is not None and paused >= t:
            return HangVerdict(ssh_silent, console_silent, "paused", paused_s=paused)
        if ssh_silent >= t and (console_silent >= t or ssh_silent >= 2 * t):
            # Silent because libvirt paused it (the silence began before the pause): frozen.
            return HangVerdict(ssh_silent, console_silent, self.libvirt_state, paused_s=paused)
        return None

    def due(self) -> float:
        """The earliest time a verdict can fall due if nothing new is observed."""
        t = self.hang_after
        quiet = max(self.last_ssh_ok, self.last_console) + t
        chatter = self.last_ssh_ok + 2 * t
        when = min(quiet, chatter)
        if self.paused_since is not None:
            when = min(when, self.paused_since + t)
        return when


class ConsoleLines(Protocol):
    """The parts of ``klog.buffer.KernelLogBuffer`` the watchdog reads."""

    def cursor(self) -> int: ...
    def window(self, start: int, end: int | None = None) -> tuple[list[str], list[object]]: ...
    async def wait_for_text(self, text: str, since: int, timeout: float) -> int | None: ...


class Responsive(Protocol):
    async def is_responsive(self, timeout: float = 5.0) -> bool: ...


class HeartbeatTarget(Protocol):
    """An SSH target of the heartbeat's own (``transport.ssh.SshTarget``)."""

    @property
    def is_connected(self) -> bool: ...
    async def connect(self) -> None: ...
    async def run(self, command: str, *, timeout: float | None = None) -> CommandResult: ...
    async def close(self) -> None: ...


class SshHeartbeat:
    """``is_responsive`` over an SSH connection of its own.

    On the test's connection the probe would queue behind the test's commands: the
    channels per connection are capped (dropbear refuses sessions, the cap can drop
    to 1) and a stress test that holds them for 15 s reads as a dead guest. Measured
    on the e2e run's stability test: "no SSH answer for 30 s" while the guest ran
    fine. A (re)connect is started once and survives a probe's timeout, so a slow key
    exchange under TCG is not restarted by every beat.
    """

    def __init__(self, target: HeartbeatTarget):
        self.target = target
        self._connecting: asyncio.Task[None] | None = None

    async def is_responsive(self, timeout: float = 5.0) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        try:
            if not self.target.is_connected:
                if self._connecting is None or self._connecting.done():
                    self._connecting = asyncio.ensure_future(self.target.connect())
                    # It may fail after the probe stopped waiting: its error is the probe's "no".
                    self._connecting.add_done_callback(lambda t: t.cancelled() or t.exception())
                await asyncio.wait_for(asyncio.shield(self._connecting), timeout)
            left = max(0.1, deadline - loop.time())
            async with asyncio.timeout(left):
                res = await self.target.run("true", timeout=left)
        except (TimeoutError, CockpitError, OSError):
            return False
        return res.ok

    async def aclose(self) -> None:
        if self._connecting is not None and not self._connecting.done():
            self._connecting.cancel()
            await asyncio.gather(self._connecting, return_exceptions=True)
        await self.target.close()


@dataclass(frozen=True, slots=True)
class CaptureTimings:
    header_s: float = 3.0  # the sysrq header must show within this
    quiet_s: float = 0.5  # a dump is over once the console is quiet this long...
    dump_s: float = 10.0  # ...or after this, whatever comes


class HangWatchdog:
    """Per-VM hang watchdog. ``watch`` returns a verdict (cancel it when the test ends);
    ``capture`` returns evidence notes and leaves the sysrq dumps in the kernel log."""

    def __init__(
        self,
        name: str,
        bus: EventBus,
        heartbeat: Responsive,
        klog: ConsoleLines,
        *,
        libvirt_state: Callable[[], Awaitable[str]],
        send_keys: Callable[[list[int]], Awaitable[None]] | None = None,
        enable_sysrq: Callable[[], Awaitable[bool]] | None = None,
        boot_count: Callable[[], int] = lambda: 0,
        timings: CaptureTimings = CaptureTimings(),
    ):
        self.name = name
        self.bus = bus
        self.heartbeat = heartbeat
        self.klog = klog
        self._libvirt_state = libvirt_state
        self._send_keys = send_keys
        self._enable_sysrq = enable_sysrq
        self._boot_count = boot_count
        self.timings = timings
        self._sysrq_boot: int | None = None  # boot on which sysrq was enabled
        self.sysrq_problem = ""

    async def is_responsive(self, timeout: float = 5.0) -> bool:
        """One heartbeat probe (the runner asks after a test timed out)."""
        return await self.heartbeat.is_responsive(timeout=timeout)

    async def aclose(self) -> None:
        """Release what the heartbeat holds (its own SSH connection, if it has one)."""
        close = getattr(self.heartbeat, "aclose", None)
        if close is not None:
            await close()

    # -- watching -------------------------------------------------------------------------
    async def watch(self, hang_after: float) -> HangVerdict:
        """Return once the guest is hung or frozen (never, while it is fine)."""
        loop = asyncio.get_running_loop()
        judge = HangJudge(hang_after, loop.time())
        changed = asyncio.Event()
        sub = self.bus.subscribe(VmStateChanged)  # before the state read: no change slips between
        events_seen = False

        def seen_state(state: str) -> None:
            judge.state(state, loop.time())
            changed.set()

        async def states() -> None:
            nonlocal events_seen
            async for e in sub:
                if isinstance(e, VmStateChanged) and e.vm == self.name:
                    events_seen = True
                    seen_state(e.state)

        async def console() -> None:
            since = self.klog.cursor()
            while True:
                # "" is in every line: wakes on the next console line, however many arrive.
                n = await self.klog.wait_for_text("", since, timeout=3600.0)
                if n is not None:
                    judge.console(loop.time())
                    changed.set()
                    since = max(n + 1, self.klog.cursor())

        async def beat() -> None:
            interval = heartbeat_interval(hang_after)
            await self._ensure_sysrq()
            # The first probe one interval in: a test shorter than that (most are, on a
            # warm VM) never opens the heartbeat's SSH connection, whose key exchange
            # would take the guest's one vCPU from the test under TCG.
            await asyncio.sleep(interval)
            while True:
                tick = loop.time()
                ok = await self.heartbeat.is_responsive(timeout=interval)
                judge.ssh(ok, loop.time())
                changed.set()
                # Pace the heartbeat (a timer, not a stand-in for work).
                await asyncio.sleep(max(0.0, interval - (loop.time() - tick)))

        workers = [asyncio.ensure_future(c()) for c in (states, console, beat)]
        try:
            initial = await self.libvirt_state()
            if not events_seen:  # an event during the read is newer than what it returned
                seen_state(initial)
            while (verdict := judge.verdict(loop.time())) is None:
                changed.clear()
                waiter = asyncio.ensure_future(changed.wait())
                delay = max(0.01, judge.due() - loop.time())
                try:
                    await asyncio.wait([waiter, *workers], timeout=delay, return_when=asyncio.FIRST_COMPLETED)
                finally:
                    waiter.cancel()
                for w in workers:
                    if w.done() and not w.cancelled() and w.exception() is not None:
                        raise w.exception()  # type: ignore[misc]
        finally:
            sub.close()
            for w in workers:
                w.cancel()
            await asyncio.gather(*workers, return_exceptions=True)
        # Name the state libvirt has now (the event stream may lag by a moment).
        state = await self.libvirt_state()
        return verdict if verdict.frozen or state == "unknown" else dataclasses.replace(verdict, libvirt_state=state)

    async def libvirt_state(self) -> str:
        try:
            return await asyncio.wait_for(self._libvirt_state(), LIBVIRT_STATE_TIMEOUT_S)
        except (TimeoutError, CockpitError, libvirt.libvirtError) as err:
            log.info("%s: libvirt state unknown: %s", self.name, err)
            return "unknown"

    async def _ensure_sysrq(self) -> None:
        """Allow the sysrq process dumps from the keyboard, once per boot (best effort)."""
        boot = self._boot_count()
        if self._enable_sysrq is None or self._sysrq_boot == boot:
            return
        try:
            ok = await self._enable_sysrq()
        except (TimeoutError, CockpitError, OSError) as err:
            ok, why = False, str(err)
        else:
            why = "the command failed"
        if ok:
            self._sysrq_boot, self.sysrq_problem = boot, ""
        else:
            self.sysrq_problem = f"could not enable sysrq in the guest ({why})"

    # -- evidence -------------------------------------------------------------------------
    async def capture(self) -> list[str]:
        """Notes on a hung guest: its last console lines and the sysrq w/t dumps.

        The dump lines themselves arrive on the console, i.e. in the kernel log the
        runner attaches to the test; the notes hold the last lines, the blocked tasks
        and how the dumps went.
        """
        end = self.klog.cursor()
        tail, _ = self.klog.window(max(0, end - TAIL_LINES), end)
        notes = [f"last {len(tail)} console lines before the hang was declared:\n" + "\n".join(tail)]
        state = await self.libvirt_state()
        if state != "running":
            notes.append(f"no sysrq dump: libvirt state {state} (the guest's CPUs do not run)")
            return notes
        if self._send_keys is None:
            notes.append("no sysrq dump: this VM cannot be sent key presses")
            return notes
        for key in ("w", "t"):
            note, answered = await self._sysrq(key)
            notes.append(note)
            if not answered:
                break  # a guest that ignored w will ignore t too
        return notes

    async def _sysrq(self, key: str) -> tuple[str, bool]:
        header = SYSRQ_HEADERS[key]
        start = self.klog.cursor()
        assert self._send_keys is not None
        try:
            await self._send_keys([KEY_LEFTALT, KEY_SYSRQ, SYSRQ_KEYCODES[key]])
        except (CockpitError, libvirt.libvirtError) as err:
            return f"sysrq {key}: could not send the keys: {err}", False
        found = await self.klog.wait_for_text(header, start, self.timings.header_s)
        if found is None:
            disabled = await self.klog.wait_for_text(SYSRQ_DISABLED, start, 0.0)
            why = (self.sysrq_problem or "kernel.sysrq forbids it") if disabled is not None else "no answer"
            return f"sysrq {key}: no '{header}' on the console within {self.timings.header_s:g} s ({why})", False
        last = await self._quiet_end()
        lines, _ = self.klog.window(found, last)
        if key == "w":
            shown = lines[:W_DUMP_NOTE_LINES]
            more = f"\n[... {len(lines) - len(shown)} more lines in the kernel log]" if len(lines) > len(shown) else ""
            return f"sysrq w (blocked tasks), {len(lines)} lines:\n" + "\n".join(shown) + more, True
        return f"sysrq t (all tasks): {len(lines)} lines, in the kernel log from '{header}'", True

    async def _quiet_end(self) -> int:
        """Wait until the console is quiet for ``quiet_s`` (at most ``dump_s``); the cursor then."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timings.dump_s
        while (left := deadline - loop.time()) > 0:
            cur = self.klog.cursor()
            if await self.klog.wait_for_text("", cur, min(self.timings.quiet_s, left)) is None:
                break
        return self.klog.cursor()


# -- a libvirt guest's watchdog ------------------------------------------------------------


def send_keys_via_libvirt(fleet: FleetManager, name: str) -> Callable[[list[int]], Awaitable[None]]:
    """Press keys on the guest's keyboard (virDomainSendKey, Linux keycodes)."""

    def press(codes: list[int]) -> None:
        dom = fleet.conn.lookupByName(name)
        try:
            dom.sendKey(libvirt.VIR_KEYCODE_SET_LINUX, 0, codes, len(codes), 0)
        except libvirt.libvirtError as err:
            raise InfraError(f"cannot send keys to VM {name}: {err.get_error_message()}") from None

    async def send(codes: list[int]) -> None:
        await asyncio.to_thread(press, codes)

    return send


def guest_watchdog(
    vm: GuestVm, fleet: FleetManager, bus: EventBus, klog: ConsoleLines,
    heartbeat_target: HeartbeatTarget | None = None,
) -> HangWatchdog:
    """The watchdog of a VM this process booted (``LibvirtProvider.lease`` puts it in
    ``Lease.extra["watchdog"]``). Give it ``heartbeat_target``, a second SSH target to
    the same guest, so the heartbeat never waits behind the test's commands; without
    one it probes over the VM's own target. ``aclose`` closes that target."""

    async def enable_sysrq() -> bool:
        res = await vm.target.run(SYSRQ_ENABLE_CMD, timeout=5.0)
        return res.ok

    heartbeat: Responsive = SshHeartbeat(heartbeat_target) if heartbeat_target is not None else vm
    return HangWatchdog(
        vm.name, bus, heartbeat, klog,
        libvirt_state=lambda: fleet.state(vm.name),
        send_keys=send_keys_via_libvirt(fleet, vm.name),
        enable_sysrq=enable_sysrq,
        boot_count=lambda: vm.boots,
    )
