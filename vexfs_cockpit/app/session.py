"""One cockpit session: config + bus + store recorder + VM provider + runner, wired once.

Both front ends (``run --batch`` and the TUI) open a Session and then only send it
commands (start or abort a run, switch environment, VM actions) and read its event
stream; neither reaches into the provider, the fleet or the store's writer.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vexfs_cockpit.config.caps import enabled_domains
from typing import TYPE_CHECKING, Any

from vexfs_cockpit.config.models import CockpitConfig
from vexfs_cockpit.config.paths import data_dir
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.discovery import discover_domains
from vexfs_cockpit.engine.plugin import DomainBase
from vexfs_cockpit.engine.provider import TargetProvider
from vexfs_cockpit.engine.runner import Runner, RunRequest, RunSummary
from vexfs_cockpit.errors import CockpitError, ConfigError

if TYPE_CHECKING:
    from vexfs_cockpit.app.vms import VmControl
    from vexfs_cockpit.monitoring.live import LiveMonitor
    from vexfs_cockpit.store.history import History
    from vexfs_cockpit.store.recorder import Recorder
    from vexfs_cockpit.store.location import StoreLocation

# Builds the session's VM provider from the loaded config and the session's bus
# (default: LibvirtProvider, fresh VMs; `ktest` attaches to a running dev VM instead).
ProviderFactory = Callable[[CockpitConfig, EventBus], TargetProvider]



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
    # The caps check's rule (config/caps.py), over the domains that are installed.
    return [d for d in enabled_domains(cfg, known=sorted(registry)) if d in registry]


def ordered_domains(cfg: CockpitConfig, registry: dict[str, type[DomainBase]]) -> list[str]:
    """The config's section order is the run order; plugins the config doesn't name follow."""
    return [d for d in cfg.domains if d in registry] + sorted(d for d in registry if d not in cfg.domains)


@dataclass
class Session:
    config: CockpitConfig
    bus: EventBus
    registry: dict[str, type[DomainBase]]
    provider: TargetProvider
    db_path: StoreLocation | None = None  # the history: an SQLite file or a PostgreSQL URL
    project_root: Path = field(default_factory=Path.cwd)
    args: Any = None  # the command line the config came from (an environment switch re-reads it)
    vms: VmControl | None = None  # VM actions, when the provider is libvirt's
    runner: Runner | None = None
    history: History | None = None  # read-only; domains compare with earlier runs through it
    recorder: Recorder | None = None  # writes the event stream to the history DB
    live: LiveMonitor | None = None  # live metrics and alerts (monitoring.listen / monitoring.alerts)
    _closers: list = field(default_factory=list)
    _run: asyncio.Task | None = None  # the run a front end started in the background

    async def run(
        self,
        domains: list[str],
        *,
        timeout_s: float | None = None,
        retries: int | None = None,
        only_tests: dict[str, set[str]] | None = None,
        run_id: str | None = None,
        provenance_extra: dict[str, str] | None = None,  # e.g. the CI shard (app.shard)
    ) -> RunSummary:
        run_id = run_id or new_run_id()
        known = self.known_failures()  # a malformed file stops the run before any VM boots
        deadlines = await asyncio.to_thread(self._deadlines)
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
            deadlines=deadlines,
            provenance={**await asyncio.to_thread(self._provenance), **(provenance_extra or {})},
        )
        assert self.runner is not None
        if self.history is not None:
            # Domains compare with *previous* runs: this one is excluded.
            self.runner.history = self.history.for_run(run_id)
            # What changed against the history is rerun on a fresh VM and given a verdict.
            from vexfs_cockpit.app.triage import HistoryTriage

            self.runner.triage = HistoryTriage(self.history, *known)
        return await self.runner.execute(req)

    def _deadlines(self) -> dict:
        """Each test's hang deadline from its history (execution.deadline_*)."""
        from vexfs_cockpit.app.triage import history_deadlines

        return history_deadlines(self.history, self.config) if self.history is not None else {}

    def known_failures(self) -> tuple[list, str]:
        """The env's known failures (analysis.known_failures_dir/<env>.yaml) and its label."""
        from vexfs_cockpit.app.triage import known_failures

        return known_failures(self.config, self.project_root)

    def _provenance(self) -> dict[str, str]:
        from vexfs_cockpit.app.provenance import collect
        from vexfs_cockpit.engine.module import ModuleSpec

        try:
            src = ModuleSpec.from_config(self.config).src if self.config.module.module_name else None
        except CockpitError:
            src = None
        return collect(self.config, src)

    def select(self, wanted: str | None) -> list[str]:
        from vexfs_cockpit.config.caps import check_host_fit, check_resource_caps
        from vexfs_cockpit.config.sources import check_module_sources

        domains = select_domains(self.config, self.registry, wanted)
        check_resource_caps(self.config, domains)  # before any VM is touched
        place = getattr(self.provider, "place", None)  # hosts: a plan that cannot fit stops here
        if place is not None:
            place(domains)
        if self.vms is not None:  # this session boots VMs here: they must fit the host too
            from vexfs_cockpit.fleet.host import measure_host

            check_host_fit(self.config, domains, measure_host(data_dir()))
            if self.config.fleet.template == "direct-kernel":  # the kernel it boots is installed
                from vexfs_cockpit.images.initramfs import guest_vmlinuz

                guest_vmlinuz(self.config.fleet.guest_kernel)
        check_module_sources(self.config, domains)
        return domains

    # -- what an interactive front end asks of a session ---------------------------------
    def environments(self) -> tuple[str, ...]:
        """The environment overlays next to the profile (``configs/env/*.yaml``)."""
        found = sorted(p.stem for p in (self.project_root / "configs" / "env").glob("*.yaml"))
        return tuple(found) or (self.config.env,)

    def domain_names(self) -> tuple[str, ...]:
        return tuple(ordered_domains(self.config, self.registry))

    def describe_domain(self, name: str) -> str:
        """The domain's one-line summary (its docstring's first line)."""
        return (self.registry[name].__doc__ or name).strip().splitlines()[0]

    def switch_env(self, env: str) -> None:
        """Use ``env``'s overlay from now on: the same profile and ``--set`` overrides,
        validated before anything changes."""
        if env == self.config.env:
            return
        from vexfs_cockpit.config.load import config_from_args

        cfg = config_from_args(self.args, env=env, known_domains=set(self.registry))
        if self.live is not None:
            self.live.use_config(cfg)
        self.config = cfg
        self.provider.use_config(cfg)

    def start_run(self, domains: list[str] | None, only_tests: dict[str, set[str]] | None = None) -> str:
        """Start a run in the background (its progress is on the bus); its id."""
        if self.run_in_progress:
            raise CockpitError("a run is already in progress: abort it first")
        selected = self.select(",".join(domains) if domains else None)
        self.known_failures()  # said here, not lost in the background task
        run_id = new_run_id()
        self._run = asyncio.create_task(self.run(selected, only_tests=only_tests, run_id=run_id))
        return run_id

    @property
    def run_in_progress(self) -> bool:
        return self._run is not None and not self._run.done()

    async def abort_run(self) -> None:
        if self.run_in_progress:
            assert self._run is not None
            self._run.cancel()  # the runner records the run as aborted; leases destroy their VMs
            await asyncio.gather(self._run, return_exceptions=True)

    def store_loss(self) -> str:
        """After ``aclose``: one line saying why the history DB failed and how many
        events it could not store; '' if it stored everything."""
        return self.recorder.loss_line() if self.recorder is not None else ""

    async def aclose(self) -> None:
        await self.abort_run()
        for close in reversed(self._closers):
            res = close()
            if asyncio.iscoroutine(res):
                await res
        self._closers.clear()


