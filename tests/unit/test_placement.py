"""Placement over several libvirt hosts (issue 18 items 1-2): the pure function, host
sizes read over libvirt (the test driver's node XML files of different sizes and the
real local qemu:///system), and `vexfs-cockpit plan`."""

from __future__ import annotations

import asyncio
import io
import subprocess
from pathlib import Path

import libvirt
import pytest
from pydantic import ValidationError

from tests.support.libvirt_hosts import node_xml
from vexfs_cockpit.config.models import CockpitConfig, HostSettings
from vexfs_cockpit.errors import ConfigError, HostUnavailable, InfraError
from vexfs_cockpit.fleet.hosts import HOST_RESERVE_MB, read_host, read_hosts
from vexfs_cockpit.fleet.placement import HostRoom, PlacementError, VmShape, place

ROOT = Path(__file__).resolve().parents[2]
SHAPE = VmShape(cpus=1, memory_mb=512, disk_gb=1.0)
DOMAINS = ["kernel_module", "filesystem_operations", "vector_operations", "performance_metrics",
           "safety_validation", "integration_testing"]


# -- the pure function ------------------------------------------------------------------
def test_affinity_and_capacity_decide_and_the_plan_is_deterministic() -> None:
    hosts = [HostRoom("big", "u1", 16, 32768, labels=frozenset({"kvm"})),
             HostRoom("quiet", "u2", 2, 2048, labels=frozenset({"perf-quiet"})),
             HostRoom("mid", "u3", 4, 4096)]
    aff = {"performance_metrics": ["perf-quiet"]}
    plan = place(DOMAINS, hosts, SHAPE, parallel=3, affinity=aff)
    assert plan.where["performance_metrics"] == "quiet"
    loads = {ld.host.name: ld for ld in plan.loads}
    for ld in loads.values():  # every host's peak fits it
        cpus, mem, _ = ld.usage(SHAPE)
        assert cpus <= ld.host.cpus and mem <= ld.host.memory_mb
        assert ld.peak_vms == min(len(ld.domains), 3)
    assert sorted(d for ld in plan.loads for d in ld.domains) == sorted(DOMAINS)
    again = place(list(DOMAINS), list(hosts), SHAPE, parallel=3, affinity=dict(aff))
    assert again.where == plan.where


def test_a_domain_goes_where_there_is_room_not_only_where_labels_allow() -> None:
    """perf-quiet has room for one VM: the second domain that needs it does not fit, and
    the message names both domains' hosts and the numbers."""
    hosts = [HostRoom("quiet", "u", 1, 1024, labels=frozenset({"perf-quiet"})), HostRoom("big", "u", 64, 65536)]
    aff = {"performance_metrics": ["perf-quiet"], "vector_operations": ["perf-quiet"]}
    with pytest.raises(PlacementError) as err:
        place(DOMAINS, hosts, SHAPE, parallel=2, affinity=aff)
    msg = str(err.value)
    assert "\n" not in msg
    assert ("performance_metrics (1 VM(s) of 1 CPU, 512 MB, 1 GB) does not fit: quiet (1 CPUs, 1024 MB): "
            "2 VMs at once with vector_operations there need 2 CPUs > 1" in msg)
    # one at a time, both fit on the one CPU
    plan = place(DOMAINS, hosts, SHAPE, parallel=1, affinity=aff)
    assert plan.where["performance_metrics"] == plan.where["vector_operations"] == "quiet"


def test_missing_label_and_per_host_caps_are_named() -> None:
    hosts = [HostRoom("a", "u", 8, 8192, max_vms=1), HostRoom("b", "u", 8, 8192, disk_gb=1.5, max_vms=1)]
    with pytest.raises(PlacementError, match=r"performance_metrics needs a host labelled perf-quiet \(placement.affinity\): "
                                             r"none is \(a \[-\]; b \[-\]\)"):
        place(DOMAINS[:4], hosts, SHAPE, parallel=4, affinity={"performance_metrics": ["perf-quiet"]})
    with pytest.raises(PlacementError, match=r"2 VMs at once with kernel_module there need 2 VMs > max_vms 1"):
        place(DOMAINS[:3], hosts, SHAPE, parallel=3)
    with pytest.raises(PlacementError, match=r"b \(8 CPUs, 8192 MB, 1.5 GB disk, max 1 VMs\): 2 VMs at once need "
                                             r"2 GB disk > 1.5 GB, 2 VMs > max_vms 1$"):
        place(["kernel_module"], hosts[1:], SHAPE, vms_per_domain=2)


