"""KernelLogBuffer: numbering, ring, reports, and the async waits (sync through a real shell)."""

from __future__ import annotations

import asyncio
import shlex
import subprocess
import threading
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest

from vexfs_cockpit.engine.plugin import KernelLog
from vexfs_cockpit.engine.target import CommandResult, render_command
from vexfs_cockpit.errors import InfraError
from vexfs_cockpit.engine.klog_buffer import KernelLogBuffer, KlogSyncTimeout
from vexfs_cockpit.klog.model import KernelReport

SYNTH = Path(__file__).parent.parent / "data" / "klog" / "synthetic"


def _lines(name: str) -> list[str]:
    return (SYNTH / name).read_text().splitlines()


def test_implements_kernel_log_protocol() -> None:
    buf: KernelLog = KernelLogBuffer("vm0")
    assert buf.cursor() == 0


def test_feed_numbers_lines_and_reports_once() -> None:
    got: list[KernelReport] = []
    buf = KernelLogBuffer("vm0", on_report=got.append)
    for ln in _lines("clean_boot.log"):
        buf.feed(ln)
    base = buf.cursor()
    for ln in _lines("warn.log"):
        buf.feed(ln)
    assert buf.cursor() == base + len(_lines("warn.log"))
    assert [(r.kind, r.vm) for r in got] == [("taint", "vm0"), ("taint", "vm0"), ("warning", "vm0")]
    warn = got[-1]
    assert warn.line == base + 1  # absolute, 0-based: the cut-here line
    lines, reports = buf.window(base)
    assert lines == _lines("warn.log") and reports == [warn]
    assert buf.window(0, base)[1] == got[:2]
    assert buf.reports(since=base) == [warn]


def test_ring_drops_old_lines_with_a_marker() -> None:
    buf = KernelLogBuffer("vm0", max_lines=10)
    for i in range(25):
        assert buf.feed(f"[    {i}.000000] line {i}") == i
    lines, _ = buf.window(0)
    assert lines[0] == "[vexfs-cockpit: 15 earlier lines dropped (ring of 10 lines)]"
    assert lines[1:] == [f"[    {i}.000000] line {i}" for i in range(15, 25)]
    assert buf.window(20, 22)[0] == ["[    20.000000] line 20", "[    21.000000] line 21"]
    assert buf.window(3, 5)[0] == ["[vexfs-cockpit: 2 earlier lines dropped (ring of 10 lines)]"]


def test_feed_splits_embedded_newlines() -> None:
    buf = KernelLogBuffer("vm0")
    assert buf.feed("[    1.000000] a\n[    1.000001] b\r\n") == 1
    assert buf.window(0)[0] == ["[    1.000000] a", "[    1.000001] b"]


def test_feed_is_thread_safe() -> None:
    buf = KernelLogBuffer("vm0", max_lines=100_000)
    numbers: list[list[int]] = [[] for _ in range(4)]

    def worker(k: int) -> None:
        for i in range(3000):
            numbers[k].append(buf.feed(f"[    1.000000] t{k} {i}"))

    threads = [threading.Thread(target=worker, args=(k,)) for k in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    allnums = sorted(n for ns in numbers for n in ns)
    assert allnums == list(range(12_000)) and buf.cursor() == 12_000


class ShellTarget:
    """Runs the command in a real local `sh` with /dev/kmsg redirected to a file, then
    "prints" what the guest kernel would print on the console, from another thread."""

    name = "fake-guest"

    def __init__(self, buf: KernelLogBuffer, tmp: Path, deliver: bool = True, fail: bool = False):
        self.buf, self.kmsg, self.deliver, self.fail = buf, tmp / "kmsg", deliver, fail
        self.commands: list[str] = []

    async def run(self, cmd: str | Sequence[str], *, timeout: float = 60.0,
                  input: str | bytes | None = None, check: bool = False) -> CommandResult:
        self.commands.append(render_command(cmd))
        argv = [str(c) for c in cmd] if not isinstance(cmd, str) else ["sh", "-c", cmd]
        assert argv[:2] == ["sh", "-c"]
        script = argv[2].replace("/dev/kmsg", shlex.quote(str(self.kmsg)))
        if self.fail:
            script = "echo 'sh: can''t create /dev/kmsg: Permission denied' >&2; exit 2"
        proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=timeout)
        if proc.returncode == 0 and self.deliver:
            text = self.kmsg.read_text()
            lines = [f"[   42.000001] {ln}" for ln in text.splitlines()]
            threading.Thread(target=lambda: [self.buf.feed(ln) for ln in lines]).start()
        return CommandResult(render_command(cmd), proc.returncode, proc.stdout + proc.stderr, 0.0)

    def stream(self, cmd: str | Sequence[str], *, timeout: float | None = None) -> AsyncIterator[str]:
        raise NotImplementedError

    async def put(self, local: Path, remote: str) -> None:
        raise NotImplementedError

    async def get(self, remote: str, local: Path) -> None:
        raise NotImplementedError


