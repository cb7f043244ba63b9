"""The runner: runs the selected domains' tests on leased VMs and publishes events.

It knows nothing of how VMs are made (``TargetProvider``) or who listens (the bus).
Per test it: checks dependencies, brackets the test with kernel-log sync markers so
the kernel-log window is exact, races the test against a guard that watches for a
fatal kernel report or an unresponsive guest, retries, and turns any unexpected
kernel report of warning severity or worse into a failure.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from vexfs_cockpit.config.models import CockpitConfig
from vexfs_cockpit.engine import events as ev
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.confirm import Suspect, Triage, Verdict, decide
from vexfs_cockpit.engine.plugin import DomainBase, DomainContext, HistoryView, TestSpec
from vexfs_cockpit.engine.provider import Lease, PlansGuestKernel, SharesOneVm, TargetProvider
from vexfs_cockpit.engine.results import Attempt, Evidence, TestResult, TestStatus
from vexfs_cockpit.engine.target import (
    CommandFailed,
    NoGuestTarget,
    RecordingTarget,
    Target,
    TargetUnavailable,
    current_evidence,
)
from vexfs_cockpit.errors import CockpitError, HostUnavailable, InfraError
from vexfs_cockpit.klog.model import KernelReport, Severity

# Reports that mean the guest is gone: the test ends at once and the VM is reset.
FATAL_KINDS = frozenset({"panic", "hard_lockup"})
# Reports that mean the guest is wedged (a task or CPU stuck): also end the test.
HANG_KINDS = frozenset({"hung_task", "soft_lockup", "rcu_stall"})
# Kernel code crashed but the guest runs on: the test ends at once too (its task may
# be dead, the kernel is tainted D and may hold the dead task's locks) and the VM is
# reset so the next test starts on a kernel it can trust.
CRASH_KINDS = frozenset({"oops", "bug", "gpf", "kasan", "kfence"})
SYNC_TIMEOUT_S = 10.0
# Collecting a hung guest's last words (console tail, sysrq dumps) takes ~2-3 s; bound it.
HANG_EVIDENCE_TIMEOUT_S = 40.0
# How long a test cancelled because its guest is lost gets to finish before recovery starts.
CANCEL_GRACE_S = 2.0
# When SSH breaks mid-test, how long the console gets to show the kernel report behind it
# (a report cut short is closed when libvirt reports the stop, or after 3 s of quiet).
LINK_LOST_REPORT_WAIT_S = 5.0
# How long cancelled guards and tests get to unwind before the runner moves on without them
# (their SSH clean-up is bounded itself; this only keeps a stuck one from stalling the run).
REAP_TIMEOUT_S = 30.0
# A reset plus the domain's setup on the fresh guest, beyond the boot timeout.
RECOVER_SETUP_S = 300.0
# The VM index a domain's confirmation reruns lease: a fresh VM, never the run's own.
CONFIRM_VM_INDEX = 1


@dataclass(frozen=True, slots=True)
class Deadline:
    """A test's hang deadline from its own history (app computes it, analysis/deadlines.py):
    ``p95_s`` of its recent passing durations times a factor, floored and capped by config."""

    seconds: float
    p95_s: float
    runs: int  # how many past durations the p95 is over

    def describe(self) -> str:
        return f"its deadline from history: p95 {self.p95_s:.1f}s over {self.runs} runs"


@dataclass(slots=True)
class RunRequest:
    config: CockpitConfig
    domains: list[str]
    run_id: str
    env: str = "dev"
    timeout_s: float | None = None  # CLI --timeout: per-test default
    retries: int | None = None  # CLI --retries
    only_tests: Mapping[str, set[str]] | None = None  # domain -> test names (re-run one test)
    artifacts_dir: Path = field(default_factory=lambda: Path("."))
    project_root: Path = field(default_factory=lambda: Path("."))
    provenance: Mapping[str, str] = field(default_factory=dict)  # see app.provenance
    # (domain, test) -> its hang deadline from history, where neither the test nor --timeout sets one
    deadlines: Mapping[tuple[str, str], Deadline] = field(default_factory=dict)


@dataclass(slots=True)
class RunSummary:
    run_id: str
    status: str  # passed | failed | errored | aborted
    counts: dict[str, int]
    results: list[TestResult]
    infra_errors: list[str]

    @property
    def exit_code(self) -> int:
        return {"passed": 0, "failed": 1, "errored": 3, "aborted": 1}.get(self.status, 1)


class HangVerdictLike(Protocol):
    message: str  # "guest hung: no SSH answer for 31 s, console silent 30 s, libvirt state running"


class HangWatch(Protocol):
    """A VM's hang watchdog, offered by the provider as ``Lease.extra["watchdog"]``
    (``fleet.watchdog.HangWatchdog``); without one the runner uses a plain SSH heartbeat."""

    async def watch(self, hang_after: float) -> HangVerdictLike:
        """Return once the guest is hung or frozen; cancelled when the test ends."""
        ...

    async def capture(self) -> list[str]:
        """Evidence notes from the hung guest (its dumps land in the kernel log)."""
        ...


class _GuestLost(Exception):
    """The guard saw the guest die or wedge during a test."""

    def __init__(
        self,
        status: TestStatus,
        message: str,
        report: KernelReport | None = None,
        capture: Callable[[], Awaitable[list[str]]] | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.report = report
        self.capture = capture  # collects the hung guest's evidence before the reset
        self.pending: asyncio.Future[object] | None = None  # the cancelled test, still cleaning up


class _HostGone(Exception):
    """The lease's host went away under the domain (its provider says so through
    ``Lease.extra["host_lost"]``): the domain's unfinished tests go to a VM leased anew."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.results: dict[str, TestResult] = {}  # what finished before, on that host


