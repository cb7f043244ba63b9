"""The self-test guest: a Debian kernel plus a busybox/dropbear initramfs, built from host packages.

``build_image()`` assembles it in seconds without network and caches it under
``<image root>/<input hash>/`` with a ``manifest.json``; it is rebuilt only when an
input changes (any copied host file's size/mtime, the guest scripts, the kernel
version, ``BUILDER_VERSION``). Each build makes a fresh SSH client key and dropbear
host key; the host key's public half is what callers verify the guest against, on
each VM's own port (``transport.ssh`` pins it). The initrd holds the host private key:
it is readable by its owner and QEMU's group only (``qemu_readable``).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import platformdirs

from vexfs_cockpit.config.distro import host_kernel_package
from vexfs_cockpit.config.models import FleetSettings
from vexfs_cockpit.errors import InfraError
from vexfs_cockpit.images.cpio import Entry, write_initramfs
from vexfs_cockpit.images.kernel_tree import KernelTree, is_tree_setting, load_tree, staged_modules

BUILDER_VERSION = 4  # 3: root logs in to busybox ash; 4: initrd/vmlinuz not world-readable, no any-port known_hosts
READY_MARKER = "vexfs-cockpit: guest ready"
BASE_CMDLINE = "console=ttyS0 loglevel=7 panic=-1 printk.devkmsg=on"
# Kernel command line for guests we boot directly: every sysrq function from the
# keyboard from the first instant (a test may wedge the guest before the hang
# watchdog's SSH enable gets through: measured with the softlockup knob).
WATCHDOG_CMDLINE = "sysrq_always_enabled"
GUEST_USER = "tester"
GUEST_UID = 1000
MANIFEST = "manifest.json"
# Kernel modules /init loads (with their dependencies, from modules.dep). virtio_rng
# feeds the guest's CRNG from the host: without it dropbear waits ~4 s for entropy.
# crc32c_generic is ext4's soft dependency (modules.softdep): without it mount fails.
GUEST_MODULES = ("e1000", "virtio_pci", "virtio_rng", "loop", "crc32c_generic", "libcrc32c", "ext4")
_GUEST_FILES = ("init", "inittab", "ready", "udhcpc.script")
_HOST_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


@dataclass(frozen=True, slots=True)
class _Tool:
    name: str  # looked up on the host PATH (sbin included)
    guest_path: str
    package: str  # Debian package to install when missing
    required: bool = True


# Tools busybox lacks or does poorly. mke2fs/e2fsck are the real ones so ext4 on a
# loop device behaves as on a normal system; flock(1) is not a Debian busybox applet.
_TOOLS = (
    # Debian's busybox-static shell prefers its applets over $PATH, so a real
    # /usr/sbin/losetup would never run from `sh -c`; dash as /bin/sh looks up $PATH.
    _Tool("dash", "bin/sh", "dash"),
    _Tool("dropbear", "usr/sbin/dropbear", "dropbear-bin"),
    _Tool("mke2fs", "usr/sbin/mke2fs", "e2fsprogs"),
    _Tool("e2fsck", "usr/sbin/e2fsck", "e2fsprogs"),
    _Tool("tune2fs", "usr/sbin/tune2fs", "e2fsprogs"),
    _Tool("dumpe2fs", "usr/sbin/dumpe2fs", "e2fsprogs"),
    _Tool("flock", "usr/bin/flock", "util-linux", required=False),
    # busybox's losetup lacks --show and its setpriv lacks --reuid.
    _Tool("losetup", "usr/sbin/losetup", "util-linux", required=False),
    _Tool("setpriv", "usr/bin/setpriv", "util-linux", required=False),
)
_TOOL_LINKS = {
    "usr/sbin/mkfs.ext2": "mke2fs",
    "usr/sbin/mkfs.ext3": "mke2fs",
    "usr/sbin/mkfs.ext4": "mke2fs",
    "usr/sbin/fsck.ext4": "e2fsck",
}
_PACKAGES = ("busybox-static", "dropbear-bin", "e2fsprogs")


# ---------------------------------------------------------------------------- the result


@dataclass(frozen=True, slots=True)
class GuestImage:
    """A built image: what the VM template and the SSH transport need."""

    dir: Path
    kernel_version: str
    kernel: Path  # vmlinuz (a copy, so libvirt relabels ours and not /boot's)
    initrd: Path
    client_key: Path  # OpenSSH private key (ed25519) authorised for root and tester
    client_pubkey: Path
    host_pubkey: str  # "ssh-ed25519 AAAA..." of the guest's dropbear (trusted per VM port, never any port)
    input_hash: str
    built_at: float
    packages: dict[str, str] = field(default_factory=dict)
    ready_marker: str = READY_MARKER
    user: str = GUEST_USER
    user_uid: int = GUEST_UID
    kernel_tree: str = ""  # the built kernel tree the kernel and modules came from ("" : installed)

    @property
    def host_key_openssh(self) -> Path:
        """The guest host private key in OpenSSH form (0600), for cloud-init seeds."""
        return self.dir / "ssh_host_ed25519_key"

    def kernel_cmdline(self, hostname: str | None = None, extra: str = "") -> str:
        """The guest command line: serial console, full printk level, reboot on panic."""
        parts = [BASE_CMDLINE]
        if hostname:
            parts.append(f"vexfs.hostname={hostname}")
        if extra.strip():
            parts.append(extra.strip())
        return " ".join(parts)

    def host_key_known_hosts(self) -> tuple[list[Any], list[Any], list[Any]]:
        """``known_hosts=`` for an ``SshTarget``: trust exactly this image's host key.

        A (trusted host keys, trusted CA keys, revoked keys) tuple: ``SshTarget`` pins
        it to its own host:port (``transport.ssh.pinned_known_hosts``), so a per-boot
        port needs no file and the key vouches for no other port. Given to
        asyncssh.connect directly it would match any host and port.
        """
        from vexfs_cockpit.transport.asyncssh_import import asyncssh  # local: keep `import image` cheap for the CLI

        return ([asyncssh.import_public_key(self.host_pubkey)], [], [])

    def client_keys(self) -> list[Any]:
        """``client_keys=`` for asyncssh.connect."""
        from vexfs_cockpit.transport.asyncssh_import import asyncssh

        return [asyncssh.read_private_key(str(self.client_key))]

    def to_manifest(self) -> dict[str, Any]:
        return {
            "builder_version": BUILDER_VERSION,
            "input_hash": self.input_hash,
            "built_at": self.built_at,
            "kernel_version": self.kernel_version,
            "kernel": self.kernel.name,
            "initrd": self.initrd.name,
            "client_key": self.client_key.name,
            "client_pubkey": self.client_pubkey.name,
            "host_pubkey": self.host_pubkey,
            "packages": self.packages,
            "ready_marker": self.ready_marker,
            "user": self.user,
            "user_uid": self.user_uid,
        } | ({"kernel_tree": self.kernel_tree} if self.kernel_tree else {})

    @classmethod
    def from_dir(cls, image_dir: Path) -> "GuestImage":
        """Load a built image; InfraError if its manifest or files are missing."""
        path = image_dir / MANIFEST
        try:
            m = json.loads(path.read_text())
            img = cls(
                dir=image_dir,
                kernel_version=m["kernel_version"],
                kernel=image_dir / m["kernel"],
                initrd=image_dir / m["initrd"],
                client_key=image_dir / m["client_key"],
                client_pubkey=image_dir / m["client_pubkey"],
                host_pubkey=m["host_pubkey"],
                input_hash=m["input_hash"],
                built_at=float(m["built_at"]),
                packages=dict(m.get("packages", {})),
                ready_marker=m.get("ready_marker", READY_MARKER),
                user=m.get("user", GUEST_USER),
                user_uid=int(m.get("user_uid", GUEST_UID)),
                kernel_tree=str(m.get("kernel_tree", "")),
            )
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise InfraError(
                f"guest image at {image_dir} is unreadable ({err}): rebuild it with `vexfs-cockpit image build --force`"
            ) from err
        for p in (img.kernel, img.initrd, img.client_key, img.host_key_openssh):
            if not p.is_file():
                raise InfraError(f"guest image at {image_dir} lacks {p.name}: rebuild it with `vexfs-cockpit image build --force`")
        return img


# ---------------------------------------------------------------------------- host facts


def _run(argv: Sequence[str], what: str) -> str:
    try:
        proc = subprocess.run(argv, capture_output=True, text=True, check=False, env={**os.environ, "PATH": _HOST_PATH})
    except FileNotFoundError as err:
        raise InfraError(f"{what}: {argv[0]} not found") from err
    if proc.returncode != 0:
        raise InfraError(f"{what}: `{' '.join(argv)}` failed: {proc.stderr.strip() or proc.stdout.strip()}")
    return proc.stdout


def package_version(pkg: str) -> str | None:
    proc = subprocess.run(
        ["dpkg-query", "-W", "-f=${Status}\t${Version}", pkg], capture_output=True, text=True, check=False
    )
    status, _, version = proc.stdout.partition("\t")
    return version if proc.returncode == 0 and status.endswith(" installed") else None


def resolve_kernel_version(override: str | None = None) -> str:
    """The guest kernel (``fleet.guest_kernel``): ``auto`` (or none) is the version the
    distribution's kernel metapackage depends on (linux-image-amd64 on Debian,
    linux-image-generic on Ubuntu); ``host`` the running kernel (virtme-ng's default);
    a path the release of that built kernel tree (checked: built, current); anything
    else a version installed in /boot."""
    if is_tree_setting(override):
        return load_tree(str(override)).release
    if override == "host":
        release = os.uname().release
        if not (Path("/boot") / f"vmlinuz-{release}").is_file():
            raise InfraError(
                f"fleet.guest_kernel host: the running kernel {release} is not in /boot (a container's or"
                " a sandbox's kernel?): set fleet.guest_kernel to auto or to one of "
                + (", ".join(sorted(p.name.removeprefix("vmlinuz-") for p in Path("/boot").glob("vmlinuz-*"))) or "none installed")
            )
        return release
    if override and override != "auto":
        return override
    # linux-image-amd64 on Debian, linux-image-generic on Ubuntu (the map setup.sh installs from)
    meta = host_kernel_package()
    proc = subprocess.run(["dpkg-query", "-W", "-f=${Depends}", meta], capture_output=True, text=True, check=False)
    m = re.search(r"linux-image-([0-9]\S*?)(?:\s|,|$|\()", proc.stdout)
    if proc.returncode != 0 or not m:
        raise InfraError(
            f"cannot tell the guest kernel: {meta} is not installed — "
            f"`apt-get install {meta}`, or set fleet.guest_kernel"
        )
    return m.group(1)


def guest_vmlinuz(setting: str | None) -> Path:
    """The kernel image the direct-kernel guest boots for ``fleet.guest_kernel``, checked
    (a tree's bzImage, else /boot/vmlinuz-V with its modules installed)."""
    if is_tree_setting(setting):
        return load_tree(str(setting)).bzimage
    return kernel_files(resolve_kernel_version(setting))[0]


def kernel_files(version: str) -> tuple[Path, Path]:
    """(/boot/vmlinuz-V, /lib/modules/V) for a guest kernel, or a one-line fix."""
    vmlinuz = Path("/boot") / f"vmlinuz-{version}"
    moddir = Path("/lib/modules") / version
    if not vmlinuz.is_file() or not (moddir / "modules.dep").is_file():
        raise InfraError(
            f"guest kernel {version} is not installed ({vmlinuz} or {moddir}/modules.dep missing): "
            f"`apt-get install linux-image-{version}` or fix fleet.guest_kernel"
        )
    return vmlinuz, moddir


def default_image_root(fleet: FleetSettings | None = None) -> Path:
    """Where images are cached.

    cfg.fleet.image_dir wins. As root the default is /var/lib/vexfs-cockpit/images,
    not ~/.local/share: qemu:///system runs QEMU as libvirt-qemu, which cannot
    traverse /root (0700) to reach the kernel and initrd.
    """
    if fleet is not None and fleet.image_dir is not None:
        return Path(fleet.image_dir).expanduser()
    if os.geteuid() == 0:
        return Path("/var/lib/vexfs-cockpit/images")
    return Path(platformdirs.user_data_dir("vexfs-cockpit")) / "images"


QEMU_CONF = Path("/etc/libvirt/qemu.conf")
DEFAULT_QEMU_GROUP = "libvirt-qemu"  # Debian's libvirt-daemon: QEMU runs as libvirt-qemu:libvirt-qemu


def qemu_group(conf: Path = QEMU_CONF) -> int | None:
    """The gid libvirt's QEMU driver runs QEMU with (``group =`` in qemu.conf, else
    Debian's default group), or None when there is no such group on this host."""
    import grp

    name = DEFAULT_QEMU_GROUP
    try:
        m = re.search(r'^\s*group\s*=\s*"([^"]*)"', conf.read_text(), re.M)
        if m:
            name = m.group(1).strip()
    except OSError:
        pass
    if name.startswith("+") and name[1:].isdigit():
        return int(name[1:])
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return int(name) if name.isdigit() else None


_LOOK_UP = -1


def qemu_readable(path: Path, gid: int | None = _LOOK_UP) -> int:
    """Make ``path`` readable by its owner and QEMU only, not by every local user: mode
    0640 with QEMU's group (qemu:///system as root, with or without libvirt's DAC
    relabelling), else 0600 (QEMU runs as this user: qemu:///session). ``gid``: QEMU's
    group (default: ``qemu_group()``), None for none. The mode set."""
    gid = qemu_group() if gid == _LOOK_UP else gid
    mode = 0o600
    if gid is not None:
        try:
            os.chown(path, -1, gid)
            mode = 0o640
        except OSError:
            pass  # not a member of that group: QEMU as this user (or libvirt relabels it)
    os.chmod(path, mode)
    return mode


def _which(name: str) -> Path | None:
    found = shutil.which(name, path=_HOST_PATH)
    return Path(found) if found else None


_LDD_RE = re.compile(r"^\s*(?:\S+\s+=>\s+)?(/\S+)\s+\(0x[0-9a-f]+\)", re.M)


def shared_libs(binary: Path) -> list[str]:
    """Absolute paths (as the loader names them) of ``binary``'s libraries and interpreter."""
    proc = subprocess.run(["ldd", str(binary)], capture_output=True, text=True, check=False)
    if "not a dynamic executable" in proc.stdout + proc.stderr:
        return []
    if proc.returncode != 0:
        raise InfraError(f"cannot list the libraries of {binary}: {proc.stderr.strip()}")
    if "not found" in proc.stdout:
        raise InfraError(f"{binary} has missing libraries: {proc.stdout.strip()}")
    return sorted(set(_LDD_RE.findall(proc.stdout)))


def module_load_order(moddir: Path, names: Sequence[str], *, skip_absent: bool = False) -> list[str]:
    """modules.dep paths for ``names`` and their dependencies, dependencies first.
    ``skip_absent``: a name this kernel has neither as a module nor built in is left out
    (a tree configured without it: the fitness check names what is really needed)."""
    deps: dict[str, list[str]] = {}
    by_name: dict[str, str] = {}
    for line in (moddir / "modules.dep").read_text().splitlines():
        mod, _, rest = line.partition(":")
        deps[mod] = rest.split()
        by_name[mod.rpartition("/")[2].split(".ko")[0].replace("-", "_")] = mod  # not Path(): ~4k lines, every start
    order: list[str] = []

    def visit(mod: str, stack: tuple[str, ...]) -> None:
        if mod in order or mod in stack:
            return
        for dep in deps.get(mod, []):
            visit(dep, stack + (mod,))
        order.append(mod)

    for name in names:
        mod = by_name.get(name.replace("-", "_"))
        if mod is None:
            builtin = (moddir / "modules.builtin").read_text() if (moddir / "modules.builtin").exists() else ""
            if re.search(rf"/{re.escape(name)}\.ko\b", builtin) or skip_absent:
                continue  # built into this kernel (or not configured in a tree): nothing to load
            raise InfraError(f"kernel module {name} is not in {moddir}/modules.dep: the guest kernel lacks it")
        visit(mod, ())
    return order


# ---------------------------------------------------------------------------- the plan


@dataclass(slots=True)
class _Plan:
    kernel_version: str
    vmlinuz: Path
    moddir: Path
    host_files: dict[str, Path]  # guest path (no leading /) -> host file to copy
    modes: dict[str, int]
    applets: list[str]  # busybox --list-full
    modules: list[str]  # modules.dep paths, load order
    guest_text: dict[str, str]  # our scripts by name
    packages: dict[str, str]
    tree: KernelTree | None = None  # a built kernel tree: bzImage and modules come from it
    tree_hash: str = ""  # its inputs (bzImage and .config by content): part of the image key

    def input_hash(self) -> str:
        h = hashlib.sha256()
        h.update(f"builder {BUILDER_VERSION}\nkernel {self.kernel_version}\n".encode())
        files = {"boot/vmlinuz": self.vmlinuz, **self.host_files}
        for guest, host in sorted(files.items()):
            st = host.stat()
            h.update(f"{guest}\t{host}\t{st.st_size}\t{st.st_mtime_ns}\n".encode())
        h.update("\n".join(self.applets).encode())
        h.update("\n".join(self.modules).encode())
        for name, text in sorted(self.guest_text.items()):
            h.update(f"--- {name}\n{text}".encode())
        h.update(json.dumps(self.packages, sort_keys=True).encode())
        if self.tree is not None:  # only then: images of installed kernels keep their key
            h.update(f"tree {self.tree.path} {self.tree_hash}\n".encode())
        return h.hexdigest()


def _guest_text() -> dict[str, str]:
    pkg = resources.files("vexfs_cockpit.images") / "guest"
    return {name: (pkg / name).read_text() for name in _GUEST_FILES}


def _plan(kernel_version: str, extra_tools: Sequence[Path] = (), tree: KernelTree | None = None, root: Path | None = None) -> _Plan:
    # Every start checks the cached image against this plan: its ~16 short host commands
    # (dpkg-query, ldd, busybox) run side by side, not one after another (~0.1 s less
    # before the TUI can draw). Results are still read, and errors raised, in order.
    with ThreadPoolExecutor(max_workers=8) as pool:
        return _plan_with(pool, kernel_version, extra_tools, tree, root)


def _plan_with(
    pool: ThreadPoolExecutor, kernel_version: str, extra_tools: Sequence[Path],
    tree: KernelTree | None = None, root: Path | None = None,
) -> _Plan:
    tree_hash = ""
    if tree is not None:
        # the tree's bzImage, and its modules from a depmod'ed staging (no modules_install)
        tree_hash = tree.inputs_hash()
        vmlinuz, moddir = tree.bzimage, staged_modules(tree, root or default_image_root())
        image_pkg = ""
    else:
        vmlinuz, moddir = kernel_files(kernel_version)
        image_pkg = f"linux-image-{kernel_version}"
    busybox = Path("/bin/busybox")
    versions = {pkg: pool.submit(package_version, pkg) for pkg in (*_PACKAGES, image_pkg) if pkg}
    have_busybox = busybox.is_file()
    if have_busybox:
        busybox_libs = pool.submit(shared_libs, busybox)
        applets_out = pool.submit(_run, [str(busybox), "--list-full"], "listing busybox applets")
    packages: dict[str, str] = {}
    for pkg in _PACKAGES:
        version = versions[pkg].result()
        if version is None:
            raise InfraError(f"Debian package {pkg} is not installed (the guest image needs it): `apt-get install {pkg}`")
        packages[pkg] = version
    if image_pkg:
        packages[image_pkg] = versions[image_pkg].result() or "unpackaged"

    if not have_busybox:
        raise InfraError("/bin/busybox is missing: `apt-get install busybox-static`")
    if busybox_libs.result():
        raise InfraError("/bin/busybox is dynamically linked (busybox, not busybox-static?): `apt-get install busybox-static`")
    applets = sorted(set(applets_out.result().split()))

    host_files: dict[str, Path] = {"bin/busybox": busybox}
    modes: dict[str, int] = {"bin/busybox": 0o755}
    binaries: list[Path] = []
    for tool in _TOOLS:
        path = _which(tool.name)
        if path is None:
            if tool.required:
                raise InfraError(f"{tool.name} not found on this host (the guest image needs it): `apt-get install {tool.package}`")
            continue
        host_files[tool.guest_path] = path.resolve()
        modes[tool.guest_path] = 0o755
        binaries.append(path)
    for extra in extra_tools:
        path = Path(extra) if "/" in str(extra) else _which(str(extra))
        if path is None or not path.is_file():
            raise InfraError(f"extra guest tool {extra} not found on this host")
        guest = f"usr/local/bin/{path.name}"
        host_files[guest] = path.resolve()
        modes[guest] = 0o755
        binaries.append(path)
    for libs in pool.map(shared_libs, binaries):
        for lib in libs:
            host_files.setdefault(lib.lstrip("/"), Path(lib).resolve())
            modes.setdefault(lib.lstrip("/"), 0o755)
    if Path("/etc/mke2fs.conf").is_file():
        host_files["etc/mke2fs.conf"] = Path("/etc/mke2fs.conf")
        modes["etc/mke2fs.conf"] = 0o644

    modules = module_load_order(moddir, GUEST_MODULES, skip_absent=tree is not None)
    for mod in modules:
        guest = f"lib/modules/{kernel_version}/{mod}"
        host_files[guest] = moddir / mod
        modes[guest] = 0o644
    return _Plan(kernel_version, vmlinuz, moddir, host_files, modes, applets, modules, _guest_text(), packages, tree, tree_hash)


# ---------------------------------------------------------------------------- keys


def _make_keys(workdir: Path) -> tuple[bytes, bytes, bytes, str]:
    """(client private OpenSSH, client public, dropbear host key, host public line).

    Also leaves ``ssh_host_ed25519_key`` (the same host key in OpenSSH form) in
    ``workdir``: the disk template hands it to cloud-init, so distro guests present
    the very key callers already trust.
    """
    from vexfs_cockpit.transport.asyncssh_import import asyncssh

    client = asyncssh.generate_private_key("ssh-ed25519", comment="vexfs-cockpit")
    host_key = workdir / "dropbear_ed25519_host_key"
    _run(["dropbearkey", "-t", "ed25519", "-f", str(host_key)], "generating the guest host key")
    out = _run(["dropbearkey", "-y", "-f", str(host_key)], "reading the guest host key")
    pub = next((line.strip() for line in out.splitlines() if line.startswith("ssh-ed25519 ")), None)
    if pub is None:
        raise InfraError(f"dropbearkey printed no ssh-ed25519 public key: {out.strip()}")
    host_pub = " ".join(pub.split()[:2])
    openssh_key = workdir / "ssh_host_ed25519_key"
    _run(["dropbearconvert", "dropbear", "openssh", str(host_key), str(openssh_key)], "converting the guest host key")
    os.chmod(openssh_key, 0o600)
    return (
        client.export_private_key("openssh"),
        client.export_public_key("openssh"),
        host_key.read_bytes(),
        host_pub,
    )


# ---------------------------------------------------------------------------- assembly


def _entries(plan: _Plan, authorized_key: bytes, host_key: bytes) -> list[Entry]:
    e: list[Entry] = []
    real_names = {Path(p).name for p in plan.host_files} | {Path(p).name for p in _TOOL_LINKS}
    # Applet links first, then the binary: a link named "busybox" over the binary
    # is the ELOOP trap from FIELD-NOTES, so that name is skipped outright.
    for applet in plan.applets:
        name = Path(applet).name
        if name == "busybox" or name in real_names:
            continue
        e.append(Entry.symlink(applet, "/bin/busybox"))
    for guest, target in _TOOL_LINKS.items():
        e.append(Entry.symlink(guest, target))
    for guest, host in plan.host_files.items():
        if guest != "bin/busybox":
            e.append(Entry.file(guest, host.read_bytes(), plan.modes[guest]))
    e.append(Entry.file("bin/busybox", plan.host_files["bin/busybox"].read_bytes(), 0o755))

    kv = plan.kernel_version
    deps = (plan.moddir / "modules.dep").read_text().splitlines()
    kept = [line for line in deps if line.split(":", 1)[0] in plan.modules]
    e.append(Entry.file(f"lib/modules/{kv}/modules.dep", ("\n".join(kept) + "\n").encode()))

    text = plan.guest_text
    e += [
        Entry.file("init", text["init"].encode(), 0o755),
        Entry.file("etc/inittab", text["inittab"].encode()),
        Entry.file("etc/vexfs/ready", text["ready"].encode(), 0o755),
        Entry.file("etc/vexfs/udhcpc.script", text["udhcpc.script"].encode(), 0o755),
        Entry.file("etc/vexfs/modules", ("\n".join(plan.modules) + "\n").encode()),
        # root's login shell runs every SSH command: static busybox ash starts in ~17 ms
        # under TCG, dynamic dash in ~80 ms (each guest round trip pays it). ash runs its
        # applets before $PATH, so the real losetup/setpriv/mke2fs need full paths
        # (domains._common.LOSETUP); /bin/sh stays dash for scripts.
        Entry.file(
            "etc/passwd",
            f"root:x:0:0:root:/root:/bin/ash\n{GUEST_USER}:x:{GUEST_UID}:{GUEST_UID}:{GUEST_USER}:/home/{GUEST_USER}:/bin/sh\n".encode(),
        ),
        Entry.file("etc/group", f"root:x:0:\ntty:x:5:\n{GUEST_USER}:x:{GUEST_UID}:\n".encode()),
        # Locked passwords: only the image's key logs in.
        Entry.file("etc/shadow", f"root:*:19000:0:99999:7:::\n{GUEST_USER}:*:19000:0:99999:7:::\n".encode(), 0o600),
        Entry.file("etc/shells", b"/bin/sh\n/bin/ash\n"),
        Entry.file("etc/nsswitch.conf", b"passwd: files\ngroup: files\nshadow: files\nhosts: files dns\n"),
        Entry.file("etc/hosts", b"127.0.0.1 localhost\n"),
        Entry.file("etc/resolv.conf", b""),
        Entry.file("etc/dropbear/dropbear_ed25519_host_key", host_key, 0o600),
        Entry.directory("root", 0o700),
        Entry.directory("root/.ssh", 0o700),
        Entry.file("root/.ssh/authorized_keys", authorized_key, 0o600),
        Entry.directory("home/" + GUEST_USER, 0o755, GUEST_UID, GUEST_UID),
        Entry.directory(f"home/{GUEST_USER}/.ssh", 0o700, GUEST_UID, GUEST_UID),
        Entry.file(f"home/{GUEST_USER}/.ssh/authorized_keys", authorized_key, 0o600, GUEST_UID, GUEST_UID),
        Entry.directory("tmp", 0o1777),
        Entry.directory("var/tmp", 0o1777),
        Entry.symlink("var/run", "/run"),
    ]
    e += [Entry.directory(d) for d in ("proc", "sys", "dev", "run", "mnt", "var/log")]
    # The kernel opens /dev/console before /init runs; without it /init has no stdout.
    e += [Entry.chardev("dev/console", 5, 1), Entry.chardev("dev/null", 1, 3, 0o666)]
    return e


@dataclass(frozen=True, slots=True)
class BuildRequest:
    kernel_version: str | None = None  # fleet.guest_kernel: None/"auto", "host", a release or a tree path
    root: Path | None = None  # image cache root; None: default_image_root()
    extra_tools: tuple[Path, ...] = ()  # more host binaries for /usr/local/bin (libs follow)

    @classmethod
    def from_fleet(cls, fleet: FleetSettings | None, **kw: Any) -> "BuildRequest":
        return cls(
            kernel_version=fleet.guest_kernel if fleet else None,
            root=default_image_root(fleet),
            **kw,
        )


def check_fit(tree: KernelTree, key: str = "fleet.guest_kernel") -> None:
    """A tree whose .config lacks what the guest relies on would boot to a silent hang:
    one line naming the first gap and the fix instead."""
    from vexfs_cockpit.images.kconfig import missing, read_kconfig

    gaps = missing(read_kconfig(tree.config))
    if gaps:
        need, have = gaps[0]
        more = f" (+{len(gaps) - 1} more: `vexfs-cockpit kernel config --check {tree.path}`)" if len(gaps) > 1 else ""
        raise InfraError(
            f"{key} {tree.path}: {need.option} {have} in its .config ({need.why}){more}: merge `vexfs-cockpit kernel config`"
            f" with scripts/kconfig/merge_config.sh, `make -C {tree.path} olddefconfig bzImage modules`"
        )


def image_dir_for(req: BuildRequest) -> tuple[Path, _Plan]:
    root = req.root or default_image_root()
    tree = load_tree(req.kernel_version) if is_tree_setting(req.kernel_version) else None
    if tree is not None:
        check_fit(tree)
    kv = tree.release if tree is not None else resolve_kernel_version(req.kernel_version)
    plan = _plan(kv, req.extra_tools, tree, root)
    return root / plan.input_hash()[:16], plan


def find_image(fleet: FleetSettings | None = None, req: BuildRequest | None = None) -> GuestImage | None:
    """The built image for the current inputs, or None if it needs building."""
    req = req or BuildRequest.from_fleet(fleet)
    path, plan = image_dir_for(req)
    try:
        img = GuestImage.from_dir(path)
    except InfraError:
        return None
    return img if img.input_hash == plan.input_hash() else None


def build_image(
    fleet: FleetSettings | None = None,
    *,
    force: bool = False,
    req: BuildRequest | None = None,
    progress: Callable[[str], None] | None = None,
) -> GuestImage:
    """Return the cached image for the current inputs, building it first if needed."""
    say = progress or (lambda _msg: None)
    req = req or BuildRequest.from_fleet(fleet)
    root = req.root or default_image_root()
    try:
        root.mkdir(parents=True, exist_ok=True, mode=0o755)
    except OSError as err:
        raise InfraError(f"cannot create the image cache {root} ({err.strerror}): set fleet.image_dir to a writable path") from err
    with open(root / ".build.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # two cockpits building at once: the second reuses
        path, plan = image_dir_for(req)
        if not force:
            try:
                img = GuestImage.from_dir(path)
                if img.input_hash == plan.input_hash():
                    say(f"guest image cached: {path} (kernel {img.kernel_version})")
                    return img
            except InfraError:
                pass
        say(f"building guest image for kernel {plan.kernel_version} in {path}")
        img = _build(plan, path)
        prune_images(root, keep=img)
        return img


# Superseded images stay this long: a VM booted from one re-reads its kernel and
# initrd when it is destroyed and started again (a reset).
PRUNE_AFTER_S = 24 * 3600


def prune_images(root: Path, keep: GuestImage, older_than_s: float = PRUNE_AFTER_S) -> list[Path]:
    """Delete superseded images of ``keep``'s kernel and stale build leftovers; return them."""
    now = time.time()
    removed: list[Path] = []
    for entry in root.iterdir():
        if not entry.is_dir() or entry == keep.dir:
            continue
        if entry.name.startswith((".build-", ".old-")):
            stale = now - entry.stat().st_mtime > 3600
        else:
            try:
                m = json.loads((entry / MANIFEST).read_text())
                stale = m.get("kernel_version") == keep.kernel_version and now - float(m["built_at"]) > older_than_s
            except (OSError, ValueError, KeyError, TypeError):
                continue  # not ours to judge
        if stale:
            shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry)
        else:
            _restrict_old_image(entry)
    return removed


def _restrict_old_image(entry: Path) -> None:
    """An image built before BUILDER_VERSION 4 left its initrd (the guest host key) world-
    readable; until it is pruned (a running VM may still boot from it), QEMU only."""
    for name in ("initrd.gz", "vmlinuz"):
        path = entry / name
        try:
            if path.stat().st_mode & 0o004:
                qemu_readable(path)
        except OSError:
            continue


def _build(plan: _Plan, final: Path) -> GuestImage:
    started = time.monotonic()
    # mkdtemp's 0700 until every file is written and restricted: the initrd holds the
    # guest's host private key, the client key logs in as root.
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=final.parent))
    try:
        client_priv, client_pub, host_key, host_pub = _make_keys(tmp)
        (tmp / "dropbear_ed25519_host_key").unlink()  # it lives in the initrd only
        write_initramfs(str(tmp / "initrd.gz"), _entries(plan, client_pub, host_key))
        shutil.copyfile(plan.vmlinuz, tmp / "vmlinuz")
        gid = qemu_group()
        for name in ("vmlinuz", "initrd.gz"):
            qemu_readable(tmp / name, gid)  # QEMU reads them (direct kernel boot), no one else
        key = tmp / "id_ed25519"
        key.write_bytes(client_priv)
        os.chmod(key, 0o600)
        (tmp / "id_ed25519.pub").write_bytes(client_pub)
        os.chmod(tmp, 0o755)  # libvirt-qemu reaches kernel+initrd in here
        img = GuestImage(
            dir=final,
            kernel_version=plan.kernel_version,
            kernel=final / "vmlinuz",
            initrd=final / "initrd.gz",
            client_key=final / "id_ed25519",
            client_pubkey=final / "id_ed25519.pub",
            host_pubkey=host_pub,
            input_hash=plan.input_hash(),
            built_at=time.time(),
            packages=plan.packages,
            kernel_tree=str(plan.tree.path) if plan.tree is not None else "",
        )
        manifest = img.to_manifest() | {"build_seconds": round(time.monotonic() - started, 3), "modules": plan.modules}
        publish_build(tmp, final, manifest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return img


def publish_build(tmp: Path, final: Path, manifest: dict[str, Any]) -> None:
    """Write the manifest last, then swap the finished build dir in for ``final`` by
    renames: a reader sees the old image or the whole new one, never half of one."""
    (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    if final.exists():
        trash = Path(tempfile.mkdtemp(prefix=".old-", dir=final.parent))
        final.rename(trash / "img")
        shutil.rmtree(trash, ignore_errors=True)
    tmp.rename(final)
