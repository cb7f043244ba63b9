"""SshTarget against a real booted guest (busybox + dropbear, TCG). Marked ``vm``.

The module boots one guest through libvirt (qemu:///system) from the self-test
image and destroys it afterwards. To iterate against an already running guest,
set ``VEXFS_TEST_GUEST_PORT`` (its forwarded SSH port on 127.0.0.1; the key and
host key come from the built image).
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import statistics
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from vexfs_cockpit.engine.target import TargetUnavailable
from vexfs_cockpit.transport.ssh import SshTarget

pytestmark = pytest.mark.vm


@dataclass
class Guest:
    name: str
    port: int
    client_keys: list[Any]
    known_hosts: Any


@pytest.fixture(scope="module")
def guest() -> Iterator[Guest]:
    libvirt = pytest.importorskip("libvirt")
    from vexfs_cockpit.images.initramfs import build_image
    from vexfs_cockpit.fleet.templates import DomainSpec, free_port, render_domain_xml

    try:
        img = build_image()
    except Exception as err:  # noqa: BLE001 - any reason to have no image means: skip
        pytest.skip(f"no guest image: {err}")
    name = f"vexfs-transport-test-{os.getpid()}"
    env_port = os.environ.get("VEXFS_TEST_GUEST_PORT")
    if env_port:
        yield Guest(name, int(env_port), img.client_keys(), img.host_key_known_hosts())
        return
    try:
        conn = libvirt.open("qemu:///system")
    except libvirt.libvirtError as err:
        pytest.skip(f"libvirt unavailable: {err}")
    port = free_port()
    xml = render_domain_xml(DomainSpec(
        name=name, ssh_port=port, kernel=img.kernel, initrd=img.initrd,
        cmdline=img.kernel_cmdline(hostname=name), accel="qemu", memory_mb=512, cpus=1,
        metadata={"owner_pid": str(os.getpid()), "run_id": "test_transport_vm"},
    ))
    dom = conn.createXML(xml, 0)
    try:
        yield Guest(name, port, img.client_keys(), img.host_key_known_hosts())
    finally:
        try:
            dom.destroy()
        except libvirt.libvirtError:
            pass
        conn.close()


@pytest.fixture
async def target(guest: Guest) -> AsyncIterator[SshTarget]:
    # The boot (TCG, ~10-20 s on a busy host) is waited out by the connect backoff.
    t = SshTarget(guest.name, "127.0.0.1", guest.port, "root", guest.client_keys, guest.known_hosts,
                  reconnect_deadline_s=180)
    await t.connect()
    yield t
    await t.close()


async def test_round_trip(target: SshTarget) -> None:
    res = await target.run(["sh", "-c", 'echo "$1"; echo err >&2; exit 7', "sh", "it's a $test"])
    assert res.exit_code == 7
    assert res.output.splitlines() == ["it's a $test", "err"]
    assert (await target.run("uname -r")).output.strip()


async def test_fifty_sequential_commands(target: SshTarget) -> None:
    times = []
    for _ in range(50):
        res = await target.run("true")
        assert res.ok
        times.append(res.duration_s)
    median = statistics.median(times)
    print(f"\n50 x `true` over one connection: median {median * 1000:.1f} ms, max {max(times) * 1000:.1f} ms")
    assert median < 1.0  # a fresh connection per command would cost seconds under TCG


async def test_eight_concurrent_commands_queue_and_succeed(target: SshTarget) -> None:
    started = time.monotonic()
    results = await asyncio.gather(*(target.run(f"sleep 1; echo {i}") for i in range(8)))
    elapsed = time.monotonic() - started
    assert [r.output.strip() for r in results] == [str(i) for i in range(8)]
    assert all(r.ok for r in results)
    assert elapsed >= 2.0  # 8 one-second commands through at most 4 channels: two waves or more
    assert target.channel_limit <= 4


async def test_timeout_kills_the_remote_process(target: SshTarget) -> None:
    res = await target.run("sh -c 'sleep 600 & echo $! > /tmp/tx-sleep.pid; wait'", timeout=2.0)
    assert res.timed_out and res.exit_code is None
    pid = (await target.run("cat /tmp/tx-sleep.pid")).output.strip()
    assert pid.isdigit()
    # SIGKILL is asynchronous; give the guest a bounded moment to reap
    check = f"for i in 1 2 3 4 5 6 7 8 9 10; do [ -d /proc/{pid} ] || exit 0; sleep 0.2; done; cat /proc/{pid}/status; exit 1"
    gone = await target.run(check, timeout=20)
    assert gone.ok, f"sleep {pid} still alive on the guest after the timeout: {gone.output}"


async def test_put_get_one_megabyte_bit_exact(target: SshTarget, tmp_path: Path) -> None:
    blob = os.urandom(1024 * 1024)
    src, back = tmp_path / "blob.bin", tmp_path / "back.bin"
    src.write_bytes(blob)
    want = hashlib.sha256(blob).hexdigest()
    started = time.monotonic()
    await target.put(src, "/tmp/tx-blob.bin")
    put_s = time.monotonic() - started
    remote_sum = (await target.run("sha256sum /tmp/tx-blob.bin")).output.split()[0]
    assert remote_sum == want
    started = time.monotonic()
    await target.get("/tmp/tx-blob.bin", back)
    get_s = time.monotonic() - started
    assert hashlib.sha256(back.read_bytes()).hexdigest() == want
    print(f"\n1 MiB put {put_s:.2f}s, get {get_s:.2f}s")
    await target.run("rm -f /tmp/tx-blob.bin")


async def test_stream_lines_arrive_before_the_command_ends(target: SshTarget) -> None:
    started = time.monotonic()
    first_at = None
    lines = []
    async for line in target.stream("echo one; sleep 2; echo two", timeout=30):
        lines.append(line)
        if first_at is None:
            first_at = time.monotonic() - started
    total = time.monotonic() - started
    assert lines == ["one", "two"]
    assert first_at is not None and first_at < total - 1.5


async def test_reconnect_after_dropbear_is_killed_and_respawned(target: SshTarget) -> None:
    before = (await target.run("pidof dropbear")).output.split()
    # Kill every dropbear, ours included: busybox init respawns the listener.
    try:
        await target.run("kill -9 $(pidof dropbear)", timeout=10)
    except TargetUnavailable:
        pass  # the connection died under the command: expected
    res = await target.run("pidof dropbear")  # reconnects with backoff
    assert res.ok
    assert not set(before) & set(res.output.split()), "dropbear was not restarted"
    assert target.is_connected
