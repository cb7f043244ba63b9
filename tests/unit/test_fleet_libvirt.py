"""FleetManager lifecycle against libvirt's test driver (no VM, milliseconds per test).

Each test gets its own ``test:///<tmp>/node.xml`` connection: ``test:///default``
shares its state across every connection in the process.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import libvirt
import pytest

from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.events import VmStateChanged
from vexfs_cockpit.errors import InfraError
from vexfs_cockpit.fleet.libvirt import FleetManager, NameTaken, Owner, domain_name_of, inject_owner, vm_name


def _dom(name: str, owner: Owner | None = None) -> str:
    meta = f"<metadata>{owner.to_xml()}</metadata>" if owner else ""
    return (
        f"<domain type='test'><name>{name}</name><memory>65536</memory>"
        f"<os><type>hvm</type></os>{meta}</domain>"
    )


def _dead_owner(**kw: object) -> Owner:
    """An owner whose process has exited (its pid is not running any more)."""
    proc = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    me = Owner.current()
    return Owner(int(proc.stdout), 12345, me.host, me.boot_id, **kw)  # type: ignore[arg-type]


@pytest.fixture
def node(tmp_path: Path):
    """Write a node.xml with the given domains; returns its test:// URI."""

    def make(*domains: str) -> str:
        path = tmp_path / "node.xml"
        path.write_text("<node>\n" + "\n".join(domains) + "\n</node>\n")
        return f"test://{path}"

    return make


async def _next_state(sub, vm: str, state: str, timeout: float = 5.0) -> VmStateChanged:
    async def find() -> VmStateChanged:
        async for ev in sub:
            if isinstance(ev, VmStateChanged) and ev.vm == vm and ev.state == state:
                return ev
        raise AssertionError("bus closed")

    return await asyncio.wait_for(find(), timeout)


def _raw_names(uri_conn: libvirt.virConnect) -> set[str]:
    return {d.name() for d in uri_conn.listAllDomains(0)}


def test_vm_name_namespacing() -> None:
    assert vm_name("ci", "kernel_module", 0) == "vexfs-ci-kernel_module-0"
    with pytest.raises(InfraError, match="bad VM name"):
        vm_name("ci", "bad name", 0)


def test_inject_owner_replaces_and_keeps_namespaces() -> None:
    xml = (
        "<domain type='kvm' xmlns:qemu='http://libvirt.org/schemas/domain/qemu/1.0'>"
        "<name>vexfs-x-y-0</name><qemu:commandline><qemu:arg value='-x'/></qemu:commandline></domain>"
    )
    a = inject_owner(xml, Owner.current(run_id="r1", ssh_port=2222))
    b = inject_owner(a, Owner.current(run_id="r2", keep=True))
    assert "qemu:commandline" in b and b.count("<metadata>") == 1 and b.count("pid=") == 1
    assert 'run_id="r2"' in b and 'keep="1"' in b and "r1" not in b
    assert domain_name_of(b) == "vexfs-x-y-0"
    owner = Owner.from_xml(b[b.index("<vexfscockpit:owner"): b.index("</metadata>")])
    assert owner is not None and owner.keep and owner.alive() and not owner.is_stale()


def test_owner_liveness() -> None:
    assert Owner.current().alive()
    dead = _dead_owner()
    assert not dead.alive() and dead.is_stale()
    assert not _dead_owner(keep=True).is_stale()  # dev VMs are never reaped
    me = Owner.current()
    other_host = Owner(me.pid + 1, 1, "some-other-host", me.boot_id)
    assert other_host.alive()  # we cannot judge another host's processes
    recycled = Owner(me.pid, me.pid_start + 1, me.host, me.boot_id)
    assert not recycled.alive()  # same pid, different process


async def test_unreachable_libvirt_is_one_line_infra_error() -> None:
    uri = "qemu+unix:///system?socket=/nonexistent/libvirt-sock"
    fm = FleetManager(uri, EventBus(), "test")
    with pytest.raises(InfraError) as ei:
        await fm.connect()
    msg = str(ei.value)
    assert "\n" not in msg and uri in msg and "libvirtd -d" in msg
    assert ei.value.exit_code == 3


