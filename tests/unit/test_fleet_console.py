"""Console line handling and the health sampler, without a VM.

The libvirt test driver has no console, so the stream is a fake that behaves like
a non-blocking virStream (bytes, then -2 for would-block, b"" at EOF); the real
stream is exercised by the VM tests in test_fleet_vm.py.
"""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path

import libvirt
import pytest

from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.events import KernelLogLine, VmSample
from vexfs_cockpit.fleet.console import WOULD_BLOCK, ConsoleClosed, ConsoleStream, LineSplitter, klog_sink
from vexfs_cockpit.fleet.events_thread import ensure_event_loop
from vexfs_cockpit.fleet.sampler import HealthSampler, disk_targets


def test_splitter_crlf_partial_and_utf8_across_chunks() -> None:
    sp = LineSplitter()
    assert sp.feed(b"[    0.000000] Linux version 6.1\r\n[    0.1] par") == ["[    0.000000] Linux version 6.1"]
    assert sp.feed(b"tial\r\n\r\n") == ["[    0.1] partial", ""]
    euro = "€".encode()
    assert sp.feed(b"price " + euro[:1]) == []
    assert sp.feed(euro[1:] + b"\n") == ["price €"]
    assert sp.feed(b"bad \xff byte\nprompt # ") == ["bad \ufffd byte"]
    assert sp.flush() == ["prompt # "]
    assert sp.flush() == []


class FakeStream:
    """Serves queued chunks to recv(), like a VIR_STREAM_NONBLOCK console stream."""

    def __init__(self) -> None:
        self.chunks: list[bytes | int] = []
        self.finished = self.aborted = self.removed = False

    def recv(self, nbytes: int) -> bytes | int:
        return self.chunks.pop(0) if self.chunks else WOULD_BLOCK

    def eventRemoveCallback(self) -> None:
        self.removed = True

    def finish(self) -> None:
        self.finished = True

    def abort(self) -> None:
        self.aborted = True


class FakeKlog:
    def __init__(self) -> None:
        self.lines: list[str] = []

    def feed(self, line: str) -> int:
        self.lines.append(line)
        return len(self.lines) - 1 + 1000  # absolute numbers are the buffer's business


def _fake_console(tmp_path: Path, bus: EventBus, klog: FakeKlog) -> tuple[ConsoleStream, FakeStream]:
    con = ConsoleStream(lambda: None, "vexfs-test-c-0", klog_sink("vexfs-test-c-0", klog, bus),  # type: ignore[arg-type,return-value]
                        log_path=tmp_path / "console" / "vexfs-test-c-0.log")
    st = FakeStream()
    con._stream = st
    con._gen = 1
    con._loop = asyncio.get_running_loop()
    con._log = open(con.log_path, "ab") if con.log_path.parent.mkdir(parents=True) is None else None  # type: ignore[union-attr]
    return con, st


def _fire(con: ConsoleStream, st: FakeStream, events: int = libvirt.VIR_STREAM_EVENT_READABLE) -> None:
    """Call the stream callback from another thread, as libvirt's event loop does."""
    t = threading.Thread(target=con._on_event, args=(st, events, 1))
    t.start()
    t.join()


async def test_console_lines_reach_klog_bus_and_log_file(tmp_path: Path) -> None:
    bus = EventBus()
    sub = bus.subscribe(KernelLogLine)
    klog = FakeKlog()
    con, st = _fake_console(tmp_path, bus, klog)
    waiter = asyncio.create_task(con.wait_for_text("guest ready", timeout=5))
    await asyncio.sleep(0)  # let the waiter arm
    st.chunks = [b"[    1.0] e1000: eth0 up\r\n[    2.0] vexfs-cockpit: gue", b"st ready\r\nhalf"]
    _fire(con, st)
    assert await waiter == 1
    evs = [await asyncio.wait_for(sub.__aiter__().__anext__(), 2) for _ in range(2)]
    assert [(e.line_no, e.text, e.vm) for e in evs] == [  # type: ignore[union-attr]
        (1000, "[    1.0] e1000: eth0 up", "vexfs-test-c-0"),
        (1001, "[    2.0] vexfs-cockpit: guest ready", "vexfs-test-c-0"),
    ]
    assert con.tail(1) == ["[    2.0] vexfs-cockpit: guest ready"]
    # already-seen text is found without waiting; unseen text times out
    assert await con.wait_for_text("e1000", timeout=0.01, since=0) == 0
    with pytest.raises(TimeoutError):
        await con.wait_for_text("never printed", timeout=0.05)
    # EOF: the partial line is flushed, the stream finished, waiters fail fast
    waiter2 = asyncio.create_task(con.wait_for_text("never printed", timeout=30))
    await asyncio.sleep(0)
    st.chunks = [b" line\n", b""]
    _fire(con, st)
    with pytest.raises(ConsoleClosed, match="closed"):
        await waiter2
    assert klog.lines[-1] == "half line" and st.finished and st.removed and con.closed.is_set()
    await con.aclose()
    raw = (tmp_path / "console" / "vexfs-test-c-0.log").read_bytes()
    assert raw == b"[    1.0] e1000: eth0 up\r\n[    2.0] vexfs-cockpit: guest ready\r\nhalf line\n"


