"""KernelLogBuffer on a real booted guest (the ``guest`` fixture from tests/conftest_vm.py)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from vexfs_cockpit.engine.provider import Lease
from vexfs_cockpit.klog.model import Severity

pytestmark = [
    pytest.mark.vm,
    pytest.mark.skipif(not (Path(__file__).parent.parent / "conftest_vm.py").exists(), reason="tests/conftest_vm.py (guest fixture) not present"),
]

CRASHER = r"""
#include <string.h>
int main(int argc, char **argv) {
    if (argc > 1 && !strcmp(argv[1], "segv")) { volatile int *p = 0; *p = 42; }
    if (argc > 1 && !strcmp(argv[1], "ud2")) { __asm__ volatile("ud2"); }
    return 0;
}
"""


def _build_crasher(tmp: Path) -> Path:
    if shutil.which("gcc") is None:
        pytest.skip("gcc not installed on the host")
    src, exe = tmp / "klog_crasher.c", tmp / "klog_crasher"
    src.write_text(CRASHER)
    proc = subprocess.run(["gcc", "-static", "-O0", "-o", str(exe), str(src)], capture_output=True, text=True)
    if proc.returncode != 0:
        pytest.skip(f"cannot build a static binary on this host: {proc.stderr.strip()[:200]}")
    return exe


async def test_boot_log_has_nothing_above_info(guest: Lease) -> None:
    assert guest.klog is not None
    lines, reports = guest.klog.window(0)
    assert lines, "the console fed no lines"
    assert [r for r in reports if r.severity > Severity.INFO] == []


async def test_sync_brackets_a_real_user_space_fault(guest: Lease, tmp_path: Path) -> None:
    klog = guest.klog
    assert klog is not None
    exe = _build_crasher(tmp_path)
    await guest.target.put(exe, "/tmp/klog_crasher")
    start = await klog.sync(guest.target, "test_klog_vm/start")
    await guest.target.run("chmod +x /tmp/klog_crasher && /tmp/klog_crasher segv; /tmp/klog_crasher ud2; true")
    rep = await klog.wait_for({"segfault"}, start, timeout=30)
    assert rep is not None and rep.title == "segfault in klog_crasher"
    end = await klog.sync(guest.target, "test_klog_vm/end")
    lines, reports = klog.window(start, end)
    assert lines[0].endswith("vexfs-cockpit: test_klog_vm/start")
    assert [(r.kind, r.title) for r in reports] == [
        ("segfault", "segfault in klog_crasher"),
        ("segfault", "invalid opcode in klog_crasher (user space)"),
    ]
    assert all(start < r.line < end for r in reports)
