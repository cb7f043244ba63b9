"""The disk template's base image builder: its pure parts (sources, MBR, extlinux, cache key,
mmdebstrap command line) and its failure path (a real loop device and mount, released
when a step fails). The real build takes minutes: tests/vm/test_disk_template_vm.py."""

from __future__ import annotations

import dataclasses
import json
import subprocess
from pathlib import Path

import pytest

from vexfs_cockpit.config.models import FleetSettings
from vexfs_cockpit.errors import InfraError
from vexfs_cockpit.images import base as image_base
from vexfs_cockpit.images.base import (
    GUEST_CMDLINE,
    AptSource,
    BaseImage,
    BasePlan,
    base_image_kernel,
    extlinux_conf,
    find_base_image,
    guest_files,
    mbr,
    parse_apt_sources,
    plan_base,
    release_sources,
)

DEB822 = """\
Types: deb
# a comment
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb deb-src
URIs: http://mirror.example/debian-security/
Suites: bookworm-security
Components: main contrib

Types: deb
Enabled: no
URIs: http://off.example/debian
Suites: bookworm
Components: main

Types: deb-src
URIs: http://src.example/debian
Suites: bookworm
Components: main
"""


def _plan(**kw: object) -> BasePlan:
    base = BasePlan("6.1.0-57-amd64", "6.1.192-3", "bookworm",
                    (AptSource("http://m.example/debian", "bookworm", ("main",)),))
    return dataclasses.replace(base, **kw)  # type: ignore[arg-type]


def test_deb822_sources_keep_enabled_deb_entries_only() -> None:
    got = parse_apt_sources(DEB822, deb822=True)
    assert [s.line() for s in got] == [
        "deb http://mirror.example/debian bookworm main",
        "deb http://mirror.example/debian bookworm-updates main",
        "deb http://mirror.example/debian-security bookworm-security main contrib",
    ]


def test_one_line_sources_drop_options_and_comments() -> None:
    text = "# x\ndeb [arch=amd64 signed-by=/k.gpg] http://a.example/debian bookworm main contrib # c\n" \
           "deb-src http://a.example/debian bookworm main\ndeb https://vendor.example/apt stable main\n"
    got = parse_apt_sources(text, deb822=False)
    assert [s.line() for s in got] == [
        "deb http://a.example/debian bookworm main contrib",
        "deb https://vendor.example/apt stable main",
    ]
    # a third-party repository is not part of the Debian release the guest gets
    assert release_sources(got, "bookworm") == [got[0]]
    assert release_sources(got + got, "bookworm") == [got[0]]


def test_mbr_is_one_bootable_linux_partition_as_partx_reads_it(tmp_path: Path) -> None:
    sectors = 64 * 2048  # 64 MiB
    table = mbr(b"\xeb\x63" + bytes(100), sectors, signature=0x12345678)
    assert len(table) == 512 and table[:2] == b"\xeb\x63" and table[510:] == b"\x55\xaa"
    assert table[446] == 0x80 and table[446 + 4] == 0x83  # active, type Linux
    disk = tmp_path / "disk.raw"
    with open(disk, "wb") as f:
        f.truncate(sectors * 512)
        f.write(table)
    out = subprocess.run(["partx", "--show", "--bytes", "--noheadings", "-o", "NR,START,END,SECTORS,TYPE", str(disk)],
                         capture_output=True, text=True, check=True).stdout.split()
    assert out == ["1", "2048", str(sectors - 1), str(sectors - 2048), "0x83"]
    with pytest.raises(ValueError):
        mbr(bytes(441), sectors)
    with pytest.raises(ValueError):
        mbr(b"", 2048)


def test_extlinux_boots_the_guest_kernel_with_the_serial_console() -> None:
    conf = extlinux_conf("6.1.0-57-amd64", "u-u-i-d")
    assert "SERIAL 0 115200" in conf and "TIMEOUT 0" in conf
    assert "LINUX /boot/vmlinuz-6.1.0-57-amd64\n" in conf and "INITRD /boot/initrd.img-6.1.0-57-amd64\n" in conf
    append = next(ln for ln in conf.splitlines() if ln.strip().startswith("APPEND"))
    args = append.split()[1:]
    assert args[:2] == ["root=UUID=u-u-i-d", "ro"]
    # what the console reader, the klog and the watchdog rely on (the initramfs guest's line)
    for arg in ("console=ttyS0", "loglevel=7", "panic=-1", "sysrq_always_enabled", "net.ifnames=0"):
        assert arg in args
    assert "quiet" not in args
    assert GUEST_CMDLINE in append