async def test_start_list_stop_never_touches_foreign_domains(node) -> None:
    uri = node(_dom("other-vm"), _dom("vexfsish-not-ours"))
    bus = EventBus()
    async with FleetManager(uri, bus, "test", stop_timeout_s=2) as fm:
        name = vm_name("test", "kernel_module", 0)
        assert await fm.start(_dom(name), ssh_port=40000) == name
        vms = await fm.list_vms()
        assert [v.name for v in vms] == [name]  # other-vm and vexfsish-* are invisible
        assert vms[0].state == "running" and not vms[0].persistent
        assert vms[0].owner is not None and vms[0].owner.pid == os.getpid() and vms[0].owner.ssh_port == 40000
        with pytest.raises(NameTaken, match="already exists"):  # the caller picks another name
            await fm.start(_dom(name))
        assert await fm.state(name) == "running"  # and the VM holding it is left alone
        with pytest.raises(InfraError, match="refusing to touch VM 'other-vm'"):
            await fm.start(_dom("other-vm"))
        with pytest.raises(InfraError, match="refusing"):
            await fm.stop("other-vm")
        await fm.stop(name)
        assert await fm.state(name) == "undefined"
        assert await fm.list_vms() == []
        assert _raw_names(fm.conn) == {"other-vm", "vexfsish-not-ours"}
        assert fm.conn.lookupByName("other-vm").isActive()
        await fm.stop(name)  # idempotent


async def test_persistent_define_start_stop_undefine(node) -> None:
    uri = node()
    async with FleetManager(uri, EventBus(), "test") as fm:
        name = vm_name("test", "fs", 1)
        await fm.start(_dom(name), persistent=True)
        assert (await fm.info(name)).persistent  # type: ignore[union-attr]
        await fm.stop(name, grace_s=0, undefine=False)
        assert await fm.state(name) == "stopped"
        await fm.undefine(name)
        assert await fm.state(name) == "undefined"


async def test_paused_start_then_resume(node) -> None:
    async with FleetManager(node(), EventBus(), "test") as fm:
        name = await fm.start(_dom("vexfs-test-p-0"), paused=True)
        assert await fm.state(name) == "paused"
        await fm.resume(name)
        assert await fm.state(name) == "running"


async def test_lifecycle_events_reach_the_bus(node) -> None:
    bus = EventBus()
    sub = bus.subscribe(VmStateChanged)
    async with FleetManager(node(_dom("other-vm")), bus, "test") as fm:
        name = await fm.start(_dom("vexfs-test-ev-0"))
        assert (await _next_state(sub, name, "booting")).reason == "booted"
        await fm.stop(name, grace_s=0)
        assert (await _next_state(sub, name, "stopped")).reason == "destroyed"
        # a foreign domain's events never reach the bus
        fm.conn.lookupByName("other-vm").destroy()
        name2 = await fm.start(_dom("vexfs-test-ev-1"))
        await _next_state(sub, name2, "booting")
        assert all(ev.vm.startswith("vexfs-") for ev in sub.drain_nowait())  # type: ignore[union-attr]


async def test_a_later_vm_of_the_same_name_is_not_ours(node) -> None:
    """Another cockpit may start a VM under a name we used and released: its events are
    its own (told apart by the domain's UUID)."""
    bus = EventBus()
    sub = bus.subscribe(VmStateChanged)
    async with FleetManager(node(), bus, "test") as fm:
        name = await fm.start(_dom("vexfs-test-same-0"))
        await _next_state(sub, name, "booting")
        await fm.stop(name, grace_s=0)
        await _next_state(sub, name, "stopped")
        fm.conn.createXML(_dom(name), 0).destroy()  # the other cockpit's VM, same name
        marker = await fm.start(_dom("vexfs-test-same-1"))  # events come in order: the other VM's first
        seen = []
        async for ev in sub:
            seen.append((ev.vm, ev.state))
            if ev.vm == marker and ev.state == "booting":
                break
        assert seen == [(marker, "booting")]
        await fm.reset(marker)  # ours again after a reset (a new UUID): still reported
        await _next_state(sub, marker, "stopped")
        await _next_state(sub, marker, "booting")


async def test_graceful_stop_waits_for_the_stopped_event(node) -> None:
    """The test driver honours shutdown at once: stop returns without the grace period."""
    bus = EventBus()
    sub = bus.subscribe(VmStateChanged)
    async with FleetManager(node(), bus, "test", stop_timeout_s=30) as fm:
        name = await fm.start(_dom("vexfs-test-g-0"))
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        await fm.stop(name)
        assert loop.time() - t0 < 5
        assert (await _next_state(sub, name, "stopped")).reason == "shutdown"


async def test_reset_recreates_from_the_same_xml(node) -> None:
    bus = EventBus()
    sub = bus.subscribe(VmStateChanged)
    async with FleetManager(node(), bus, "test") as fm:
        name = await fm.start(_dom("vexfs-test-r-0"), ssh_port=41000)
        uuid_before = fm.conn.lookupByName(name).UUIDString()
        await _next_state(sub, name, "booting")
        await fm.reset(name)
        await _next_state(sub, name, "stopped")
        await _next_state(sub, name, "booting")
        dom = fm.conn.lookupByName(name)
        assert dom.isActive() and dom.UUIDString() != uuid_before
        assert (await fm.info(name)).owner.ssh_port == 41000  # type: ignore[union-attr]
        await fm.reset(name, paused=True)
        assert await fm.state(name) == "paused"
        with pytest.raises(InfraError, match="does not exist"):
            await fm.reset("vexfs-test-nope-0")


