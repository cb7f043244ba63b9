"""VMs on several libvirt hosts (``hosts:``): one ``LibvirtProvider`` per host, each
domain leased from the host placement put it on (fleet/placement.py).

The session places the selected domains before anything starts (``place``, a plan
that does not fit is one line); a lease then goes to that host's provider. A host
reached over SSH (``qemu+ssh://user@host/system``, or ``ssh_jump``) gets its guests'
SSH tunnelled through one SSH connection to it (transport/jump.py): a guest's port
is only ever forwarded on its own host's loopback.

What a host needs: libvirtd, QEMU, and the guest image's files (kernel, initramfs)
at the same paths as here, i.e. this machine or one sharing the cockpit's data
directory; the cockpit does not copy images to other hosts. Guests on an SSH host
boot cold (fleet.restore is off there: a golden snapshot is a file on the host that
saved it).

A host whose libvirt does not answer when a domain's VM is leased is lost for the
session: that domain moves to a host left that can take it (an InfraProblem says so),
or is an infrastructure error; the domains on other hosts are not touched. A host lost
while a domain runs there (its guest stops answering and the host's libvirt is gone):
the runner leases that domain anew (``Lease.extra["host_lost"]`` tells it), which moves
it the same way; its finished tests keep their stored results.

While a run is on, each host's health (libvirt getInfo, getFreeMemory) goes on the bus
as a HostStatus: at the start (what placement read), every ``health_interval_s`` (a
fresh read-only connection per host, in a thread) and when a host is lost.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from vexfs_cockpit.config.models import CockpitConfig, HostSettings
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.events import Event, HostStatus, InfraProblem, RunFinished, RunStarted
from vexfs_cockpit.engine.provider import Lease, TargetProvider
from vexfs_cockpit.errors import HostUnavailable, InfraError
from vexfs_cockpit.fleet.hosts import HostHealth, read_health, read_host
from vexfs_cockpit.fleet.placement import HostRoom, PlacementError, Plan, VmShape, move, place
from vexfs_cockpit.fleet.provider import LibvirtProvider
from vexfs_cockpit.transport.jump import JumpHost, jump_for


class HostBus:
    """The session's bus as one host's provider sees it: a RunStarted names only the
    domains placed on that host (its provider restores VMs ahead for those alone)."""

    def __init__(self, bus: EventBus, here: Callable[[], set[str]]) -> None:
        self._bus = bus
        self._here = here

    def listen(self, fn: Callable[[Event], None]) -> None:
        def narrowed(ev: Event) -> None:
            if isinstance(ev, RunStarted):
                here = self._here()
                ev = dataclasses.replace(ev, domains=tuple(d for d in ev.domains if d in here))
            fn(ev)

        self._bus.listen(narrowed)

    def __getattr__(self, name: str) -> Any:  # publish, publish_threadsafe, subscribe, ...
        return getattr(self._bus, name)


class MultiHostProvider:
    """A TargetProvider over ``cfg.hosts`` (implements engine.provider.TargetProvider
    and PlansGuestKernel)."""

    def __init__(self, cfg: CockpitConfig, bus: EventBus, artifacts_dir: Path,
                 child_factory: Callable[[HostSettings], TargetProvider] | None = None,
                 health_interval_s: float = 10.0) -> None:
        self.cfg = cfg
        self.bus = bus
        self.artifacts_dir = artifacts_dir
        self.plan: Plan | None = None
        self._where: dict[str, str] = {}  # domain -> host name
        self._children: dict[str, Any] = {}  # host name -> its provider
        self._jumps: list[JumpHost] = []
        self._make_child = child_factory or self._libvirt_child
        self.lost: dict[str, str] = {}  # host name -> why it is lost (this session)
        self.health: dict[str, HostHealth] = {}  # host name -> its last read
        self._rooms: dict[str, HostRoom] = {}  # host name -> what the cockpit may use there
        self.health_interval_s = health_interval_s
        self._run_id = ""
        self._watch: asyncio.Task[None] | None = None  # re-reads the hosts while a run is on
        bus.listen(self._on_event)

    def _host(self, name: str) -> HostSettings:
        return next(h for h in self.cfg.hosts if h.name == name)

    def place(self, domains: list[str]) -> Plan:
        """Measure the hosts and place ``domains`` (blocking; before anything starts).
        PlacementError / HostUnavailable: one line each."""
        self.health = {h.name: read_health(h) for h in self.cfg.hosts}
        rooms = [read_host(h, self.health[h.name]) for h in self.cfg.hosts]
        self._rooms = {room.name: room for room in rooms}
        r, e = self.cfg.resources, self.cfg.execution
        self.plan = place(domains, rooms, VmShape(r.cpus, r.memory_mb, r.disk_gb), vms_per_domain=r.vms_per_domain,
                          parallel=e.max_parallel_tests if e.parallel_test_execution else 1,
                          affinity=self.cfg.placement.affinity)
        self._where = dict(self.plan.where)
        return self.plan

    def placement_line(self) -> str:
        if self.plan is None:
            return ""
        return "placement: " + "; ".join(
            f"{ld.host.name} ({ld.host.uri}): {', '.join(ld.domains)}" for ld in self.plan.loads if ld.domains)

    # -- host health on the bus -----------------------------------------------------------
    def _on_event(self, ev: Event) -> None:
        if isinstance(ev, RunStarted) and self.plan is not None:
            self._run_id = ev.run_id
            # After RunStarted reaches the subscribers (listeners run before them).
            asyncio.get_running_loop().call_soon(self._publish_all)
            if self._watch is None or self._watch.done():
                self._watch = asyncio.get_running_loop().create_task(self._watch_hosts(), name="host-health")
        elif isinstance(ev, RunFinished) and self._watch is not None:
            self._watch.cancel()
            self._watch = None

    def _status(self, host: str, reason: str = "") -> HostStatus:
        h, health, room = self._host(host), self.health.get(host), self._rooms.get(host)
        lost = reason or self.lost.get(host, "")
        # The room the cockpit may use there (the config's grant, else libvirt's less
        # what is kept for the host), beside the host's own free memory.
        return HostStatus(host=host, uri=h.uri, state="lost" if lost else "up",
                          cpus=room.cpus if room else 0, memory_mb=room.memory_mb if room else 0,
                          free_memory_mb=health.free_memory_mb if health else None,
                          domains=tuple(d for d, where in self._where.items() if where == host),
                          reason=lost, run_id=self._run_id)

    def _publish_all(self) -> None:
        for h in self.cfg.hosts:
            self.bus.publish(self._status(h.name))

    async def _watch_hosts(self) -> None:
        """Every ``health_interval_s``: each host not lost re-read side by side; one that
        does not answer is shown lost with the reason (its leases decide what moves)."""
        while True:
            await asyncio.sleep(self.health_interval_s)  # the refresh interval, not a wait for a condition
            names = [h.name for h in self.cfg.hosts if h.name not in self.lost]
            reads = await asyncio.gather(*(asyncio.to_thread(read_health, self._host(n)) for n in names),
                                         return_exceptions=True)
            for name, got in zip(names, reads):
                if isinstance(got, HostHealth):
                    self.health[name] = got
                    self.bus.publish(self._status(name))
                elif isinstance(got, HostUnavailable):
                    self.bus.publish(self._status(name, reason=str(got)))
                elif isinstance(got, BaseException):
                    raise got

    def _host_cfg(self, h: HostSettings, remote: bool) -> CockpitConfig:
        fleet = {"libvirt_uri": h.uri, **({"restore": "off"} if remote else {})}
        return self.cfg.model_copy(update={"fleet": self.cfg.fleet.model_copy(update=fleet)})

    def _child(self, host: str) -> Any:
        child = self._children.get(host)
        if child is None:
            child = self._children[host] = self._make_child(self._host(host))
        return child

    def _libvirt_child(self, h: HostSettings) -> LibvirtProvider:
        spec = jump_for(h.uri, h.ssh_jump, where=f"hosts[{h.name}]")
        jump = None
        if spec is not None:
            jump = JumpHost(spec, client_keys=h.ssh_key.expanduser() if h.ssh_key else None,
                            known_hosts=h.ssh_known_hosts.expanduser() if h.ssh_known_hosts else None)
            self._jumps.append(jump)
        bus = HostBus(self.bus, lambda: {d for d, where in self._where.items() if where == h.name})
        return LibvirtProvider(self._host_cfg(h, spec is not None), bus, self.artifacts_dir,  # type: ignore[arg-type]
                               uri=h.uri, jump=jump)

    def host_of(self, domain: str) -> str:
        try:
            return self._where[domain]
        except KeyError:
            raise InfraError(f"{domain}: not placed on any host (the session places the selected domains "
                             "before the run; see `vexfs-cockpit plan`)") from None

    def _move_off(self, domain: str, host: str, err: HostUnavailable) -> str:
        """``host`` did not answer: it is lost for this session; ``domain`` goes to a host
        left that can take it (the others stay where they are), said on the bus."""
        if host not in self.lost:
            self.lost[host] = str(err)
            self.bus.publish(self._status(host))
        if all(h.name in self.lost for h in self.cfg.hosts):
            raise HostUnavailable(f"every host is lost: {'; '.join(f'{h}: {why}' for h, why in self.lost.items())}")
        assert self.plan is not None
        try:
            to = move(self.plan, domain, set(self.lost), self.cfg.placement.affinity)
        except PlacementError as perr:
            raise InfraError(f"host {host} lost ({err}); {perr}") from None
        self._where[domain] = to
        self.bus.publish(InfraProblem(message=f"host {host} lost ({err}): {domain} moved to {to}"))
        for h in (host, to):  # one domain fewer, one more
            self.bus.publish(self._status(h))
        return to

    @asynccontextmanager
    async def lease(self, domain: str, index: int) -> AsyncIterator[Lease]:
        host = self.host_of(domain)
        while True:  # a host that does not answer: the domain moves to one that does
            child = self._child(host)
            if not self._alive(child):
                host = self._move_off(domain, host, HostUnavailable(f"lost the libvirt connection to {self._host(host).uri}"))
                continue
            cm = child.lease(domain, index)
            try:
                lease = await cm.__aenter__()
            except HostUnavailable as err:
                host = self._move_off(domain, host, err)
                continue
            break
        exc: tuple[Any, Any, Any] = (None, None, None)
        try:
            lease.extra["host"] = host
            # The runner asks this when its guest stops answering: a host gone (not a guest
            # crashed) sends the domain's unfinished tests to a VM leased anew, placed by
            # lease() above on a host left.
            lease.extra["host_lost"] = lambda: "" if self._alive(child) else (
                f"host {host} lost (lost the libvirt connection to {self._host(host).uri})")
            # ... and does not wait for it to stop answering: the moment the host's libvirt
            # connection goes, the test on its VM is stopped and the domain moves on.
            wait_lost = getattr(getattr(child, "fleet", None), "wait_lost", None)
            if wait_lost is not None:
                lease.extra["host_gone"] = wait_lost
            yield lease
        except BaseException as e:
            exc = (type(e), e, e.__traceback__)
            raise
        finally:
            try:
                await cm.__aexit__(*exc)
            except InfraError as err:
                if self._alive(child):
                    raise
                # The host went away under the VM: it cannot be destroyed from here. Say
                # so; the run goes on with the hosts left.
                self.lost.setdefault(host, str(err))
                self.bus.publish(InfraProblem(message=f"host {host} lost: VM {lease.vm_name} is left there ({err})"))
                self.bus.publish(self._status(host))

    @staticmethod
    def _alive(child: Any) -> bool:
        fleet = getattr(child, "fleet", None)
        return fleet is None or bool(fleet.is_alive())

    async def planned_guest_kernel(self) -> str:
        """Every host boots the same image: the first placed host's provider says which."""
        hosts = [ld.host.name for ld in self.plan.loads if ld.domains] if self.plan else []
        return await self._child(hosts[0]).planned_guest_kernel() if hosts else ""

    def use_config(self, cfg: CockpitConfig) -> None:
        self.cfg = cfg
        for name, child in self._children.items():
            h = self._host(name)
            child.use_config(self._host_cfg(h, jump_for(h.uri, h.ssh_jump, where=f"hosts[{h.name}]") is not None))

    async def aclose(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
            self._watch = None
        try:
            await asyncio.gather(*(c.aclose() for c in self._children.values()))
        finally:
            for jump in self._jumps:
                await jump.aclose()


__all__ = ["HostBus", "MultiHostProvider"]