def test_config_hosts_section_validates() -> None:
    cfg = CockpitConfig.model_validate({"hosts": [{"name": "perf1", "uri": "qemu+ssh://root@perf1:2222/system",
                                                   "labels": ["perf-quiet"], "ssh_jump": "root@perf1:2222"}],
                                        "placement": {"affinity": {"performance_metrics": ["perf-quiet"]}}})
    assert cfg.hosts[0].labels == ["perf-quiet"]
    for bad in ({"name": "a", "uri": "http://x"}, {"name": "a b", "uri": "qemu:///system"},
                {"name": "a", "uri": "qemu:///system", "labels": ["no spaces"]},
                {"name": "a", "uri": "qemu:///system", "ssh_jump": "root@x; rm -rf /"},
                {"name": "a", "uri": "qemu:///system", "cpus": 0}):
        with pytest.raises(ValidationError):
            CockpitConfig.model_validate({"hosts": [bad]})
    with pytest.raises(ValidationError, match="host names used once each"):
        CockpitConfig.model_validate({"hosts": [{"name": "a", "uri": "qemu:///system"}] * 2})
    from vexfs_cockpit.config.load import load_config

    for hosts, line in (
        ([{"name": "a", "uri": "qemu:///system"}] * 2, "hosts: expected host names used once each ('a' twice)"),
        ([{"name": "a", "uri": "qemu:///system", "labels": ["x y"]}],
         "hosts.0.labels: expected labels of letters, digits, _ . - ('x y' is not)"),
    ):
        with pytest.raises(ConfigError) as err:
            load_config(None, "ci", {"hosts": hosts})
        assert line in str(err.value) and "\n" not in str(err.value)


# -- host sizes over libvirt connections ------------------------------------------------
def test_host_sizes_read_over_several_libvirt_connections(tmp_path: Path) -> None:
    """Three test-driver hosts of different sizes and the real local qemu:///system, read
    side by side; the config may grant less than a host has, never more."""
    cfg = CockpitConfig.model_validate({"hosts": [
        {"name": "huge", "uri": node_xml(tmp_path / "huge.xml", 64, 262144), "labels": ["kvm"]},
        {"name": "quiet", "uri": node_xml(tmp_path / "quiet.xml", 4, 8192), "labels": ["perf-quiet"]},
        {"name": "tiny", "uri": node_xml(tmp_path / "tiny.xml", 1, 1024), "cpus": 1, "memory_mb": 256},
        {"name": "here", "uri": "qemu:///system"},
    ]})
    rooms = asyncio.run(read_hosts(cfg, tmp_path))
    assert [(r.name, r.cpus, r.memory_mb) for r in rooms[:3]] == [
        ("huge", 64, 262144 - HOST_RESERVE_MB), ("quiet", 4, 8192 - HOST_RESERVE_MB), ("tiny", 1, 256)]
    assert rooms[2].source == "config" and rooms[0].source == "libvirt: 64 CPUs, 262144 MB"
    conn = libvirt.openReadOnly("qemu:///system")
    _, mem, cpus, *_ = conn.getInfo()
    conn.close()
    assert (rooms[3].cpus, rooms[3].memory_mb) == (cpus, mem - HOST_RESERVE_MB)
    plan = place(DOMAINS, rooms, SHAPE, parallel=4, affinity={"performance_metrics": ["perf-quiet"]})
    assert plan.where["performance_metrics"] == "quiet"
    assert "tiny" not in plan.where.values()  # 256 MB: no 512 MB VM fits there
    with pytest.raises(ConfigError, match=r"hosts\[quiet\].cpus: 8 CPUs is more than the 4 CPUs libvirt reports"):
        read_host(HostSettings(name="quiet", uri=f"test://{tmp_path / 'quiet.xml'}", cpus=8))


def test_unreachable_host_is_one_line(tmp_path: Path) -> None:
    for uri in (f"test://{tmp_path / 'missing.xml'}", "qemu+unix:///system?socket=/nonexistent/libvirt-sock"):
        with pytest.raises(HostUnavailable) as err:
            read_host(HostSettings(name="gone", uri=uri))
        assert str(err.value).startswith(f"hosts[gone]: cannot reach libvirt at {uri}: ") and "\n" not in str(err.value)


