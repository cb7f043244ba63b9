"""Console + `cat /dev/kmsg` over SSH: each kernel line is counted once."""

from __future__ import annotations

import threading
from pathlib import Path

from vexfs_cockpit.engine.klog_buffer import KernelLogBuffer
from vexfs_cockpit.klog.classify import parse_line
from vexfs_cockpit.klog.dedup import LineDeduper, kmsg_to_console

SYNTH = Path(__file__).parent.parent / "data" / "klog" / "synthetic"


def _as_kmsg(console_line: str, seq: int) -> str:
    pl = parse_line(console_line)
    assert pl.ts_us is not None
    return f"4,{seq},{pl.ts_us},-;{pl.body}"


def test_kmsg_record_renders_like_the_console() -> None:
    assert kmsg_to_console("6,339,5140900,-;e1000: eth0 NIC Link is Up") == ["[    5.140900] e1000: eth0 NIC Link is Up"]
    assert kmsg_to_console("4,340,12000001,-;a\\x0ab") == ["[   12.000001] a", "[   12.000001] b"]
    assert kmsg_to_console(" SUBSYSTEM=pci") == []
    assert kmsg_to_console("[    1.000000] already console form") == ["[    1.000000] already console form"]


def test_both_sources_feed_each_line_once_whatever_the_interleaving() -> None:
    console = (SYNTH / "hung_task.log").read_text().splitlines()
    dmesg = [ln for i, rec in enumerate(console) for ln in kmsg_to_console(_as_kmsg(rec, i))]
    assert dmesg == console  # kmsg records render exactly as the console printed them
    dedup = LineDeduper()
    buf = KernelLogBuffer("vm0")
    # dmesg runs ahead for the first half, then the console catches up and overtakes.
    half = len(console) // 2
    order = [("dmesg", ln) for ln in dmesg[:half]] + [("console", ln) for ln in console] + [("dmesg", ln) for ln in dmesg[half:]]
    for src, ln in order:
        if dedup.accept(ln, src):
            buf.feed(ln)
    assert buf.cursor() == len(console)
    assert dedup.dropped == len(console)
    assert [r.title for r in buf.reports()] == ["INFO: task hung in vexfs_selftest_hang_knob"]


def test_identical_lines_from_one_source_are_all_kept() -> None:
    dedup = LineDeduper()
    line = "[   10.000000] 64 bytes"
    assert dedup.accept(line, "console") and dedup.accept(line, "console")
    # the second source matches them one for one
    assert not dedup.accept(line, "dmesg") and not dedup.accept(line, "dmesg")
    assert dedup.accept(line, "dmesg")  # a third copy is a new line


def test_lines_without_timestamp_always_pass() -> None:
    dedup = LineDeduper()
    assert dedup.accept("/ # ls", "console") and dedup.accept("/ # ls", "dmesg")


def test_same_text_different_timestamp_is_not_a_duplicate() -> None:
    dedup = LineDeduper()
    assert dedup.accept("[    1.000000] x", "console")
    assert dedup.accept("[    1.000001] x", "dmesg")


def test_window_bounds_memory() -> None:
    dedup = LineDeduper(window=100)
    for i in range(1000):
        dedup.accept(f"[{i:5d}.000000] line", "console")
    assert sum(len(c) for c in dedup._unmatched.values()) <= 100
    assert dedup.accept("[    0.000000] line", "dmesg")  # too old to match: kept


def test_concurrent_sources() -> None:
    console = [f"[{i // 1000:5d}.{i % 1000:06d}] msg {i}" for i in range(4000)]
    dmesg = [ln for i, c in enumerate(console) for ln in kmsg_to_console(_as_kmsg(c, i))]
    dedup = LineDeduper()
    kept: list[str] = []
    lock = threading.Lock()

    def run(src: str, lines: list[str]) -> None:
        for ln in lines:
            if dedup.accept(ln, src):
                with lock:
                    kept.append(ln)

    ts = [threading.Thread(target=run, args=("console", console)), threading.Thread(target=run, args=("dmesg", dmesg))]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    assert sorted(kept) == sorted(console)