def _host_lost(lease: Lease) -> str:
    """Why the lease's host is lost ("" while it answers, or when the provider cannot tell)."""
    probe = lease.extra.get("host_lost")
    return str(probe()) if callable(probe) else ""


def _count(results: list[TestResult]) -> dict[str, int]:
    c = Counter(r.status.value for r in results)
    return {s.value: c.get(s.value, 0) for s in TestStatus if s not in (TestStatus.PENDING, TestStatus.RUNNING)}


def _retrieve(task: asyncio.Future[object]) -> None:
    """Mark a finished background task's outcome as seen (it is reported elsewhere)."""
    if not task.cancelled():
        task.exception()


async def _reap(tasks: list[asyncio.Future[object]], timeout: float) -> bool:
    """Wait for cancelled tasks to unwind, at most ``timeout``; False if one did not
    (it is left to finish on its own, its outcome marked seen)."""
    if not tasks:
        return True
    _, pending = await asyncio.wait(tasks, timeout=timeout)
    for t in tasks:
        if t in pending:
            t.add_done_callback(_retrieve)
        else:
            _retrieve(t)
    return not pending


def selected_specs(cls: type[DomainBase], only: set[str] | None = None) -> list[TestSpec]:
    """The tests of domain ``cls`` a run executes, in order: all of them, or ``only`` plus
    what they depend on (a re-run of module_load_basic needs module_build, or it would
    only ever be SKIPPED). CI sharding partitions exactly this selection."""
    specs = cls.discover_tests()
    if only is not None:
        by_name = {s.name: s for s in specs}
        wanted, todo = set(), list(only)
        while todo:
            name = todo.pop()
            if name in by_name and name not in wanted:
                wanted.add(name)
                todo.extend(by_name[name].options.depends_on)
        specs = [s for s in specs if s.name in wanted]
    return specs


