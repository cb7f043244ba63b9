"""The real ``CockpitBackend``: the TUI's commands delegated to one engine ``Session``.

Everything here forwards to the engine (session, fleet commands, the kdev CLI, the
store's read API); the only state is the background task of the run in progress.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path

from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.config.load import config_from_args
from vexfs_cockpit.engine.session import Session, new_run_id, ordered_domains
from vexfs_cockpit.errors import CockpitError
from vexfs_cockpit.fleet import commands as vmcmd
from vexfs_cockpit.store.history import History
from vexfs_cockpit.tui.backend import ActionResult, RunChoices, RunRequest, VmInfo
from vexfs_cockpit.tui.history_queries import HistoryQueries

CLI = [sys.executable, "-m", "vexfs_cockpit"]


class SessionBackend(HistoryQueries):
    def __init__(self, session: Session, args: argparse.Namespace):
        super().__init__(History(session.db_path) if session.db_path else History(Path("/nonexistent")))
        self.session = session
        self.args = args
        self._run: asyncio.Task | None = None

    @property
    def bus(self) -> EventBus:
        return self.session.bus

    @property
    def _provider(self):
        return self.session.provider

    # -- lifecycle ------------------------------------------------------------------
    async def open(self) -> None:
        self.bus.bind_loop(asyncio.get_running_loop())
        fleet = getattr(self._provider, "fleet", None)
        if fleet is not None:
            fleet.watch_all = True  # the dashboard shows dev VMs too
        await self._provider.prepare()  # type: ignore[attr-defined]

    async def close(self) -> None:
        await self.abort_run()
        await self.session.aclose()

    # -- runs ---------------------------------------------------------------------------
    def run_choices(self) -> RunChoices:
        root = self.session.project_root
        envs = tuple(sorted(p.stem for p in (root / "configs" / "env").glob("*.yaml"))) or (self.session.config.env,)
        names = tuple(ordered_domains(self.session.config, self.session.registry))
        return RunChoices(
            domains=names,
            envs=envs,
            default_env=self.session.config.env,
            descriptions={n: (self.session.registry[n].__doc__ or n).strip().splitlines()[0] for n in names},
        )

    async def start_run(self, request: RunRequest) -> str:
        if self._run is not None and not self._run.done():
            raise CockpitError("a run is already in progress: abort it first (a)")
        if request.env != self.session.config.env:
            # Another environment: the same profile and --set overrides with that overlay,
            # validated first (the overrides were dropped here before).
            cfg = config_from_args(self.args, env=request.env, known_domains=set(self.session.registry))
            self.session.config = cfg
            self._provider.cfg = cfg  # type: ignore[attr-defined]
        domains = self.session.select(",".join(request.domains) if request.domains else None)
        only: dict[str, set[str]] | None = None
        if request.only:
            only = {}
            for ref in request.only:
                only.setdefault(ref.domain, set()).add(ref.test)
        run_id = new_run_id()
        self._run = asyncio.create_task(self.session.run(domains, only_tests=only, run_id=run_id))
        return run_id

    async def abort_run(self) -> None:
        if self._run is not None and not self._run.done():
            self._run.cancel()  # the runner records the run as aborted; leases destroy their VMs
            await asyncio.gather(self._run, return_exceptions=True)

    # -- VMs ------------------------------------------------------------------------------
    @property
    def _uri(self) -> str:
        return self.session.config.fleet.libvirt_uri

    async def vm_list(self) -> list[VmInfo]:
        vms = await self._provider.fleet.list_vms()  # type: ignore[attr-defined]
        out = []
        for v in vms:
            parts = v.name.split("-")
            domain = "-".join(parts[2:-1]) if len(parts) >= 4 else ""
            dev = vmcmd.read_state(v.name)
            out.append(VmInfo(v.name, v.state, domain, dev.started_at if dev else None))
        return out

    async def vm_start(self, name: str) -> None:
        await vmcmd.start_dev_vm(self.session.config, name, self._uri, say=lambda *_: None)

    async def vm_stop(self, name: str) -> None:
        await vmcmd.stop_vm(self.session.config, name, self._uri)

    async def vm_reset(self, name: str) -> None:
        await vmcmd.reset_vm(self.session.config, name, self._uri, say=lambda *_: None)

    def console_argv(self, name: str) -> list[str]:
        return [*CLI, "vm", "console", name]

    def ssh_argv(self, name: str) -> list[str]:
        return [*CLI, "ssh", name]

    # -- kernel-dev loop: the same commands a developer types -------------------------------
    async def _cli(self, *words: str) -> ActionResult:
        argv = [*CLI, *words]
        if getattr(self.args, "config", None):
            argv += ["--config", str(self.args.config)]
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
