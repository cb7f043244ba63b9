"""The ``disk`` template's base image: a bootable Debian qcow2 built from Debian packages.

``build_base_image()`` makes ``<image root>/base/<input hash>/base.qcow2``: mmdebstrap
installs the host's Debian release (from the mirror the host's apt uses) with the
guest kernel (the exact ``linux-image-<version>`` the host's headers match, so
modules built on the host load in it), cloud-init, openssh-server and the tools the
domains use, onto an ext4 partition of a raw disk; extlinux boots it with the serial
console on ttyS0; ``qemu-img convert`` turns it into the qcow2 that VMs overlay.
Cached by its inputs like the initramfs image (``manifest.json`` says what it
carries); a build takes minutes, a cache hit a few short host commands.

SSH keys are not in the base image: each VM's cloud-init seed installs the
self-test image's client key and host key (``image_disk.seed_contents``).
Every loop device and mount the build makes is released, on failure too.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import struct
import subprocess
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vexfs_cockpit.config.models import FleetSettings
from vexfs_cockpit.errors import InfraError
from vexfs_cockpit.images.initramfs import (
    BASE_CMDLINE,
    WATCHDOG_CMDLINE,
    MANIFEST,
    default_image_root,
    package_version,
    prune_images,
    publish_build,
    resolve_kernel_version,
)
from vexfs_cockpit.images.disk import ready_script

BASE_BUILDER_VERSION = 3  # 2: ready unit, static eth0, no cloud-config stage; 3: small initramfs
BASE_IMAGE = "base.qcow2"
DISK_SIZE_MB = 3072  # sparse: the qcow2 holds only what is written (~1 GB)
PART_START_SECTOR = 2048  # 1 MiB, the usual alignment
SECTOR = 512
# What the guest runs besides the kernel: an init, SSH, cloud-init for the seed, DHCP
# on eth0, and the tools the domains call (domains._common: /usr/sbin/losetup from
# `mount`, mke2fs, fio, flock/setpriv from util-linux, insmod/rmmod from kmod).
GUEST_PACKAGES = (
    "systemd-sysv", "udev", "initramfs-tools", "cloud-init", "openssh-server",
    "ifupdown", "isc-dhcp-client", "iproute2", "procps", "kmod",
    "util-linux", "mount", "e2fsprogs", "fio",
)
# net.ifnames=0: the NIC is eth0 (the interfaces file below names it); the rest is the
# self-test guest's line (serial console, loglevel=7, panic=-1) plus sysrq for the watchdog.
GUEST_CMDLINE = f"{BASE_CMDLINE} {WATCHDOG_CMDLINE} net.ifnames=0"
MBR_BOOTCODE = Path("/usr/lib/syslinux/mbr/mbr.bin")
# The initramfs only has to mount ext4 on virtio-blk (MODULES=list instead of Debian's
# "most": 36 MB of drivers for any machine, unpacked and probed under TCG at every boot).
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "ext4", "crc32c_generic")
_HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Host tools the build runs, and the Debian package of each (scripts/setup.sh installs them).
BUILD_TOOLS = {
    "mmdebstrap": "mmdebstrap",
    "extlinux": "extlinux",
    "mkfs.ext4": "e2fsprogs",
    "losetup": "mount",
    "mount": "mount",
    "umount": "mount",
    "fstrim": "util-linux",
    "qemu-img": "qemu-utils",
}


# ---------------------------------------------------------------------------- pure parts


@dataclass(frozen=True, slots=True)
class AptSource:
    uri: str
    suite: str
    components: tuple[str, ...]

    def line(self) -> str:
        return f"deb {self.uri} {self.suite} {' '.join(self.components)}"


def parse_apt_sources(text: str, *, deb822: bool) -> list[AptSource]:
    """``deb`` entries of one sources file (one-line ``.list`` or deb822 ``.sources``)."""
    out: list[AptSource] = []
    if not deb822:
        for raw in text.splitlines():
            line = re.sub(r"\[[^\]]*\]", " ", raw.split("#", 1)[0]).split()
            if len(line) >= 4 and line[0] == "deb":
                out.append(AptSource(line[1].rstrip("/"), line[2], tuple(line[3:])))
        return out
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = ""
        for raw in stanza.splitlines():
            if raw.lstrip().startswith("#"):
                continue
            if raw[:1].isspace() and key:
                fields[key] += " " + raw.strip()
                continue
            key, sep, value = raw.partition(":")
            if sep:
                key = key.strip().lower()
                fields[key] = value.strip()
        if fields.get("enabled", "yes").lower() == "no" or "deb" not in fields.get("types", "").split():
            continue
        for uri in fields.get("uris", "").split():
            for suite in fields.get("suites", "").split():
                out.append(AptSource(uri.rstrip("/"), suite, tuple(fields.get("components", "main").split())))
    return out


def release_sources(sources: Sequence[AptSource], codename: str) -> list[AptSource]:
    """The entries of the Debian release ``codename`` (bookworm, -updates, -security), deduplicated."""
    seen: list[AptSource] = []
    for src in sources:
        if (src.suite == codename or src.suite.startswith(codename + "-")) and src not in seen:
            seen.append(src)
    return seen


def host_apt_sources(etc_apt: Path = Path("/etc/apt")) -> list[AptSource]:
    files: list[tuple[Path, bool]] = []
    if (etc_apt / "sources.list").is_file():
        files.append((etc_apt / "sources.list", False))
    d = etc_apt / "sources.list.d"
    if d.is_dir():
        files += [(p, False) for p in sorted(d.glob("*.list"))]
        files += [(p, True) for p in sorted(d.glob("*.sources"))]
    out: list[AptSource] = []
    for path, deb822 in files:
        try:
            out += parse_apt_sources(path.read_text(), deb822=deb822)
        except OSError:
            continue
    return out


def host_codename(os_release: Path = Path("/etc/os-release")) -> str:
    try:
        text = os_release.read_text()
    except OSError as err:
        raise InfraError(f"cannot read {os_release} ({err.strerror}): the base image builder needs a Debian host") from err
    m = re.search(r"^VERSION_CODENAME=\"?([a-z]+)\"?$", text, re.M)
    if not m or "ID=debian" not in text:
        raise InfraError(f"{os_release} names no Debian release: the base image builder needs a Debian host")
    return m.group(1)


def mbr(bootcode: bytes, disk_sectors: int, start: int = PART_START_SECTOR, signature: int = 0) -> bytes:
    """A DOS partition table: one bootable Linux partition from ``start`` to the end.

    CHS fields hold the "use LBA" values (0xFE 0xFF 0xFF); everything reads the LBA ones.
    """
    if len(bootcode) > 440:
        raise ValueError("MBR boot code is at most 440 bytes")
    count = disk_sectors - start
    if count <= 0:
        raise ValueError("the disk is smaller than the partition offset")
    chs = b"\xfe\xff\xff"
    entry = struct.pack("<B3sB3sII", 0x80, chs, 0x83, chs, start, count)
    table = entry + bytes(16 * 3)
    return bootcode.ljust(440, b"\0") + struct.pack("<I", signature) + b"\0\0" + table + b"\x55\xaa"


def extlinux_conf(kernel_version: str, root_uuid: str, cmdline: str = GUEST_CMDLINE) -> str:
    """extlinux.conf: boot the guest kernel at once, menu on the serial port too."""
    return (
        "SERIAL 0 115200\n"
        "DEFAULT linux\n"
        "PROMPT 0\n"
        "TIMEOUT 0\n"
        "LABEL linux\n"
        f"  LINUX /boot/vmlinuz-{kernel_version}\n"
        f"  INITRD /boot/initrd.img-{kernel_version}\n"
        f"  APPEND root=UUID={root_uuid} ro {cmdline}\n"
    )


READY_UNIT = "vexfs-cockpit-ready.service"
READY_BIN = "usr/local/sbin/vexfs-cockpit-ready"
# QEMU user-mode networking (the only kind the templates use) always hands out
# 10.0.2.15/24 via 10.0.2.2: a static address skips ~20 s of DHCP under TCG.
SLIRP_GUEST_ADDR = "10.0.2.15/24"
SLIRP_GATEWAY = "10.0.2.2"


def initramfs_hook() -> str:
    """mmdebstrap hook (``$1`` is the root): initramfs-tools config for a small initramfs."""
    mods = "\\n".join(INITRAMFS_MODULES)
    return (
        'mkdir -p "$1/etc/initramfs-tools/conf.d" "$1/usr/share/initramfs-tools/modules.d" && '
        'echo MODULES=list > "$1/etc/initramfs-tools/conf.d/vexfs-cockpit" && '
        f"printf '{mods}\\n' > \"$1/usr/share/initramfs-tools/modules.d/vexfs-cockpit\""
    )


def guest_files(root_uuid: str) -> dict[str, str]:
    """Files written into the image (path without leading /, text)."""
    return {
        "etc/fstab": f"UUID={root_uuid} / ext4 errors=remount-ro 0 1\n",
        "etc/network/interfaces": (
            "source /etc/network/interfaces.d/*\n"
            "auto lo\niface lo inet loopback\n"
            f"allow-hotplug eth0\niface eth0 inet static\n  address {SLIRP_GUEST_ADDR}\n  gateway {SLIRP_GATEWAY}\n"
        ),
        # The ready marker as soon as sshd listens, every boot: the seed's keys are in by
        # then (cloud-init's init stage runs before ssh.service). The seed's per-boot copy
        # of the script (for foreign images) sees it was announced and stays quiet.
        READY_BIN: ready_script(),
        f"etc/systemd/system/{READY_UNIT}": (
            "[Unit]\n"
            "Description=vexfs-cockpit: ready marker on ttyS0 once sshd listens\n"
            "Wants=ssh.service\n"
            "After=ssh.service cloud-init.service\n"
            "[Service]\n"
            "Type=oneshot\n"
            f"ExecStart=/{READY_BIN}\n"
            "[Install]\n"
            "WantedBy=multi-user.target\n"
        ),
        # NoCloud only: no 2-minute probes for metadata services that are not there;
        # the network is ours (above), not cloud-init's fallback.
        "etc/cloud/cloud.cfg.d/90_vexfs_cockpit.cfg": (
            "datasource_list: [ NoCloud, None ]\n"
            "network: {config: disabled}\n"
        ),
        # What the self-test guest's /init and command line set, for the watchdog and
        # klog from the first boot on (the seed's runcmd repeats them).
        "etc/sysctl.d/90-vexfs-cockpit.conf": (
            "kernel.hung_task_timeout_secs = 5\n"
            "kernel.sysrq = 1\n"
            "kernel.printk = 8 4 1 8\n"
        ),
        "etc/hostname": "vexfs-guest\n",
        "etc/hosts": "127.0.0.1 localhost\n",
    }


# Symlinks made in the image (path -> target): the ready unit enabled; cloud-init's
# config stage (apt, locale, ntp, runcmd: nothing the seed asks for) masked, one
# Python start (~30 s under TCG) less per boot.
GUEST_LINKS = {
    f"etc/systemd/system/multi-user.target.wants/{READY_UNIT}": f"/etc/systemd/system/{READY_UNIT}",
    "etc/systemd/system/cloud-config.service": "/dev/null",
}


@dataclass(frozen=True, slots=True)
class BasePlan:
    kernel_version: str
    kernel_package_version: str  # the host's linux-image-<kv> version: the guest gets the same
    codename: str
    sources: tuple[AptSource, ...]
    packages: tuple[str, ...] = GUEST_PACKAGES
    size_mb: int = DISK_SIZE_MB

    @property
    def kernel_package(self) -> str:
        return f"linux-image-{self.kernel_version}"

    def includes(self) -> list[str]:
        return [f"{self.kernel_package}={self.kernel_package_version}", *self.packages]

    def mmdebstrap_argv(self, target: Path) -> list[str]:
        return [
            "mmdebstrap", "--variant=minbase", "--mode=root", "--format=directory",
            f"--include={','.join(self.includes())}",
            # before the kernel package's postinst builds the initramfs
            f"--essential-hook={initramfs_hook()}",
            self.codename, str(target), *(s.line() for s in self.sources),
        ]

    def input_hash(self) -> str:
        h = hashlib.sha256()
        h.update(f"base builder {BASE_BUILDER_VERSION}\nsize {self.size_mb}\n".encode())
        h.update(" ".join(self.mmdebstrap_argv(Path("/target"))).encode())
        h.update(extlinux_conf(self.kernel_version, "UUID").encode())
        h.update(json.dumps([guest_files("UUID"), GUEST_LINKS], sort_keys=True).encode())
        return h.hexdigest()


def plan_base(fleet: FleetSettings | None = None, kernel_version: str | None = None) -> BasePlan:
    kv = resolve_kernel_version(kernel_version or (fleet.guest_kernel if fleet else None))
    pkg_version = package_version(f"linux-image-{kv}")
    if pkg_version is None:
        raise InfraError(
            f"linux-image-{kv} is not installed on this host, so its version (the guest's) is unknown: "
            f"`apt-get install linux-image-{kv} linux-headers-{kv}` or set fleet.guest_kernel"
        )
    codename = host_codename()
    sources = release_sources(host_apt_sources(), codename)
    if not sources:
        raise InfraError(
            f"no Debian {codename} entry in /etc/apt/sources.list*: add the mirror this host installs from"
        )
    return BasePlan(kv, pkg_version, codename, tuple(sources))


# ---------------------------------------------------------------------------- the result


@dataclass(frozen=True, slots=True)
class BaseImage:
    dir: Path
    path: Path  # the qcow2 (VEXFS_BASE_IMAGE_PATH)
    kernel_version: str
    kernel_package_version: str
    input_hash: str
    built_at: float
    cmdline: str = GUEST_CMDLINE
    packages: dict[str, str] = field(default_factory=dict)

    def to_manifest(self) -> dict[str, Any]:
        return {
            "base_builder_version": BASE_BUILDER_VERSION,
            "image": self.path.name,
            "kernel_version": self.kernel_version,
            "kernel_package_version": self.kernel_package_version,
            "input_hash": self.input_hash,
            "built_at": self.built_at,
            "cmdline": self.cmdline,
            "packages": self.packages,
        }

    @classmethod
    def from_dir(cls, d: Path) -> "BaseImage":
        try:
            m = json.loads((d / MANIFEST).read_text())
            img = cls(
                dir=d, path=d / m["image"], kernel_version=m["kernel_version"],
                kernel_package_version=m["kernel_package_version"], input_hash=m["input_hash"],
                built_at=float(m["built_at"]), cmdline=m.get("cmdline", GUEST_CMDLINE),
                packages=dict(m.get("packages", {})),
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InfraError(f"base image at {d} is unreadable ({err}): `vexfs-cockpit image base --force`") from err
        if not img.path.is_file():
            raise InfraError(f"base image at {d} lacks {img.path.name}: `vexfs-cockpit image base --force`")
        return img


def base_root(fleet: FleetSettings | None = None) -> Path:
    return default_image_root(fleet) / "base"


def find_base_image(fleet: FleetSettings | None = None, plan: BasePlan | None = None) -> BaseImage | None:
    """The built base image for the current inputs, or None."""
    plan = plan or plan_base(fleet)
    try:
        img = BaseImage.from_dir(base_root(fleet) / plan.input_hash()[:16])
    except InfraError:
        return None
    return img if img.input_hash == plan.input_hash() else None


def base_image_kernel(path: Path) -> str:
    """The kernel a base image boots, when ``image base`` built it (its manifest says);
    "" for an image from elsewhere (its kernel is known once it is up)."""
    try:
        img = BaseImage.from_dir(path.parent)
    except InfraError:
        return ""
    return img.kernel_version if img.path.resolve() == path.resolve() else ""


# ---------------------------------------------------------------------------- the build


def _run(argv: Sequence[str], what: str, fix: str, *, timeout: float = 600) -> str:
    """Run a build step; InfraError ``<what> failed (<its first error line>): <fix>``."""
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=timeout,
                              env={**os.environ, "PATH": _HOST_PATH, "LC_ALL": "C.UTF-8"})
    except FileNotFoundError as err:
        raise InfraError(f"{what} failed: {argv[0]} not found: `apt-get install {BUILD_TOOLS.get(argv[0], argv[0])}`") from err
    except subprocess.TimeoutExpired as err:
        raise InfraError(f"{what} did not finish within {timeout:.0f}s: {fix}") from err
    if proc.returncode != 0:
        lines = [ln.strip() for ln in (proc.stderr + "\n" + proc.stdout).splitlines() if ln.strip()]
        # The first "E:" is the cause (mmdebstrap then adds "apt-get ... failed", "failed to run").
        errs = [ln for ln in lines if ln.startswith("E: ")] or [
            ln for ln in lines if re.search(r"\b(error|failed|cannot|unable)\b", ln, re.I)]
        detail = (errs[:1] or lines[-1:] or [f"exit {proc.returncode}"])[0]
        raise InfraError(f"{what} failed ({detail}): {fix}")
    return proc.stdout


def check_tools() -> None:
    """Every host tool the build runs, or one line naming the packages to install."""
    missing = sorted({pkg for tool, pkg in BUILD_TOOLS.items() if shutil.which(tool, path=_HOST_PATH) is None})
    if not MBR_BOOTCODE.is_file():
        missing.append("syslinux-common")
    if missing:
        raise InfraError(
            f"the base image build needs {', '.join(missing)}: `apt-get install {' '.join(missing)}` (or scripts/setup.sh)"
        )


@contextmanager
def _loop_device(raw: Path, offset: int, size: int) -> Iterator[str]:
    """The partition of ``raw`` as a loop device (offset mapping: no partition scan to wait for)."""
    dev = _run(["losetup", "--find", "--show", "--offset", str(offset), "--sizelimit", str(size), str(raw)],
               "attaching a loop device", "free one (`losetup -a`; `losetup -d /dev/loopN`) or load the loop module").strip()
    try:
        yield dev
    finally:
        subprocess.run(["losetup", "-d", dev], capture_output=True, check=False, env={"PATH": _HOST_PATH})


def _umount(mnt: Path) -> str | None:
    """Unmount ``mnt`` and anything below it; on failure detach it lazily and say why."""
    env = {"PATH": _HOST_PATH, "LC_ALL": "C.UTF-8"}
    proc = subprocess.run(["umount", "-R", str(mnt)], capture_output=True, text=True, check=False, env=env)
    if proc.returncode == 0:
        return None
    subprocess.run(["umount", "-R", "-l", str(mnt)], capture_output=True, check=False, env=env)
    return proc.stderr.strip() or f"umount exit {proc.returncode}"


@contextmanager
def _mounted(dev: str, mnt: Path) -> Iterator[Path]:
    _run(["mount", "-t", "ext4", dev, str(mnt)], f"mounting {dev}", "check `dmesg` for ext4 errors")
    try:
        yield mnt
    except BaseException:
        _umount(mnt)
        raise
    # A clean unmount, or no image: a lazily detached file system may still be written
    # (its journal would need recovery at the guest's first boot).
    err = _umount(mnt)
    if err is not None:
        raise InfraError(f"unmounting the new root file system failed ({err}): `fuser -vm {mnt}` names the holder; "
                         "stop it and rebuild with `vexfs-cockpit image base --force`")


def _installed_versions(rootfs: Path, packages: Sequence[str]) -> dict[str, str]:
    proc = subprocess.run(
        ["dpkg-query", f"--admindir={rootfs}/var/lib/dpkg", "-W", "-f=${Package}\t${Version}\n", *packages],
        capture_output=True, text=True, check=False,
    )
    return dict(ln.split("\t", 1) for ln in proc.stdout.splitlines() if "\t" in ln)


def _populate(plan: BasePlan, rootfs: Path, root_uuid: str, say: Callable[[str], None]) -> dict[str, str]:
    say(f"mmdebstrap {plan.codename} with {plan.kernel_package} {plan.kernel_package_version} (minutes)")
    _run(plan.mmdebstrap_argv(rootfs), f"mmdebstrap {plan.codename}",
         "check that the host's Debian mirror answers (`apt-get update`) and the kernel version is still on it "
         "(`apt-get install linux-image-amd64 linux-headers-amd64` moves the host to the current one)",
         timeout=1800)
    vmlinuz = rootfs / "boot" / f"vmlinuz-{plan.kernel_version}"
    initrd = rootfs / "boot" / f"initrd.img-{plan.kernel_version}"
    if not vmlinuz.is_file() or not initrd.is_file():
        raise InfraError(f"the base image has no {vmlinuz.name} or {initrd.name} after mmdebstrap: `vexfs-cockpit image base --force`")
    for rel, text in guest_files(root_uuid).items():
        p = rootfs / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        os.chmod(p, 0o755 if rel == READY_BIN else 0o644)
    for rel, target in GUEST_LINKS.items():
        p = rootfs / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        p.unlink(missing_ok=True)
        p.symlink_to(target)
    # No host keys in a shared base image: each VM's cloud-init seed installs the image's.
    for key in (rootfs / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    ext = rootfs / "boot" / "extlinux"
    ext.mkdir(parents=True, exist_ok=True)
    (ext / "extlinux.conf").write_text(extlinux_conf(plan.kernel_version, root_uuid))
    _run(["extlinux", "--install", str(ext)], "installing extlinux", "`apt-get install extlinux syslinux-common`")
    versions = _installed_versions(rootfs, [plan.kernel_package, *plan.packages])
    got = versions.get(plan.kernel_package)
    if got != plan.kernel_package_version:
        raise InfraError(
            f"the base image got {plan.kernel_package} {got}, not the host's {plan.kernel_package_version}: "
            "update the host kernel and headers (`apt-get install linux-image-amd64`) and rebuild"
        )
    return versions


def _build(plan: BasePlan, final: Path, say: Callable[[str], None]) -> BaseImage:
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=final.parent))
    try:
        os.chmod(tmp, 0o755)
        raw = tmp / "disk.raw"
        size = plan.size_mb * 1024 * 1024
        with open(raw, "wb") as f:
            f.truncate(size)
            f.write(mbr(MBR_BOOTCODE.read_bytes()[:440], size // SECTOR, signature=int.from_bytes(os.urandom(4), "little")))
        root_uuid = str(uuid.uuid4())
        offset = PART_START_SECTOR * SECTOR
        mnt = tmp / "mnt"
        mnt.mkdir()
        with ExitStack() as stack:
            dev = stack.enter_context(_loop_device(raw, offset, size - offset))
            # ^64bit: syslinux reads ext4 without it for sure; 3 GB needs no 64-bit block numbers.
            _run(["mkfs.ext4", "-q", "-F", "-O", "^64bit", "-L", "vexfs-root", "-U", root_uuid, dev],
                 "formatting the root file system", "`apt-get install e2fsprogs`")
            stack.enter_context(_mounted(dev, mnt))
            versions = _populate(plan, mnt, root_uuid, say)
            # Blocks apt and mmdebstrap freed become holes in the raw file: the qcow2
            # then holds only live data (~1.5 GB -> under 1 GB).
            _run(["fstrim", str(mnt)], "trimming the root file system", "`apt-get install util-linux`")
        say("converting to qcow2")
        out = tmp / BASE_IMAGE
        _run(["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out)],
             "converting the base image to qcow2", "`apt-get install qemu-utils` and check free space")
        raw.unlink()
        mnt.rmdir()
        os.chmod(out, 0o644)  # QEMU (libvirt-qemu) reads it as every overlay's backing file
        img = BaseImage(
            dir=final, path=final / BASE_IMAGE, kernel_version=plan.kernel_version,
            kernel_package_version=plan.kernel_package_version, input_hash=plan.input_hash(),
            built_at=time.time(), packages=versions,
        )
        manifest = img.to_manifest() | {
            "build_seconds": round(time.monotonic() - started, 1),
            "sources": [s.line() for s in plan.sources],
        }
        publish_build(tmp, final, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return img


def build_base_image(
    fleet: FleetSettings | None = None,
    *,
    force: bool = False,
    kernel_version: str | None = None,
    progress: Callable[[str], None] | None = None,
) -> BaseImage:
    """The cached base image for the current inputs, built first if needed (minutes)."""
    say = progress or (lambda _msg: None)
    if os.geteuid() != 0:
        raise InfraError("building the base image needs root (loop devices, mounts, chroot): run it as root")
    plan = plan_base(fleet, kernel_version)
    root = base_root(fleet)
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError as err:
        raise InfraError(f"cannot create the image cache {root} ({err.strerror}): set fleet.image_dir to a writable path") from err
    final = root / plan.input_hash()[:16]
    with open(root / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not force:
            cached = find_base_image(fleet, plan)
            if cached is not None:
                say(f"base image cached: {cached.path} (kernel {cached.kernel_version})")
                return cached
        check_tools()
        say(f"building the base image for kernel {plan.kernel_version} in {final}")
        img = _build(plan, final, say)
        # ~1 GB each: superseded images of the same kernel go after a day, as the initramfs
        # ones do (an overlay of a running VM may still read the old one until then).
        prune_images(root, keep=img)  # type: ignore[arg-type]
        return img


def export_image(img: BaseImage, out: Path) -> Path:
    """Put the image at ``out`` too (a hard link when it can, else a copy)."""
    out = out.expanduser()
    out.parent.mkdir(parents=True, exist_ok=True)
    # A fresh private directory beside ``out``, not a fixed temp name another user could
    # plant a symlink at (this runs as root).
    with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as private:
        tmp = Path(private) / out.name
        try:
            os.link(img.path, tmp)
        except OSError:
            shutil.copyfile(img.path, tmp)
        os.chmod(tmp, 0o644)  # the base image holds no secrets (no keys: those are in the seed)
        os.replace(tmp, out)
    return out
