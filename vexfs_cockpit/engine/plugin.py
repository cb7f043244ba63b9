"""The domain plugin API: subclass ``DomainBase``, write ``async def test_*`` methods.

Tests are discovered by name. Per-test options come from ``@test_options``.
A test returns a ``TestResult`` (the short form ``TestResult(status=..., message=...)``
is enough, or ``passed``/``failed``/``verdict`` below); raising ``CommandFailed`` or
``AssertionError`` is a FAILED result, any other exception an ERROR. The runner fills
in name, timing, attempts and evidence.

Domains import all of this from the public module ``vexfs_cockpit.plugin``.
"""

from __future__ import annotations

import errno
import inspect
import logging
import os
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from vexfs_cockpit.engine.module import ModuleSpec
from vexfs_cockpit.engine.results import TestResult, TestStatus
from vexfs_cockpit.engine.target import CommandResult, Target
from vexfs_cockpit.klog.model import KernelReport

if TYPE_CHECKING:
    from vexfs_cockpit.config.models import CockpitConfig

TEST_PREFIX = "test_"


@dataclass(frozen=True, slots=True)
class TestOptions:
    """Per-test options. ``None`` means "take the run's default" (config / CLI)."""

    __test__ = False

    timeout_s: float | None = None
    retries: int | None = None
    priority: int = 100  # lower runs first; ties keep source order
    depends_on: tuple[str, ...] = ()  # test names (without the test_ prefix)
    tags: frozenset[str] = frozenset()
    critical: bool = False  # with stop_on_critical_failure, a failure stops the domain
    # Kernel report kinds this test provokes on purpose (fault injection): they are
    # recorded, but do not fail the test.
    expects_kernel_events: frozenset[str] = frozenset()


def test_options(
    *,
    timeout: float | None = None,
    retries: int | None = None,
    priority: int = 100,
    depends_on: tuple[str, ...] | list[str] = (),
    tags: tuple[str, ...] | list[str] = (),
    critical: bool = False,
    expects_kernel_events: tuple[str, ...] | list[str] = (),
) -> Callable[[Callable[..., Awaitable[TestResult]]], Callable[..., Awaitable[TestResult]]]:
    opts = TestOptions(
        timeout_s=timeout,
        retries=retries,
        priority=priority,
        depends_on=tuple(depends_on),
        tags=frozenset(tags),
        critical=critical,
        expects_kernel_events=frozenset(expects_kernel_events),
    )

    def mark(fn: Callable[..., Awaitable[TestResult]]) -> Callable[..., Awaitable[TestResult]]:
        fn.__test_options__ = opts  # type: ignore[attr-defined]
        return fn

    return mark


test_options.__test__ = False  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class TestSpec:
    __test__ = False

    name: str  # "module_build" for method test_module_build
    method: str
    options: TestOptions
    order: int


class KernelLog(Protocol):
    """The VM's kernel log as the runner and domains see it (``klog/buffer.py``)."""

    def cursor(self) -> int:
        """Absolute number of the next line to arrive."""
        ...

    def window(self, start: int, end: int | None = None) -> tuple[list[str], list[KernelReport]]:
        """Lines and classified reports in [start, end)."""
        ...

    async def sync(self, target: Target, tag: str, timeout: float = 10.0) -> int:
        """Write ``tag`` to the guest's /dev/kmsg and wait until it is seen; return its line."""
        ...

    async def wait_for(
        self, kinds: set[str], since: int, timeout: float
    ) -> KernelReport | None:
        """First report of one of ``kinds`` at or after line ``since``, or None on timeout."""
        ...


class VmControl(Protocol):
    """What a domain may do to its VM (safety tests need reset/recover)."""

    name: str

    async def reset(self, reason: str) -> None:
        """Hard reset, wait for SSH again. Raises InfraError if it does not come back."""
        ...

    async def state(self) -> str: ...

    async def is_responsive(self, timeout: float = 5.0) -> bool: ...


class HistoryView(Protocol):
    """Read-only history a domain may consult (baselines, regression re-runs)."""

    def previous_metric(self, domain: str, test: str, name: str, env: str) -> float | None: ...

    def failed_in_previous_run(self, env: str) -> list[tuple[str, str]]:
        """(domain, test) pairs that failed in the last finished run of ``env``."""
        ...


