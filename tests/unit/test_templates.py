"""Domain XML from vm_templates: valid for libvirt's schema, loopback-only SSH, debug console."""

from __future__ import annotations

import socket
import subprocess
import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import libvirt
import pytest

from vexfs_cockpit.errors import ConfigError
from vexfs_cockpit.images.initramfs import BASE_CMDLINE, BuildRequest, build_image
from vexfs_cockpit.images.disk import make_overlay, make_seed_iso, seed_contents
from vexfs_cockpit.fleet.templates import (
    METADATA_NS,
    QEMU_NS,
    DomainSpec,
    free_port,
    parse_metadata,
    render_domain_xml,
)

KERNEL = Path("/var/lib/x/vmlinuz")
INITRD = Path("/var/lib/x/initrd.gz")


def _direct(**kw: object) -> DomainSpec:
    args: dict[str, object] = dict(
        name="vexfs-dev-kernel_module-0", ssh_port=40022, kernel=KERNEL, initrd=INITRD,
        cmdline=f"{BASE_CMDLINE} vexfs.hostname=vexfs-dev-kernel_module-0",
        metadata={"owner_pid": "4242", "run_id": "r1"},
    )
    args.update(kw)
    return DomainSpec(**args)  # type: ignore[arg-type]


def _qemu_args(root: ET.Element) -> list[str]:
    return [a.get("value", "") for a in root.iter(f"{{{QEMU_NS}}}arg")]


def _schema_valid(xml: str) -> None:
    """libvirt's own RNG validation (test driver: no VM, no daemon)."""
    libvirt.registerErrorHandler(lambda _c, _e: None, None)
    conn = libvirt.open("test:///default")
    try:
        dom = conn.defineXMLFlags(xml, libvirt.VIR_DOMAIN_DEFINE_VALIDATE)
        dom.undefine()
    finally:
        conn.close()


def test_direct_kernel_renders_valid_xml_with_debug_console_and_loopback_ssh() -> None:
    xml = render_domain_xml(_direct())
    root = ET.fromstring(xml)
    _schema_valid(xml)
    assert root.get("type") == "qemu"
    assert root.findtext("name") == "vexfs-dev-kernel_module-0"
    assert root.findtext("os/kernel") == str(KERNEL) and root.findtext("os/initrd") == str(INITRD)
    cmdline = root.findtext("os/cmdline") or ""
    assert "loglevel=7" in cmdline.split() and "console=ttyS0" in cmdline.split() and "quiet" not in cmdline
    assert root.find("os/type").get("machine") == "pc"  # type: ignore[union-attr]
    assert root.findtext("memory") == "512" and root.find("memory").get("unit") == "MiB"  # type: ignore[union-attr]
    assert root.findtext("on_reboot") == "destroy" and root.findtext("on_crash") == "destroy"
    assert root.find("devices/serial").get("type") == "pty"  # type: ignore[union-attr]
    assert root.find("devices/console").get("type") == "pty"  # type: ignore[union-attr]
    assert root.find("devices/memballoon").get("model") == "none"  # type: ignore[union-attr]
    assert root.find("devices/disk") is None and root.find("devices/interface") is None  # no disk, no libvirt network
    args = _qemu_args(root)
    netdev = args[args.index("-netdev") + 1]
    assert "hostfwd=tcp:127.0.0.1:40022-:22" in netdev.split(",")
    assert "restrict=on" in netdev.split(",")
    assert netdev.count("hostfwd") == 1 and "0.0.0.0" not in xml
    assert args[args.index("-device") + 1] == "e1000,netdev=n0,addr=0x9"  # pinned: no slot clash
    assert parse_metadata(xml) == {"owner_pid": "4242", "run_id": "r1"}
    assert root.find(f"metadata/{{{METADATA_NS}}}cockpit") is not None


def test_kvm_and_resources_and_hugepages() -> None:
    root = ET.fromstring(render_domain_xml(_direct(accel="kvm", memory_mb=1024, cpus=2, enable_hugepages=True)))
    assert root.get("type") == "kvm"
    assert root.find("cpu").get("mode") == "host-passthrough"  # type: ignore[union-attr]
    assert root.findtext("vcpu") == "2" and root.findtext("memory") == "1024"
    assert root.find("memoryBacking/hugepages") is not None
    tcg = ET.fromstring(render_domain_xml(_direct()))
    assert tcg.find("cpu") is None and tcg.find("memoryBacking") is None


def test_values_are_escaped_not_injected() -> None:
    evil = "console=ttyS0 x='1' & y=\"<2>\" </cmdline><devices/>"
    xml = render_domain_xml(_direct(cmdline=evil, kernel=Path("/tmp/a&b/vmlinuz")))
    root = ET.fromstring(xml)
    assert root.findtext("os/cmdline") == evil
    assert root.findtext("os/kernel") == "/tmp/a&b/vmlinuz"


def test_unrestricted_net_is_opt_in() -> None:
    args = _qemu_args(ET.fromstring(render_domain_xml(_direct(net_restrict=False))))
    assert args[args.index("-netdev") + 1] == "user,id=n0,hostfwd=tcp:127.0.0.1:40022-:22"


@pytest.mark.parametrize(
    ("kw", "needle"),
    [
        ({"name": "bad name"}, "not a valid libvirt name"),
        ({"ssh_port": 22}, "out of range"),
        ({"accel": "tcg"}, "accel must be"),
        ({"kernel": None}, "image build"),
        ({"metadata": {"1bad": "x"}}, "not an XML name"),
        ({"template": "disk"}, "overlay and a seed"),
    ],
)
def test_invalid_specs_fail_in_one_line(kw: dict[str, object], needle: str) -> None:
    with pytest.raises(ConfigError) as err:
        render_domain_xml(_direct(**kw))
    assert needle in str(err.value) and "\n" not in str(err.value)


