"""KVM/TCG choice: a real boot decides, the answer is cached, config can force it."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from vexfs_cockpit.config.models import FleetSettings
from vexfs_cockpit.fleet import accel as accel_mod
from vexfs_cockpit.fleet.accel import cached_accel, guest_prints, probe_accel, qemu_version
from vexfs_cockpit.images.initramfs import kernel_files, resolve_kernel_version


@pytest.fixture(scope="module")
def kernel() -> Path:
    return kernel_files(resolve_kernel_version())[0]


def test_config_forces_without_probing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accel_mod, "guest_prints", lambda *a, **k: pytest.fail("must not boot anything"))
    assert probe_accel(fleet=FleetSettings(accel="tcg")) == "qemu"
    assert probe_accel(fleet=FleetSettings(accel="kvm")) == "kvm"


def test_no_kvm_device_means_tcg(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(accel_mod, "kvm_device_usable", lambda *a: False)
    monkeypatch.setattr(accel_mod, "guest_prints", lambda *a, **k: pytest.fail("must not boot anything"))
    assert probe_accel(cache=tmp_path / "a.json") == "qemu"


def test_positive_control_tcg_guest_prints(kernel: Path) -> None:
    # The detector itself works: the same kernel under TCG prints "Linux version".
    assert guest_prints(kernel, "tcg", timeout=60)


def test_a_silent_guest_is_rejected_at_the_deadline_and_killed(tmp_path: Path) -> None:
    # A zero-filled "kernel" boots to nothing and prints nothing: like KVM hanging here.
    bogus = tmp_path / "vmlinuz"
    bogus.write_bytes(b"\0" * 4096)
    started = time.monotonic()
    assert not guest_prints(bogus, "tcg", timeout=3)
    assert 3 <= time.monotonic() - started < 15
    leftovers = subprocess.run(["pgrep", "-f", str(bogus)], capture_output=True, text=True).stdout
    assert leftovers == ""


def test_probe_caches_per_boot_and_qemu_version(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kernel: Path) -> None:
    cache = tmp_path / "accel.json"
    calls: list[str] = []

    def fake_prints(_kernel: Path, accel: str, timeout: float, qemu: str = "") -> bool:
        calls.append(accel)
        return False

    monkeypatch.setattr(accel_mod, "kvm_device_usable", lambda *a: True)
    monkeypatch.setattr(accel_mod, "guest_prints", fake_prints)
    assert probe_accel(cache=cache, kernel=kernel) == "qemu"
    assert calls == ["kvm"]
    stored = json.loads(cache.read_text())
    assert stored["accel"] == "qemu" and qemu_version() in stored["key"]
    assert probe_accel(cache=cache, kernel=kernel) == "qemu" and calls == ["kvm"]  # cache hit
    assert cached_accel(cache=cache) == "qemu"
    # A different boot (or QEMU upgrade) invalidates it.
    cache.write_text(json.dumps({**stored, "key": "other-boot|" + qemu_version()}))
    assert cached_accel(cache=cache) is None
    monkeypatch.setattr(accel_mod, "guest_prints", lambda *a, **k: True)
    assert probe_accel(cache=cache, kernel=kernel) == "kvm"


def test_real_probe_on_this_host(tmp_path: Path) -> None:
    """Whatever the host, the answer is backed by a real boot: if it says kvm, KVM printed."""
    cache = tmp_path / "accel.json"
    answer = probe_accel(timeout=5, cache=cache, use_cache=False)
    assert answer in ("kvm", "qemu")
    if accel_mod.kvm_device_usable():
        assert json.loads(cache.read_text())["accel"] == answer
