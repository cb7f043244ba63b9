"""``AttachProvider``: lease an ALREADY RUNNING dev VM (``vm start``) instead of booting one.

The kernel developer's warm loop (``kload``/``kunload``/``ktest``) works on a VM
that stays up. A lease attaches to it: the SSH target from its state file (the
image's client key, the guest host key verified), the serial console streaming
into a ``KernelLogBuffer`` (so sync markers, kernel-log windows and crash reports
work exactly as on a fresh VM), and a ``VmControl`` whose reset is ``vm reset``'s
destroy + start from the same XML. Implements ``engine.provider.TargetProvider``.

The VM is the developer's: leaving a lease or closing the provider only lets go
of console and SSH; nothing here stops or destroys it. Domains lease it one at a
time (a second lease waits): they share one kernel and one module.

Only VMs marked ``keep`` (started by ``vm start``) are attached: a VM owned by a
running ``run`` belongs to that run.
"""

from __future__ import annotations

import asyncio
import logging
import xml.etree.ElementTree as ET
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import libvirt

from vexfs_cockpit.config.models import CockpitConfig
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.events import Event, VmStateChanged
from vexfs_cockpit.engine.provider import Lease
from vexfs_cockpit.errors import CockpitError, InfraError
from vexfs_cockpit.fleet.devvm import dev_target, read_state
from vexfs_cockpit.fleet.console import ConsoleStream, klog_sink
from vexfs_cockpit.images.initramfs import READY_MARKER
from vexfs_cockpit.fleet.libvirt import FleetManager, VmInfo
from vexfs_cockpit.fleet.provider import UNAME_R, uname_release
from vexfs_cockpit.fleet.vmctl import GuestVm
from vexfs_cockpit.fleet.watchdog import guest_watchdog
from vexfs_cockpit.engine.klog_buffer import KernelLogBuffer

if TYPE_CHECKING:
    from vexfs_cockpit.images.initramfs import GuestImage
    from vexfs_cockpit.transport.pool import TargetPool

log = logging.getLogger(__name__)

# SSH must answer within this on attach: a running dev VM answers in well under a second.
ATTACH_SSH_DEADLINE_S = 20.0


async def booted_kernel(fleet: FleetManager, name: str) -> str | None:
    """The kernel version a direct-kernel VM booted, read from its domain XML's
    ``<kernel>`` and that image's manifest — no SSH round trip. None for other shapes
    (the disk template boots the distro image's own kernel: ask the guest)."""
    img = await booted_image(fleet, name)
    return img.kernel_version if img is not None else None


async def booted_image(fleet: FleetManager, name: str) -> GuestImage | None:
    """The guest image a direct-kernel VM booted (its kernel version, and the kernel
    tree it came from, if any), from its domain XML; None for other shapes."""
    from vexfs_cockpit.images.initramfs import GuestImage

    def read() -> GuestImage | None:
        dom = fleet.conn.lookupByName(name)
        kernel = ET.fromstring(dom.XMLDesc(0)).findtext("os/kernel")
        if not kernel:
            return None
        try:
            img = GuestImage.from_dir(Path(kernel).parent)
        except InfraError:
            return None
        return img if img.kernel == Path(kernel) else None

    try:
        return await asyncio.to_thread(read)
    except (libvirt.libvirtError, ET.ParseError):
        return None


def check_attachable(name: str, uri: str, info: VmInfo | None) -> None:
    """One-line InfraError (with the fix) unless ``info`` is a running dev VM."""
    if info is None:
        raise InfraError(f"no VM named {name} at {uri} — start one with `vexfs-cockpit vm start {name}`")
    if info.state != "running":
        how = "`vexfs-cockpit vm reset " + name + "` boots it again"
        raise InfraError(f"VM {name} is {info.state}, not running — {how}, or `vexfs-cockpit vm stop {name}`")
    o = info.owner
    if o is None:
        raise InfraError(
            f"VM {name} has no cockpit metadata (not a dev VM) — start one with `vexfs-cockpit vm start NAME`"
        )
    if not o.keep:
        who = f"pid {o.pid}" + (f", run {o.run_id}" if o.run_id else "")
        raise InfraError(
            f"VM {name} belongs to a cockpit run ({who}), not a dev VM — start your own with `vexfs-cockpit vm start NAME`"
        )


class DevVmControl:
    """``VmControl`` for an attached dev VM: reset it, but never let our fleet own it."""

    def __init__(self, vm: GuestVm, fleet: FleetManager):
        self._vm = vm
        self.connect_fleet = fleet
        self.name = vm.name

    async def reset(self, reason: str) -> None:
        try:
            await self._vm.reset(reason)
        finally:
            # fleet.reset re-creates the VM and records it as ours; a dev VM must
            # outlive this process even when the reset did not come back ready.
            self.connect_fleet.release(self.name)

    async def state(self) -> str:
        return await self._vm.state()

    async def is_responsive(self, timeout: float = 5.0) -> bool:
        return await self._vm.is_responsive(timeout)


