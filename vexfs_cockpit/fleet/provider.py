"""``LibvirtProvider``: real VMs for the runner (implements engine.provider.TargetProvider).

``lease(domain, index)`` boots ``vexfs-<env>-<domain>-<index>`` from the guest
image (built or taken from the cache), on the accelerator the probe found, with
SSH forwarded from a free 127.0.0.1 port; it yields once the VM is ready (console
marker + SSH) with the kernel log streaming into a ``KernelLogBuffer``. Leaving
the lease powers a booted VM off and destroys it; a VM restored from the golden
snapshot (fleet.snapshot) is a disposable copy and is only destroyed, in the
background. With restores on, a run's next domain's VM is restored while the
current domain runs (when one more VM fits the resource caps), so its lease
finds it ready. ``aclose()`` destroys whatever is left — also on Ctrl-C
(asyncio.run cancels the main task, the leases' ``finally`` and the session's
closers run) and, as a last resort, from an atexit hook.

Resource caps (``config.caps.check_resource_caps``) are the session's job: it
checks them in ``Session.select`` before any VM is touched.

Per-run evidence: each VM's raw serial console goes to
``<artifacts_dir>/<run_id>/console/<vm>.log``. The run id comes from the
constructor or, when one provider serves several runs (the TUI), from the
``RunStarted`` event on the bus.
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from vexfs_cockpit.config.models import CockpitConfig
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.events import Event, RunFinished, RunStarted, VmStateChanged
from vexfs_cockpit.engine.guest_input import kernel_release
from vexfs_cockpit.engine.provider import Lease
from vexfs_cockpit.engine.target import CommandResult, Target
from vexfs_cockpit.errors import CockpitError, InfraError
from vexfs_cockpit.fleet.console import ConsoleStream, klog_sink
from vexfs_cockpit.fleet.libvirt import FleetManager, NameTaken, vm_name
from vexfs_cockpit.fleet.sampler import HealthSampler
from vexfs_cockpit.fleet.snapshot import Snapshot
from vexfs_cockpit.fleet.vmctl import GuestVm
from vexfs_cockpit.fleet.watchdog import guest_watchdog
from vexfs_cockpit.images.initramfs import WATCHDOG_CMDLINE

if TYPE_CHECKING:
    from vexfs_cockpit.transport.jump import JumpHost

log = logging.getLogger(__name__)

_PORT_TRIES = 3  # free_port() is racy: QEMU binds it a moment later


@dataclass(frozen=True, slots=True)
class _Prepared:
    image: object  # fleet.image.GuestImage
    accel: str
    base_image: Path | None = None  # disk template without base_image_path: the built one, if any


MAX_NAME_TRIES = 16
UNAME_R = "uname -r"


async def guest_kernel_release(target: Target, vm: str) -> str:
    """The guest's `uname -r`, checked: it becomes a host path (the kbuild dir, the
    headers dir) that is created and removed, so a guest answering
    ``6.1.0-57-amd64/../../..`` must not reach the host's ``rm -rf``. One-line
    InfraError naming the VM and the answer otherwise."""
    return uname_release(await target.run(UNAME_R, timeout=30.0), vm)


def uname_release(res: CommandResult, vm: str) -> str:
    """The checked kernel release in the result of ``UNAME_R`` on ``vm``."""
    if not res.ok:
        raise InfraError(f"VM {vm}: `uname -r` failed: {res.first_line() or f'exit {res.exit_code}'}")
    return kernel_release(res.output, vm)


class LibvirtProvider:
    def __init__(
        self,
        cfg: CockpitConfig,
        bus: EventBus,
        artifacts_dir: Path,
        *,
        env: str | None = None,
        run_id: str = "",
        uri: str | None = None,
        sample_interval_s: float = 1.0,
        jump: JumpHost | None = None,
    ):
        self.cfg = cfg
        self.bus = bus
        # Guests on another libvirt host are reached through SSH to it (fleet/multihost.py).
        self.jump = jump
        self.env = env or cfg.env
        self.run_id = run_id
        self.artifacts_dir = artifacts_dir
        self.fleet = FleetManager(
            uri or cfg.fleet.libvirt_uri, bus, self.env,
            stop_timeout_s=cfg.fleet.stop_timeout_s, run_id=run_id,
        )
        self._vms: dict[str, GuestVm] = {}
        self._prepared: _Prepared | None = None
        self._prep_lock: asyncio.Lock | None = None
        self._sampler: HealthSampler | None = None
        self._closed = False
        self._sample_interval_s = sample_interval_s
        self._golden: Snapshot | None = None  # fleet.restore=auto: what leases restore
        self._golden_why = ""  # why there is none (said in the event of a cold boot)
        self._golden_done = False
        self._golden_retried = False
        self._golden_lock: asyncio.Lock | None = None
        # Restore ahead (fleet.restore=auto): the run's domains not leased yet, in order, and
        # the one VM restored to ready for the next of them while the current domain runs.
        self._plan: list[str] = []
        self._plan_sequential = True
        self._spare: tuple[str, asyncio.Task[GuestVm | None]] | None = None
        self._spare_fits = False
        self._background: set[asyncio.Task[None]] = set()  # VMs being torn down
        bus.listen(self._on_event)

    # -- bus listener (loop thread) ---------------------------------------------------------
    def _on_event(self, event: Event) -> None:
        if isinstance(event, RunStarted):
            self.run_id = event.run_id
            self.fleet.run_id = event.run_id
            if self._sampler is not None:
                self._sampler.run_id = event.run_id
            self._plan, self._plan_sequential = list(event.domains), event.parallel <= 1
            self._spare_fits = self._room_for_spare(len(event.domains), event.parallel)
            self._refill()
        elif isinstance(event, RunFinished):
            self._plan = []
            self._drop_spare()
        elif isinstance(event, VmStateChanged) and event.state in ("stopped", "crashed"):
            vm = self._vms.get(event.vm)
            klog = vm.klog if vm is not None else None
            if klog is not None and hasattr(klog, "flush"):
                # panic=-1 kills the guest before "---[ end Kernel panic" is printed:
                # close the half-collected report now.
                klog.flush()

    # -- preparation (once per provider) ------------------------------------------------
    async def _prepare(self) -> _Prepared:
        if self._closed:
            raise InfraError("the VM provider is closed")
        if self._prep_lock is None:
            self._prep_lock = asyncio.Lock()
        async with self._prep_lock:
            if self._prepared is None:
                from vexfs_cockpit.fleet.accel import probe_accel
                from vexfs_cockpit.images.initramfs import build_image

                await self.fleet.connect(reap=True)
                image = await asyncio.to_thread(build_image, self.cfg.fleet)
                accel = await asyncio.to_thread(probe_accel, fleet=self.cfg.fleet, kernel=image.kernel)
                base = None
                if self.cfg.fleet.template == "disk" and self.cfg.fleet.base_image_path is None:
                    from vexfs_cockpit.images.base import find_base_image

                    found = await asyncio.to_thread(find_base_image, self.cfg.fleet)
                    base = found.path if found is not None else None
                self._prepared = _Prepared(image, accel, base)
                self._sampler = HealthSampler(
                    lambda: self.fleet.conn, self.bus, lambda: list(self._vms), run_id=self.run_id,
                    interval=self._sample_interval_s, state_hint=self._state_hint,
                )
                self._sampler.start()
            return self._prepared

    async def planned_guest_kernel(self) -> str:
        """The kernel the next lease boots, so domains can build against it before any
        VM boots: the direct-kernel image's; a disk guest's base image's own, when
        ``image base`` built it ("" for another image: boot first, ask the guest)."""
        prep = await self._prepare()
        if self.cfg.fleet.template == "direct-kernel":
            return str(prep.image.kernel_version)  # type: ignore[attr-defined]
        base = self.cfg.fleet.base_image_path or prep.base_image
        if base is None:
            return ""
        from vexfs_cockpit.images.base import base_image_kernel

        return await asyncio.to_thread(base_image_kernel, Path(base))

    async def prepare(self) -> None:
        """Connect, build/reuse the image and probe the accelerator now (a UI does this
        at start so the first run and the VM list do not wait for it)."""
        await self._prepare()

    def _state_hint(self, name: str) -> str | None:
        vm = self._vms.get(name)
        return vm.phase if vm is not None and vm.phase in ("booting", "ready") else None

    # -- building one VM ------------------------------------------------------------------
    def _console_log(self, name: str) -> Path:
        run = self.run_id or "no-run"
        return self.artifacts_dir / run / "console" / f"{name}.log"

    def _render(self, prep: _Prepared, name: str, port: int) -> str:
        from vexfs_cockpit.fleet.templates import DomainSpec, render_domain_xml

        img = prep.image
        fleet = self.cfg.fleet
        res = self.cfg.resources
        common = dict(
            name=name, ssh_port=port, accel=prep.accel, memory_mb=res.memory_mb, cpus=res.cpus,
            disk_cache=fleet.disk_cache, disk_io=fleet.disk_io, enable_hugepages=fleet.enable_hugepages,
        )
        if fleet.template == "disk":
            from vexfs_cockpit.images.disk import make_overlay, make_seed_iso, vm_dir

            base = fleet.base_image_path or prep.base_image
            if base is None:
                raise InfraError(
                    "fleet.template is 'disk' but there is no base image: build one with `vexfs-cockpit image base` "
                    "or export VEXFS_BASE_IMAGE_PATH=/path/to/image.qcow2"
                )
            d = vm_dir(img, name)  # type: ignore[arg-type]
            overlay = make_overlay(base, d / "overlay.qcow2")
            seed = make_seed_iso(img, name, d / "seed.iso")  # type: ignore[arg-type]
            return render_domain_xml(DomainSpec(template="disk", overlay=overlay, seed_iso=seed, **common))  # type: ignore[arg-type]
        return render_domain_xml(DomainSpec(
            template="direct-kernel", kernel=img.kernel, initrd=img.initrd,  # type: ignore[attr-defined]
            cmdline=img.kernel_cmdline(  # type: ignore[attr-defined]
                hostname=name, extra=f"{WATCHDOG_CMDLINE} {fleet.kernel_cmdline_extra}".strip(),
            ),
            **common,  # type: ignore[arg-type]
        ))

    def _make_target(self, prep: _Prepared, name: str, port: int):  # -> SshTarget
        from vexfs_cockpit.transport.ssh import SshTarget

        img = prep.image
        keys = self.cfg.fleet.ssh_key_path or img.client_keys()  # type: ignore[attr-defined]
        return SshTarget(
            name, "127.0.0.1", port, "root",
            client_keys=keys, known_hosts=img.host_key_known_hosts(),  # type: ignore[attr-defined]
            # The ready marker is printed once dropbear listens; SSH retries only cover
            # the key exchange under TCG and later resets.
            reconnect_deadline_s=min(60.0, self.cfg.fleet.template_boot_timeout_s),
            tunnel=self.jump.connection if self.jump is not None else None,
        )

    async def new_vm(self, name: str, *, keep: bool = False, klog: object | None = None,
                     console_log: Path | None = None) -> GuestVm:
        """A GuestVm ready to ``boot()`` (used by ``lease`` and by ``vm start``)."""
        from vexfs_cockpit.fleet.templates import free_port

        prep = await self._prepare()
        port = free_port()
        xml = self._render(prep, name, port)
        console = ConsoleStream(
            lambda: self.fleet.conn, name, klog_sink(name, klog, self.bus),  # type: ignore[arg-type]
            log_path=console_log if console_log is not None else self._console_log(name),
            log_max_bytes=self.cfg.store.console_log_max_mb * 1024 * 1024,
        )
        vm = GuestVm(
            self.fleet, self.bus, name=name, xml=xml, ssh_port=port,
            target=self._make_target(prep, name, port), console=console,
            ready_marker=prep.image.ready_marker,  # type: ignore[attr-defined]
            boot_timeout_s=self.cfg.fleet.template_boot_timeout_s, keep=keep, klog=klog,
        )
        return vm

    async def golden_snapshot(self) -> Snapshot | None:
        """The golden snapshot fresh VMs restore (fleet.restore=auto), built on first use;
        None (``golden_why`` says why) when VMs boot cold."""
        from vexfs_cockpit.fleet import snapshot as snapmod

        prep = await self._prepare()
        if self.cfg.fleet.restore == "off":
            self._golden_why = "fleet.restore is off"
            return None
        if self.cfg.fleet.template != "direct-kernel":
            self._golden_why = "the disk template always boots (see README, Snapshot restore)"
            return None
        if self._golden_lock is None:
            self._golden_lock = asyncio.Lock()
        async with self._golden_lock:
            if self._golden is not None and self._golden.broken:
                self._golden, self._golden_why = None, f"the snapshot broke ({self._golden.broken})"
                if not self._golden_retried:  # once: e.g. another cockpit deleted it mid-run
                    self._golden_retried, self._golden_done = True, False
            if self._golden_done:
                return self._golden
            self._golden_done = True
            from vexfs_cockpit.fleet.templates import free_port

            name = f"{snapmod.GOLDEN_PREFIX}{self.env}-{os.getpid()}"
            port = free_port()
            xml = snapmod.with_genid(self._render(prep, name, port))
            versions = await asyncio.to_thread(snapmod.host_versions, self.fleet.conn)
            inputs = snapmod.snapshot_inputs(
                xml=xml, name=name, port=port, image_hash=prep.image.input_hash, versions=versions,  # type: ignore[attr-defined]
            )
            root = snapmod.snapshot_root(prep.image.dir)  # type: ignore[attr-defined]
            async with snapmod.locked(root):  # waits for another cockpit's build of the same snapshot
                snap, why = await asyncio.to_thread(snapmod.find_snapshot, root, inputs)
                if snap is None:
                    log.info("building the golden snapshot in %s (%s)", root, why)
                    self.bus.publish(VmStateChanged(vm=name, state="booting", reason=f"golden snapshot: building ({why})"))
                    boot_lines: list[str] = []
                    console = ConsoleStream(lambda: self.fleet.conn, name, lambda lines, _t: boot_lines.extend(lines))
                    # Its "ready" stays off the run's bus: the golden VM is no VM of the run.
                    vm = GuestVm(
                        self.fleet, EventBus(), name=name, xml=xml, ssh_port=port,
                        target=self._make_target(prep, name, port), console=console,
                        ready_marker=prep.image.ready_marker,  # type: ignore[attr-defined]
                        boot_timeout_s=self.cfg.fleet.template_boot_timeout_s,
                    )
                    try:
                        snap = await snapmod.build_golden(self.fleet, vm, root, inputs, boot_lines)
                    except InfraError as err:
                        self._golden_why = str(err)
                        log.warning("%s: fresh VMs boot cold", err)
                        return None
            self._golden = snap
            return snap

    async def boot_vm(self, name: str, *, keep: bool = False, klog: object | None = None,
                      console_log: Path | None = None, restore: bool = False) -> GuestVm:
        """Boot ``name`` to ready; retries with a new port when the forward could not bind.
        ``restore``: restore the golden snapshot when there is one (fleet.restore)."""
        last: InfraError | None = None
        snap = await self.golden_snapshot() if restore else None
        if restore and snap is None and self.cfg.fleet.restore != "off":
            self.bus.publish(VmStateChanged(vm=name, state="booting", reason=f"cold boot: no snapshot ({self._golden_why})"))
        for _ in range(_PORT_TRIES):
            vm = await self.new_vm(name, keep=keep, klog=klog, console_log=console_log)
            vm.snapshot = snap
            self._vms[name] = vm
            try:
                await vm.boot()
                return vm
            except InfraError as err:
                self._vms.pop(name, None)
                await vm.aclose(grace_s=0)
                if "hostfwd" not in str(err) and "host forwarding" not in str(err):
                    raise
                last = err
            except BaseException:
                self._vms.pop(name, None)
                await vm.aclose(grace_s=0)
                raise
        assert last is not None
        raise last

    async def release_vm(self, name: str) -> None:
        """Let ``name`` outlive this provider: drop console and SSH, keep the VM running."""
        vm = self._vms.pop(name, None)
        self.fleet.release(name)
        if vm is not None:
            await vm.detach()

    async def _free_name(self, domain: str, index: int, skip: frozenset[str] = frozenset()) -> str:
        """``vexfs-<env>-<domain>-<n>`` with the first n >= index that no VM uses: two
        cockpits (or a dev VM from `vm start`) on one host must not collide."""
        await self._prepare()  # connects the fleet
        for n in range(index, index + MAX_NAME_TRIES):
            name = vm_name(self.env, domain, n)
            if name not in self._vms and name not in skip and await self.fleet.state(name) == "undefined":
                return name
        raise InfraError(
            f"no free VM name for {domain}: {vm_name(self.env, domain, index)} .. -{index + MAX_NAME_TRIES - 1} "
            "all exist — see `vexfs-cockpit vm list` and stop the ones you don't need"
        )

    # -- restoring ahead ----------------------------------------------------------------------
    def _room_for_spare(self, n_domains: int, parallel: int) -> bool:
        """True when one VM more than the run's leases fits the resource caps: a restored
        spare is cheap (~1 s of host CPU, then an idle guest); a cold boot ahead is not."""
        from vexfs_cockpit.config.caps import fleet_need

        r = self.cfg.resources
        vms = fleet_need(self.cfg, ["_"] * n_domains).vms + 1
        return (
            self.cfg.fleet.restore != "off" and self.cfg.fleet.template == "direct-kernel"
            and vms * r.cpus <= r.max_total_cpus and vms * r.memory_mb <= r.max_total_memory_gb * 1024
            and vms * r.disk_gb <= r.max_total_disk_gb
        )

    def _refill(self) -> None:
        """Restore the next planned domain's VM now, so its lease finds it ready."""
        if self._closed or not self._spare_fits or self._spare is not None or not self._plan:
            return
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        domain = self._plan[0]
        self._spare = (domain, loop.create_task(self._make_spare(domain), name=f"spare VM for {domain}"))

    async def _make_spare(self, domain: str) -> GuestVm | None:
        if await self.golden_snapshot() is None:
            return None  # cold boots are not made ahead: they would take a core for ~10 s
        return await self._boot_fresh(domain, 0)

    async def _boot_fresh(self, domain: str, index: int) -> GuestVm:
        """A new VM for ``domain`` under the first free name from ``index``; another cockpit
        on this libvirt may take a name between our check and our create: take the next."""
        from vexfs_cockpit.engine.klog_buffer import KernelLogBuffer

        taken: set[str] = set()
        while True:
            name = await self._free_name(domain, index, frozenset(taken))
            try:
                return await self.boot_vm(name, klog=KernelLogBuffer(name), restore=True)
            except NameTaken:
                log.info("%s was taken by another VM meanwhile: trying the next name", name)
                taken.add(name)

    async def _take_spare(self, domain: str) -> GuestVm | None:
        """The VM restored ahead for ``domain``, ready and answering, or None (boot one now)."""
        if domain in self._plan:
            if self._plan_sequential:  # one domain at a time: the ones before it are done or skipped
                del self._plan[: self._plan.index(domain)]
            self._plan.remove(domain)
        if self._spare is not None and self._spare[0] not in self._plan and self._spare[0] != domain:
            self._drop_spare()  # made for a domain that will not lease (skipped)
        if self._spare is None or self._spare[0] != domain:
            return None
        task = self._spare[1]
        self._spare = None
        try:
            vm = await task
        except Exception as err:  # libvirt/SSH surprises too: the lease boots its own VM
            log.info("the VM restored ahead for %s failed (%s): booting one now", domain, err)
            return None
        if vm is not None and not await vm.is_responsive(timeout=5.0):  # it died while it waited
            await self._discard_vm(vm)
            return None
        return vm

    def _drop_spare(self) -> None:
        if self._spare is None:
            return
        task = self._spare[1]
        self._spare = None
        self._in_background(self._discard_task(task))

    def _in_background(self, coro: Coroutine[object, object, None]) -> None:
        """Run ``coro`` (tearing a VM down) without waiting for it; ``aclose`` waits."""
        t = asyncio.get_running_loop().create_task(coro)
        self._background.add(t)
        t.add_done_callback(self._background.discard)

    async def _discard_task(self, task: asyncio.Task[GuestVm | None]) -> None:
        task.cancel()  # a restore in flight undoes itself (FleetManager._shielded)
        (vm,) = await asyncio.gather(task, return_exceptions=True)
        if vm is not None and not isinstance(vm, BaseException):
            await self._discard_vm(vm)

    async def _discard_vm(self, vm: GuestVm) -> None:
        self._vms.pop(vm.name, None)
        try:
            await vm.aclose(grace_s=0)
        except CockpitError as err:
            log.warning("%s", err)

    # -- TargetProvider -----------------------------------------------------------------------
    @asynccontextmanager
    async def lease(self, domain: str, index: int) -> AsyncIterator[Lease]:
        vm = await self._take_spare(domain) if index == 0 else None
        if vm is None:  # nothing restored ahead (cold boots, a confirmation rerun, the first)
            vm = await self._boot_fresh(domain, index)
        name, klog = vm.name, vm.klog
        self._refill()  # the next domain's VM restores while this one runs
        # Hang/frozen detection + sysrq evidence for the runner's guards; its heartbeat
        # has an SSH connection of its own (never queued behind the test's commands).
        watchdog = guest_watchdog(
            vm, self.fleet, self.bus, klog, heartbeat_target=self._make_target(await self._prepare(), name, vm.ssh_port),
        )
        try:
            kernel = await guest_kernel_release(vm.target, name)
            yield Lease(
                vm_name=name, target=vm.target, klog=klog, vm=vm, guest_kernel=kernel,
                extra={"ssh_port": vm.ssh_port, "console_log": str(vm.console.log_path), "watchdog": watchdog,
                       "boot": vm.boot_kind},
            )
        finally:
            self._vms.pop(name, None)
            try:
                await watchdog.aclose()
            finally:
                if vm.boot_kind == "restored":
                    # A disposable copy of the golden guest: destroyed, not powered off from
                    # inside (~2 s under TCG, keeps nothing), and in the background: libvirt's
                    # destroy returns only once QEMU's process is reaped, which can take a
                    # second or two on a host whose init reaps slowly.
                    self._in_background(self._discard_vm(vm))
                else:
                    await vm.aclose(grace_s=self.cfg.fleet.stop_timeout_s)
                    self._discard_disk_files(vm)

    def _discard_disk_files(self, vm: GuestVm) -> None:
        """A destroyed disk VM's overlay and seed (which holds the guest host key); not a kept one's."""
        if self.cfg.fleet.template != "disk" or vm.keep or self._prepared is None:
            return
        from vexfs_cockpit.images.disk import vm_dir

        shutil.rmtree(vm_dir(self._prepared.image, vm.name), ignore_errors=True)  # type: ignore[arg-type]

    def use_config(self, cfg: CockpitConfig) -> None:
        # The environment names the VMs (vexfs-<env>-...): a run in another environment
        # must not boot VMs under the old one's name.
        self.cfg = cfg
        self.env = self.fleet.env = cfg.env

    async def aclose(self) -> None:
        """Destroy every VM this provider started (leases still open included)."""
        if self._closed:
            return
        self._closed = True
        if self._sampler is not None:
            await self._sampler.stop()
        self._drop_spare()
        await asyncio.gather(*self._background, return_exceptions=True)
        for vm in list(self._vms.values()):
            try:
                await vm.aclose(grace_s=0)
            except InfraError as err:
                log.warning("%s", err)
            else:
                self._discard_disk_files(vm)
        self._vms.clear()
        await self.fleet.aclose()


def cancel_on_sigterm(task: asyncio.Task[object]) -> None:
    """Treat SIGTERM like Ctrl-C: cancel ``task`` so the providers' cleanup runs.

    asyncio.run already turns SIGINT into a cancellation of the main task; SIGTERM
    (CI timeouts, `kill`) would otherwise end the process with its VMs running.
    """
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
