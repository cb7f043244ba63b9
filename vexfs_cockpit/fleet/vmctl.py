"""One guest VM, end to end: boot to ready, reset, shut down. Implements ``VmControl``.

Ready means: the guest printed its ready marker on the serial console (dropbear
listens by then) AND an SSH connection is up. Boot is: create paused, attach the
console, resume (so no boot line is lost), wait for ready within the boot
timeout. A boot that fails says which VM and shows its last console lines.

``reset`` is destroy + create from the same XML (same name, same SSH port; see
FleetManager.reset for why not virDomainReset) followed by the same wait; the
``SshTarget`` handed to domains is the same object before and after — it only
reconnects.

With a golden ``snapshot`` (fleet.snapshot) boot and reset restore it instead:
restore paused, attach the console, resume, SSH, ``refresh_guest`` (clock,
randomness, hostname). A failed restore falls back to the cold boot and says so
in a ``VmStateChanged`` event; ``boot_kind`` tells which one the VM got.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Protocol

from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.events import VmReady, VmStateChanged
from vexfs_cockpit.engine.target import CommandResult, Target
from vexfs_cockpit.errors import CockpitError, InfraError
from vexfs_cockpit.fleet.console import ConsoleClosed, ConsoleStream
from vexfs_cockpit.fleet.libvirt import FleetManager, NameTaken
from vexfs_cockpit.fleet.snapshot import Snapshot, SnapshotUnusable, refresh_guest

log = logging.getLogger(__name__)

RESTORE_READY_S = 30.0  # restore + SSH + refresh; a cold boot is the fallback after that


class ReconnectingTarget(Target, Protocol):
    """What the VM needs from its SSH target beyond ``Target`` (transport.ssh.SshTarget)."""

    async def connect(self) -> None: ...
    async def reconnect(self) -> None: ...
    async def close(self) -> None: ...


class GuestVm:
    """A VM this process boots and owns. ``name`` is the libvirt domain name."""

    def __init__(
        self,
        fleet: FleetManager,
        bus: EventBus,
        *,
        name: str,
        xml: str,
        ssh_port: int,
        target: ReconnectingTarget,
        console: ConsoleStream,
        ready_marker: str,
        boot_timeout_s: float,
        keep: bool = False,
        klog: object | None = None,
        snapshot: Snapshot | None = None,
    ):
        self.fleet = fleet
        self.bus = bus
        self.name = name
        self.xml = xml
        self.ssh_port = ssh_port
        self.target = target
        self.console = console
        self.ready_marker = ready_marker
        self.boot_timeout_s = boot_timeout_s
        self.keep = keep
        self.klog = klog  # the KernelLogBuffer the console feeds (the provider flushes it on stop)
        self.phase = "defined"  # defined | booting | ready | stopped (libvirt events add the rest)
        self.boots = 0
        self._reset_lock = asyncio.Lock()
        self._created = False  # only a VM we created is ever stopped by us
        self._since = 0
        self.snapshot = snapshot  # restore this instead of booting (None: always cold)
        self.boot_kind = ""  # "restored" | "cold": how the VM last came up
        self._boot_t0 = 0.0  # loop time the last cold boot or reset began (VmReady's seconds)

    # -- boot / reset -------------------------------------------------------------------
    async def boot(self) -> None:
        """Start the VM and wait until it is ready (console marker + SSH)."""
        if self.snapshot is not None and await self._restore("restore", first=True):
            return
        self.phase = "booting"
        self._boot_t0 = asyncio.get_running_loop().time()
        await self.fleet.start(self.xml, paused=True, keep=self.keep, ssh_port=self.ssh_port)
        self._created = True
        self.boot_kind = "cold"
        await self._attach_and_run("boot")
        await self._wait_ready(first=True)

    async def _restore(self, note: str, *, first: bool) -> bool:
        """Restore the golden snapshot as this VM and wait for SSH; False (VM gone, event
        published) when that failed and the caller should boot cold."""
        snap = self.snapshot
        if snap is None or snap.broken:
            return False
        self.phase = "booting"
        self._created = False  # a reset destroyed the last instance; a failed restore creates nothing
        loop = asyncio.get_running_loop()
        started = loop.time()
        try:
            async with asyncio.timeout(RESTORE_READY_S):
                await self.fleet.restore(
                    snap.path, self.name, ssh_port=self.ssh_port, cold_xml=self.xml, keep=self.keep, paused=True,
                )
                self._created = True
                await self.console.attach(note=note)
                self._since = self.console.lines_seen
                # The copy printed its boot log before the save: replay the golden's, so the
                # console log and the kernel log read as after a boot.
                self.console.replay(snap.boot_lines(), "boot log of the golden snapshot this VM was restored from")
                await self.fleet.resume(self.name)
                self.boots += 1
                if first:
                    await self.target.connect()
                else:
                    await self.target.reconnect()
                await refresh_guest(self.target, self.name)
        except NameTaken:
            raise  # another cockpit's VM has the name: a cold boot would collide too
        except (TimeoutError, CockpitError, OSError) as err:
            why = str(err) or f"not ready within {RESTORE_READY_S:.0f}s"
            if isinstance(err, SnapshotUnusable):
                snap.invalidate(why)  # every later lease boots cold; the next run rebuilds it
            self.snapshot = None
            log.warning("%s: %s; booting cold", self.name, why)
            await self.console.detach()
            await self.target.close()
            if self._created:  # only what our restore started: never a VM of the same name we did not
                await self.fleet.stop(self.name, grace_s=0)
                self._created = False
            self.bus.publish(VmStateChanged(vm=self.name, state="booting", reason=f"cold boot: snapshot restore failed ({why})"))
            return False
        self.boot_kind = "restored"
        self.phase = "ready"
        # How it came up is its own event: "ready" keeps its "boot #N" for every reader.
        self.bus.publish(VmStateChanged(
            vm=self.name, state="running", reason=f"restored from snapshot in {loop.time() - started:.2f}s",
        ))
        self.bus.publish(VmStateChanged(vm=self.name, state="ready", reason=f"boot #{self.boots}"))
        self.bus.publish(VmReady(vm=self.name, mode="restore", seconds=loop.time() - started, reset=not first))
        return True

    async def _attach_and_run(self, note: str) -> None:
        await self.console.attach(note=note)
        self._since = self.console.lines_seen
        await self.fleet.resume(self.name)
        self.boots += 1

    async def _wait_ready(self, *, first: bool) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.boot_timeout_s
        stage = "the ready marker"
        try:
            async with asyncio.timeout_at(deadline):
                await self.console.wait_for_text(self.ready_marker, timeout=self.boot_timeout_s, since=self._since)
                stage = "SSH"
                if first:
                    await self.target.connect()
                else:
                    await self.target.reconnect()
        except TimeoutError:
            raise InfraError(
                f"VM {self.name} was not ready within {self.boot_timeout_s:.0f}s (waiting for {stage}; "
                f"raise fleet.boot_timeout_s if the host is slow); last console lines: {self._last_lines()}"
            ) from None
        except ConsoleClosed:
            raise InfraError(
                f"VM {self.name} stopped while booting (waiting for {stage}); "
                f"last console lines: {self._last_lines()}"
            ) from None
        except CockpitError as err:  # TargetUnavailable: marker seen, SSH never came
            raise InfraError(f"VM {self.name} printed its ready marker but SSH failed: {err}") from None
        self.phase = "ready"
        self.bus.publish(VmStateChanged(vm=self.name, state="ready", reason=f"boot #{self.boots}"))
        # From the start (or reset) call until SSH answered: what a cold boot costs a lease.
        self.bus.publish(VmReady(vm=self.name, mode="boot", seconds=loop.time() - self._boot_t0, reset=not first))

    async def adopt(self) -> None:
        """Take over a VM that is already up (booted by another loop or process).

        Attaches the console (from now on: earlier lines are not replayed) and SSH.
        An adopted VM is never stopped by ``aclose``; ``detach`` lets it go.
        """
        await self.console.attach(note="adopt")
        self._since = self.console.lines_seen
        try:
            await self.target.connect()
        except CockpitError as err:
            raise InfraError(f"VM {self.name} is running but SSH does not answer: {err}") from None
        self.phase = "ready"

    async def detach(self) -> None:
        """Release console and SSH, leave the VM as it is."""
        try:
            await self.target.close()
        finally:
            await self.console.aclose()

    def _last_lines(self, n: int = 8) -> str:
        lines = [ln.strip() for ln in self.console.tail(n) if ln.strip()]
        return " | ".join(lines) if lines else "(none: the console printed nothing)"

    async def reset(self, reason: str) -> None:
        """Hard reset and wait for ready again. InfraError if it does not come back."""
        async with self._reset_lock:
            log.info("resetting %s: %s", self.name, reason)
            self.phase = "booting"
            self._boot_t0 = asyncio.get_running_loop().time()
            await self.console.detach()
            if self.snapshot is not None and not self.snapshot.broken:
                await self.fleet.stop(self.name, grace_s=0)
                if await self._restore(f"reset: {reason}", first=False):
                    return
                await self.fleet.start(self.xml, paused=True, keep=self.keep, ssh_port=self.ssh_port)
            else:
                await self.fleet.reset(self.name, paused=True)
            self.boot_kind = "cold"
            await self._attach_and_run(f"reset: {reason}")
            await self._wait_ready(first=False)

    # -- VmControl ------------------------------------------------------------------------
    async def state(self) -> str:
        """libvirt's state, refined by ours: a running VM is "booting" or "ready"."""
        st = await self.fleet.state(self.name)
        if st == "running" and self.phase in ("booting", "ready"):
            return self.phase
        return st

    async def is_responsive(self, timeout: float = 5.0) -> bool:
        """An SSH ``true`` round trip within ``timeout`` (reconnect included)."""
        try:
            async with asyncio.timeout(timeout):
                res: CommandResult = await self.target.run("true", timeout=timeout)
        except (TimeoutError, CockpitError, OSError):
            return False
        return res.ok

    # -- shutdown -------------------------------------------------------------------------
    async def shutdown(self, grace_s: float) -> None:
        """Power the guest off from inside (our busybox guest ignores ACPI), then make sure.

        ``poweroff -f`` after ``sync`` is the guest's own clean stop; with
        on_poweroff=destroy libvirt then reports "stopped". Whatever is still running
        after ``grace_s`` is destroyed.
        """
        if self.phase == "ready" and grace_s > 0:
            try:
                async with asyncio.timeout(min(3.0, grace_s)):
                    res = await self.target.run("sync; (sleep 0.2; poweroff -f) >/dev/null 2>&1 &", timeout=3.0)
                asked = res.ok
            except (TimeoutError, CockpitError, OSError):
                asked = False  # dead or hung guest: no point waiting, destroy below
            if asked and not await self.fleet.wait_stopped(self.name, grace_s):
                log.info("%s did not power off within %.0fs: destroying it", self.name, grace_s)
        self.phase = "stopped"
        if self._created:
            await self.fleet.stop(self.name, grace_s=0)

    async def aclose(self, grace_s: float = 10.0) -> None:
        """Stop the VM and release console + SSH. Safe to call twice."""
        try:
            await self.shutdown(grace_s)
        finally:
            await self.detach()