# -- vexfs-cockpit plan ------------------------------------------------------------------
def _plan(tmp_path: Path, *sets: str) -> subprocess.CompletedProcess[str]:
    big, small = node_xml(tmp_path / "big.xml", 16, 32768), node_xml(tmp_path / "small.xml", 2, 2048)
    hosts = (f"hosts=[{{name: big, uri: '{big}', labels: [kvm]}}, "
             f"{{name: quiet, uri: '{small}', labels: [perf-quiet]}}]")
    argv = [str(ROOT / ".venv/bin/vexfs-cockpit"), "plan", "--set", hosts,
            "--set", "placement.affinity={performance_metrics: [perf-quiet]}",
            "--set", "execution.parallel_test_execution=true", "--set", "execution.max_parallel_tests=2"]
    for s in sets:
        argv += ["--set", s]
    return subprocess.run(argv, capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)


def test_plan_prints_the_placement_and_starts_nothing(tmp_path: Path) -> None:
    proc = _plan(tmp_path)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].startswith("plan: 6 domain(s) on 2 of 2 host(s); 1 VM(s) per domain of 1 CPU")
    quiet = next(ln for ln in lines if ln.startswith("quiet [perf-quiet]"))
    assert quiet.rstrip().endswith("performance_metrics") and "2 CPUs, 1536 MB (libvirt: 2 CPUs, 2048 MB)" in quiet


