"""One cockpit session: config + bus + store recorder + VM provider + runner, wired once.

Both front ends (``run --batch`` and the TUI) open a Session and then only send it
commands and read its event stream.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from dataclasses import dataclass, field
from pathlib import Path

from platformdirs import user_data_path

from vexfs_cockpit.config.models import CockpitConfig
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.discovery import discover_domains
from vexfs_cockpit.engine.plugin import DomainBase
from vexfs_cockpit.engine.provider import TargetProvider
from vexfs_cockpit.engine.runner import Runner, RunRequest, RunSummary
from vexfs_cockpit.errors import ConfigError

APP_NAME = "vexfs-cockpit"


def data_dir() -> Path:
    return user_data_path(APP_NAME, appauthor=False, ensure_exists=True)


def new_run_id() -> str:
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(2)


def select_domains(cfg: CockpitConfig, registry: dict[str, type[DomainBase]], wanted: str | None) -> list[str]:
    """``--domains a,b`` (validated against the registry) or every enabled domain."""
    if wanted:
        names = [d.strip() for d in wanted.split(",") if d.strip()]
        unknown = [d for d in names if d not in registry]
        if unknown:
            raise ConfigError(
                f"--domains: unknown domain '{unknown[0]}'; known: {', '.join(sorted(registry))}"
            )
        return names
    return [d for d in registry if cfg.domain(d).enabled and (not cfg.domains or d in cfg.domains)]


@dataclass
class Session:
    config: CockpitConfig
    bus: EventBus
    registry: dict[str, type[DomainBase]]
    provider: TargetProvider
    db_path: Path | None = None
    project_root: Path = field(default_factory=Path.cwd)
    _closers: list = field(default_factory=list)
    runner: Runner | None = None

    async def run(
        self,
        domains: list[str],
        *,
        timeout_s: float | None = None,
        retries: int | None = None,
        only_tests: dict[str, set[str]] | None = None,
        run_id: str | None = None,
    ) -> RunSummary:
        run_id = run_id or new_run_id()
        artifacts = data_dir() / "runs" / run_id
        artifacts.mkdir(parents=True, exist_ok=True)
        req = RunRequest(
            config=self.config,
            domains=domains,
            run_id=run_id,
            env=self.config.env,
            timeout_s=timeout_s,
            retries=retries,
            only_tests=only_tests,
            artifacts_dir=artifacts,
            project_root=self.project_root,
        )
        assert self.runner is not None
        return await self.runner.execute(req)

    async def aclose(self) -> None:
        for close in reversed(self._closers):
            res = close()
            if asyncio.iscoroutine(res):
                await res
        self._closers.clear()


def load_registry() -> dict[str, type[DomainBase]]:
    return discover_domains()
