"""Host health on the bus for runs over several hosts (issue 18 item 3): the multi-host
provider publishes a HostStatus per host when the run starts, re-reads each host's libvirt
(getInfo, getFreeMemory) while it is on, and says when a host is lost. The hosts are
libvirt test-driver hosts described by node XML files of different sizes."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path

import libvirt

from tests.support.libvirt_hosts import node_xml
from vexfs_cockpit.config.models import CockpitConfig
from vexfs_cockpit.engine.bus import EventBus, Subscription
from vexfs_cockpit.engine.events import HostStatus, RunFinished, RunStarted
from vexfs_cockpit.engine.provider import Lease
from vexfs_cockpit.errors import HostUnavailable
from vexfs_cockpit.fleet.hosts import HOST_RESERVE_MB
from vexfs_cockpit.fleet.multihost import MultiHostProvider
from vexfs_cockpit.transport.local import LocalTarget

DOMAINS = ("kernel_module", "performance_metrics", "vector_operations")


class _Host:
    """A host's provider that leases nothing when its host is down."""

    def __init__(self, name: str, down: set[str]) -> None:
        self.name, self.down = name, down

    def lease(self, domain: str, index: int):
        @asynccontextmanager
        async def cm():
            if self.name in self.down:
                raise HostUnavailable(f"cannot reach libvirt at test://{self.name}: connection closed")
            yield Lease(vm_name=f"vexfs-ci-{domain}-{index}", target=LocalTarget(domain))

        return cm()

    async def aclose(self) -> None:
        return None


def _provider(tmp_path: Path, down: set[str], interval: float) -> tuple[MultiHostProvider, EventBus]:
    cfg = CockpitConfig.model_validate({
        "hosts": [{"name": "quiet", "uri": node_xml(tmp_path / "quiet.xml", 4, 8192), "labels": ["perf-quiet"],
                   "cpus": 2, "memory_mb": 4096},  # granted: less than the host has
                  {"name": "big", "uri": node_xml(tmp_path / "big.xml", 8, 16384)}],
        "placement": {"affinity": {"performance_metrics": ["perf-quiet"]}},
        "execution": {"parallel_test_execution": True, "max_parallel_tests": 3}})
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    prov = MultiHostProvider(cfg, bus, tmp_path, child_factory=lambda h: _Host(h.name, down),
                             health_interval_s=interval)
    return prov, bus


async def _next(sub: Subscription) -> object:
    return await asyncio.wait_for(anext(aiter(sub)), 10)


def _free_mb(uri: str) -> int:
    conn = libvirt.openReadOnly(uri)
    try:
        return conn.getFreeMemory() // (1024 * 1024)
    finally:
        conn.close()


def test_hosts_are_published_at_the_start_refreshed_and_shown_lost(tmp_path: Path) -> None:
    async def go() -> None:
        prov, bus = _provider(tmp_path, set(), interval=0.05)
        sub = bus.subscribe(RunStarted, HostStatus)
        plan = prov.place(list(DOMAINS))
        bus.publish(RunStarted(run_id="r", config_path="c", profile="p", env="ci", domains=DOMAINS))
        assert isinstance(await _next(sub), RunStarted)  # the hosts follow the run's start
        first = [await _next(sub), await _next(sub)]
        assert [(s.host, s.state, s.cpus, s.memory_mb, s.run_id) for s in first] == [
            ("quiet", "up", 2, 4096, "r"), ("big", "up", 8, 16384 - HOST_RESERVE_MB, "r")]  # the cockpit's room
        for s in first:
            assert s.domains == tuple(d for d, h in plan.where.items() if h == s.host)
            assert s.free_memory_mb == _free_mb(s.uri)
        assert "performance_metrics" in first[0].domains
        # A refresh reads each host again; a host whose libvirt no longer answers is lost.
        again = await _next(sub)
        assert isinstance(again, HostStatus) and again.state == "up"
        (tmp_path / "big.xml").unlink()
        for _ in range(20):  # a few refreshes at most (quiet's "up" come between)
            if (s := await _next(sub)).host == "big" and s.state == "lost":
                break
        assert isinstance(s, HostStatus) and s.state == "lost"
        assert "hosts[big]: cannot reach libvirt at test://" in s.reason and s.domains == first[1].domains
        bus.publish(RunFinished(run_id="r", status="passed", counts={}))
        assert prov._watch is None  # no reads once the run is over
        await prov.aclose()

    asyncio.run(go())


def test_a_host_lost_at_lease_time_is_published_lost_and_its_domain_moves(tmp_path: Path) -> None:
    async def go() -> None:
        prov, bus = _provider(tmp_path, {"big"}, interval=600)
        sub = bus.subscribe(HostStatus)
        plan = prov.place(list(DOMAINS))
        on_big = next(d for d, h in plan.where.items() if h == "big")
        async with prov.lease(on_big, 0) as lease:
            assert lease.extra["host"] == "quiet"
        events = sub.drain_nowait()
        lost = [e for e in events if e.state == "lost"]
        assert lost and all(e.host == "big" and "connection closed" in e.reason for e in lost)
        assert on_big not in lost[-1].domains
        quiet = [e for e in events if e.host == "quiet"]
        assert quiet and quiet[-1].state == "up" and on_big in quiet[-1].domains
        await prov.aclose()

    asyncio.run(go())


def test_no_run_no_placement_no_host_status(tmp_path: Path) -> None:
    """A RunStarted before any placement (a provider that placed nothing) publishes nothing."""
    async def go() -> None:
        prov, bus = _provider(tmp_path, set(), interval=0.05)
        sub = bus.subscribe(HostStatus)
        bus.publish(RunStarted(run_id="r", config_path="c", profile="p", env="ci", domains=DOMAINS))
        await asyncio.sleep(0)  # one loop turn: what call_soon would have published
        assert sub.drain_nowait() == [] and prov._watch is None
        await prov.aclose()

    asyncio.run(go())
