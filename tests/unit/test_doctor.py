"""`doctor`: one line per check, the fix on the line, non-zero exit on a real problem."""

from __future__ import annotations

import argparse
from pathlib import Path

import libvirt
import pytest

from vexfs_cockpit.config.models import FleetSettings
from vexfs_cockpit.commands import doctor
from vexfs_cockpit.commands.doctor import check_headers, check_image, check_libvirt, cmd_doctor, run_doctor


def _run(**kw: object) -> tuple[int, list[str]]:
    lines: list[str] = []
    args = argparse.Namespace(config=None, env=None, uri=None, no_probe=True)
    for k, v in kw.items():
        setattr(args, k, v)
    return cmd_doctor(args, out=lines.append), lines


def test_unreachable_uri_is_one_line_and_fails() -> None:
    uri = "qemu+unix:///system?socket=/nonexistent/vexfs/libvirt-sock"
    code, lines = _run(uri=uri)
    assert code != 0
    bad = [line for line in lines if line.startswith("✗ libvirt")]
    assert len(bad) == 1 and uri in bad[0] and "/nonexistent/vexfs/libvirt-sock" in bad[0]
    assert all("\n" not in line and "Traceback" not in line for line in lines)


def test_libvirtd_down_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(uri: str) -> None:
        raise libvirt.libvirtError("Failed to connect socket to '/run/libvirt/libvirt-sock': No such file or directory")

    monkeypatch.setattr(libvirt, "open", refuse)
    monkeypatch.setattr(doctor, "_daemon_running", lambda name: False)
    check = check_libvirt("qemu:///system")
    assert check.level == "fail"
    assert check.line() == (
        "✗ libvirt: cannot reach qemu:///system: libvirtd is not running — fix: start it with `virtlogd -d; libvirtd -d`"
    )
    virtlogd = doctor.check_virtlogd("qemu:///system")
    assert virtlogd is not None and virtlogd.level == "fail" and "virtlogd -d" in virtlogd.line()


def test_missing_headers_name_the_package() -> None:
    check = check_headers(FleetSettings(guest_kernel="0.0.0-nosuch-amd64"))
    assert check.level == "fail" and "`apt-get install linux-headers-0.0.0-nosuch-amd64`" in check.line()


def test_image_dir_qemu_cannot_reach_fails(tmp_path: Path) -> None:
    hidden = tmp_path / "private"
    hidden.mkdir(mode=0o700)
    checks = check_image(FleetSettings(image_dir=hidden / "images"), "qemu:///system")
    reach = [c for c in checks if c.name == "image dir"]
    assert reach and reach[0].level == "fail" and str(hidden) in reach[0].message


def test_tcg_fallback_is_a_warning_not_a_failure(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(doctor, "check_accel", lambda fleet, probe: doctor.Check("accelerator", "warn", "TCG"))
    code, lines = _run()
    if any(line.startswith("✗") for line in lines):
        pytest.fail("this host is expected to be ready for VMs: " + " | ".join(lines))
    assert code == 0 and any(line.startswith("! accelerator") for line in lines)


def test_this_host_is_ready() -> None:
    """The real checks on the machine the VM tests run on (libvirt up, headers installed)."""
    checks = run_doctor(FleetSettings(), probe=False)
    names = [c.name for c in checks]
    assert names[:4] == ["qemu", "libvirt", "virtlogd", "accelerator"]
    failing = [c.line() for c in checks if c.level == "fail"]
    assert not failing, failing
