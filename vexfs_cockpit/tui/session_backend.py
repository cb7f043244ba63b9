"""The real ``CockpitBackend``: the TUI's commands handed to one ``app.session.Session``.

The session does the work (runs, environments, VM actions); this adapter turns its
answers into the TUI's view types and runs the kdev commands as the CLI a developer
types, so their output is the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncio
import sys
from collections.abc import AsyncIterator
from pathlib import Path

from vexfs_cockpit.app.session import Session
from vexfs_cockpit.config.models import CockpitConfig
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.errors import CockpitError
from vexfs_cockpit.store.history import History
from vexfs_cockpit.tui.backend import ActionResult, RunChoices, RunRequest, VmInfo
from vexfs_cockpit.tui.history_queries import HistoryQueries

if TYPE_CHECKING:
    from vexfs_cockpit.analysis.known import KnownFailure

CLI = [sys.executable, "-m", "vexfs_cockpit"]


class SessionBackend(HistoryQueries):
    def __init__(self, session: Session):
        # The session's own History: on PostgreSQL it holds the session's reader pool.
        super().__init__(session.history or History(session.db_path or Path("/nonexistent")))
        self.session = session
        self._env_summaries: dict[str, str] | None = None  # read once: the env files do not change under us

    @property
    def bus(self) -> EventBus:
        return self.session.bus

    def _vms(self):
        if self.session.vms is None:
            raise CockpitError("this session has no libvirt VMs to act on")
        return self.session.vms

    # -- lifecycle ------------------------------------------------------------------
    async def open(self) -> None:
        self.bus.bind_loop(asyncio.get_running_loop())
        await self._vms().open()

    async def close(self) -> None:
        await self.session.aclose()

    # -- runs ---------------------------------------------------------------------------
    def run_choices(self) -> RunChoices:
        names = self.session.domain_names()
        envs = self.session.environments()
        cfg = self.session.config
        if self._env_summaries is None:
            self._env_summaries = {env: self._describe_env(env) for env in envs}
        return RunChoices(
            domains=names,
            envs=envs,
            default_env=self.session.config.env,
            descriptions={n: self.session.describe_domain(n) for n in names},
            env_summaries=self._env_summaries,
            profile=cfg.profile,
            module=cfg.module.module_name or f"{cfg.module.fs_type} (built in)",
            guest_kernel=cfg.fleet.guest_kernel,
            db_path=str(self.session.db_path or ""),
        )

    def _describe_env(self, env: str) -> str:
        """One line of what ``env`` means, from that environment's config (the same
        profile and --set overrides the session would load for it)."""
        cfg = self.session.config
        if env != cfg.env:
            if self.session.args is None:
                return ""
            from vexfs_cockpit.config.load import config_from_args

            try:
                cfg = config_from_args(self.session.args, env=env, known_domains=set(self.session.registry))
            except CockpitError as err:
                return f"cannot load: {err}"
        return describe_environment(cfg)

    async def start_run(self, request: RunRequest) -> str:
        if self.session.run_in_progress:
            raise CockpitError("a run is already in progress: abort it first (a)")
        self.session.switch_env(request.env)
        only: dict[str, set[str]] | None = None
        if request.only:
            only = {}
            for ref in request.only:
                only.setdefault(ref.domain, set()).add(ref.test)
        return self.session.start_run(list(request.domains) or None, only)

    async def abort_run(self) -> None:
        await self.session.abort_run()

    def known_failures(self, env: str) -> list[KnownFailure]:
        from vexfs_cockpit.analysis.known import known_failures_path, load_known_failures
        from vexfs_cockpit.config.paths import known_failures_dir

        return load_known_failures(known_failures_path(known_failures_dir(self.session.config), env))

    # -- VMs ------------------------------------------------------------------------------
    async def vm_list(self) -> list[VmInfo]:
        # A listing has a start time exactly when the VM has a dev VM's state file (`vm start`
        # wrote it, with the SSH details `ssh` needs).
        return [VmInfo(v.name, v.state, v.domain, v.started_at, dev_vm=v.started_at is not None) for v in await self._vms().list()]

    async def vm_start(self, name: str) -> None:
        await self._vms().start(name)

    async def vm_stop(self, name: str) -> None:
        await self._vms().stop(name)

    async def vm_reset(self, name: str) -> None:
        await self._vms().reset(name)

    def console_argv(self, name: str) -> list[str]:
        return [*CLI, "vm", "console", name]

    def ssh_argv(self, name: str) -> list[str]:
        return [*CLI, "ssh", name]

    # -- kernel-dev loop: the same commands a developer types -------------------------------
    async def _cli(self, *words: str) -> ActionResult:
        argv = [*CLI, *words]
        if getattr(self.session.args, "config", None):
            argv += ["--config", str(self.session.args.config)]
        proc = await asyncio.create_subprocess_exec(
            *argv, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
        )
        out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        last = next((ln for ln in reversed(text.splitlines()) if ln.strip()), f"exit {proc.returncode}")
        return ActionResult(ok=proc.returncode == 0, summary=last.strip(), output=text)

    async def kbuild(self) -> ActionResult:
        return await self._cli("kbuild")

    async def kload(self, vm: str) -> ActionResult:
        return await self._cli("kload", vm)

    async def kunload(self, vm: str) -> ActionResult:
        return await self._cli("kunload", vm)

    def watch(self, vm: str) -> AsyncIterator[str]:
        from vexfs_cockpit.app.kdev import watch_lines

        argv = [*CLI, "watch", vm]
        if getattr(self.session.args, "config", None):
            argv += ["--config", str(self.session.args.config)]
        return watch_lines(argv)


def describe_environment(cfg: CockpitConfig) -> str:
    """``1 VM per domain, 512 MB and 1 vCPU each · up to 2 domains at once · test timeout
    10 min · boot timeout 120 s · no retries``."""
    r, ex = cfg.resources, cfg.execution
    vms = f"{r.vms_per_domain} VM{'s' if r.vms_per_domain != 1 else ''} per domain, {r.memory_mb} MB and {r.cpus} vCPU{'s' if r.cpus != 1 else ''} each"
    at_once = f"up to {ex.max_parallel_tests} domains at once" if ex.parallel_test_execution and ex.max_parallel_tests > 1 else "one domain at a time"
    retries = f"{ex.retry_count} retr{'ies' if ex.retry_count != 1 else 'y'}" if ex.retry_count else "no retries"
    return (f"{vms} · {at_once} · test timeout {ex.test_timeout_minutes:g} min · "
            f"boot timeout {cfg.fleet.template_boot_timeout_s:g} s · {retries}")
