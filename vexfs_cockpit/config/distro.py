"""Which host packages the cockpit needs, per distribution: the one map that
scripts/setup.sh installs from and tests/unit/test_distro.py checks.

setup.sh runs this file with the system Python before ``.venv`` exists, so it is
stdlib-only and Python 3.10 syntax (Ubuntu 22.04's python3):

    python3 -I vexfs_cockpit/config/distro.py [--os-release FILE] shell|packages

``shell`` prints shell assignments for setup.sh to eval, ``packages`` one package a
line. An unsupported system prints one line naming what to install, and exits 2.
"""

from __future__ import annotations

import argparse
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path

# Same name on every supported system (Debian 12 and 13, Ubuntu 22.04 and 24.04).
COMMON_PACKAGES: tuple[str, ...] = (
    # VMs under libvirt; pip builds libvirt-python from source against libvirt-dev
    "qemu-system-x86", "qemu-utils", "libvirt-daemon-system", "libvirt-clients", "libvirt-dev", "pkg-config",
    # setup.sh's pgrep (are the libvirt daemons up?): not in minimal images (containers, chroots)
    "procps",
    # the self-test guest's initramfs (images/initramfs.py): a static busybox, dropbear, mkfs, kmod
    "busybox-static", "dropbear-bin", "e2fsprogs", "cpio", "kmod",
    # kbuild of the module under test, SSH client, the fio the domains run, cloud-init seed ISOs
    "gcc", "make", "libc6-dev", "openssh-client", "tmux", "fio", "genisoimage",
    # `vexfs-cockpit image base` (the disk template's Debian image): debootstrap, boot loader
    "mmdebstrap", "extlinux", "syslinux-common",
    # `metrics serve` scraped by a real Prometheus in the tests; promtool checks `alerts rules`
    "prometheus",
    # the team history (store.url: postgresql://...); the tests run their own server (initdb + pg_ctl)
    "postgresql",
)
# The headers the module builds against: those of the guest kernel's exact version
# (setup.sh reads it from the kernel package's dependencies), same pattern everywhere.
HEADERS_PATTERN = "linux-headers-{version}"
OS_RELEASE_PATHS = (Path("/etc/os-release"), Path("/usr/lib/os-release"))
SUPPORTED_NOTE = "Debian 12, Debian 13, Ubuntu 22.04, Ubuntu 24.04"


@dataclass(frozen=True)
class Distro:
    id: str  # os-release ID
    version: str  # os-release VERSION_ID
    codename: str  # VERSION_CODENAME (what a derivative names in DEBIAN_/UBUNTU_CODENAME)
    # Metapackage that tracks the distribution's current kernel: the guest kernel of
    # `fleet.guest_kernel: auto`.
    kernel_package: str
    # Interpreter for .venv (pyproject: requires-python >= 3.11) and its venv/headers packages.
    python: str
    python_packages: tuple[str, ...]
    # What to do when apt cannot find a package on this system.
    missing_hint: str

    @property
    def name(self) -> str:
        return f"{self.id.capitalize()} {self.version} ({self.codename})"

    def packages(self) -> tuple[str, ...]:
        return (*COMMON_PACKAGES, self.kernel_package, *self.python_packages)


_DEBIAN_HINT = "check that /etc/apt/sources.list* name your release's main component and run `apt-get update`"
_UBUNTU_HINT = "enable the universe component (`add-apt-repository universe`) and run `apt-get update`"
_PY3 = ("python3-venv", "python3-dev")

DISTROS: tuple[Distro, ...] = (
    Distro("debian", "12", "bookworm", "linux-image-amd64", "python3", _PY3, _DEBIAN_HINT),
    Distro("debian", "13", "trixie", "linux-image-amd64", "python3", _PY3, _DEBIAN_HINT),
    # 22.04's python3 is 3.10: its universe component has 3.11 beside it
    Distro("ubuntu", "22.04", "jammy", "linux-image-generic", "python3.11",
           ("python3.11-venv", "python3.11-dev"), _UBUNTU_HINT),
    Distro("ubuntu", "24.04", "noble", "linux-image-generic", "python3", _PY3, _UBUNTU_HINT),
)


