"""Per-VM files for the ``disk`` template: a qcow2 overlay and a cloud-init seed ISO.

The overlay keeps the distro base image (VEXFS_BASE_IMAGE_PATH) untouched; the
NoCloud seed installs the self-test image's client key for root and ``tester`` and
its host key, so a distro guest is verified exactly like the initramfs guest.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from vexfs_cockpit.errors import ConfigError, InfraError
from vexfs_cockpit.images.initramfs import GUEST_UID, GUEST_USER, READY_MARKER, GuestImage, qemu_readable


def _tool(name: str, package: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise InfraError(f"{name} not found (the disk template needs it): `apt-get install {package}`")
    return path


def image_format(path: Path) -> str:
    """The format qemu-img sees in ``path`` (qcow2, raw, ...)."""
    proc = subprocess.run([_tool("qemu-img", "qemu-utils"), "info", "--output=json", str(path)],
                          capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise InfraError(f"cannot read base image {path}: {proc.stderr.strip()}")
    return str(json.loads(proc.stdout)["format"])


def make_overlay(base: Path, dest: Path) -> Path:
    """A fresh qcow2 overlay at ``dest`` backed by ``base`` (which is never written)."""
    if not base.is_file():
        raise ConfigError(f"fleet.base_image_path {base} does not exist: export VEXFS_BASE_IMAGE_PATH=/path/to/image.qcow2")
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.unlink(missing_ok=True)
    proc = subprocess.run(
        [_tool("qemu-img", "qemu-utils"), "create", "-q", "-f", "qcow2", "-F", image_format(base),
         "-b", str(base.resolve()), str(dest)],
        capture_output=True, text=True, check=False,
    )
    if proc.returncode != 0:
        raise InfraError(f"cannot create the overlay {dest}: {proc.stderr.strip()}")
    # The guest writes its host private key (from the seed) into it: owner and QEMU only.
    qemu_readable(dest)
    return dest


@dataclass(frozen=True, slots=True)
class Seed:
    user_data: str
    meta_data: str


# cloud-final runs scripts-per-boot on every boot (runcmd only on an instance's first):
# a reset reuses the overlay and the seed, and must announce readiness again.
READY_SCRIPT_PATH = "/var/lib/cloud/scripts/per-boot/vexfs-cockpit-ready"


def ready_script() -> str:
    """Per-boot: the settings the self-test guest's /init makes (console loglevel, hung-task
    timeout, sysrq, /dev/kmsg writes), then the ready marker on ttyS0 once sshd listens
    (0016 = port 22, state 0A = LISTEN; no ss/netstat needed), once per boot. Bounded: 120 s."""
    return r"""#!/bin/sh
dmesg -n 8
echo 5 > /proc/sys/kernel/hung_task_timeout_secs
echo 1 > /proc/sys/kernel/sysrq
echo on > /proc/sys/kernel/printk_devkmsg 2>/dev/null || true
i=0
while [ $i -lt 1200 ]; do
    if grep -q ':0016 0\{8,32\}:0000 0A' /proc/net/tcp /proc/net/tcp6 2>/dev/null; then
        # once per boot: the base image's ready unit and this seed's copy both run it
        mkdir /run/vexfs-cockpit-ready 2>/dev/null || exit 0
        echo '@READY@' > /dev/ttyS0
        exit 0
    fi
    sleep 0.1
    i=$((i + 1))
done
echo 'vexfs-cockpit: sshd is not listening on port 22 (journalctl -u ssh)' > /dev/ttyS0
exit 1
""".replace("@READY@", READY_MARKER)


def seed_contents(img: GuestImage, hostname: str) -> Seed:
    """cloud-config: keys for root and tester, our host key, and the per-boot ready script."""
    # VM names carry domain names (kernel_module): '_' is no hostname character, and
    # cloud-init refuses to set one with it.
    hostname = hostname.replace("_", "-")
    client = img.client_pubkey.read_text().strip()
    host_priv = img.host_key_openssh.read_text()
    indented = "".join(f"      {line}\n" for line in host_priv.splitlines())
    script = "".join(f"      {line}\n" for line in ready_script().splitlines())
    user_data = f"""#cloud-config
hostname: {hostname}
disable_root: false
ssh_pwauth: false
ssh_authorized_keys:
  - {client}
users:
  - default
  - name: {GUEST_USER}
    uid: {GUEST_UID}
    shell: /bin/sh
    lock_passwd: true
    ssh_authorized_keys:
      - {client}
ssh_deletekeys: true
ssh_genkeytypes: [ed25519]
ssh_keys:
    ed25519_private: |
{indented}    ed25519_public: {img.host_pubkey}
write_files:
  - path: {READY_SCRIPT_PATH}
    permissions: '0755'
    content: |
{script}"""
    meta_data = f"instance-id: {hostname}-{os.urandom(4).hex()}\nlocal-hostname: {hostname}\n"
    return Seed(user_data, meta_data)


def make_seed_iso(img: GuestImage, hostname: str, dest: Path) -> Path:
    """A NoCloud seed ISO (volume label ``cidata``) at ``dest``."""
    seed = seed_contents(img, hostname)
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Built in a private (0700) directory beside ``dest`` and given its mode there, then
    # renamed into place: the seed holds the guest host private key, and genisoimage
    # creates its output world-readable.
    with tempfile.TemporaryDirectory(prefix=".vexfs-seed-", dir=dest.parent) as tmp:
        (Path(tmp) / "user-data").write_text(seed.user_data)
        (Path(tmp) / "meta-data").write_text(seed.meta_data)
        iso = Path(tmp) / "seed.iso"
        proc = subprocess.run(
            [_tool("genisoimage", "genisoimage"), "-quiet", "-output", str(iso), "-volid", "cidata",
             "-joliet", "-rock", "user-data", "meta-data"],
            cwd=tmp, capture_output=True, text=True, check=False,
        )
        if proc.returncode != 0:
            raise InfraError(f"cannot create the cloud-init seed {dest}: {proc.stderr.strip()}")
        qemu_readable(iso)  # readable by its owner and QEMU only
        os.replace(iso, dest)
    return dest


def discard_vm_files(image_root: Path, name: str) -> None:
    """Remove a gone disk VM's overlay and seed (the seed holds the guest host key).
    ``image_root``: the image cache root (``image.default_image_root``); no-op for others."""
    shutil.rmtree(image_root.parent / "vms" / name, ignore_errors=True)


def vm_dir(img: GuestImage, name: str) -> Path:
    """Where a disk VM's overlay and seed live: beside the image cache (libvirt-qemu can reach it)."""
    return img.dir.parent.parent / "vms" / name