class Runner:
    def __init__(
        self,
        bus: EventBus,
        provider: TargetProvider,
        registry: Mapping[str, type[DomainBase]],
        *,
        host: Target | None = None,
        history: HistoryView | None = None,
        triage: Triage | None = None,
    ):
        self.bus = bus
        self.provider = provider
        self.registry = registry
        self.host = host
        self.history = history
        # Which tests changed against the history (app.session builds it); None: no verdicts.
        self.triage = triage
        self._abort = asyncio.Event()
        self._host_down = ""  # this run's HostUnavailable: no later domain can get a VM either

    def abort(self) -> None:
        """Stop after the running tests (front ends call this; Ctrl-C cancels instead)."""
        self._abort.set()

    async def execute(self, req: RunRequest) -> RunSummary:
        cfg = req.config
        unknown = [d for d in req.domains if d not in self.registry]
        if unknown:
            raise CockpitError(f"unknown domain(s) {', '.join(unknown)}; known: {', '.join(sorted(self.registry))}")
        parallel = cfg.execution.max_parallel_tests if cfg.execution.parallel_test_execution else 1
        self.bus.publish(
            ev.RunStarted(
                run_id=req.run_id,
                config_path=str(cfg.source_path or ""),
                profile=cfg.profile,
                env=req.env,
                domains=tuple(req.domains),
                config_json=cfg.model_dump_json(),
                planned={d: tuple(s.name for s in self._specs(req, d)) for d in req.domains},
                parallel=parallel,
                provenance_json=json.dumps(dict(req.provenance), sort_keys=True),
            )
        )
        results: list[TestResult] = []
        infra: list[str] = []
        no_vm: set[str] = set()  # domains that got no VM: their errors are the infrastructure's
        gate = asyncio.Semaphore(parallel)

        self._host_down = ""

        async def one(domain: str) -> None:
            async with gate:
                if self._abort.is_set():
                    return
                if self._host_down:
                    specs = self._specs(req, domain)
                    results.extend(self._domain_unavailable(req, domain, specs, self._host_down, publish_problem=False))
                    no_vm.add(domain)
                    return
                res, err = await self._run_domain(req, domain)
                results.extend(res)
                if err:
                    infra.append(err)
                    no_vm.add(domain)

        status = "aborted"
        infra_reason = ""
        try:
            async with asyncio.TaskGroup() as tg:
                for d in req.domains:
                    tg.create_task(one(d))
            verdicts: dict[tuple[str, str], Verdict] = {}
            if not self._abort.is_set() and not self._host_down:
                verdicts = await self._confirm(req, results, no_vm)
            counts = _count(results)
            # A listed known failure is reported, but it does not fail the run.
            known = [r for r in results if r.status.bad and verdicts.get((r.domain, r.name)) is Verdict.KNOWN]
            if infra:
                status = "errored"
            elif self._abort.is_set():
                status = "aborted"
            elif any(r.status.bad and verdicts.get((r.domain, r.name)) is not Verdict.KNOWN for r in results):
                status = "failed"
            elif results and not known and not any(r.status is TestStatus.PASSED for r in results):
                # A run that verified nothing is not a pass (e.g. every domain skipped
                # because the module is missing): CI must not go green on it.
                status = "failed"
                infra_reason = "no test passed: every test was skipped"
            else:
                status = "passed"
                if known:
                    infra_reason = f"{len(known)} known failure{'s' if len(known) > 1 else ''}: " + ", ".join(
                        f"{r.domain}/{r.name}" for r in known)
        finally:
            # Also on cancellation (Ctrl-C): what finished is already stored; say how it ended.
            self.bus.publish(
                ev.RunFinished(
                    run_id=req.run_id,
                    status=status,
                    counts=_count(results),
                    reason="; ".join(dict.fromkeys(infra)) if infra else ("aborted by user" if status == "aborted" else infra_reason),
                )
            )
        return RunSummary(req.run_id, status, counts, results, infra)

    # -- one domain ---------------------------------------------------------------
    def _specs(self, req: RunRequest, domain: str) -> list[TestSpec]:
        """The tests ``domain`` runs in this run, in order."""
        return selected_specs(self.registry[domain], req.only_tests.get(domain) if req.only_tests else None)

    async def _run_domain(self, req: RunRequest, domain: str) -> tuple[list[TestResult], str | None]:
        cls = self.registry[domain]
        specs = self._specs(req, domain)
        settings = req.config.domain(domain).model_dump()
        why_not = await self._prepare_on_host(req, domain, cls, settings)
        if why_not:
            return self._domain_unrun(req, domain, specs, TestStatus.SKIPPED, why_not, status="skipped"), None
        done: dict[str, TestResult] = {}  # finished on a host since lost (stored as they are)
        gone = ""
        while True:
            left = [s for s in specs if s.name not in done]
            try:
                lease_cm = self.provider.lease(domain, 0)
                lease = await lease_cm.__aenter__()
            except CockpitError as err:
                if isinstance(err, HostUnavailable) and not self._host_down:
                    self._host_down = str(err)
                msg = f"{gone}; {err}" if gone and domain not in str(err) else str(err)
                return [*done.values(), *self._domain_unavailable(req, domain, left, msg)], msg
            except Exception as err:  # libvirt/asyncssh surprises are still infrastructure
                msg = f"{domain}: could not get a VM: {type(err).__name__}: {err}"
                return [*done.values(), *self._domain_unavailable(req, domain, left, msg)], msg
            exc_info: tuple = (None, None, None)
            ran: list[TestResult] | None = None
            released = ""
            try:
                ran = await self._run_domain_on(req, domain, cls, specs, settings, lease, done)
            except _HostGone as err:
                if gone:  # once per domain: a second lost host ends it as an infrastructure error
                    msg = f"{domain}: {err} (after {gone})"
                    done.update(err.results)
                    return [*done.values(), *self._domain_unavailable(
                        req, domain, [s for s in specs if s.name not in done], msg)], msg
                gone = f"{domain}: {err}"
                done.update(err.results)
                self.bus.publish(ev.InfraProblem(message=f"{gone}: its {len(specs) - len(done)} unfinished "
                                                 "test(s) go to a VM leased anew", vm=lease.vm_name, run_id=req.run_id))
            except BaseException as err:
                exc_info = (type(err), err, err.__traceback__)
                raise
            finally:
                released = await self._release(req, domain, lease_cm, lease.vm_name, exc_info)
            if ran is not None:
                return [*done.values(), *ran], released or None

    async def _release(self, req: RunRequest, domain: str, lease_cm: Any, vm: str, exc_info: tuple) -> str:
        """Give the domain's VM back. A release that fails (libvirt lost the domain, the
        host went away) keeps the results the domain got on it: it is an
        infrastructure problem of the run, said once, and never hides an error
        already on its way up."""
        try:
            await lease_cm.__aexit__(*exc_info)
        except Exception as err:
            msg = f"{domain}: releasing VM {vm} failed: {err}"
            self.bus.publish(ev.InfraProblem(message=msg, vm=vm, run_id=req.run_id))
            return msg
        return ""

    async def _prepare_on_host(self, req: RunRequest, domain: str, cls: type[DomainBase], settings: dict) -> str:
        """Run the domain's ``prepare_host`` before any VM boots; why the domain cannot
        run ("" when it can, or when the provider cannot tell the guest kernel yet: then
        the domain prepares in ``setup_domain`` on its booted VM)."""
        if not isinstance(self.provider, PlansGuestKernel) or cls.prepare_host is DomainBase.prepare_host:
            return ""
        try:
            kernel = await self.provider.planned_guest_kernel()
        except CockpitError:
            return ""  # the lease will say what is wrong with the host, once
        if not kernel:
            return ""
        no_vm = Lease(vm_name="", target=NoGuestTarget(domain), guest_kernel=kernel)
        plugin = cls(self._context(req, domain, settings, no_vm))
        try:
            ok = await plugin.prepare_host()
        except Exception as err:  # a broken hook is the domain's problem, reported like setup's
            return plugin.prerequisite_missing or f"{domain}: prepare_host raised {type(err).__name__}: {err}"
        if not ok or plugin.prerequisite_missing:
            return plugin.prerequisite_missing or f"{domain}: prepare_host failed"
        return ""

    def _domain_unavailable(
        self, req: RunRequest, domain: str, specs: list[TestSpec], why: str, *, publish_problem: bool = True
    ) -> list[TestResult]:
        if publish_problem:
            self.bus.publish(ev.InfraProblem(message=why, run_id=req.run_id))
        return self._domain_unrun(req, domain, specs, TestStatus.ERROR, why, status="errored")

    def _domain_unrun(
        self, req: RunRequest, domain: str, specs: list[TestSpec], test_status: TestStatus, why: str, *, status: str
    ) -> list[TestResult]:
        """A domain that got no VM: every test ``test_status`` with ``why``."""
        self.bus.publish(ev.DomainStarted(run_id=req.run_id, domain=domain, vm="", planned_tests=tuple(s.name for s in specs)))
        results = [self._finish_unrun(req, domain, s, test_status, why) for s in specs]
        self.bus.publish(ev.DomainFinished(run_id=req.run_id, domain=domain, status=status, counts=_count(results), reason=why))
        return results

    def _finish_unrun(self, req: RunRequest, domain: str, spec: TestSpec, status: TestStatus, why: str) -> TestResult:
        r = TestResult(status=status, message=why, name=spec.name, domain=domain, tags=tuple(sorted(spec.options.tags)))
        self.bus.publish(ev.TestFinished(run_id=req.run_id, result=r))
        return r

    async def _run_domain_on(
        self,
        req: RunRequest,
        domain: str,
        cls: type[DomainBase],
        specs: list[TestSpec],
        settings: dict,
        lease: Lease,
        done: Mapping[str, TestResult] | None = None,
    ) -> list[TestResult]:
        """Run ``specs`` on ``lease``, but those in ``done`` (finished on a host since
        lost): their stored results stand, and those the tests left depend on are
        replayed unpublished, so what they leave on a VM (a pushed module) is here too."""
        done = done or {}
        plugin = cls(self._context(req, domain, settings, lease))
        self.bus.publish(
            ev.DomainStarted(run_id=req.run_id, domain=domain, vm=lease.vm_name, planned_tests=tuple(s.name for s in specs))
        )
        results: dict[str, TestResult] = {}
        replayed: dict[str, TestResult] = {}  # for the dependency checks of the tests left
        needed = {d for s in specs if s.name not in done for d in s.options.depends_on}
        # (status, reason) applied to every remaining test once something blocks the domain.
        blocked: tuple[TestStatus, str] | None = None
        ok, why = await self._setup(plugin, domain)
        if not ok:
            blocked = (TestStatus.SKIPPED if plugin.prerequisite_missing else TestStatus.ERROR, why)
        for spec in specs:
            if blocked is None and self._abort.is_set():
                blocked = (TestStatus.SKIPPED, "run aborted")
            if blocked is None and plugin.prerequisite_missing:  # e.g. the VM did not come back
                blocked = (TestStatus.SKIPPED, plugin.prerequisite_missing)
            if spec.name in done:
                if spec.name in needed and done[spec.name].status is TestStatus.PASSED and blocked is None:
                    try:
                        replayed[spec.name] = await self._attempt(req, domain, plugin, spec, lease,
                                                                  *self._timeout(req, domain, spec))
                    except _HostGone as gone:
                        gone.results = results
                        raise
                else:
                    replayed[spec.name] = done[spec.name]
                continue
            if blocked:
                results[spec.name] = self._finish_unrun(req, domain, spec, *blocked)
                continue
            dep_problem = self._dependency_problem(spec, {**replayed, **results})
            if dep_problem:
                results[spec.name] = self._finish_unrun(req, domain, spec, TestStatus.SKIPPED, dep_problem)
                continue
            try:
                result = await self._run_test(req, domain, plugin, spec, lease)
            except _HostGone as gone:  # no teardown: the VM's host is gone
                gone.results = results
                raise
            results[spec.name] = result
            if result.status.bad and spec.options.critical and settings.get("stop_on_critical_failure", True):
                blocked = (
                    TestStatus.SKIPPED,
                    f"critical test {spec.name} {result.status.value.lower()} (stop_on_critical_failure)",
                )
        try:
            await plugin.teardown_domain()
        except Exception as err:  # teardown trouble is recorded, it does not rewrite results
            self.bus.publish(ev.InfraProblem(message=f"{domain}: teardown_domain failed: {err}", vm=lease.vm_name, run_id=req.run_id))
        res = list(results.values())
        whole = [*done.values(), *res]  # the domain's counts include what finished on a lost host
        counts = _count(whole)
        status = "failed" if any(r.status.bad for r in whole) else "passed"
        if whole and all(r.status is TestStatus.SKIPPED for r in whole):
            status = "skipped"  # nothing ran: "passed" would claim what was never checked
        self.bus.publish(
            ev.DomainFinished(run_id=req.run_id, domain=domain, status=status, counts=counts, reason=blocked[1] if blocked else "")
        )
        return res

    def _context(self, req: RunRequest, domain: str, settings: dict, lease: Lease) -> DomainContext:
        """What a domain gets, on its VM or (a lease with a ``NoGuestTarget``) before it boots."""
        workdir = req.artifacts_dir / domain
        workdir.mkdir(parents=True, exist_ok=True)
        return DomainContext(
            name=domain,
            settings=settings,
            target=RecordingTarget(lease.target),
            run_id=req.run_id,
            env=req.env,
            config=req.config,
            klog=lease.klog,
            vm=lease.vm,
            history=self.history,
            host=RecordingTarget(self.host) if self.host else None,
            guest_kernel=lease.guest_kernel,
            project_root=req.project_root,
            workdir=workdir,
        )

    async def _setup(self, plugin: DomainBase, domain: str) -> tuple[bool, str]:
        try:
            if not await plugin.validate_domain_constraints():
                return False, plugin.prerequisite_missing or f"{domain}: domain constraints not met"
            if not await plugin.setup_domain():
                return False, plugin.prerequisite_missing or f"{domain}: setup_domain failed"
        except TargetUnavailable:
            raise
        except Exception as err:
            return False, plugin.prerequisite_missing or f"{domain}: setup_domain raised {type(err).__name__}: {err}"
        if plugin.prerequisite_missing:
            return False, plugin.prerequisite_missing
        return True, ""

    @staticmethod
    def _dependency_problem(spec: TestSpec, done: Mapping[str, TestResult]) -> str | None:
        for dep in spec.options.depends_on:
            r = done.get(dep)
            if r is None:
                return f"dependency {dep} did not run"
            if r.status is not TestStatus.PASSED:
                return f"dependency {dep} {r.status.value.lower()}: {r.message}"[:500]
        return None

    # -- confirming what changed (engine/confirm.py) ---------------------------------
    async def _confirm(
        self, req: RunRequest, results: list[TestResult], no_vm: set[str]
    ) -> dict[tuple[str, str], Verdict]:
        """Ask the triage which tests changed; rerun each K times on a fresh VM of its
        domain; publish a TestVerdict per test. Returns the verdicts."""
        if self.triage is None or not results:
            return {}
        try:
            suspects = list(await self.triage(req, results))
        except CockpitError as err:  # e.g. the history DB unreadable: the run's results stand
            self.bus.publish(ev.InfraProblem(message=f"no regression verdicts for this run: {err}", run_id=req.run_id))
            return {}
        except Exception as err:  # a bug in the triage must not cost the run its outcome
            self.bus.publish(ev.InfraProblem(
                message=f"no regression verdicts for this run: the triage raised {type(err).__name__}: {err}",
                run_id=req.run_id))
            return {}
        k = req.config.analysis.confirm_reruns
        verdicts: dict[tuple[str, str], Verdict] = {}
        to_rerun: dict[str, list[Suspect]] = {}
        for s in suspects:
            if s.verdict is not None:
                self._verdict(req, verdicts, s, s.verdict, (), s.note)
            elif k == 0:
                self._verdict(req, verdicts, s, Verdict.UNCONFIRMED, (), "not rerun: analysis.confirm_reruns is 0")
            elif isinstance(self.provider, SharesOneVm) and self.provider.shares_one_vm:
                self._verdict(req, verdicts, s, Verdict.UNCONFIRMED, (),
                              "not rerun: this run's VM is the only one (no fresh VM to confirm on)")
            elif s.domain in no_vm or s.domain not in self.registry:
                self._verdict(req, verdicts, s, Verdict.UNCONFIRMED, (), f"not rerun: {s.domain} got no VM in this run")
            else:
                to_rerun.setdefault(s.domain, []).append(s)
        if to_rerun:
            self.bus.publish(ev.ConfirmStarted(
                run_id=req.run_id, tests=tuple(f"{s.domain}/{s.test}" for g in to_rerun.values() for s in g), reruns=k))
        for domain, group in to_rerun.items():
            if self._abort.is_set():
                for s in group:
                    self._verdict(req, verdicts, s, Verdict.UNCONFIRMED, (), "not rerun: run aborted")
                continue
            await self._confirm_domain(req, domain, group, k, verdicts)
        return verdicts

    def _verdict(
        self, req: RunRequest, verdicts: dict[tuple[str, str], Verdict], s: Suspect, verdict: Verdict,
        reruns: tuple[TestStatus, ...], note: str,
    ) -> None:
        verdicts[s.key] = verdict
        self.bus.publish(ev.TestVerdict(
            run_id=req.run_id, domain=s.domain, test=s.test, verdict=verdict.value, now=s.now, before=s.before,
            reference=s.reference, reruns=tuple(x.value for x in reruns), note=note,
        ))

    async def _confirm_domain(
        self, req: RunRequest, domain: str, group: list[Suspect], k: int, verdicts: dict[tuple[str, str], Verdict]
    ) -> None:
        """Rerun ``group`` (tests of ``domain``) K times each on one fresh VM, after the
        tests they depend on (once each)."""
        cls = self.registry[domain]
        by_name = {s.test: s for s in group}
        specs = self._specs(RunRequest(req.config, [domain], req.run_id, only_tests={domain: set(by_name)}), domain)
        pending = dict(by_name)

        def unconfirmed(why: str) -> None:
            for s in list(pending.values()):
                self._verdict(req, verdicts, s, Verdict.UNCONFIRMED, (), _with(s.note, why))
            pending.clear()

        try:
            lease_cm = self.provider.lease(domain, CONFIRM_VM_INDEX)
            lease = await lease_cm.__aenter__()
        except Exception as err:  # no fresh VM: nothing is confirmed, the run's results stand
            unconfirmed(f"no fresh VM for the reruns: {err}")
            return
        exc_info: tuple = (None, None, None)
        plugin = cls(self._context(req, domain, req.config.domain(domain).model_dump(), lease))
        try:
            ok, why = await self._setup(plugin, domain)
            if not ok:
                unconfirmed(f"setup on the fresh VM {lease.vm_name} failed: {why}")
            done: dict[str, TestResult] = {}
            for spec in specs if ok else ():
                if self._abort.is_set() or plugin.prerequisite_missing:
                    unconfirmed("run aborted" if self._abort.is_set() else plugin.prerequisite_missing)
                    break
                dep = self._dependency_problem(spec, done)
                s = pending.pop(spec.name, None)
                if s is None:  # a dependency of a rerun test: once
                    done[spec.name] = (TestResult(status=TestStatus.SKIPPED, message=dep) if dep
                                       else await self._attempt(req, domain, plugin, spec, lease,
                                                                *self._timeout(req, domain, spec)))
                    continue
                if dep:
                    self._verdict(req, verdicts, s, Verdict.UNCONFIRMED, (), _with(s.note, f"on the fresh VM: {dep}"))
                    continue
                statuses: list[TestStatus] = []
                for n in range(1, k + 1):
                    if self._abort.is_set() or plugin.prerequisite_missing:  # e.g. the VM did not come back
                        break
                    r = await self._attempt(req, domain, plugin, spec, lease, *self._timeout(req, domain, spec))
                    statuses.append(r.status)
                    done[spec.name] = r
                    self.bus.publish(ev.TestRerun(
                        run_id=req.run_id, domain=domain, test=spec.name, number=n, of=k, status=r.status,
                        message=r.message, duration_s=r.duration_s, vm=lease.vm_name))
                verdict, tally = decide(TestStatus(s.now), statuses)
                if len(statuses) < k:
                    why = "run aborted" if self._abort.is_set() else plugin.prerequisite_missing
                    verdict, tally = Verdict.UNCONFIRMED, f"{why}: stopped after {len(statuses)} of {k} reruns"
                self._verdict(req, verdicts, s, verdict, tuple(statuses), _with(s.note, f"{tally} on fresh VM {lease.vm_name}"))
        except Exception as err:  # the fresh VM broke under the reruns: what is left is unconfirmed
            unconfirmed(f"the reruns on {lease.vm_name} stopped: {type(err).__name__}: {err}")
        except BaseException as err:
            exc_info = (type(err), err, err.__traceback__)
            raise
        finally:
            try:
                await plugin.teardown_domain()
            except Exception as err:  # as in the run: recorded, it changes no verdict
                self.bus.publish(ev.InfraProblem(message=f"{domain}: teardown_domain failed: {err}", vm=lease.vm_name, run_id=req.run_id))
            await lease_cm.__aexit__(*exc_info)

    # -- one test -----------------------------------------------------------------
    @staticmethod
    def _timeout(req: RunRequest, domain: str, spec: TestSpec) -> tuple[float, Deadline | None]:
        """The test's own timeout, else --timeout, else its deadline from history, else
        execution.test_timeout_minutes; with the history deadline when that is the one."""
        if spec.options.timeout_s or req.timeout_s:
            return float(spec.options.timeout_s or req.timeout_s or 0), None
        if (d := req.deadlines.get((domain, spec.name))) is not None:
            return d.seconds, d
        return req.config.execution.test_timeout_minutes * 60, None

    async def _run_test(
        self, req: RunRequest, domain: str, plugin: DomainBase, spec: TestSpec, lease: Lease
    ) -> TestResult:
        execution = req.config.execution
        timeout, deadline = self._timeout(req, domain, spec)
        retries = spec.options.retries if spec.options.retries is not None else (
            req.retries if req.retries is not None else execution.retry_count
        )
        attempts: list[Attempt] = []
        started_wall = time.time()
        t0 = time.monotonic()
        result: TestResult | None = None
        for number in range(1, retries + 2):
            self.bus.publish(ev.TestStarted(run_id=req.run_id, domain=domain, test=spec.name, attempt=number, vm=lease.vm_name,
                                            deadline_s=timeout, p95_s=deadline.p95_s if deadline else 0.0))
            result = await self._attempt(req, domain, plugin, spec, lease, timeout, deadline)
            attempts.append(Attempt(number, result.status, result.message, result.duration_s))
            if not result.status.bad:
                break
        assert result is not None
        result.name, result.domain = spec.name, domain
        result.attempts = attempts
        result.started_at = started_wall
        result.duration_s = time.monotonic() - t0
        result.tags = tuple(sorted(spec.options.tags))
        for name, value in result.metrics.items():
            self.bus.publish(ev.MetricRecorded(run_id=req.run_id, domain=domain, test=spec.name, name=name, value=float(value)))
        self.bus.publish(ev.TestFinished(run_id=req.run_id, result=result))
        return result

    async def _attempt(
        self, req: RunRequest, domain: str, plugin: DomainBase, spec: TestSpec, lease: Lease, timeout: float,
        deadline: Deadline | None = None,
    ) -> TestResult:
        evidence = Evidence()
        token = current_evidence.set(evidence)
        klog = lease.klog
        start_line = await self._sync(lease, f"begin {domain}/{spec.name}") if klog else 0
        t0 = time.monotonic()
        lost: _GuestLost | None = None
        try:
            result = await self._race_guard(plugin, spec, lease, timeout, start_line)
        except _GuestLost as gl:
            lost = gl
            result = TestResult(status=gl.status, message=str(gl))
        except TimeoutError:
            why = f" ({deadline.describe()})" if deadline else ""
            result = TestResult(status=TestStatus.TIMEOUT, message=f"timed out after {timeout:g}s{why}")
        except CommandFailed as err:
            result = TestResult(status=TestStatus.FAILED, message=str(err))
        except AssertionError as err:
            result = TestResult(status=TestStatus.FAILED, message=str(err) or "assertion failed")
        except TargetUnavailable as err:
            lost = await self._link_lost(lease, spec, start_line, err)
            result = TestResult(status=lost.status, message=str(lost))
        except Exception as err:
            result = TestResult(status=TestStatus.ERROR, message=f"{type(err).__name__}: {err}")
        finally:
            current_evidence.reset(token)
        if not isinstance(result, TestResult):
            result = TestResult(status=TestStatus.ERROR, message=f"test returned {type(result).__name__}, not TestResult")
        result.duration_s = time.monotonic() - t0
        result.evidence.commands[:0] = evidence.commands
        if lost is None and result.status is TestStatus.TIMEOUT and lease.vm is not None:
            # A timeout can be the guest wedging: ask it before blaming the test (through
            # the watchdog's own connection if it has one: the test's may still be busy).
            wd = _watchdog(lease)
            probe = getattr(wd, "is_responsive", None) or lease.vm.is_responsive
            if not await probe(timeout=5.0):
                lost = _GuestLost(TestStatus.TIMEOUT, "guest hung", capture=wd.capture if wd else None)
                result.message = f"{result.message}; guest hung"
        if lost is not None and (gone := _host_lost(lease)):
            # The host went away, not the guest: nothing to capture or reset there.
            if lost.pending is not None:
                await _reap([lost.pending], CANCEL_GRACE_S)
            raise _HostGone(gone)
        if lost is not None and lost.capture is not None:
            # Before the kernel window is cut: the sysrq dumps arrive on the console.
            result.evidence.notes.extend(await self._capture(lost))
        if klog is not None:
            end_line = None if lost else await self._sync(lease, f"end {domain}/{spec.name}")
            self._attach_kernel_window(req, domain, spec, lease, result, start_line, end_line)
        if lost is not None and lease.vm is not None:
            await self._recover(req, domain, plugin, lease, lost, spec.name)
            if plugin.prerequisite_missing and (gone := _host_lost(lease)):  # the host went during the reset
                raise _HostGone(gone)
            result.evidence.notes.append(f"VM {lease.vm_name} was reset: {lost}")
        if lost is not None and lost.pending is not None and not await _reap([lost.pending], REAP_TIMEOUT_S):
            result.evidence.notes.append(f"the cancelled test had not unwound {REAP_TIMEOUT_S:g}s after the reset")
        return result

    async def _sync(self, lease: Lease, tag: str) -> int:
        assert lease.klog is not None
        try:
            return await lease.klog.sync(lease.target, tag, timeout=SYNC_TIMEOUT_S)
        except (TimeoutError, InfraError):
            # Console or SSH slow/gone (KlogSyncTimeout is an InfraError): fall back to
            # "everything since now" so the window is never lost.
            return lease.klog.cursor()

    async def _race_guard(
        self, plugin: DomainBase, spec: TestSpec, lease: Lease, timeout: float, start_line: int
    ) -> TestResult:
        method = getattr(plugin, spec.method)
        test_task = asyncio.ensure_future(asyncio.wait_for(method(), timeout))
        guards = [asyncio.ensure_future(g) for g in self._guards(spec, lease, start_line, plugin)]
        try:
            await asyncio.wait([test_task, *guards], return_when=asyncio.FIRST_COMPLETED)
        except BaseException:
            # The run itself is cancelled (Ctrl-C, SIGTERM): stop the test too, and never
            # leave it running into the VM's destruction ("exception never retrieved").
            test_task.cancel()
            await _reap([test_task], CANCEL_GRACE_S)
            raise
        finally:
            for g in guards:
                g.cancel()
            await _reap(guards, REAP_TIMEOUT_S)
        if test_task.done():
            return test_task.result()
        test_task.cancel()
        verdict: BaseException = _GuestLost(TestStatus.ERROR, "guard ended without a verdict")
        for g in guards:
            if g.done() and not g.cancelled() and g.exception() is not None:
                verdict = g.exception()  # type: ignore[assignment]
                break
        if isinstance(verdict, _GuestLost):
            # On a dead guest the cancelled test's SSH clean-up (close, remote kill) waits
            # out its own timeouts; collect evidence and reset meanwhile, reap it after.
            done, _ = await asyncio.wait([test_task], timeout=CANCEL_GRACE_S)
            if not done:
                verdict.pending = test_task
        else:
            await _reap([test_task], REAP_TIMEOUT_S)
        raise verdict

    def _guards(self, spec: TestSpec, lease: Lease, start_line: int, plugin: DomainBase) -> list:
        guards = []
        expected = spec.options.expects_kernel_events
        watch = (FATAL_KINDS | HANG_KINDS | CRASH_KINDS) - expected
        if lease.klog is not None and watch:
            guards.append(self._watch_kernel(lease, watch, start_line))
        # A test that provokes a crash or hang on purpose resets the VM itself; the
        # heartbeat would only race its recovery.
        provokes = expected & (FATAL_KINDS | HANG_KINDS | CRASH_KINDS)
        if callable(lease.extra.get("host_gone")):  # a provider that knows when the VM's host is gone
            guards.append(self._watch_host(lease))
        if lease.vm is not None and not provokes:
            hang_after = float(plugin.settings.get("hang_detection_timeout", 30.0))
            wd = _watchdog(lease)
            if wd is not None:
                guards.append(self._watch_hang(wd, lease, hang_after, watch, start_line))
            else:
                guards.append(self._watch_heartbeat(lease, hang_after))
        return guards

    @staticmethod
    def _lost_to_report(report: KernelReport) -> _GuestLost:
        if report.kind in FATAL_KINDS:
            return _GuestLost(TestStatus.ERROR, report.title, report)
        if report.kind in HANG_KINDS:
            return _GuestLost(TestStatus.TIMEOUT, report.title, report)
        return _GuestLost(TestStatus.FAILED, report.title, report)  # crashed kernel code: the code under test failed

    @staticmethod
    async def _watch_host(lease: Lease) -> None:
        """The lease's host went away (``Lease.extra["host_gone"]``, awaited): the test on
        its VM cannot finish; _attempt turns this into _HostGone (the domain moves)."""
        reason = await lease.extra["host_gone"]()
        raise _GuestLost(TestStatus.ERROR, f"lost the guest: {reason}")

    @classmethod
    async def _watch_kernel(cls, lease: Lease, kinds: frozenset[str], since: int) -> None:
        assert lease.klog is not None
        while True:
            report = await lease.klog.wait_for(set(kinds), since, timeout=3600.0)
            if report is not None:
                raise cls._lost_to_report(report)

    @classmethod
    async def _watch_hang(
        cls, wd: HangWatch, lease: Lease, hang_after: float, kinds: frozenset[str], since: int
    ) -> None:
        """The VM's watchdog: SSH heartbeat + console silence + libvirt state (paused = frozen)."""
        verdict = await wd.watch(hang_after)
        # A guest that died with a report (a panic flushed when libvirt stopped it) is
        # better named by the report than by the silence that followed.
        if lease.klog is not None and kinds:
            _, reports = lease.klog.window(since)
            report = next((r for r in reports if r.kind in kinds), None)
            if report is not None:
                raise cls._lost_to_report(report)
        raise _GuestLost(TestStatus.TIMEOUT, verdict.message, capture=wd.capture)

    @staticmethod
    async def _watch_heartbeat(lease: Lease, hang_after: float) -> None:
        """SSH heartbeat (leases without a watchdog): a guest silent for ``hang_after`` s is hung."""
        assert lease.vm is not None
        interval = max(1.0, min(5.0, hang_after / 3))
        silent_since: float | None = None
        loop = asyncio.get_running_loop()
        while True:
            tick = loop.time()
            alive = await lease.vm.is_responsive(timeout=interval)
            now = loop.time()
            if alive:
                silent_since = None
            else:
                silent_since = silent_since or tick
                if now - silent_since >= hang_after:
                    raise _GuestLost(TestStatus.TIMEOUT, f"guest hung (no answer for {now - silent_since:.0f}s)")
            # Pace the heartbeat: wait out the rest of the interval (a timer, not a stand-in for work).
            await asyncio.sleep(max(0.0, interval - (loop.time() - tick)))

    @classmethod
    async def _link_lost(cls, lease: Lease, spec: TestSpec, since: int, err: TargetUnavailable) -> _GuestLost:
        """SSH went away mid-test. A kernel that died names it better than the broken
        link: its report (a panic, flushed when libvirt stops the guest) arrives on the
        console within a moment of the link breaking, so give it that moment."""
        kinds = (FATAL_KINDS | HANG_KINDS | CRASH_KINDS) - spec.options.expects_kernel_events
        if lease.klog is not None and kinds:
            report = await lease.klog.wait_for(set(kinds), since, timeout=LINK_LOST_REPORT_WAIT_S)
            if report is not None:
                return cls._lost_to_report(report)
        wd = _watchdog(lease)  # no report: still collect what the guest shows
        return _GuestLost(TestStatus.ERROR, f"lost the guest: {err}", capture=wd.capture if wd else None)

    @staticmethod
    async def _capture(lost: _GuestLost) -> list[str]:
        assert lost.capture is not None
        try:
            return await asyncio.wait_for(lost.capture(), HANG_EVIDENCE_TIMEOUT_S)
        except TimeoutError:
            return [f"hang evidence: capture did not finish within {HANG_EVIDENCE_TIMEOUT_S:g}s"]
        except CockpitError as err:
            return [f"hang evidence: capture failed: {err}"]

    def _attach_kernel_window(
        self, req: RunRequest, domain: str, spec: TestSpec, lease: Lease,
        result: TestResult, start: int, end: int | None,
    ) -> None:
        assert lease.klog is not None
        lines, reports = lease.klog.window(start, end)
        result.evidence.kernel_log = lines
        expected = spec.options.expects_kernel_events
        unexpected: list[KernelReport] = []
        for rep in reports:
            result.evidence.kernel_events.append(rep)
            is_expected = rep.kind in expected
            self.bus.publish(
                ev.KernelEventRaised(
                    vm=lease.vm_name, report=rep, run_id=req.run_id, domain=domain, test=spec.name, expected=is_expected
                )
            )
            if not is_expected and rep.severity >= Severity.WARNING:
                unexpected.append(rep)
        if unexpected and result.status in (TestStatus.PASSED, TestStatus.SKIPPED):
            worst = max(unexpected, key=lambda r: r.severity)
            result.status = TestStatus.FAILED if worst.severity < Severity.CRITICAL else TestStatus.ERROR
            result.message = f"kernel reported {worst.title}" + (f" (+{len(unexpected) - 1} more)" if len(unexpected) > 1 else "")

    async def _recover(
        self, req: RunRequest, domain: str, plugin: DomainBase, lease: Lease, lost: _GuestLost, test: str
    ) -> None:
        """Reset the VM, wait for SSH, set the domain up again; later tests run on."""
        assert lease.vm is not None
        state = "hung" if lost.status is TestStatus.TIMEOUT else "crashed"
        # The reason names the test: summaries list every hang and crash with its test.
        self.bus.publish(ev.VmStateChanged(vm=lease.vm_name, state=state, reason=f"{lost} (during {domain}/{test})"))
        limit = req.config.fleet.template_boot_timeout_s + RECOVER_SETUP_S
        try:
            async with asyncio.timeout(limit):  # a stuck libvirt call or setup must not stall the run
                await lease.vm.reset(str(lost))
                ok, why = await self._setup(plugin, domain)
            if not ok:
                plugin.prerequisite_missing = plugin.prerequisite_missing or f"after reset: {why}"
        except TimeoutError:
            plugin.prerequisite_missing = f"VM {lease.vm_name} did not come back within {limit:g}s of the reset"
            self.bus.publish(ev.InfraProblem(message=plugin.prerequisite_missing, vm=lease.vm_name, run_id=req.run_id))
        except InfraError as err:
            plugin.prerequisite_missing = f"VM {lease.vm_name} did not come back after reset: {err}"
            self.bus.publish(ev.InfraProblem(message=str(err), vm=lease.vm_name, run_id=req.run_id))


def _with(note: str, more: str) -> str:
    return "; ".join(x for x in (note, more) if x)


def _watchdog(lease: Lease) -> HangWatch | None:
    wd = lease.extra.get("watchdog")
    return wd if wd is not None and hasattr(wd, "watch") and hasattr(wd, "capture") else None  # type: ignore[return-value]