class UnsupportedSystem(Exception):
    """The host is none of DISTROS; the message is the one line to show."""


def parse_os_release(text: str) -> dict[str, str]:
    """os-release's ``KEY=value`` lines (values shell-quoted or bare), comments skipped."""
    fields: dict[str, str] = {}
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        try:
            words = shlex.split(value)
        except ValueError:  # unbalanced quote: keep the raw value rather than fail
            words = [value.strip("\"'")]
        fields[key.strip()] = " ".join(words)
    return fields


def detect(fields: dict[str, str]) -> Distro:
    """The supported distribution these os-release fields describe: by ID and VERSION_ID,
    else (a derivative such as Mint) by ID_LIKE and the base's codename."""
    ident, version = fields.get("ID", "").lower(), fields.get("VERSION_ID", "")
    for d in DISTROS:
        if d.id == ident and d.version == version:
            return d
    likes = fields.get("ID_LIKE", "").lower().split()
    for d in DISTROS:
        if d.id not in likes:
            continue
        base = fields.get(f"{d.id.upper()}_CODENAME") or fields.get("VERSION_CODENAME", "")
        if base == d.codename:
            return d
    raise UnsupportedSystem(unsupported_line(fields))


def unsupported_line(fields: dict[str, str]) -> str:
    what = fields.get("PRETTY_NAME") or " ".join(filter(None, (fields.get("ID"), fields.get("VERSION_ID")))) or "this system"
    return (
        f"setup: {what} is not a supported system ({SUPPORTED_NOTE}); install the equivalents of these "
        f"Debian 12 packages: {' '.join(DISTROS[0].packages())}, the headers of the kernel the guests boot, "
        "Python >= 3.11 with venv; then run again with VEXFS_SETUP_SKIP_PACKAGES=1"
    )


def detect_file(path: Path) -> Distro:
    try:
        text = path.read_text()
    except OSError as err:
        raise UnsupportedSystem(
            f"setup: cannot read {path} ({err.strerror}) to tell the distribution; supported: {SUPPORTED_NOTE}"
        ) from err
    return detect(parse_os_release(text))


def host_os_release() -> Path:
    """os-release(5): /etc first, /usr/lib as the fallback."""
    return next((p for p in OS_RELEASE_PATHS if p.exists()), OS_RELEASE_PATHS[0])


def host_kernel_package(os_release: Path | None = None) -> str:
    """The metapackage whose kernel `fleet.guest_kernel: auto` boots on this host
    (Debian's name on a system the map does not know: it says nothing better)."""
    try:
        return detect_file(os_release or host_os_release()).kernel_package
    except UnsupportedSystem:
        return DISTROS[0].kernel_package


def shell_assignments(d: Distro) -> str:
    """What setup.sh evals: every value shell-quoted."""
    q = shlex.quote
    return "\n".join((
        f"DISTRO_NAME={q(d.name)}",
        f"KERNEL_PACKAGE={q(d.kernel_package)}",
        f"HEADERS_PREFIX={q(HEADERS_PATTERN.format(version=''))}",
        f"PYTHON_BIN={q(d.python)}",
        f"MISSING_HINT={q(d.missing_hint)}",
        "APT_PACKAGES=(" + " ".join(q(p) for p in d.packages()) + ")",
    ))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="distro.py", description="host packages per distribution")
    ap.add_argument("--os-release", type=Path, default=None)
    ap.add_argument("what", choices=("shell", "packages"))
    args = ap.parse_args(argv)
    try:
        d = detect_file(args.os_release or host_os_release())
    except UnsupportedSystem as err:
        print(err, file=sys.stderr)
        return 2
    print(shell_assignments(d) if args.what == "shell" else "\n".join(d.packages()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
