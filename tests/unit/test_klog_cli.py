"""`vexfs-cockpit klog parse FILE [--json]`."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from vexfs_cockpit.cli import main

SYNTH = Path(__file__).parent.parent / "data" / "klog" / "synthetic"


def test_text_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["klog", "parse", str(SYNTH / "mixed_console.log")]) == 0
    assert capsys.readouterr().out.splitlines() == [
        "1: info taint: taint: out-of-tree module vexfs_selftest [vexfs_selftest]",
        "2: info taint: taint: unsigned module vexfs_selftest [vexfs_selftest]",
        "6: warning warning: WARNING in kmem_cache_destroy [vexfs_selftest]",
        "20: error hung_task: INFO: task hung in vexfs_selftest_read_folio [vexfs_selftest]",
        "29: error oops: BUG: kernel NULL pointer dereference in vexfs_selftest_timer_fn [vexfs_selftest]",
        "42: critical panic: Kernel panic - not syncing: Fatal exception in interrupt",
    ]


def test_json_output(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["klog", "parse", "--json", str(SYNTH / "oops.log")]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    obj = json.loads(line)
    assert {k: obj[k] for k in ("kind", "title", "severity", "line", "module")} == {
        "kind": "oops",
        "title": "BUG: kernel NULL pointer dereference in vexfs_selftest_oops_knob",
        "severity": "error",
        "line": 2,
        "module": "vexfs_selftest",
    }
    assert obj["text"].splitlines()[0].endswith("BUG: kernel NULL pointer dereference, address: 0000000000000000")


def test_clean_file_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty.log"
    empty.write_text("")
    quiet = tmp_path / "quiet.log"
    quiet.write_text("[    0.000000] Command line: panic=-1\n[    0.1] ACPI BIOS Error (bug): x\n")
    assert main(["klog", "parse", str(empty)]) == 0
    assert main(["klog", "parse", "--json", str(quiet)]) == 0
    assert capsys.readouterr().out == ""


def test_missing_file_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.log"
    assert main(["klog", "parse", str(missing)]) == 2
    cap = capsys.readouterr()
    assert cap.out == ""
    assert cap.err.count("\n") == 1 and str(missing) in cap.err and "Traceback" not in cap.err


def test_console_script_entry_point(tmp_path: Path) -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "vexfs_cockpit", "klog", "parse", str(SYNTH / "sysrq_panic.log")],
        capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "2: critical panic: Kernel panic - not syncing: sysrq triggered crash\n"
    proc = subprocess.run([sys.executable, "-m", "vexfs_cockpit", "klog", "parse", str(tmp_path / "x")],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and len(proc.stderr.splitlines()) == 1