def test_guest_files_name_eth0_limit_cloud_init_to_nocloud_and_mount_the_root() -> None:
    files = guest_files("u-u-i-d")
    assert files["etc/fstab"].startswith("UUID=u-u-i-d / ext4 ")
    assert "iface eth0 inet static\n  address 10.0.2.15/24\n  gateway 10.0.2.2\n" in files["etc/network/interfaces"]
    assert "datasource_list: [ NoCloud, None ]" in files["etc/cloud/cloud.cfg.d/90_vexfs_cockpit.cfg"]
    assert "kernel.hung_task_timeout_secs = 5" in files["etc/sysctl.d/90-vexfs-cockpit.conf"]
    # the ready marker comes from a unit after sshd (and cloud-init's key install), every boot
    from vexfs_cockpit.images.base import GUEST_LINKS, READY_BIN, READY_UNIT
    from vexfs_cockpit.images.disk import ready_script

    assert files[READY_BIN] == ready_script()
    unit = files[f"etc/systemd/system/{READY_UNIT}"]
    assert "After=ssh.service cloud-init.service" in unit and f"ExecStart=/{READY_BIN}" in unit
    assert GUEST_LINKS[f"etc/systemd/system/multi-user.target.wants/{READY_UNIT}"] == f"/etc/systemd/system/{READY_UNIT}"


def test_mmdebstrap_pins_the_hosts_kernel_package_version() -> None:
    argv = _plan().mmdebstrap_argv(Path("/t"))
    assert argv[0] == "mmdebstrap" and "--variant=minbase" in argv
    include = next(a for a in argv if a.startswith("--include="))[len("--include="):].split(",")
    assert include[0] == "linux-image-6.1.0-57-amd64=6.1.192-3"
    for pkg in ("cloud-init", "openssh-server", "e2fsprogs", "fio", "mount", "util-linux", "kmod", "systemd-sysv"):
        assert pkg in include
    assert argv[-3:] == ["bookworm", "/t", "deb http://m.example/debian bookworm main"]


def test_initramfs_hook_writes_a_module_list_config(tmp_path: Path) -> None:
    """The essential hook runs as mmdebstrap runs it (sh -c, $1 = the root), before the kernel's
    postinst builds the initramfs: only the listed modules go in."""
    hook = next(a for a in _plan().mmdebstrap_argv(Path("/t")) if a.startswith("--essential-hook="))
    subprocess.run(["sh", "-c", hook.split("=", 1)[1], "sh", str(tmp_path)], check=True)
    assert (tmp_path / "etc/initramfs-tools/conf.d/vexfs-cockpit").read_text() == "MODULES=list\n"
    listed = (tmp_path / "usr/share/initramfs-tools/modules.d/vexfs-cockpit").read_text().split()
    assert listed == ["virtio_pci", "virtio_blk", "ext4", "crc32c_generic"]


def test_cache_key_follows_every_input() -> None:
    base = _plan()
    assert base.input_hash() == _plan().input_hash()
    changed = [
        _plan(kernel_version="6.1.0-58-amd64"),
        _plan(kernel_package_version="6.1.193-1"),
        _plan(codename="trixie"),
        _plan(sources=(AptSource("http://other.example/debian", "bookworm", ("main",)),)),
        _plan(packages=(*base.packages, "strace")),
        _plan(size_mb=4096),
    ]
    hashes = {p.input_hash() for p in changed}
    assert len(hashes) == len(changed) and base.input_hash() not in hashes


def test_plan_reads_this_hosts_kernel_and_release() -> None:
    from vexfs_cockpit.images.initramfs import resolve_kernel_version

    plan = plan_base(FleetSettings())
    assert plan.kernel_version == resolve_kernel_version()
    assert plan.kernel_package_version  # what dpkg says the host has
    assert plan.sources and all(s.suite.startswith(plan.codename) for s in plan.sources)


