"""The host package map (vexfs_cockpit/config/distro.py) that scripts/setup.sh installs from:
each supported os-release gives its distribution's names, a derivative maps to its base,
anything else gives one line naming what to install, through setup.sh too."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vexfs_cockpit.config import distro
from vexfs_cockpit.config.distro import COMMON_PACKAGES, UnsupportedSystem, detect, parse_os_release

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "vexfs_cockpit" / "config" / "distro.py"
SETUP = ROOT / "scripts" / "setup.sh"
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin") or sys.executable

# The os-release files these systems ship (trimmed to the fields that matter, quoting as shipped).
OS_RELEASE = {
    "debian-12": 'PRETTY_NAME="Debian GNU/Linux 12 (bookworm)"\nNAME="Debian GNU/Linux"\nVERSION_ID="12"\n'
                 'VERSION="12 (bookworm)"\nVERSION_CODENAME=bookworm\nID=debian\n',
    "debian-13": 'PRETTY_NAME="Debian GNU/Linux 13 (trixie)"\nNAME="Debian GNU/Linux"\nVERSION_ID="13"\n'
                 'VERSION="13 (trixie)"\nVERSION_CODENAME=trixie\nDEBIAN_VERSION_FULL=13.1\nID=debian\n',
    "ubuntu-22.04": 'PRETTY_NAME="Ubuntu 22.04.5 LTS"\nNAME="Ubuntu"\nVERSION_ID="22.04"\n'
                    'VERSION="22.04.5 LTS (Jammy Jellyfish)"\nVERSION_CODENAME=jammy\nID=ubuntu\nID_LIKE=debian\n'
                    'UBUNTU_CODENAME=jammy\n',
    "ubuntu-24.04": 'PRETTY_NAME="Ubuntu 24.04.2 LTS"\nNAME="Ubuntu"\nVERSION_ID="24.04"\n'
                    'VERSION="24.04.2 LTS (Noble Numbat)"\nVERSION_CODENAME=noble\nID=ubuntu\nID_LIKE=debian\n'
                    'UBUNTU_CODENAME=noble\nLOGO=ubuntu-logo\n',
}
# What setup.sh installed on Debian 12 before the map existed (Debian 12 must not lose any),
# plus procps: its pgrep, absent from minimal images (found in a Debian 13 chroot), and
# postgresql: the team history (issue 19).
DEBIAN12_BEFORE = {"procps",
    "qemu-system-x86", "qemu-utils", "libvirt-daemon-system", "libvirt-clients", "libvirt-dev", "pkg-config",
    "linux-image-amd64", "busybox-static", "dropbear-bin", "e2fsprogs", "cpio", "kmod",
    "gcc", "make", "libc6-dev", "openssh-client", "python3-venv", "python3-dev", "tmux", "fio", "genisoimage",
    "mmdebstrap", "extlinux", "syslinux-common", "prometheus", "postgresql",
}
# Where the Ubuntu names differ from Debian's: the kernel metapackage, and 22.04's
# python3 being 3.10 (pyproject needs >= 3.11).
UBUNTU_2204 = DEBIAN12_BEFORE - {"linux-image-amd64", "python3-venv", "python3-dev"} | {
    "linux-image-generic", "python3.11-venv", "python3.11-dev"}
UBUNTU_2404 = DEBIAN12_BEFORE - {"linux-image-amd64"} | {"linux-image-generic"}
EXPECTED = {
    "debian-12": (DEBIAN12_BEFORE, "linux-image-amd64", "python3"),
    "debian-13": (DEBIAN12_BEFORE, "linux-image-amd64", "python3"),
    "ubuntu-22.04": (UBUNTU_2204, "linux-image-generic", "python3.11"),
    "ubuntu-24.04": (UBUNTU_2404, "linux-image-generic", "python3"),
}


@pytest.mark.parametrize("key", sorted(OS_RELEASE))
def test_each_supported_os_release_gives_its_packages(key: str) -> None:
    d = detect(parse_os_release(OS_RELEASE[key]))
    packages, kernel, python = EXPECTED[key]
    assert f"{d.id}-{d.version}" == key
    assert len(d.packages()) == len(set(d.packages())), "a package listed twice"
    assert set(d.packages()) == packages
    assert (d.kernel_package, d.python) == (kernel, python)
    assert d.kernel_package in d.packages() and f"{d.python}-venv" in d.packages()


def test_derivatives_map_to_their_base_by_codename() -> None:
    mint = 'NAME="Linux Mint"\nVERSION_ID="21.3"\nID=linuxmint\nID_LIKE="ubuntu debian"\nUBUNTU_CODENAME=jammy\n'
    assert (detect(parse_os_release(mint)).id, detect(parse_os_release(mint)).version) == ("ubuntu", "22.04")
    pop = 'NAME="Pop!_OS"\nVERSION_ID="24.04"\nID=pop\nID_LIKE="ubuntu debian"\nUBUNTU_CODENAME=noble\n'
    assert detect(parse_os_release(pop)).codename == "noble"
    lmde = 'NAME="LMDE"\nVERSION_ID="6"\nID=linuxmint\nID_LIKE=debian\nDEBIAN_CODENAME=bookworm\n'
    assert detect(parse_os_release(lmde)).codename == "bookworm"


@pytest.mark.parametrize("text", [
    'PRETTY_NAME="Fedora Linux 40 (Workstation Edition)"\nID=fedora\nVERSION_ID=40\n',
    # Debian testing: no VERSION_ID, a codename the map does not know
    'PRETTY_NAME="Debian GNU/Linux forky/sid"\nID=debian\nVERSION_CODENAME=forky\n',
    'ID=ubuntu\nVERSION_ID="20.04"\nUBUNTU_CODENAME=focal\n',
    "",
])
def test_unsupported_system_is_one_line_naming_what_to_install(text: str) -> None:
    with pytest.raises(UnsupportedSystem) as info:
        detect(parse_os_release(text))
    line = str(info.value)
    assert "\n" not in line and line.startswith("setup: ")
    assert "Debian 12, Debian 13, Ubuntu 22.04, Ubuntu 24.04" in line
    assert all(p in line.split() or p + "," in line.split() for p in COMMON_PACKAGES)
    fields = parse_os_release(text)
    assert fields.get("PRETTY_NAME", fields.get("ID", "this system")) in line


def _module(*args: str, os_release: str) -> subprocess.CompletedProcess[str]:
    """The module as setup.sh runs it: the system python3, isolated, no package import."""
    return subprocess.run([SYSTEM_PYTHON, "-I", str(MODULE), "--os-release", os_release, *args],
                          capture_output=True, text=True, timeout=30, check=False)


@pytest.mark.parametrize("key", sorted(OS_RELEASE))
def test_shell_output_evals_to_the_same_list(key: str, tmp_path: Path) -> None:
    f = tmp_path / "os-release"
    f.write_text(OS_RELEASE[key])
    res = _module("shell", os_release=str(f))
    assert res.returncode == 0, res.stderr
    script = f'eval "$1"; printf "%s\\n" "$DISTRO_NAME" "$KERNEL_PACKAGE" "$PYTHON_BIN" "${{APT_PACKAGES[@]}}"'
    out = subprocess.run(["bash", "-c", script, "bash", res.stdout], capture_output=True, text=True, check=True)
    name, kernel, python, *packages = out.stdout.splitlines()
    d = detect(parse_os_release(OS_RELEASE[key]))
    assert (name, kernel, python, tuple(packages)) == (d.name, d.kernel_package, d.python, d.packages())
    assert _module("packages", os_release=str(f)).stdout.split() == list(d.packages())


def test_cli_unsupported_and_unreadable_are_one_line_exit_2(tmp_path: Path) -> None:
    f = tmp_path / "os-release"
    f.write_text('PRETTY_NAME="Arch Linux"\nID=arch\n')
    for path in (str(f), str(tmp_path / "missing")):
        res = _module("shell", os_release=path)
        assert res.returncode == 2 and res.stdout == ""
        assert len(res.stderr.splitlines()) == 1 and "Traceback" not in res.stderr, res.stderr


def test_setup_sh_on_an_unsupported_system_stops_with_the_one_line(tmp_path: Path) -> None:
    """The whole script, pointed at a Fedora os-release: one line, exit 2, before any apt-get."""
    f = tmp_path / "os-release"
    f.write_text('PRETTY_NAME="Fedora Linux 40"\nID=fedora\nVERSION_ID=40\n')
    env = {**os.environ, "VEXFS_OS_RELEASE": str(f), "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    res = subprocess.run(["bash", str(SETUP)], capture_output=True, text=True, env=env, timeout=60, check=False)
    assert res.returncode == 2, res.stdout + res.stderr
    assert res.stdout == "" and len(res.stderr.splitlines()) == 1, res.stdout + res.stderr
    assert res.stderr.startswith("setup: Fedora Linux 40 is not a supported system")


def test_module_runs_on_the_oldest_system_python() -> None:
    """setup.sh runs it before .venv exists: Ubuntu 22.04's python3 is 3.10, and only the stdlib."""
    tree = ast.parse(MODULE.read_text(), feature_version=(3, 10))
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {n.module.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module}
    assert imported - {"__future__"} <= set(sys.stdlib_module_names), imported
    assert distro.DISTROS[0].id == "debian" and distro.DISTROS[0].version == "12"  # the unknown line's names


def test_auto_guest_kernel_comes_from_the_hosts_kernel_metapackage(tmp_path: Path) -> None:
    """images.initramfs resolves `fleet.guest_kernel: auto` through this: Ubuntu's generic kernel."""
    f = tmp_path / "os-release"
    for key, (_, kernel, _) in EXPECTED.items():
        f.write_text(OS_RELEASE[key])
        assert distro.host_kernel_package(f) == kernel
    f.write_text('PRETTY_NAME="Arch Linux"\nID=arch\n')
    assert distro.host_kernel_package(f) == "linux-image-amd64"  # unknown: what it always used