def test_plan_opens_read_only_connections_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nothing can be started over a read-only connection; a writable one is never opened."""
    import argparse

    from vexfs_cockpit.commands.plan import cmd_plan

    def refuse(*_a: object, **_k: object) -> None:
        raise AssertionError("plan opened a writable libvirt connection")

    monkeypatch.setattr(libvirt, "open", refuse)
    monkeypatch.setattr(libvirt, "openAuth", refuse)
    opened: list[str] = []
    real = libvirt.openReadOnly
    monkeypatch.setattr(libvirt, "openReadOnly", lambda uri: (opened.append(uri), real(uri))[1])
    args = argparse.Namespace(config=None, env=None, db=None, domains=None, set=[
        f"hosts=[{{name: a, uri: '{node_xml(tmp_path / 'a.xml', 8, 8192)}'}}, {{name: here, uri: 'qemu:///system'}}]"])
    out = io.StringIO()
    assert cmd_plan(args, out) == 0
    assert sorted(opened) == sorted([f"test://{tmp_path / 'a.xml'}", "qemu:///system"])
    assert "plan: 6 domain(s)" in out.getvalue()


def test_plan_that_cannot_fit_fails_before_anything_starts(tmp_path: Path) -> None:
    proc = _plan(tmp_path, "resources.memory_mb=4096", "resources.max_total_memory_gb=64")
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.splitlines() == [(
        "vexfs-cockpit: plan does not fit: performance_metrics (1 VM(s) of 1 CPU, 4096 MB, 1 GB) does not fit: "
        "quiet (2 CPUs, 1536 MB): 1 VMs at once need 4096 MB > 1536 MB")]


# -- leasing on the placed host ----------------------------------------------------------
def test_guests_are_tunnelled_through_ssh_hosts_only() -> None:
    from vexfs_cockpit.transport.jump import JumpSpec, jump_for

    assert jump_for("qemu+ssh://builder@perf1:2222/system?keyfile=/k", "", where="hosts[p]") == JumpSpec("builder", "perf1", 2222)
    assert jump_for("qemu+ssh://perf1/system", "", where="hosts[p]") == JumpSpec("root", "perf1", 22)
    assert jump_for("qemu:///system", "", where="hosts[p]") is None
    assert jump_for("qemu+tls://perf1/system", "ops@bastion:2200", where="hosts[p]") == JumpSpec("ops", "bastion", 2200)
    with pytest.raises(ConfigError, match=r"hosts\[p\].ssh_jump: expected user@host\[:port\], found 'root@h:99999'"):
        jump_for("qemu:///system", "root@h:99999", where="hosts[p]")


def test_each_host_provider_sees_only_its_domains_in_the_run() -> None:
    """A host's provider restores VMs ahead for the run's domains: only those placed there."""
    from vexfs_cockpit.engine.bus import EventBus
    from vexfs_cockpit.engine.events import RunStarted
    from vexfs_cockpit.fleet.multihost import HostBus

    bus = EventBus()
    seen: list[tuple[str, ...]] = []
    HostBus(bus, lambda: {"kernel_module"}).listen(lambda ev: seen.append(ev.domains))
    bus.publish(RunStarted(run_id="r", config_path="", profile="p", env="ci", domains=("kernel_module", "vector_operations")))
    assert seen == [("kernel_module",)]


def test_run_with_hosts_that_cannot_fit_stops_before_any_vm(tmp_path: Path) -> None:
    tiny = node_xml(tmp_path / "tiny.xml", 1, 768)
    proc = subprocess.run(
        [str(ROOT / ".venv/bin/vexfs-cockpit"), "run", "--batch", "--env", "ci", "--db", str(tmp_path / "h.db"),
         "--domains", "kernel_module", "--set", f"hosts=[{{name: tiny, uri: '{tiny}'}}]"],
        capture_output=True, text=True, timeout=120, cwd=ROOT, check=False)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stderr.splitlines() == [(
        "vexfs-cockpit: plan does not fit: kernel_module (1 VM(s) of 1 CPU, 512 MB, 1 GB) does not fit: "
        "tiny (1 CPUs, 256 MB): 1 VMs at once need 512 MB > 256 MB")]
    assert "booting" not in proc.stdout


class _FakeHost:
    """A host provider whose leases fail as an unreachable libvirt does, or hand out a
    lease on the local machine."""

    def __init__(self, name: str, down: set[str], leased: list[tuple[str, str]]) -> None:
        self.name, self.down, self.leased = name, down, leased

    def lease(self, domain: str, index: int):
        from contextlib import asynccontextmanager

        from vexfs_cockpit.engine.provider import Lease
        from vexfs_cockpit.transport.local import LocalTarget

        @asynccontextmanager
        async def cm():
            if self.name in self.down:
                raise HostUnavailable(f"cannot reach libvirt at test://{self.name}: connection closed")
            self.leased.append((domain, self.name))
            yield Lease(vm_name=f"vm-{domain}", target=LocalTarget(domain))

        return cm()

    async def aclose(self) -> None:
        return None


def _multi(tmp_path: Path, down: set[str], **extra: object):
    from vexfs_cockpit.engine.bus import EventBus
    from vexfs_cockpit.fleet.multihost import MultiHostProvider

    cfg = CockpitConfig.model_validate({
        "hosts": [{"name": "a", "uri": node_xml(tmp_path / "a.xml", 4, 4096), "labels": ["perf-quiet"]},
                  {"name": "b", "uri": node_xml(tmp_path / "b.xml", 4, 4096)},
                  {"name": "c", "uri": node_xml(tmp_path / "c.xml", 1, 1024)}],
        "placement": {"affinity": {"performance_metrics": ["perf-quiet"]}},
        "execution": {"parallel_test_execution": True, "max_parallel_tests": 3}, **extra})
    bus = EventBus()
    leased: list[tuple[str, str]] = []
    return MultiHostProvider(cfg, bus, tmp_path, child_factory=lambda h: _FakeHost(h.name, down, leased)), bus, leased


def test_a_lost_host_moves_its_domain_to_a_host_left(tmp_path: Path) -> None:
    async def go() -> None:
        from vexfs_cockpit.engine.events import InfraProblem

        prov, bus, leased = _multi(tmp_path, down={"b"})
        bus.bind_loop(asyncio.get_running_loop())
        sub = bus.subscribe(InfraProblem)
        plan = prov.place(["kernel_module", "filesystem_operations", "performance_metrics"])
        assert plan.where["performance_metrics"] == "a" and "b" in plan.where.values()
        on_b = next(d for d, h in plan.where.items() if h == "b")
        async with prov.lease(on_b, 0) as lease:
            assert lease.extra["host"] != "b"
        assert prov.lost.keys() == {"b"} and (on_b, lease.extra["host"]) in leased
        (problem,) = sub.drain_nowait()
        assert problem.message == (f"host b lost (cannot reach libvirt at test://b: connection closed): "
                                   f"{on_b} moved to {lease.extra['host']}")
        async with prov.lease("performance_metrics", 0) as lease:  # a's domains never moved
            assert lease.extra["host"] == "a"

    asyncio.run(go())


def test_a_domain_with_nowhere_left_is_an_infrastructure_error(tmp_path: Path) -> None:
    async def go() -> None:
        prov, bus, _ = _multi(tmp_path, down={"a"})
        bus.bind_loop(asyncio.get_running_loop())
        prov.place(["performance_metrics", "kernel_module"])
        with pytest.raises(InfraError) as err:  # only host a has the label
            async with prov.lease("performance_metrics", 0):
                pass
        assert not isinstance(err.value, HostUnavailable)  # the other hosts still lease
        assert str(err.value) == ("host a lost (cannot reach libvirt at test://a: connection closed); "
                                  "performance_metrics: no host left to move it to (no other host labelled perf-quiet)")
        prov2, bus2, _ = _multi(tmp_path, down={"a", "b", "c"})
        bus2.bind_loop(asyncio.get_running_loop())
        prov2.place(["kernel_module"])
        with pytest.raises(HostUnavailable, match="every host is lost"):
            async with prov2.lease("kernel_module", 0):
                pass

    asyncio.run(go())
