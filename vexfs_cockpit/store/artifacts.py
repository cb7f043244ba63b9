"""A run's files beside the history DB: its VMs' console logs, under the data dir's
``runs/<run id>/console/`` until `vexfs-cockpit gc` removes them."""

from __future__ import annotations

from pathlib import Path

from vexfs_cockpit.config.paths import data_dir


def console_dir(run_id: str) -> Path:
    return data_dir() / "runs" / run_id / "console"


def console_logs(run_id: str) -> list[Path]:
    """The run's console logs (rotated parts included), oldest name first."""
    d = console_dir(run_id)
    return sorted(d.glob("*.log*")) if d.is_dir() else []


def console_text(run_id: str) -> str | None:
    """Every console log of the run, each under a ``==> name <==`` header; None if none is kept."""
    logs = console_logs(run_id)
    if not logs:
        return None
    return "".join(f"==> {p.name} <==\n{p.read_text(errors='replace')}\n" for p in logs)
