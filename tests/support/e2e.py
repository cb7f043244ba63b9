"""Helpers for the end-to-end tests (test_e2e_batch.py, test_domain_breaks.py).

- ``LeaseProvider`` + ``run_domains``: the real Runner, in-process, on the session
  guest (no boot per test). Domains' own setup/teardown unload the module, so runs
  can follow each other on the one VM.
- ``cockpit`` / ``owned_vms`` / ``stored_runs``: the CLI as a subprocess, the libvirt
  domains a cockpit process left behind, and what the history DB holds.
"""

from __future__ import annotations

import asyncio
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from vexfs_cockpit.config.load import load_config
from vexfs_cockpit.config.models import CockpitConfig
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.discovery import discover_domains
from vexfs_cockpit.engine.plugin import HistoryView
from vexfs_cockpit.engine.provider import Lease
from vexfs_cockpit.engine.results import TestResult, TestStatus
from vexfs_cockpit.engine.runner import Runner, RunRequest, RunSummary
from vexfs_cockpit.transport.local import LocalTarget

ROOT = Path(__file__).resolve().parents[2]


# -- in-process runs on the session guest ------------------------------------------
class LeaseProvider:
    """A TargetProvider that lends one already-booted VM to every domain it is asked for."""

    def __init__(self, lease: Lease):
        self._lease = lease
        self.leased: list[str] = []

    @asynccontextmanager
    async def lease(self, domain: str, index: int) -> AsyncIterator[Lease]:
        self.leased.append(domain)
        yield self._lease  # the fixture owns the VM: nothing to tear down here

    async def aclose(self) -> None:
        return None


def cfg_with(overrides: Mapping[str, Any] | None = None) -> CockpitConfig:
    """The test env's profile (as the guest fixture booted it) plus dotted overrides."""
    return load_config(None, "test", dict(overrides or {}))




async def run_domains(
    lease: Lease,
    cfg: CockpitConfig,
    domains: list[str],
    artifacts: Path,
    *,
    only_tests: Mapping[str, set[str]] | None = None,
    history: HistoryView | None = None,
    bus: EventBus | None = None,
    run_id: str = "",
    env: str = "breaks",
) -> RunSummary:
    """Run ``domains`` with the real Runner on ``lease``'s VM; the host builds the module."""
    if bus is None:
        bus = EventBus()
        bus.bind_loop(asyncio.get_running_loop())
    runner = Runner(bus, LeaseProvider(lease), discover_domains(), host=LocalTarget("host"), history=history)
    req = RunRequest(
        config=cfg,
        domains=domains,
        run_id=run_id or f"breaks-{time.strftime('%H%M%S')}-{os.getpid()}",
        env=env,
        only_tests=only_tests,
        artifacts_dir=artifacts,
        project_root=ROOT,
    )
    return await runner.execute(req)


def results_by_name(summary: RunSummary, domain: str) -> dict[str, TestResult]:
    return {r.name: r for r in summary.results if r.domain == domain}


def statuses(results: Mapping[str, TestResult]) -> dict[str, TestStatus]:
    return {name: r.status for name, r in results.items()}


def explain(results: Mapping[str, TestResult]) -> str:
    """One line per test, for assertion messages that show what really happened."""
    return "\n".join(f"  {n}: {r.status.value} — {r.message}" for n, r in results.items())


# -- the CLI as a subprocess ---------------------------------------------------------
CI_PROFILE = ["--config", "configs/default.yaml", "--env", "ci"]  # relative to ROOT, the cwd


def cockpit_argv(*args: str) -> list[str]:
    return [sys.executable, "-m", "vexfs_cockpit", *args]


def cockpit(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(cockpit_argv(*args), check=False, cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def cockpit_run(*args: str, timeout: float) -> tuple[subprocess.CompletedProcess[str], int]:
    """``cockpit(...)`` that also returns the child's pid (its VMs' libvirt owner)."""
    with subprocess.Popen(cockpit_argv(*args), cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as p:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
            raise AssertionError(f"cockpit {' '.join(args)} still running after {timeout:g}s:\n{out[-4000:]}\n{err}") from None
    return subprocess.CompletedProcess(p.args, p.returncode, out, err), p.pid


def owned_vms(pid: int, uri: str = "qemu:///system") -> list[str]:
    """``vexfs-*`` libvirt domains, defined or running, whose owner (the metadata the fleet
    stamps on every VM it starts) is process ``pid``: what a cockpit left behind, even
    when another cockpit on the host uses the same names."""
    import libvirt

    from vexfs_cockpit.fleet.libvirt import OWNER_NS, VM_PREFIX, Owner

    conn = libvirt.open(uri)
    try:
        found = []
        for dom in conn.listAllDomains(0):
            try:
                name = dom.name()
                if not name.startswith(VM_PREFIX):
                    continue
                owner = Owner.from_xml(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, OWNER_NS))
            except libvirt.libvirtError:
                continue  # gone meanwhile, or a domain without our metadata
            if owner is not None and owner.pid == pid:
                found.append(name)
        return sorted(found)
    finally:
        conn.close()


def vexfs_vms(uri: str = "qemu:///system") -> set[str]:
    """Every libvirt domain (defined or running) whose name starts with ``vexfs-``."""
    out = subprocess.run(["virsh", "-c", uri, "list", "--all", "--name"], capture_output=True, text=True, check=True, timeout=60)
    return {n.strip() for n in out.stdout.splitlines() if n.strip().startswith("vexfs-")}


def stderr_lines(proc: subprocess.CompletedProcess[str] | str) -> list[str]:
    text = proc if isinstance(proc, str) else proc.stderr
    return [ln for ln in text.splitlines() if ln.strip()]


def stored_runs(db: Path) -> list[sqlite3.Row]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        conn.row_factory = sqlite3.Row
        return conn.execute("SELECT * FROM runs ORDER BY started_at").fetchall()


def stored_results(db: Path, run_id: str) -> dict[tuple[str, str], str]:
    """(domain, test) -> stored status of the run's final results."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as conn:
        rows = conn.execute("SELECT domain, test, status FROM test_results WHERE run_id = ?", (run_id,)).fetchall()
    return {(d, t): s for d, t, s in rows}


class LineReader:
    """A child's stdout as lines, read on a thread, so each wait has a deadline."""

    def __init__(self, stream: Any) -> None:
        import queue
        import threading

        self.lines: list[str] = []
        self._q: queue.Queue[str | None] = queue.Queue()
        self._t = threading.Thread(target=self._pump, args=(stream,), daemon=True)
        self._t.start()

    def _pump(self, stream: Any) -> None:
        for line in stream:
            self._q.put(line.rstrip("\n"))
        self._q.put(None)

    def wait_for(self, predicate: Any, timeout: float) -> str:
        import queue

        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self._q.get(timeout=left)
            except queue.Empty:
                break
            if line is None:
                raise AssertionError("the cockpit exited early:\n" + "\n".join(self.lines[-30:]))
            self.lines.append(line)
            if predicate(line):
                return line
        raise AssertionError(f"nothing matched within {timeout:g}s:\n" + "\n".join(self.lines[-30:]))

    def rest(self) -> list[str]:
        """Everything, once the child has exited."""
        self._t.join(timeout=30)
        while not self._q.empty():
            if (line := self._q.get_nowait()) is not None:
                self.lines.append(line)
        return self.lines