async def test_console_hangup_and_stale_generation(tmp_path: Path) -> None:
    bus = EventBus()
    klog = FakeKlog()
    con, st = _fake_console(tmp_path, bus, klog)
    other = FakeStream()
    other.chunks = [b"from an old stream\n"]
    t = threading.Thread(target=con._on_event, args=(other, libvirt.VIR_STREAM_EVENT_READABLE, 0))
    t.start()
    t.join()
    await asyncio.sleep(0.01)
    assert klog.lines == [] and other.chunks  # ignored, not even read
    _fire(con, st, libvirt.VIR_STREAM_EVENT_HANGUP)
    await asyncio.wait_for(con.closed.wait(), 2)
    assert con.close_reason == "hangup" and st.aborted
    await con.aclose()


def test_disk_targets() -> None:
    xml = "<domain><devices><disk><target dev='vda'/></disk><disk><target dev='sdb'/></disk></devices></domain>"
    assert disk_targets(xml) == ["vda", "sdb"]
    assert disk_targets("<domain><devices/></domain>") == []


async def test_sampler_ticks_publish_samples(tmp_path: Path) -> None:
    node = tmp_path / "node.xml"
    node.write_text(
        "<node><domain type='test'><name>vexfs-test-s-0</name><memory>65536</memory><vcpu>2</vcpu>"
        "<os><type>hvm</type></os><devices><disk type='file' device='disk'>"
        f"<source file='{node}'/><target dev='vda' bus='virtio'/></disk></devices></domain>"
        "<domain type='test'><name>vexfs-test-s-1</name><memory>32768</memory><os><type>hvm</type></os></domain>"
        "</node>"
    )
    ensure_event_loop()
    conn = libvirt.open(f"test://{node}")
    try:
        bus = EventBus()
        sub = bus.subscribe(VmSample)
        names = ["vexfs-test-s-0", "vexfs-test-s-1", "vexfs-test-gone-0"]
        s = HealthSampler(lambda: conn, bus, lambda: names, run_id="r1", interval=0.05,
                          state_hint=lambda vm: "ready" if vm.endswith("-1") else None)
        first = {e.vm: e for e in await s.tick()}
        assert first["vexfs-test-s-0"].state == "running" and first["vexfs-test-s-0"].cpu_pct == 0.0
        assert first["vexfs-test-s-0"].mem_kb == 65536 and first["vexfs-test-s-0"].block_rd_bytes > 0
        assert first["vexfs-test-s-1"].state == "ready" and first["vexfs-test-s-1"].block_rd_bytes == 0
        assert first["vexfs-test-gone-0"].state == "stopped"
        assert all(e.net_rx_bytes == 0 and e.run_id == "r1" for e in first.values())
        conn.lookupByName("vexfs-test-s-1").destroy()
        sub.drain_nowait()
        s.start()
        got: list[VmSample] = []
        async with asyncio.timeout(3):
            async for ev in sub:
                got.append(ev)  # type: ignore[arg-type]
                if len(got) >= 9:
                    break
        await s.stop()
        s0 = [e for e in got if e.vm == "vexfs-test-s-0"]
        assert len(s0) >= 3 and all(e.cpu_pct > 0 for e in s0)  # deltas after the first tick
        assert {e.state for e in got if e.vm == "vexfs-test-s-1"} == {"ready"}  # hint wins
        gaps = [b.ts - a.ts for a, b in zip(s0, s0[1:])]
        assert all(0.02 < g < 0.5 for g in gaps), gaps  # ticks follow the interval
    finally:
        conn.close()