async def test_stale_vms_are_reaped_and_nothing_else(node) -> None:
    uri = node(
        _dom("other-vm", _dead_owner()),  # foreign name: never touched even with our metadata
        _dom("vexfs-test-stale-0", _dead_owner()),
        _dom("vexfs-test-keep-0", _dead_owner(keep=True)),
        _dom("vexfs-test-live-0", Owner.current()),
        _dom("vexfs-test-nometa-0"),
    )
    async with FleetManager(uri, EventBus(), "test") as fm:
        # connect() reaped already; a second pass finds nothing
        assert await fm.reap_stale() == []
        names = _raw_names(fm.conn)
        assert names == {"other-vm", "vexfs-test-keep-0", "vexfs-test-live-0", "vexfs-test-nometa-0"}
    fm2 = FleetManager(uri, EventBus(), "test")
    assert await fm2.connect(reap=True) == ["vexfs-test-stale-0"]
    await fm2.aclose()


async def test_start_over_a_stale_vm_replaces_it(node) -> None:
    uri = node(_dom("vexfs-test-s-0", _dead_owner()))
    fm2 = FleetManager(uri, EventBus(), "test")
    await fm2.connect(reap=False)
    try:
        assert [v.name for v in await fm2.list_vms()] == ["vexfs-test-s-0"]
        await fm2.start(_dom("vexfs-test-s-0"))
        owner = (await fm2.info("vexfs-test-s-0")).owner  # type: ignore[union-attr]
        assert owner is not None and owner.pid == os.getpid()
    finally:
        await fm2.aclose()


async def test_aclose_destroys_started_but_not_released(node) -> None:
    fm = FleetManager(node(_dom("other-vm")), EventBus(), "test")
    await fm.connect()
    await fm.start(_dom("vexfs-test-a-0"))
    b = await fm.start(_dom("vexfs-test-b-0"), keep=True)
    await fm.start(_dom("vexfs-test-c-0"), persistent=True)
    fm.release(b)
    await fm.destroy_started()  # the first half of aclose(); the test driver forgets all on close
    assert _raw_names(fm.conn) == {b, "other-vm"}
    assert fm.started_names() == []
    await fm.aclose()


async def test_atexit_hook_destroys_what_the_loop_could_not(node) -> None:
    uri = node()
    fm = FleetManager(uri, EventBus(), "test")
    await fm.connect()
    await fm.start(_dom("vexfs-test-x-0"), persistent=True)
    await fm.start(_dom("vexfs-test-y-0"))
    fm._atexit_cleanup()  # what atexit runs when asyncio.run died under us
    assert _raw_names(fm.conn) == set()
    await fm.aclose()


async def test_cancel_during_create_undoes_the_vm(node) -> None:
    """Ctrl-C while createXML runs: the call finishes in its thread, then the VM is destroyed."""
    import threading

    async with FleetManager(node(), EventBus(), "test") as fm:
        entered, release = threading.Event(), threading.Event()
        real = fm.conn.createXML

        def slow_create(xml: str, flags: int = 0):
            entered.set()
            release.wait(10)  # the libvirt call in flight when the cancel lands
            return real(xml, flags)

        fm.conn.createXML = slow_create  # type: ignore[method-assign]
        task = asyncio.create_task(fm.start(_dom("vexfs-test-cancel-0")))
        assert await asyncio.to_thread(entered.wait, 5)
        task.cancel()
        release.set()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert "vexfs-test-cancel-0" not in _raw_names(fm.conn)
        assert fm.started_names() == []


async def test_lease_names_skip_vms_that_already_exist(node, tmp_path) -> None:
    """A dev VM or another cockpit's VM holding vexfs-ci-kernel_module-0 must not make
    this run fail: it takes the first free index instead."""
    from vexfs_cockpit.config.models import CockpitConfig
    from vexfs_cockpit.fleet.provider import LibvirtProvider

    me = Owner.current()  # alive: never reaped
    uri = node(_dom(vm_name("ci", "kernel_module", 0), me), _dom(vm_name("ci", "kernel_module", 1), me))
    provider = LibvirtProvider(CockpitConfig(), EventBus(), tmp_path, env="ci", uri=uri)

    async def connected_only() -> None:  # no image build or accel probe: only the names matter
        if provider.fleet._conn is None:
            await provider.fleet.connect(reap=False)

    provider._prepare = connected_only  # type: ignore[method-assign]
    try:
        assert await provider._free_name("kernel_module", 0) == vm_name("ci", "kernel_module", 2)
        assert await provider._free_name("filesystem_operations", 0) == vm_name("ci", "filesystem_operations", 0)
    finally:
        await provider.fleet.aclose()
