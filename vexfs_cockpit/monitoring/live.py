"""Monitoring while a session runs (app/session.py opens it for a ``run --batch`` or the
TUI, and closes it with the session):

- ``LiveMetrics``: what this process sees now, from the event bus: runs in progress,
  the current run's results so far per domain, VM state/CPU/memory/block I/O, and a
  histogram of the fleet's measured boot and restore times (``VmReady``). Served with
  the history's own series (exporter.HistoryCollector) on ``monitoring.listen``.
- ``LiveAlerts``: the ``monitoring.alerts`` rules evaluated as events arrive, each at
  most once per run for a rule and domain. A firing is published as ``AlertFired``
  (batch prints it, the TUI notifies) and handed to a webhook worker, so a slow or
  dead webhook never holds up the run; a delivery that fails for good becomes an
  ``InfraProblem`` of the run (stored in the history: the dead letter).

Everything on the event path is in-memory and cheap (a bus listener): the one history
read (metric baselines) runs in a thread when a run starts.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import os
from collections import Counter as Tally
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, make_wsgi_app

from vexfs_cockpit.config.load import config_origin
from vexfs_cockpit.config.models import AlertRule, CockpitConfig, split_listen
from vexfs_cockpit.engine import events as ev
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.errors import ConfigError
from vexfs_cockpit.monitoring.alerts import REGRESSION, Firing, validate
from vexfs_cockpit.monitoring.exporter import PREFIX, HistoryCollector, _QuietHandler, _ThreadingServer, _V6ThreadingServer
from vexfs_cockpit.monitoring.queries import MAX_VMS, latest_metric_values
from vexfs_cockpit.store.location import StoreLocation
from vexfs_cockpit.store.report import CRASH_KINDS

log = logging.getLogger(__name__)

SESSION_RUNS_IN_PROGRESS = f"{PREFIX}_session_runs_in_progress"
SESSION_RUN_TESTS = f"{PREFIX}_session_run_tests"
SESSION_RUN_PLANNED = f"{PREFIX}_session_run_planned_tests"
SESSION_VM_STATE = f"{PREFIX}_session_vm_state"
SESSION_VM_CPU = f"{PREFIX}_session_vm_cpu_usage_percent"
SESSION_VM_MEMORY = f"{PREFIX}_session_vm_memory_bytes"
SESSION_VM_BLOCK = f"{PREFIX}_session_vm_block_bytes"
VM_READY = f"{PREFIX}_vm_ready_duration_seconds"
SESSION_ALERTS = f"{PREFIX}_session_alerts_fired"  # a Counter: exposed with _total
SESSION_WEBHOOKS = f"{PREFIX}_session_webhook_deliveries"
# Restore ~0.3-2 s, a TCG cold boot ~10 s, a disk guest with cloud-init minutes.
READY_BUCKETS = (0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0)
STATUSES = ("passed", "failed", "skipped", "timeout", "error")
# Every series name a session's live metrics may show (the dashboard's queries name only these
# and the exporter's).
ALL_SERIES = frozenset({
    SESSION_RUNS_IN_PROGRESS, SESSION_RUN_TESTS, SESSION_RUN_PLANNED, SESSION_VM_STATE, SESSION_VM_CPU,
    SESSION_VM_MEMORY, SESSION_VM_BLOCK, f"{SESSION_ALERTS}_total", f"{SESSION_WEBHOOKS}_total",
    *(f"{VM_READY}_{s}" for s in ("bucket", "sum", "count")),
})


class LiveMetrics:
    """Prometheus series of this session, updated by ``feed`` on the loop thread and read
    by scrapes on the server's threads (prometheus_client's metrics hold their own locks).
    The current run's series start over at each RunStarted."""

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.in_progress = Gauge(SESSION_RUNS_IN_PROGRESS, "Runs this cockpit process is running now", registry=r)
        self.tests = Gauge(SESSION_RUN_TESTS, "Results so far of the current (or last) run of this process",
                           ("domain", "status"), registry=r)
        self.planned = Gauge(SESSION_RUN_PLANNED, "Tests the current (or last) run of this process planned",
                             ("domain",), registry=r)
        self.vm_state = Gauge(SESSION_VM_STATE, "1 for the VM's current state (this process's VMs)",
                              ("vm", "state"), registry=r)
        self.vm_cpu = Gauge(SESSION_VM_CPU, "Newest CPU sample of the VM (100 = one vCPU busy)", ("vm",), registry=r)
        self.vm_mem = Gauge(SESSION_VM_MEMORY, "Newest memory sample of the VM", ("vm",), registry=r)
        self.vm_block = Gauge(SESSION_VM_BLOCK, "Block bytes the VM read/wrote since it last started",
                              ("vm", "direction"), registry=r)
        self.ready = Histogram(VM_READY, "Seconds from a VM's start (mode boot) or snapshot restore (mode restore) "
                               "until SSH answered, as the fleet measured them", ("mode", "cause"),
                               buckets=READY_BUCKETS, registry=r)
        self.alerts = Counter(SESSION_ALERTS, "Alerts this process fired live", ("alert", "severity"), registry=r)
        self.webhooks = Counter(SESSION_WEBHOOKS, "Webhook deliveries of live alerts, by outcome", ("outcome",),
                                registry=r)
        self._vm_state: dict[str, str] = {}  # vm -> its state series; insertion order = age
        self._domains: set[str] = set()

    def _vm(self, vm: str) -> bool:
        """Track ``vm``; the oldest VM's series go when more than MAX_VMS were seen."""
        if vm in self._vm_state:
            return True
        if not vm:
            return False
        if len(self._vm_state) >= MAX_VMS:
            old = next(iter(self._vm_state))
            self._forget(old)
        self._vm_state[vm] = ""
        return True

    def _forget(self, vm: str) -> None:
        state = self._vm_state.pop(vm, "")
        for gauge, labels in ((self.vm_state, (vm, state)), (self.vm_cpu, (vm,)), (self.vm_mem, (vm,)),
                              (self.vm_block, (vm, "read")), (self.vm_block, (vm, "write"))):
            try:
                gauge.remove(*labels)
            except KeyError:
                pass

    def _set_state(self, vm: str, state: str) -> None:
        if not self._vm(vm) or self._vm_state[vm] == state:
            return
        if old := self._vm_state[vm]:
            self.vm_state.remove(vm, old)
        self._vm_state[vm] = state
        self.vm_state.labels(vm, state).set(1)

    def _domain(self, domain: str, planned: int | None = None) -> None:
        if domain not in self._domains:
            self._domains.add(domain)
            for s in STATUSES:  # every status from the start: a change from 0 is visible
                self.tests.labels(domain, s).set(0)
        if planned is not None:
            self.planned.labels(domain).set(planned)

    def feed(self, e: ev.Event) -> None:
        match e:
            case ev.RunStarted():
                self.in_progress.inc()
                self.tests.clear()
                self.planned.clear()
                self._domains.clear()
                for domain in e.domains:
                    self._domain(domain, len(e.planned[domain]) if domain in e.planned else None)
            case ev.DomainStarted():
                self._domain(e.domain, len(e.planned_tests))
            case ev.TestFinished():
                self._domain(e.result.domain)
                self.tests.labels(e.result.domain, e.result.status.value.lower()).inc()
            case ev.RunFinished():
                self.in_progress.dec()
            case ev.VmStateChanged():
                self._set_state(e.vm, e.state)
            case ev.VmSample() if self._vm(e.vm):
                self._set_state(e.vm, e.state)
                self.vm_cpu.labels(e.vm).set(e.cpu_pct)
                self.vm_mem.labels(e.vm).set(e.mem_kb * 1024)
                self.vm_block.labels(e.vm, "read").set(e.block_rd_bytes)
                self.vm_block.labels(e.vm, "write").set(e.block_wr_bytes)
            case ev.VmReady() if e.mode in ("boot", "restore"):
                self.ready.labels(e.mode, "reset" if e.reset else "start").observe(e.seconds)
            case ev.AlertFired():
                self.alerts.labels(e.rule, e.severity).inc()
            case _:
                pass


