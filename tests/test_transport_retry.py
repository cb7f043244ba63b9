"""A refused-then-retried SSH session must never run a command twice: the wrapper
leaves a started-marker, and the retry path asks for it first (real shell, dash)."""

from __future__ import annotations

import subprocess

from vexfs_cockpit.transport.quoting import new_token, started_check_command, wrap_command


def _sh(text: str) -> str:
    return subprocess.run(["dash", "-c", text], capture_output=True, text=True, check=True).stdout


def test_a_started_command_is_reported_as_ran_once(tmp_path):
    token = new_token()
    assert _sh(started_check_command(token)).strip() == "fresh"  # refused before it ran: safe to retry
    out = tmp_path / "runs"
    _sh(wrap_command(f"echo x >> {out}", token))
    assert out.read_text() == "x\n"
    assert _sh(started_check_command(token)).strip() == "ran"  # it ran: never again
    assert _sh(started_check_command(token)).strip() == "fresh"  # the check cleans up after itself
