"""Shared pytest set-up. VM fixtures live in tests/conftest_vm.py (a real booted guest)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# A shell without job control starts background jobs with SIGINT ignored (`.ci/run &`);
# children inherit that and the Ctrl-C tests would interrupt nothing. Python's own
# handler is reset to the default in every child on exec.
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

if (Path(__file__).parent / "conftest_vm.py").exists():
    pytest_plugins = ["tests.conftest_vm"]


@pytest.fixture(autouse=True)
def _isolated_history_db(tmp_path, monkeypatch):
    """No test may write into the user's real history DB."""
    monkeypatch.setenv("VEXFS_COCKPIT_DB", str(tmp_path / "history.db"))
    monkeypatch.setenv("NO_COLOR", "1")
    # CLI subprocesses run in-process unless a test turns the kdev agent on (in its own dir).
    monkeypatch.setenv("VEXFS_KDEV_AGENT", "0")
    monkeypatch.setenv("VEXFS_KDEV_AGENT_DIR", str(tmp_path / "kagent"))
    yield


def pytest_report_header(config):
    return f"vexfs-cockpit tests; libvirt socket {'up' if os.path.exists('/run/libvirt/libvirt-sock') else 'DOWN'}"


@pytest.fixture(scope="session")
def pg_server():
    """One real PostgreSQL for the session (Debian's server, socket + 127.0.0.1 only);
    each test takes a fresh database of it (``pg_server.new_database()``)."""
    import tempfile

    from tests.support.postgres import running_postgres

    with tempfile.TemporaryDirectory(prefix="vexfs-pg-") as base, running_postgres(Path(base)) as server:
        yield server
