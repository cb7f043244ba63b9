"""What the TUI needs from the engine, and nothing more.

The TUI renders the engine's event stream (``backend.bus``) and sends commands
through this protocol. It holds no logic the engine lacks: every number it shows
comes from an event or from a history query below.

Threading contract:
- ``async`` methods run on the app's event loop (the engine lives on that loop).
- ``run_choices``, ``console_argv`` and ``ssh_argv`` are called on the UI thread: keep
  them cheap (no libvirt, no SQLite).
- The history methods may block (SQLite): the TUI calls them from thread workers only.
- Any method may raise ``vexfs_cockpit.errors.CockpitError``; ``str(err)`` is shown as
  a one-line notification. Other exceptions are shown as one line too, never a traceback.

History answers are the store's own rows (``vexfs_cockpit.store.history``):
``history_queries.HistoryQueries`` implements the history half of this protocol over
a ``History`` object, so a backend can simply delegate to it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, NamedTuple, Protocol, runtime_checkable

from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.store.history import (
    CrashSignature,
    DomainTrendPoint,
    DurationPoint,
    MetricPoint,
    PassRatePoint,
    RunComparison,
    RunSummary,
)
from vexfs_cockpit.store.report import RunReport

if TYPE_CHECKING:
    from vexfs_cockpit.analysis.standing import DomainStanding

# -- commands -----------------------------------------------------------------------


class TestRef(NamedTuple):
    __test__ = False

    domain: str
    test: str  # without the test_ prefix


@dataclass(frozen=True, slots=True)
class RunRequest:
    env: str
    domains: tuple[str, ...]
    # Empty: every test of ``domains``. Otherwise only these (re-run one test).
    only: tuple[TestRef, ...] = ()


@dataclass(frozen=True, slots=True)
class RunChoices:
    """What the start-run picker offers."""

    domains: tuple[str, ...]
    envs: tuple[str, ...]
    default_env: str
    default_domains: tuple[str, ...] = ()  # empty: all of ``domains``
    descriptions: dict[str, str] = field(default_factory=dict)  # domain -> one line
    # env -> one line: VMs and their size, domains at once, timeouts, retries
    env_summaries: dict[str, str] = field(default_factory=dict)
    # Orientation for the dashboard's header ("" when the backend cannot tell):
    profile: str = ""  # e.g. "selftest" or "vexfs"
    module: str = ""  # the kernel module under test
    guest_kernel: str = ""  # as configured: "auto" (the installed one) or a version
    db_path: str = ""  # where the history is kept


@dataclass(frozen=True, slots=True)
class VmInfo:
    """A VM as the fleet lists it (the TUI keeps it current from events afterwards)."""

    name: str
    state: str
    domain: str = ""
    started_at: float | None = None  # wall clock; None when unknown or not running
    dev_vm: bool = False  # a dev VM from `vm start`: the only kind with SSH details (ssh_argv)


@dataclass(frozen=True, slots=True)
class ActionResult:
    """Outcome of a kernel-dev action (kbuild / kload / kunload)."""

    ok: bool
    summary: str  # one line
    output: str = ""  # compiler / insmod output, shown on demand


# -- history queries --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RunFilter:
    env: str | None = None
    domain: str | None = None
    status: str | None = None  # passed | failed | errored | aborted | running
    since: float | None = None  # wall clock
    text: str = ""  # free-text search (run id, profile, test names, messages)
    limit: int = 200
    before: tuple[float, str] | None = None  # (started_at, run_id) of the last run listed: the next page


@dataclass(frozen=True, slots=True)
class MetricKey:
    name: str
    domain: str = ""
    test: str = ""

    def label(self) -> str:
        where = ".".join(p for p in (self.domain, self.test) if p)
        return f"{self.name} ({where})" if where else self.name


@dataclass(frozen=True, slots=True)
class HistoryCatalog:
    """Choices for history filters and trend pickers, from what the store holds."""

    envs: tuple[str, ...] = ()
    domains: tuple[str, ...] = ()
    tests: dict[str, tuple[str, ...]] = field(default_factory=dict)  # domain -> tests
    metrics: tuple[MetricKey, ...] = ()


# -- the protocol ---------------------------------------------------------------------


@runtime_checkable
class CockpitBackend(Protocol):
    """One session of the engine as the TUI sees it."""

    @property
    def bus(self) -> EventBus: ...

    # lifecycle (called from App.on_mount / on_unmount, on the app's loop)
    async def open(self) -> None:
        """Bind to the running loop (``bus.bind_loop``), start fleet event forwarding."""
        ...

    async def close(self) -> None:
        """Abort a running run and release VMs this session started."""
        ...

    # run control
    def run_choices(self) -> RunChoices: ...

    async def start_run(self, request: RunRequest) -> str:
        """Start a run in the background; return its run id. Progress arrives as events."""
        ...

    async def abort_run(self) -> None: ...

    # VM control
    async def vm_list(self) -> list[VmInfo]: ...

    async def vm_start(self, name: str) -> None: ...

    async def vm_stop(self, name: str) -> None: ...

    async def vm_reset(self, name: str) -> None: ...

    def console_argv(self, name: str) -> list[str]:
        """Command that attaches this terminal to the VM's serial console."""
        ...

    def ssh_argv(self, name: str) -> list[str]:
        """Command that opens an interactive shell on the VM."""
        ...

    # kernel-dev loop
    async def kbuild(self) -> ActionResult: ...

    async def kload(self, vm: str) -> ActionResult: ...

    async def kunload(self, vm: str) -> ActionResult: ...

    def watch(self, vm: str) -> AsyncIterator[str]:
        """`vexfs-cockpit watch VM`: its "watching" line, then one result line per save of
        the module source (rebuild, reload, rerun). Closing the iterator stops the watch."""
        ...

    # history (sync: called from thread workers)
    def history_catalog(self) -> HistoryCatalog: ...

    def list_runs(self, flt: RunFilter) -> list[RunSummary]: ...

    def run_detail(self, run_id: str) -> RunReport | None: ...

    def domain_trend(self, domain: str, since: float | None) -> list[DomainTrendPoint]: ...

    def domain_pass_rate(self, domain: str, since: float | None) -> list[PassRatePoint]: ...

    def test_duration_trend(self, domain: str, test: str, since: float | None) -> list[DurationPoint]: ...

    def metric_trend(self, key: MetricKey, since: float | None) -> list[MetricPoint]: ...

    def compare_runs(self, a: str, b: str) -> RunComparison:
        """``a`` is the older run (baseline), ``b`` the newer."""
        ...

    def run_console(self, run_id: str) -> str | None:
        """A past run's console logs (its VMs' kernel log), None when no longer kept."""
        ...

    def crash_signatures(self, limit: int = 200) -> list[CrashSignature]: ...

    def standing(self, env: str, domains: Sequence[str]) -> list[DomainStanding]:
        """Each domain's last result, pass-rate trend and open regressions in ``env``."""
        ...

    def expected_durations(self, env: str, domain: str, tests: Sequence[str]) -> dict[str, float]:
        """Typical duration of each test from history (for ETAs); absent when unknown."""
        ...