# -- live alerts ---------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LiveFiring:
    firing: Firing
    kind: str
    domain: str
    run_id: str


class LiveAlerts:
    """The alert rules over the event stream of a run. ``feed`` returns what fires now.

    failure_rate fires as soon as the domain's rate at run end is certain to be above
    the threshold: bad / (planned - skipped) is a lower bound of bad / (passed + bad)
    when every planned test is counted, so a live firing always agrees with
    ``alerts check`` on the stored run; at DomainFinished the exact rate is used.
    metric_regression compares with the newest value stored before the run
    (``baselines``, read once when the run starts; until they are read, values wait).
    """

    def __init__(self, rules: Sequence[AlertRule]) -> None:
        validate(rules)
        self.rules = list(rules)
        self.run_id = ""
        self.env = ""
        self.started_at = 0.0
        self._planned: dict[str, int] = {}
        self._tally: dict[str, Tally[str]] = {}
        self._fired: set[tuple[str, str]] = set()
        self.baselines: dict[tuple[str, str, str], float] | None = None
        self._waiting: list[ev.MetricRecorded] = []

    @property
    def metric_names(self) -> list[str]:
        return sorted({r.metric for r in self.rules if r.kind == "metric_regression"})

    def _rules(self, kind: str, domain: str) -> list[AlertRule]:
        return [r for r in self.rules if r.kind == kind and (not r.domain or r.domain == domain)]

    def _fire(self, rule: AlertRule, domain: str, summary: str, **labels: str) -> list[LiveFiring]:
        if (rule.name, domain) in self._fired:
            return []
        self._fired.add((rule.name, domain))
        labels = {"domain": domain, "env": self.env, **labels}
        return [LiveFiring(Firing(rule.name, rule.severity, summary, labels), rule.kind, domain, self.run_id)]

    def feed(self, e: ev.Event) -> list[LiveFiring]:  # noqa: C901 - one case per event kind
        out: list[LiveFiring] = []
        match e:
            case ev.RunStarted():
                self.run_id, self.env, self.started_at = e.run_id, e.env, e.ts
                self._planned = {d: len(t) for d, t in e.planned.items()}
                self._tally, self._fired, self._waiting = {}, set(), []
                self.baselines = None if self.metric_names else {}
            case ev.DomainStarted():
                self._planned[e.domain] = max(self._planned.get(e.domain, 0), len(e.planned_tests))
            case ev.TestFinished():
                r = e.result
                t = self._tally.setdefault(r.domain, Tally())
                t[r.status.value] += 1
                if r.status.value == "TIMEOUT":
                    for rule in self._rules("test_timeout", r.domain):
                        out += self._fire(rule, r.domain, f"{r.domain}/{r.name} {r.message or 'timed out'}"
                                          f" (env {self.env})")
                for rule in self._rules("failure_rate", r.domain):
                    bad = sum(t[s] for s in ("FAILED", "TIMEOUT", "ERROR"))
                    room = max(self._planned.get(r.domain, 0), sum(t.values())) - t["SKIPPED"]
                    if room > 0 and bad / room > rule.threshold:
                        out += self._fire(rule, r.domain, f"{r.domain} failure rate at least {bad}/{room} = "
                                          f"{bad / room:.2f} > {rule.threshold:g} (env {self.env}, run going)")
            case ev.DomainFinished():
                t = self._tally.get(e.domain, Tally())
                passed, bad = t["PASSED"], sum(t[s] for s in ("FAILED", "TIMEOUT", "ERROR"))
                for rule in self._rules("failure_rate", e.domain):
                    if passed + bad and bad / (passed + bad) > rule.threshold:
                        out += self._fire(rule, e.domain, f"{e.domain} failure rate {bad}/{passed + bad} = "
                                          f"{bad / (passed + bad):.2f} > {rule.threshold:g} (env {self.env})")
            case ev.KernelEventRaised() if not e.expected and e.report.kind in CRASH_KINDS:
                where = f"{e.domain}/{e.test}" if e.test else (e.domain or e.vm or "the run")
                for rule in self._rules("kernel_crash", e.domain):
                    out += self._fire(rule, e.domain, f"kernel {e.report.kind} in {where}: {e.report.title}",
                                      kind=e.report.kind)
            case ev.TestVerdict() if e.verdict == REGRESSION:
                for rule in self._rules("new_regression", e.domain):
                    out += self._fire(rule, e.domain, f"{e.domain}/{e.test}: new regression ({e.now} now"
                                      f"{', ' + e.note if e.note else ''})", test=e.test)
            case ev.MetricRecorded() if e.name in self.metric_names:
                if self.baselines is None:
                    self._waiting.append(e)
                else:
                    out += self._metric(e)
            case _:
                pass
        return out

    def set_baselines(self, run_id: str, baselines: Mapping[tuple[str, str, str], float]) -> list[LiveFiring]:
        """The history's values before run ``run_id``; evaluates the values that waited."""
        if run_id != self.run_id:
            return []
        self.baselines = dict(baselines)
        waiting, self._waiting = self._waiting, []
        return [f for e in waiting for f in self._metric(e)]

    def _metric(self, e: ev.MetricRecorded) -> list[LiveFiring]:
        assert self.baselines is not None
        base = self.baselines.get((e.domain, e.test, e.name))
        if base is None or base <= 0:
            return []
        pct = (e.value - base) / base * 100
        out: list[LiveFiring] = []
        for rule in self._rules("metric_regression", e.domain):
            if rule.metric == e.name and pct > rule.threshold:
                out += self._fire(rule, e.domain, f"{e.name} of {e.domain}/{e.test} {e.value:g} vs {base:g} before: "
                                  f"+{pct:.0f}% > {rule.threshold:g}%", test=e.test, metric=e.name)
        return out


