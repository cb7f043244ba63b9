"""The real ``CockpitBackend``: the TUI's commands handed to one ``app.session.Session``.

The session does the work (runs, environments, VM actions); this adapter turns its
answers into the TUI's view types and runs the kdev commands as the CLI a developer
types, so their output is the same.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from vexfs_cockpit.app.session import Session
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.errors import CockpitError
from vexfs_cockpit.store.history import History
from vexfs_cockpit.tui.backend import ActionResult, RunChoices, RunRequest, VmInfo
from vexfs_cockpit.tui.history_queries import HistoryQueries

CLI = [sys.executable, "-m", "vexfs_cockpit"]


class SessionBackend(HistoryQueries):
    def __init__(self, session: Session):
        super().__init__(History(session.db_path) if session.db_path else History(Path("/nonexistent")))
        self.session = session

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
        return RunChoices(
            domains=names,
            envs=self.session.environments(),
            default_env=self.session.config.env,
            descriptions={n: self.session.describe_domain(n) for n in names},
        )

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