@pytest.mark.parametrize("tag", ["run-1/basic/test_mount", "it's $HOME `x` \\n \"q\"", "a\nb"])
async def test_sync_round_trip_through_a_real_shell(tmp_path: Path, tag: str) -> None:
    buf = KernelLogBuffer("vm0")
    for ln in _lines("clean_boot.log"):
        buf.feed(ln)
    # A stale marker with the same tag before the cursor must not satisfy the wait.
    buf.feed(f"[    9.000000] vexfs-cockpit: {tag.replace(chr(10), ' ')}")
    start = buf.cursor()
    target = ShellTarget(buf, tmp_path)
    n = await buf.sync(target, tag, timeout=5)
    assert n == start
    want = "vexfs-cockpit: " + tag.replace("\n", " ")
    assert (tmp_path / "kmsg").read_text() == want + "\n"  # quoting survived the shell
    assert buf.window(n, n + 1)[0] == [f"[   42.000001] {want}"]
    assert target.commands[0].startswith("printf '%s\\n' ")  # one command line for the transport's shell


async def test_sync_closes_the_open_report(tmp_path: Path) -> None:
    got: list[KernelReport] = []
    buf = KernelLogBuffer("vm0", on_report=got.append, idle_flush_s=None)
    for ln in _lines("hung_task.log")[:12]:  # cut off before </TASK>
        buf.feed(ln)
    assert got == []
    n = await buf.sync(ShellTarget(buf, tmp_path), "next-test", timeout=5)
    assert [r.kind for r in got] == ["hung_task"]
    assert buf.window(0, n)[1] == got


async def test_sync_times_out_when_the_marker_never_arrives(tmp_path: Path) -> None:
    buf = KernelLogBuffer("vm0")
    started = time.monotonic()
    with pytest.raises(KlogSyncTimeout, match="vm0: sync marker .* did not reach the console"):
        await buf.sync(ShellTarget(buf, tmp_path, deliver=False), "lost", timeout=0.3)
    assert time.monotonic() - started < 2


async def test_sync_reports_a_failed_write(tmp_path: Path) -> None:
    buf = KernelLogBuffer("vm0")
    with pytest.raises(InfraError, match="could not write the sync marker to /dev/kmsg"):
        await buf.sync(ShellTarget(buf, tmp_path, fail=True), "x", timeout=2)


async def test_wait_for_report_fed_from_another_thread() -> None:
    buf = KernelLogBuffer("vm0")
    buf.feed("[    1.000000] vexfs_selftest: loading out-of-tree module taints kernel.")
    since = buf.cursor()
    lines = _lines("soft_lockup.log")
    waiter = asyncio.ensure_future(buf.wait_for({"soft_lockup", "hung_task"}, since, timeout=5))
    await asyncio.sleep(0)  # let the waiter register before the feeder starts
    feeder = threading.Thread(target=lambda: [buf.feed(ln) for ln in lines])
    feeder.start()
    rep = await waiter
    feeder.join()
    assert rep is not None and rep.title == "BUG: soft lockup in vexfs_selftest_softlockup_knob"
    assert rep.line == since + 1


async def test_wait_for_finds_existing_report_and_respects_since() -> None:
    buf = KernelLogBuffer("vm0")
    for ln in _lines("warn.log"):
        buf.feed(ln)
    rep = await buf.wait_for({"warning"}, 0, timeout=1)
    assert rep is not None and rep.line == 1
    assert await buf.wait_for({"warning"}, 2, timeout=0.05) is None
    assert await buf.wait_for(set(), 0, timeout=0.05) == rep  # empty set: any kind


async def test_wait_for_text() -> None:
    buf = KernelLogBuffer("vm0")
    waiter = asyncio.ensure_future(buf.wait_for_text("vexfs-selftest-guest ready", 0, timeout=5))
    await asyncio.sleep(0)
    threading.Thread(target=lambda: [buf.feed(ln) for ln in _lines("clean_boot.log")]).start()
    n = await waiter
    assert n is not None and "ready" in buf.window(n, n + 1)[0][0]
    assert await buf.wait_for_text("never printed", 0, timeout=0.05) is None


async def test_idle_flush_completes_a_report_when_the_console_goes_quiet() -> None:
    got: list[KernelReport] = []
    buf = KernelLogBuffer("vm0", on_report=got.append, idle_flush_s=0.1)
    since = buf.cursor()
    for ln in _lines("warn.log")[:-1]:  # the guest died before `end trace`
        buf.feed(ln)
    rep = await buf.wait_for({"warning"}, since, timeout=3)
    assert rep is not None and rep.title == "WARNING in vexfs_selftest_warn_knob"
    assert got == [rep]


def test_flush_and_callback_errors_do_not_break_feeding() -> None:
    def boom(_r: KernelReport) -> None:
        raise RuntimeError("consumer bug")

    buf = KernelLogBuffer("vm0", on_report=boom)
    for ln in _lines("warn.log")[:-1]:
        buf.feed(ln)
    assert [r.kind for r in buf.flush()] == ["warning"]
    assert buf.feed("[    99.000000] still alive") == len(_lines("warn.log")) - 1
