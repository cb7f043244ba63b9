"""1 Hz health samples of the VMs a provider runs, as ``VmSample`` events.

Per VM and tick: libvirt state, CPU % (delta of the domain's CPU time over the
wall-clock delta, divided by its vCPUs: 100 = every vCPU busy; under TCG that is
the QEMU process's time, emulation included), memory (``memoryStats()['rss']``
of the QEMU process, else the balloon's ``actual``, else ``info()``'s current
memory), block bytes read/written summed over the domain's disks (0 when it has
none, like the direct-kernel guest).

Network bytes are always 0 and mean "n/a": the guests use QEMU user-mode
networking (hostfwd), which has no host-side interface libvirt could count, and
a made-up number would be worse than none.

The timer is the loop's clock: each tick has a deadline one interval after the
previous one; a tick whose libvirt calls overrun is dropped, never queued.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass

import libvirt

from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.events import VmSample

log = logging.getLogger(__name__)

_STATES = {
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "running",
    libvirt.VIR_DOMAIN_SHUTOFF: "stopped",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "paused",
}


@dataclass(slots=True)
class _Prev:
    cpu_ns: int
    wall_ns: int
    uuid: str  # a reset makes a new domain: its CPU time restarts at 0


@dataclass(frozen=True, slots=True)
class RawSample:
    state: str
    cpu_pct: float
    mem_kb: int
    block_rd_bytes: int
    block_wr_bytes: int


def disk_targets(xml: str) -> list[str]:
    """Target dev names (vda, sda...) of the domain's disks."""
    try:
        root = ET.fromstring(xml)
    except ET.ParseError:
        return []
    return [t.get("dev", "") for t in root.findall("./devices/disk/target") if t.get("dev")]


class HealthSampler:
    """Samples ``vms()`` every ``interval`` seconds while started."""

    def __init__(
        self,
        conn: Callable[[], libvirt.virConnect],
        bus: EventBus,
        vms: Callable[[], list[str]],
        *,
        run_id: str = "",
        interval: float = 1.0,
        state_hint: Callable[[str], str | None] | None = None,
    ):
        self._conn = conn
        self._bus = bus
        self._vms = vms
        self.run_id = run_id
        self.interval = interval
        self._state_hint = state_hint  # e.g. the provider's "ready"/"hung" over libvirt's "running"
        self._prev: dict[str, _Prev] = {}
        self._disks: dict[str, tuple[str, list[str]]] = {}  # vm -> (uuid, targets)
        self._task: asyncio.Task[None] | None = None
        self._lock = threading.Lock()  # an overrun tick's thread may still be running

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="vm-health-sampler")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            try:
                await task
            except asyncio.CancelledError:
                pass

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time()
        while True:
            deadline += self.interval
            try:
                # asyncio.timeout, not wait_for: 3.11's wait_for can swallow a cancel
                async with asyncio.timeout_at(deadline):
                    await self.tick()
            except TimeoutError:
                log.debug("health sample overran its %.1fs tick: dropped", self.interval)
            except Exception:  # never let one bad sample end the sampling
                log.exception("health sample failed")
            now = loop.time()
            if now > deadline:  # fell behind (suspended laptop, slow libvirt): skip, don't burst
                deadline = now
            await asyncio.sleep(deadline - now)  # the timer itself, not a stand-in for work

    async def tick(self) -> list[VmSample]:
        """Take one sample of every VM and publish it; returns what was published."""
        names = list(self._vms())
        if not names:
            return []
        raw = await asyncio.to_thread(self._sample_all, names)
        out = []
        for name, s in raw.items():
            state = (self._state_hint(name) if self._state_hint else None) or s.state
            ev = VmSample(
                vm=name, state=state, cpu_pct=s.cpu_pct, mem_kb=s.mem_kb,
                block_rd_bytes=s.block_rd_bytes, block_wr_bytes=s.block_wr_bytes,
                net_rx_bytes=0, net_tx_bytes=0, run_id=self.run_id,
            )
            self._bus.publish(ev)
            out.append(ev)
        return out

    # -- worker thread ----------------------------------------------------------------------
    def _sample_all(self, names: list[str]) -> dict[str, RawSample]:
        with self._lock:
            return self._sample_locked(names)

    def _sample_locked(self, names: list[str]) -> dict[str, RawSample]:
        out: dict[str, RawSample] = {}
        conn = self._conn()
        for name in names:
            try:
                dom = conn.lookupByName(name)
                out[name] = self._sample(name, dom)
            except libvirt.libvirtError as err:
                if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                    self._prev.pop(name, None)
                    out[name] = RawSample("stopped", 0.0, 0, 0, 0)
                else:
                    log.debug("sampling %s: %s", name, err)
        return out

    def _sample(self, name: str, dom: libvirt.virDomain) -> RawSample:
        state_i, _max_kb, cur_kb, vcpus, cpu_ns = dom.info()
        wall_ns = time.monotonic_ns()
        uuid = dom.UUIDString()
        state = _STATES.get(state_i, "unknown")
        if state_i not in (libvirt.VIR_DOMAIN_RUNNING, libvirt.VIR_DOMAIN_BLOCKED, libvirt.VIR_DOMAIN_PAUSED,
                           libvirt.VIR_DOMAIN_SHUTDOWN):
            self._prev.pop(name, None)
            return RawSample(state, 0.0, 0, 0, 0)
        prev = self._prev.get(name)
        cpu_pct = 0.0
        if prev is not None and prev.uuid == uuid and wall_ns > prev.wall_ns and cpu_ns >= prev.cpu_ns:
            cpu_pct = 100.0 * (cpu_ns - prev.cpu_ns) / (wall_ns - prev.wall_ns) / max(1, vcpus)
        self._prev[name] = _Prev(cpu_ns, wall_ns, uuid)
        mem_kb = cur_kb
        try:
            stats = dom.memoryStats()
            mem_kb = int(stats.get("rss") or stats.get("actual") or cur_kb)
        except libvirt.libvirtError:
            pass
        rd = wr = 0
        for dev in self._disk_targets(name, dom, uuid):
            try:
                _rreq, rbytes, _wreq, wbytes, _err = dom.blockStats(dev)
                rd += rbytes
                wr += wbytes
            except libvirt.libvirtError:
                pass
        return RawSample(state, round(cpu_pct, 1), int(mem_kb), rd, wr)

    def _disk_targets(self, name: str, dom: libvirt.virDomain, uuid: str) -> list[str]:
        cached = self._disks.get(name)
        if cached is None or cached[0] != uuid:
            cached = (uuid, disk_targets(dom.XMLDesc(0)))
            self._disks[name] = cached
        return cached[1]