def parse_only_tests(spec: str | None, domains: list[str]) -> dict[str, set[str]] | None:
    """``--tests kernel_module/module_build,filesystem_operations/metadata``."""
    if not spec:
        return None
    out: dict[str, set[str]] = {}
    for item in (s.strip() for s in spec.split(",") if s.strip()):
        domain, sep, test = item.partition("/")
        if not sep or not test:
            raise ConfigError(f"--tests: expected DOMAIN/TEST, found {item!r}")
        if domain not in domains:
            raise ConfigError(f"--tests: domain {domain!r} is not selected (selected: {', '.join(domains)})")
        out.setdefault(domain, set()).add(test)
    return out


async def open_session(args, provider_factory: ProviderFactory | None = None) -> Session:
    """Wire a session from CLI-style arguments (``config``, ``env``, ``set``, ``db``).

    Config errors raise before anything is started; a bad DB raises StoreError
    without touching the file.
    """
    from vexfs_cockpit.config.load import config_from_args
    from vexfs_cockpit.config.paths import project_root
    from vexfs_cockpit.fleet.provider import LibvirtProvider
    from vexfs_cockpit.store.db import resolve_location
    from vexfs_cockpit.store.history import History
    from vexfs_cockpit.store.location import PgUrl
    from vexfs_cockpit.store.recorder import HistoryStore, Recorder
    from vexfs_cockpit.transport.local import LocalTarget

    registry = discover_domains()
    cfg = config_from_args(args, known_domains=set(registry))
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    # The run stores its config: a password in store.url is refused even when --db or
    # VEXFS_COCKPIT_DB points elsewhere.
    db_path = resolve_location(getattr(args, "db", None), cfg.store.location)
    # Live metrics and alerts (monitoring.listen, monitoring.alerts): the address is bound
    # before anything starts, so a busy port is one line and nothing to undo.
    from vexfs_cockpit.monitoring.live import open_live_monitor

    live = open_live_monitor(cfg, bus, db_path)
    store = await HistoryStore.aopen(db_path)
    recorder = Recorder(store, bus)
    recorder.start()
    if provider_factory:
        provider = provider_factory(cfg, bus)
    elif cfg.hosts:  # several libvirt hosts: each domain leased where placement puts it
        from vexfs_cockpit.fleet.multihost import MultiHostProvider

        provider = MultiHostProvider(cfg, bus, data_dir() / "runs")
    else:
        provider = LibvirtProvider(cfg, bus, data_dir() / "runs")
    session = Session(config=cfg, bus=bus, registry=registry, provider=provider, db_path=db_path,
                      project_root=project_root(cfg), args=args)
    if isinstance(provider, LibvirtProvider):
        from vexfs_cockpit.app.vms import VmControl

        session.vms = VmControl(provider, lambda: session.config)
    session.runner = Runner(bus, provider, registry, host=LocalTarget("host"))
    readers = None
    if isinstance(db_path, PgUrl):  # a team server: the session's reads borrow open connections
        from vexfs_cockpit.store.pg import Readers

        readers = Readers(db_path)
        session._closers.append(lambda: asyncio.to_thread(readers.close))
    session.history = History(db_path, readers=readers)
    session.recorder = recorder

    async def close_store() -> None:
        await recorder.aclose()
        await asyncio.to_thread(store.close)

    session._closers += [close_store, provider.aclose]  # closed in reverse: VMs first
    if live is not None:  # after the VMs (their last events count), before the store (dead letters)
        session.live = live
        live.start()
        session._closers.insert(session._closers.index(close_store) + 1, live.aclose)
    return session