class AttachProvider:
    shares_one_vm = True  # engine.provider.SharesOneVm: every lease is the dev VM

    def __init__(
        self,
        cfg: CockpitConfig,
        bus: EventBus,
        name: str,
        *,
        uri: str | None = None,
        console_log: Path | None = None,
        targets: TargetPool | None = None,
    ):
        self.cfg = cfg
        self.bus = bus
        self.name = name
        self.uri = uri or cfg.fleet.libvirt_uri
        self.fleet = FleetManager(self.uri, bus, cfg.env, stop_timeout_s=cfg.fleet.stop_timeout_s)
        self._console_log = console_log
        self._targets = targets  # SSH connections kept between commands (the kdev agent's)
        self._vm: GuestVm | None = None
        self._lease: Lease | None = None
        self._attach_lock: asyncio.Lock | None = None
        self._lease_lock: asyncio.Lock | None = None
        self._connected = False
        self._closed = False
        bus.listen(self._on_event)

    def _on_event(self, event: Event) -> None:
        if isinstance(event, VmStateChanged) and event.vm == self.name and event.state in ("stopped", "crashed"):
            vm = self._vm
            if vm is not None and isinstance(vm.klog, KernelLogBuffer):
                vm.klog.flush()  # panic=-1 stops the guest before the report's end line

    async def attach(self) -> Lease:
        """Attach console + SSH once (later calls return the same lease)."""
        if self._attach_lock is None:
            self._attach_lock = asyncio.Lock()
        async with self._attach_lock:
            if self._closed:
                raise InfraError("the dev-VM provider is closed")
            if self._lease is None:
                self._lease = await self._attach()
            return self._lease

    async def _attach(self) -> Lease:
        if not self._connected:
            await self.fleet.connect(reap=False)  # another cockpit's stale VMs are not ours to reap
            self._connected = True
            # The fleet publishes lifecycle events only for VMs it started; this one it
            # adopts (its stop/crash must reach the bus, the klog flush and the store).
            self.fleet._ever_started.add(self.name)
        info = await self.fleet.info(self.name)
        check_attachable(self.name, self.uri, info)
        target = await self._ssh_target(info, "commands")
        st = read_state(self.name)
        log_path = self._console_log or (Path(st.console_log) if st is not None else None)
        klog = KernelLogBuffer(self.name)
        console = ConsoleStream(lambda: self.fleet.conn, self.name, klog_sink(self.name, klog, self.bus), log_path=log_path,
                                log_max_bytes=self.cfg.store.console_log_max_mb * 1024 * 1024)
        vm = GuestVm(
            self.fleet, self.bus, name=self.name, xml="", ssh_port=target.port, target=target, console=console,
            ready_marker=READY_MARKER, boot_timeout_s=self.cfg.fleet.template_boot_timeout_s, keep=True, klog=klog,
        )
        try:
            await vm.adopt()  # SSH answered: connected and authenticated
            # A direct-kernel VM's kernel is in its domain XML: one guest round trip
            # (~0.1 s under TCG) less on every warm-loop command.
            image = await booted_image(self.fleet, self.name)
            kernel = image.kernel_version if image is not None else None
            res = None if kernel else await target.run(UNAME_R, timeout=30.0)
        except CockpitError as err:
            await vm.detach()
            raise InfraError(f"{err} — `vexfs-cockpit vm reset {self.name}` reboots it") from None
        except BaseException:
            await vm.detach()
            raise
        # Later reconnects follow a reset: the guest's whole boot comes before SSH answers.
        target.reconnect_deadline_s = min(60.0, self.cfg.fleet.template_boot_timeout_s)
        if res is not None:
            try:
                # checked: it becomes the kbuild dir the host creates and removes
                kernel = uname_release(res, self.name)
            except InfraError:
                await vm.detach()
                raise
        self._vm = vm
        return Lease(
            vm_name=self.name, target=target, klog=klog, vm=DevVmControl(vm, self.fleet),
            guest_kernel=kernel or "",
            extra={
                "ssh_port": target.port, "console_log": str(log_path or ""), "attached": True,
                # the kernel tree the VM booted (kdev builds the module against it)
                "kernel_tree": image.kernel_tree if image is not None else "",
                # the same hang/frozen detection + sysrq evidence as a booted VM's lease; the
                # heartbeat has a connection of its own so it never queues behind the test.
                "watchdog": guest_watchdog(
                    vm, self.fleet, self.bus, klog,
                    heartbeat_target=await self._ssh_target(info, "heartbeat"),
                ),
            },
        )

    async def _ssh_target(self, info: VmInfo, role: str) -> Any:
        """A new SshTarget, or with a pool the one kept for this VM instance and role."""
        target = dev_target(self.cfg, self.name, info, reconnect_deadline_s=ATTACH_SSH_DEADLINE_S)
        if self._targets is None:
            return target
        lent = await self._targets.lend(
            (self.uri, self.name, role), (target.host, target.port, target.username, info.instance), lambda: target
        )
        lent.reconnect_deadline_s = ATTACH_SSH_DEADLINE_S  # a kept one may carry the post-reset deadline
        return lent

    # -- TargetProvider -----------------------------------------------------------------------
    @asynccontextmanager
    async def lease(self, domain: str, index: int) -> AsyncIterator[Lease]:
        """The dev VM, for one domain at a time (``index`` is ignored: there is one VM)."""
        if self._lease_lock is None:
            self._lease_lock = asyncio.Lock()
        async with self._lease_lock:
            yield await self.attach()

    def use_config(self, cfg: CockpitConfig) -> None:
        self.cfg = cfg

    async def aclose(self) -> None:
        """Let go of console and SSH; the VM keeps running."""
        if self._closed:
            return
        self._closed = True
        vm, lease, self._vm, self._lease = self._vm, self._lease, None, None
        try:
            watchdog = lease.extra.get("watchdog") if lease is not None else None
            if watchdog is not None:
                await watchdog.aclose()  # closes the heartbeat's own connection
            if vm is not None:
                await vm.detach()
        finally:
            self.fleet.release(self.name)
            await self.fleet.aclose()
