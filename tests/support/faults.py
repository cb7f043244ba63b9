"""Helpers for the fault tests (test_faults_*.py): real faulty filesystems and a real
`vexfs-cockpit run --batch` without VMs.

- ``tmpfs`` / ``read_only`` / ``immutable``: a small tmpfs (a full disk is a real
  ENOSPC), a read-only remount, ``chattr +i``. Tests run as root, where chmod stops
  nothing; each undoes itself in a finally. Skipped where the machine does not allow them.
- ``cockpit_batch``: the real CLI (``cli.main``: its logging, its one-line errors and
  exit codes) in a child process, with one change: the domains run on the host through
  ``HostProvider`` instead of fresh VMs, and the ``faults`` domain below is installed.
  Its tests are steered by environment variables (see ``Faults``).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path

import pytest

from vexfs_cockpit import DomainBase, TestResult, TestStatus
from vexfs_cockpit.engine.provider import Lease
from vexfs_cockpit.transport.local import LocalTarget

REPO = Path(__file__).resolve().parents[2]


# -- real faults ------------------------------------------------------------------------
def _need_root_tool(tool: str) -> None:
    if os.geteuid() != 0 or shutil.which(tool) is None:
        pytest.skip(f"needs root and {tool}")


@contextmanager
def tmpfs(where: Path, size: str = "1m") -> Iterator[Path]:
    """A tmpfs of ``size`` mounted on ``where`` (made if needed), unmounted after."""
    _need_root_tool("mount")
    where.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield where
    finally:
        if subprocess.run(["umount", str(where)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(where)], capture_output=True)


@contextmanager
def read_only(mount: Path) -> Iterator[Path]:
    """Remount ``mount`` (a mount point, e.g. from ``tmpfs``) read-only, then back."""
    subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["mount", "-o", "remount,rw", str(mount)], check=True)


@contextmanager
def immutable(path: Path) -> Iterator[Path]:
    """``chattr +i``: not even root may write it (a file) or add to it (a directory)."""
    _need_root_tool("chattr")
    done = subprocess.run(["chattr", "+i", str(path)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"chattr +i does not work here: {done.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def fill(directory: Path, leave: int = 0) -> None:
    """Fill the filesystem of ``directory`` up to ``leave`` bytes free (a file 'filler')."""
    fd = os.open(directory / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            free = os.statvfs(directory).f_bavail * os.statvfs(directory).f_frsize
            if free <= leave:
                return
            try:
                os.write(fd, b"\0" * min(65536, max(4096, free - leave)))
            except OSError:
                return
    finally:
        os.close(fd)


def stderr_lines(text: str) -> list[str]:
    return [ln for ln in text.splitlines() if ln.strip()]


# -- a batch run without VMs --------------------------------------------------------------
class HostProvider:
    """Leases the host itself to each domain (the unit under test is the front end)."""

    def __init__(self, cfg: object, bus: object) -> None:
        self.workdir = Path(os.environ.get("FAULTS_WORKDIR", "/tmp"))

    @asynccontextmanager
    async def lease(self, domain: str, index: int):  # type: ignore[no-untyped-def]
        yield Lease(vm_name=f"host-{domain}", target=LocalTarget(name="host", cwd=self.workdir))

    async def aclose(self) -> None:
        pass


class Faults(DomainBase):
    """Tests steered by the environment (``_add_numbered_tests`` makes them): FAULTS_TESTS
    passing results with FAULTS_PAYLOAD bytes of message each; the second removes
    FAULTS_RMTREE and makes the directory FAULTS_MKDIR first; the last writes FAULTS_READY, then waits for FAULTS_BLOCK to
    appear (so a signal lands mid-run)."""

    name = "faults"

    async def _result(self, i: int) -> TestResult:
        payload = int(os.environ.get("FAULTS_PAYLOAD", "0"))
        return TestResult(status=TestStatus.PASSED, message=f"result {i} " + "x" * payload)


def _add_numbered_tests() -> None:
    """test_t01 .. test_tNN on Faults (NN from FAULTS_TESTS): real test methods, so the
    runner plans and orders them as it does any domain's."""
    n = int(os.environ.get("FAULTS_TESTS", "3"))
    for i in range(1, n + 1):
        async def test(self: Faults, i: int = i) -> TestResult:
            if i == 2 and os.environ.get("FAULTS_RMTREE"):
                shutil.rmtree(os.environ["FAULTS_RMTREE"])
            if i == 2 and os.environ.get("FAULTS_MKDIR"):
                os.mkdir(os.environ["FAULTS_MKDIR"])
            if i == n and os.environ.get("FAULTS_BLOCK"):
                Path(os.environ["FAULTS_READY"]).write_text("ready")
                block = Path(os.environ["FAULTS_BLOCK"])
                import asyncio

                while not block.exists():
                    await asyncio.sleep(0.05)
            return await self._result(i)

        test.__name__ = f"test_t{i:02d}"
        test.__qualname__ = f"Faults.test_t{i:02d}"
        setattr(Faults, test.__name__, test)


CHILD = """
import asyncio, sys
sys.path.insert(0, {repo!r})
from tests.support import faults as fs
fs._add_numbered_tests()
import vexfs_cockpit.app.session as session
import vexfs_cockpit.commands.run as run
from vexfs_cockpit.engine.discovery import discover_domains
real = discover_domains()
session.discover_domains = lambda: {{**real, "faults": fs.Faults}}
run.cmd_run = lambda args: asyncio.run(run.run_batch(args, provider_factory=fs.HostProvider))
from vexfs_cockpit import cli
sys.exit(cli.main(sys.argv[1:]))
"""


def batch_argv(db: Path, *extra: str) -> list[str]:
    return ["run", "--batch", "--env", "ci", "--db", str(db), "--domains", "faults", *extra]


def batch_env(tmp: Path, **faults: str) -> dict[str, str]:
    env = {**os.environ, "XDG_DATA_HOME": str(tmp / "xdg"), "FAULTS_WORKDIR": str(tmp), "PYTHONUNBUFFERED": "1"}
    env.update({f"FAULTS_{k.upper()}": v for k, v in faults.items()})
    return env


def cockpit_batch(db: Path, tmp: Path, *extra: str, timeout: float = 120, **faults: str) -> subprocess.CompletedProcess[str]:
    """`vexfs-cockpit run --batch --domains faults ...` (see the module doc)."""
    return subprocess.run(
        [sys.executable, "-c", CHILD.format(repo=str(REPO)), *batch_argv(db, *extra)],
        cwd=REPO, env=batch_env(tmp, **faults), capture_output=True, text=True, timeout=timeout,
    )


def cockpit_batch_popen(db: Path, tmp: Path, *extra: str, **faults: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", CHILD.format(repo=str(REPO)), *batch_argv(db, *extra)],
        cwd=REPO, env=batch_env(tmp, **faults), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
