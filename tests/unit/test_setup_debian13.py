"""The Debian 13 (trixie) package list, checked against the real archive: a trixie chroot
built by mmdebstrap from the mirror this host's apt uses, the package map run inside it
on trixie's own /etc/os-release and python3, and `apt-get install --simulate` of every
name it gives (plus the guest kernel's headers, found the way setup.sh finds them).

Opt-in (VEXFS_TEST_DEBIAN13=1; root and mmdebstrap, which setup.sh installs): the first
run builds the chroot tarball (~30 s here), cached under ~/.cache/vexfs-cockpit/distro-chroot
for a week with its apt lists, so a rerun takes a few seconds.
Ubuntu cannot be checked this way here: only Debian's mirror is reachable.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from vexfs_cockpit.config.distro import DISTROS
from vexfs_cockpit.images.base import host_apt_sources, host_codename, release_sources

ROOT = Path(__file__).resolve().parents[2]
MODULE = ROOT / "vexfs_cockpit" / "config" / "distro.py"
CODENAME = "trixie"
CACHE = Path(os.environ.get("VEXFS_DISTRO_CHROOT_CACHE", Path.home() / ".cache" / "vexfs-cockpit" / "distro-chroot"))
MAX_AGE_S = 7 * 24 * 3600  # its apt lists go stale; names change rarely
INCLUDE = ("python3",)  # the map runs on the chroot's own system Python, as setup.sh runs it

pytestmark = pytest.mark.skipif(
    os.environ.get("VEXFS_TEST_DEBIAN13") != "1",
    reason="builds a Debian 13 chroot from the mirror (~30 s, then cached): set VEXFS_TEST_DEBIAN13=1",
)


def _trixie_sources() -> list[str]:
    """The host's Debian entries (main, -updates, -security) moved to trixie: same mirror."""
    host = host_codename()
    sources = release_sources(host_apt_sources(), host)
    assert sources, f"no Debian {host} entry in /etc/apt/sources.list*: add the mirror this host installs from"
    return [dataclasses.replace(s, suite=CODENAME + s.suite[len(host):]).line() for s in sources]


def _chroot_tarball(sources: list[str]) -> tuple[Path, float]:
    """The cached tarball for these sources (built now when missing or older than a week)."""
    key = hashlib.sha256("\n".join([*sources, *INCLUDE, "v1"]).encode()).hexdigest()[:16]
    tar = CACHE / f"debian-13-{key}.tar"
    if tar.exists() and time.time() - tar.stat().st_mtime < MAX_AGE_S:
        return tar, 0.0
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = tar.with_suffix(f".tmp{os.getpid()}")
    started = time.monotonic()
    cmd = ["mmdebstrap", "--variant=apt", "--quiet", f"--include={','.join(INCLUDE)}",
           "--skip=cleanup/apt/lists", "--skip=output/mknod", "--format=tar", CODENAME, str(tmp), *sources]
    try:
        res = subprocess.run(cmd, capture_output=True, text=True, timeout=900, check=False)
        assert res.returncode == 0, f"mmdebstrap failed: {res.stderr[-2000:]}"
        tmp.replace(tar)
    finally:
        tmp.unlink(missing_ok=True)
    for old in CACHE.glob("debian-13-*.tar"):  # one chroot kept, not one per mirror change
        if old != tar:
            old.unlink(missing_ok=True)
    return tar, time.monotonic() - started


def _in(root: Path, *cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["chroot", str(root), "env", "LC_ALL=C", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", *cmd],
                          capture_output=True, text=True, timeout=300, check=False)


def test_debian13_package_list_resolves_in_a_real_trixie_chroot(tmp_path: Path) -> None:
    if os.geteuid() != 0 or not shutil.which("mmdebstrap"):
        pytest.fail("needs root and mmdebstrap (scripts/setup.sh installs it)")
    started = time.monotonic()
    tar, build_s = _chroot_tarball(_trixie_sources())
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["tar", "-C", str(root), "-xf", str(tar)], check=True)
    shutil.copy(MODULE, root / "tmp" / "distro.py")

    # The map, on trixie's own os-release and Python, as setup.sh runs it.
    assert "VERSION_CODENAME=trixie" in (root / "etc" / "os-release").read_text()
    res = _in(root, "python3", "-I", "/tmp/distro.py", "packages")
    assert res.returncode == 0, res.stderr
    packages = res.stdout.split()
    expected = next(d for d in DISTROS if (d.id, d.version) == ("debian", "13"))
    assert packages == list(expected.packages())

    # Every name is a real package with a candidate (a purely virtual one would install
    # but never show as installed, and setup.sh would reinstall it on every run) ...
    res = _in(root, "apt-cache", "policy", *packages)
    candidates = dict(re.findall(r"^(\S+):\n\s+Installed: .*\n\s+Candidate: (.+)$", res.stdout, re.M))
    assert {p: candidates.get(p, "(none)") for p in packages if candidates.get(p, "(none)") == "(none)"} == {}

    # ... and together they install: apt resolves the whole list without --fix-broken.
    res = _in(root, "apt-get", "install", "--simulate", "--no-install-recommends", "-q", *packages)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr
    inst = set(re.findall(r"^Inst (\S+) ", res.stdout, re.M))
    assert not [p for p in packages if p not in inst and f"{p} is already the newest version" not in res.stdout]

    # setup.sh's next step: the headers of the exact kernel the metapackage depends on.
    res = _in(root, "apt-cache", "show", "--no-all-versions", expected.kernel_package)
    depends = re.search(r"^Depends: (.*)$", res.stdout, re.M)
    assert depends, res.stdout + res.stderr
    kv = re.search(r"linux-image-([0-9][^ ,]*)", depends.group(1))
    assert kv, depends.group(1)
    res = _in(root, "apt-get", "install", "--simulate", "--no-install-recommends", "-q", f"linux-headers-{kv.group(1)}")
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr

    # The interpreter the map names for .venv is new enough for pyproject (>= 3.11).
    res = _in(root, expected.python, "-c", "import sys; print(*sys.version_info[:2]); sys.exit(sys.version_info < (3, 11))")
    assert res.returncode == 0, res.stdout + res.stderr
    print(f"debian 13: {len(packages)} packages resolve, guest kernel {kv.group(1)}, python {res.stdout.strip()}; "
          f"chroot {'built in %.1f s' % build_s if build_s else 'cached'}, test {time.monotonic() - started:.1f} s")