# -- the session's monitor -----------------------------------------------------------------
Poster = Callable[..., int]  # webhook.post's signature


class LiveMonitor:
    """Live metrics (served when ``monitoring.listen`` is set) and live alerts (when
    ``monitoring.alerts`` has rules) for one session. ``open`` binds the address before
    anything else starts, ``start`` hooks the bus, ``aclose`` waits for the webhook
    deliveries still going (each bounded by webhook_timeout_s and webhook_retries)."""

    def __init__(self, cfg: CockpitConfig, bus: EventBus, db: StoreLocation | None, *,
                 environ: Mapping[str, str] = os.environ, post: Poster | None = None) -> None:
        from vexfs_cockpit.monitoring.webhook import post as default_post

        self.settings = m = cfg.monitoring
        self.bus = bus
        self.db = db
        self.registry = CollectorRegistry(auto_describe=True)
        self.metrics = LiveMetrics(self.registry)
        self._environ = environ
        self.alerts = LiveAlerts(m.alerts)
        self._url = self._webhook_url(m)
        self._post = post or default_post
        self._queue: asyncio.Queue[LiveFiring | None] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self.pending = 0  # deliveries queued or in flight
        self.server: Any = None
        self.address = ""
        self._origin = config_origin(cfg, "monitoring.listen") or "config"
        if m.listen:
            self._bind(m.listen, m.listen_any_address)

    def _bind(self, listen: str, any_address: bool) -> None:
        from wsgiref.simple_server import make_server

        host, port = split_listen(listen, any_address=any_address)  # validated with the config
        if self.db is not None:  # the history's series too: one endpoint for Prometheus
            self.registry.register(HistoryCollector(self.db))
        cls = _V6ThreadingServer if ":" in host else _ThreadingServer
        try:
            self.server = make_server(host, port, make_wsgi_app(self.registry), server_class=cls,
                                      handler_class=_QuietHandler)
        except OSError as exc:
            busy = exc.errno == errno.EADDRINUSE
            why = "is in use (another cockpit or `metrics serve`?)" if busy else f"cannot be bound: {exc.strerror}"
            raise ConfigError(f"{self._origin}: monitoring.listen: {listen} {why}; set another port, or "
                              "monitoring.listen: '' for no live metrics") from None
        shown = f"[{host}]" if ":" in host else host
        self.address = f"http://{shown}:{self.server.server_address[1]}/metrics"

    def _webhook_url(self, m: Any) -> str:
        """The URL is the credential: read from the environment, never shown. Unset:
        alerts are only shown."""
        from vexfs_cockpit.monitoring.webhook import webhook_url

        return webhook_url(m.webhook_url_env, self._environ) if self._environ.get(m.webhook_url_env, "").strip() else ""

    def use_config(self, cfg: CockpitConfig) -> None:
        """Another environment's config (the TUI's env switch, between runs): its alert
        rules and webhook from the next run on. The metrics endpoint keeps the address
        it was bound to: its scrapers know that one."""
        m = cfg.monitoring
        self.alerts = LiveAlerts(m.alerts)  # validated before anything changes
        self.settings, self._url = m, self._webhook_url(m)

    @property
    def active(self) -> bool:
        return self.server is not None or bool(self.alerts.rules)

    def start(self) -> None:
        import threading

        if self.server is not None:
            threading.Thread(target=self.server.serve_forever, name="live-metrics", daemon=True).start()
        self.bus.listen(self._on_event)
        self._worker = asyncio.create_task(self._deliver(), name="alert-webhooks")

    def _on_event(self, e: ev.Event) -> None:
        """On the loop thread, inline with publish: memory only."""
        if type(e) is ev.KernelLogLine:  # nearly every event of a run; nothing here reads them
            return
        self.metrics.feed(e)
        if not self.alerts.rules:
            return
        firing = self.alerts.feed(e)
        if isinstance(e, ev.RunStarted) and self.alerts.baselines is None and self.db is not None:
            self._spawn(self._load_baselines(e.run_id, e.env, e.ts))
        elif isinstance(e, ev.RunStarted) and self.alerts.baselines is None:
            firing += self.alerts.set_baselines(e.run_id, {})
        self._emit(firing)

    def _spawn(self, coro: Any) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _load_baselines(self, run_id: str, env: str, ts: float) -> None:
        try:
            base = await asyncio.to_thread(latest_metric_values, self.db, env, self.alerts.metric_names, ts)
        except Exception as err:  # noqa: BLE001 - a broken history must not break the run
            # Not a warning: the store reports its own failure as the run's one error line;
            # the alert just has no baseline to compare with.
            log.info("metric_regression alerts: history not readable: %s", err)
            base = {}
        self._emit(self.alerts.set_baselines(run_id, base))

    def _emit(self, firing: list[LiveFiring]) -> None:
        loop = asyncio.get_running_loop()
        for f in firing:
            # After the event that made it fire (publish is running now), never inside it.
            loop.call_soon(self.bus.publish, ev.AlertFired(
                run_id=f.run_id, rule=f.firing.rule, kind=f.kind, severity=f.firing.severity,
                summary=f.firing.summary, domain=f.domain))
            if self._url:
                self.pending += 1
                self._queue.put_nowait(f)

    async def _deliver(self) -> None:
        """One delivery at a time, in a thread: the event path only queues."""
        from vexfs_cockpit.monitoring.webhook import WebhookError, message

        m = self.settings
        while (f := await self._queue.get()) is not None:
            try:
                await asyncio.to_thread(self._post, self._url, message([f.firing], f.run_id, m.webhook_format),
                                        timeout_s=m.webhook_timeout_s, retries=m.webhook_retries)
                self.metrics.webhooks.labels("delivered").inc()
            except WebhookError as err:
                self.metrics.webhooks.labels("failed").inc()
                # The dead letter: an infrastructure problem of the run, in its history.
                self.bus.publish(ev.InfraProblem(message=f"alert {f.firing.rule} not delivered: {err}",
                                                 run_id=f.run_id))
            finally:
                self.pending -= 1

    async def aclose(self) -> None:
        self.bus.unlisten(self._on_event)
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._worker is not None:
            self._queue.put_nowait(None)
            await self._worker
            self._worker = None
        if self.server is not None:
            await asyncio.to_thread(self.server.shutdown)
            self.server.server_close()
            self.server = None


def open_live_monitor(cfg: CockpitConfig, bus: EventBus, db: StoreLocation | None) -> LiveMonitor | None:
    """The session's monitor, bound (a busy port is a ConfigError naming the key), not
    started; None when nothing is configured (no listen address, no alert rules)."""
    mon = LiveMonitor(cfg, bus, db)
    return mon if mon.active else None