def test_find_base_image_reads_a_current_manifest_only(tmp_path: Path) -> None:
    fleet = FleetSettings(image_dir=tmp_path)
    plan = _plan()
    assert find_base_image(fleet, plan) is None
    d = tmp_path / "base" / plan.input_hash()[:16]
    d.mkdir(parents=True)
    img = BaseImage(d, d / "base.qcow2", plan.kernel_version, plan.kernel_package_version, plan.input_hash(), 1.0)
    (d / "manifest.json").write_text(json.dumps(img.to_manifest()))
    assert find_base_image(fleet, plan) is None  # manifest without the image
    (d / "base.qcow2").write_bytes(b"")
    found = find_base_image(fleet, plan)
    assert found is not None and found.path == d / "base.qcow2" and found.kernel_version == "6.1.0-57-amd64"
    assert find_base_image(fleet, _plan(kernel_package_version="other")) is None


def test_a_built_base_image_names_its_kernel_before_it_boots(tmp_path: Path) -> None:
    """The runner builds the module against it before any disk VM boots; an image from
    elsewhere has no manifest: "" (boot first, ask the guest)."""
    plan = _plan()
    d = tmp_path / "base" / "x"
    d.mkdir(parents=True)
    img = BaseImage(d, d / "base.qcow2", plan.kernel_version, plan.kernel_package_version, plan.input_hash(), 1.0)
    (d / "manifest.json").write_text(json.dumps(img.to_manifest()))
    (d / "base.qcow2").write_bytes(b"")
    assert base_image_kernel(d / "base.qcow2") == plan.kernel_version
    (d / "other.qcow2").write_bytes(b"")  # beside a manifest that is not its own
    assert base_image_kernel(d / "other.qcow2") == ""
    (tmp_path / "distro.qcow2").write_bytes(b"")
    assert base_image_kernel(tmp_path / "distro.qcow2") == ""


def test_missing_tools_are_named_with_their_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(image_base, "_HOST_PATH", "/nonexistent")
    with pytest.raises(InfraError) as err:
        image_base.check_tools()
    msg = str(err.value)
    assert "\n" not in msg and "apt-get install" in msg and "mmdebstrap" in msg and "qemu-utils" in msg


def _loops_for(path: Path) -> list[str]:
    out = subprocess.run(["losetup", "-a"], capture_output=True, text=True, check=False).stdout
    return [ln for ln in out.splitlines() if str(path) in ln]


def test_a_failed_step_is_one_line_and_releases_loop_device_and_mount(tmp_path: Path) -> None:
    """mmdebstrap fails at once on a mirror that is not there: the loop device, the mount
    and the half-built directory must all be gone afterwards."""
    import os

    if os.geteuid() != 0:
        pytest.skip("needs root (loop devices, mounts)")
    image_base.check_tools()
    plan = _plan(sources=(AptSource(f"file://{tmp_path}/no-mirror", "bookworm", ("main",)),), size_mb=64)
    final = tmp_path / "base" / "x"
    final.parent.mkdir()
    with pytest.raises(InfraError) as err:
        image_base._build(plan, final, lambda _m: None)
    msg = str(err.value)
    assert msg.startswith("mmdebstrap bookworm failed (E: The repository ") and "\n" not in msg and "apt-get" in msg
    assert _loops_for(tmp_path) == []
    mounts = Path("/proc/mounts").read_text()
    assert str(tmp_path) not in mounts
    assert list(final.parent.iterdir()) == []


def test_cli_has_image_base() -> None:
    from tests.support.e2e import cockpit

    out = cockpit("image", "base", "--help", timeout=60)
    assert out.returncode == 0 and "--out" in out.stdout and "--force" in out.stdout


def test_superseded_base_images_of_the_same_kernel_are_pruned_after_a_day(tmp_path: Path) -> None:
    import time

    from vexfs_cockpit.images.initramfs import PRUNE_AFTER_S, prune_images

    def made(name: str, kernel: str, age_s: float) -> BaseImage:
        d = tmp_path / name
        d.mkdir()
        img = BaseImage(d, d / "base.qcow2", kernel, "1", name, time.time() - age_s)
        (d / "base.qcow2").write_bytes(b"")
        (d / "manifest.json").write_text(json.dumps(img.to_manifest()))
        return img

    keep = made("new", "6.1.0-57-amd64", 0)
    old = made("old", "6.1.0-57-amd64", PRUNE_AFTER_S + 60)
    recent = made("recent", "6.1.0-57-amd64", 60)
    other_kernel = made("other", "6.1.0-58-amd64", PRUNE_AFTER_S + 60)
    assert prune_images(tmp_path, keep=keep) == [old.dir]  # type: ignore[arg-type]
    assert recent.dir.exists() and other_kernel.dir.exists() and keep.dir.exists()