def test_disk_template(tmp_path: Path) -> None:
    spec = _direct(template="disk", kernel=None, initrd=None, overlay=tmp_path / "o.qcow2", seed_iso=tmp_path / "seed.iso",
                   disk_cache="none", disk_io="native")
    xml = render_domain_xml(spec)
    _schema_valid(xml)
    root = ET.fromstring(xml)
    disk, cdrom = root.findall("devices/disk")
    assert disk.get("device") == "disk" and disk.find("source").get("file") == str(tmp_path / "o.qcow2")  # type: ignore[union-attr]
    driver = disk.find("driver")
    assert driver is not None and (driver.get("type"), driver.get("cache"), driver.get("io")) == ("qcow2", "none", "native")
    assert cdrom.get("device") == "cdrom" and cdrom.find("readonly") is not None
    assert root.find("os/boot").get("dev") == "hd"  # type: ignore[union-attr]
    args = _qemu_args(root)
    assert "hostfwd=tcp:127.0.0.1:40022-:22" in args[args.index("-netdev") + 1]
    with pytest.raises(ConfigError, match="disk_io=native needs"):
        render_domain_xml(replace(spec, disk_cache="writeback"))


def test_overlay_and_seed_iso(tmp_path: Path) -> None:
    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "64M"], check=True)
    overlay = make_overlay(base, tmp_path / "vm" / "overlay.qcow2")
    info = subprocess.run(["qemu-img", "info", str(overlay)], capture_output=True, text=True, check=True).stdout
    assert f"backing file: {base}" in info
    with pytest.raises(ConfigError, match="VEXFS_BASE_IMAGE_PATH"):
        make_overlay(tmp_path / "nope.qcow2", tmp_path / "o2.qcow2")

    img = build_image(req=BuildRequest(root=tmp_path / "images"))
    seed = seed_contents(img, "vexfs-dev-x-0")
    assert img.client_pubkey.read_text().strip() in seed.user_data
    assert img.host_pubkey in seed.user_data and "BEGIN OPENSSH PRIVATE KEY" in seed.user_data
    assert "uid: 1000" in seed.user_data
    # valid cloud-config whose per-boot script (a reset reruns it; runcmd would not) is ours
    import yaml

    from vexfs_cockpit.images.disk import READY_SCRIPT_PATH, ready_script

    doc = yaml.safe_load(seed.user_data)
    assert seed.user_data.startswith("#cloud-config\n") and "runcmd" not in doc
    (wf,) = doc["write_files"]
    assert wf["path"] == READY_SCRIPT_PATH and wf["permissions"] == "0755" and wf["content"] == ready_script()
    assert doc["ssh_keys"]["ed25519_public"] == img.host_pubkey and doc["disable_root"] is False
    # the one host key comes from the seed (cloud-init's schema wants a non-empty list here:
    # ed25519 exists by then, so nothing is generated)
    assert doc["ssh_genkeytypes"] == ["ed25519"]
    assert yaml.safe_load(seed_contents(img, "vexfs-ci-kernel_module-0").user_data)["hostname"] == "vexfs-ci-kernel-module-0"
    iso = make_seed_iso(img, "vexfs-dev-x-0", tmp_path / "vm" / "seed.iso")
    pvd = subprocess.run(["isoinfo", "-d", "-i", str(iso)], capture_output=True, text=True, check=True).stdout
    assert "Volume id: cidata" in pvd
    names = subprocess.run(["isoinfo", "-J", "-f", "-i", str(iso)], capture_output=True, text=True, check=True).stdout.split()
    assert sorted(names) == ["/meta-data", "/user-data"]


def _run_ready_script(tmp_path: Path, tcp_lines: str) -> tuple[int, str]:
    from vexfs_cockpit.images.disk import ready_script

    (tmp_path / "tcp").write_text("  sl  local_address rem_address   st\n" + tcp_lines)
    tty = tmp_path / "ttyS0"
    script = (ready_script().replace("/proc/net/tcp6", "/nonexistent").replace("/proc/net/tcp", str(tmp_path / "tcp"))
              .replace("/dev/ttyS0", str(tty)).replace("/run/vexfs-cockpit-ready", str(tmp_path / "announced")).replace("1200", "3").replace("dmesg -n 8", ":")
              .replace("> /proc/sys/kernel/", "> /dev/null #"))
    proc = subprocess.run(["sh", "-c", script], capture_output=True, text=True, timeout=30)
    return proc.returncode, tty.read_text() if tty.exists() else ""


def test_ready_script_waits_for_sshd_listening(tmp_path: Path) -> None:
    from vexfs_cockpit.images.initramfs import READY_MARKER

    listen = "   0: 00000000:0016 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1\n"
    assert _run_ready_script(tmp_path, listen) == (0, READY_MARKER + "\n")
    (tmp_path / "ttyS0").unlink()
    assert _run_ready_script(tmp_path, listen) == (0, "")  # announced once per boot
    (tmp_path / "announced").rmdir()
    # an established connection to port 22 or another listening port is not sshd listening
    other = ("   0: 0100007F:0016 0200007F:A000 01 00000000:00000000 00:00000000 00000000 0 0 1 1\n"
             "   1: 00000000:0017 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0 0 1 1\n")
    code, out = _run_ready_script(tmp_path, other)
    assert code == 1 and "sshd is not listening" in out and READY_MARKER not in out


def test_free_port_is_bindable_on_loopback() -> None:
    port = free_port()
    assert 1024 <= port <= 65535
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))