@dataclass(slots=True)
class DomainContext:
    """Everything a domain gets from the engine. Only protocols: no fleet/transport types."""

    name: str
    settings: Mapping[str, Any]  # the domain's section of the config, merged with defaults
    target: Target
    run_id: str = ""
    env: str = "dev"
    config: CockpitConfig | None = None
    klog: KernelLog | None = None
    vm: VmControl | None = None
    history: HistoryView | None = None
    # The host, for host-side work that is part of a test (kbuild of the module under
    # test against ``guest_kernel``'s headers). Commands on it are evidence too.
    host: Target | None = None
    guest_kernel: str = ""  # `uname -r` of the guest
    project_root: Path = field(default_factory=lambda: Path("."))  # relative config paths resolve here
    workdir: Path = field(default_factory=lambda: Path("."))  # host scratch dir for this domain run
    host_artifacts: dict[str, Path] = field(default_factory=dict)  # e.g. built module paths
    log: logging.Logger = field(default_factory=lambda: logging.getLogger("vexfs_cockpit.domain"))

    def module(self) -> ModuleSpec:
        """The module under test as this domain's settings describe it."""
        return ModuleSpec.from_settings(self.settings, self.config, self.project_root)


class DomainBase:
    """Base class for a test domain. Subclasses set ``name`` or get their module's name."""

    name: ClassVar[str] = ""

    def __init__(self, ctx: DomainContext):
        self.ctx = ctx
        self.target = ctx.target
        self.settings = ctx.settings
        self.log = ctx.log.getChild(ctx.name)
        # Set by setup_domain when something every later test needs is missing, e.g.
        # "module did not build against 6.1.0-56-amd64": tests that need it SKIP with this.
        self.prerequisite_missing: str | None = None

    # -- hooks a domain may override (the runner calls each once per domain) --------
    def get_domain_description(self) -> str:
        return (self.__doc__ or self.domain_name()).strip().splitlines()[0]

    async def setup_domain(self) -> bool:
        return True

    async def teardown_domain(self) -> bool:
        return True

    async def validate_domain_constraints(self) -> bool:
        return True

    async def prepare_host(self) -> bool:
        """Host-side work before the domain's VM boots (building the module under test
        against ``ctx.guest_kernel``). ``self.target`` is not usable here. Returning False
        with ``prerequisite_missing`` set skips the domain's tests with that reason and
        boots no VM: a module that does not compile fails in seconds, not after a boot."""
        return True

    # -- discovery -----------------------------------------------------------------
    @classmethod
    def domain_name(cls) -> str:
        if cls.name:
            return cls.name
        mod = cls.__module__.rsplit(".", 1)[-1]
        return mod if mod not in ("__main__", "") else cls.__name__.lower()

    @classmethod
    def discover_tests(cls) -> list[TestSpec]:
        specs: list[TestSpec] = []
        seen: set[str] = set()
        # Walk the MRO so subclasses can override a test; keep definition order.
        order = 0
        for klass in reversed(cls.__mro__):
            for attr, fn in vars(klass).items():
                if not attr.startswith(TEST_PREFIX) or not callable(fn):
                    continue
                if not inspect.iscoroutinefunction(fn):
                    raise TypeError(f"{cls.__name__}.{attr} must be `async def`")
                name = attr[len(TEST_PREFIX):]
                if name in seen:
                    specs = [s for s in specs if s.name != name]
                seen.add(name)
                opts = getattr(fn, "__test_options__", TestOptions())
                specs.append(TestSpec(name=name, method=attr, options=opts, order=order))
                order += 1
        specs.sort(key=lambda s: (s.options.priority, s.order))
        return specs


# ----------------------------------------------------------------------------- result helpers
def passed(message: str, **metrics: float) -> TestResult:
    return TestResult(status=TestStatus.PASSED, message=message, metrics=dict(metrics))


def failed(message: str, **metrics: float) -> TestResult:
    return TestResult(status=TestStatus.FAILED, message=message, metrics=dict(metrics))


def verdict(problems: list[str], ok_message: str, **metrics: float) -> TestResult:
    """PASSED with ``ok_message`` when no problem was found, else FAILED naming the first ones."""
    if problems:
        more = f" (+{len(problems) - 2} more)" if len(problems) > 2 else ""
        return failed("; ".join(problems[:2]) + more, **metrics)
    return passed(ok_message, **metrics)


def errno_problem(res: CommandResult, name: str, what: str) -> str | None:
    """None when ``res`` failed with errno ``name``'s message (strerror, as busybox and
    the shell print it), else one line saying what happened instead."""
    text = os.strerror(getattr(errno, name))
    if not res.ok and text.lower() in res.output.lower():
        return None
    return f"{what}: expected {name} ({text}), got {res.first_line() or 'success'}"


def percentile(values: list[float], pct: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    k = (len(ordered) - 1) * pct / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def option(domain: DomainBase, key: str, default: Any) -> Any:
    """A domain-specific knob from the domain section's ``options:`` mapping."""
    return (domain.settings.get("options") or {}).get(key, default)
