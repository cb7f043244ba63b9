"""Live monitoring (vexfs_cockpit/monitoring/live.py): metrics served while a run is
going, alert rules evaluated as events arrive, webhooks delivered off the event path.
Runs are real Runner runs on the host (tests/support/engine.py LocalProvider), webhooks
go to real HTTP servers on 127.0.0.1."""

from __future__ import annotations

import asyncio
import io
import json
import socket
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.engine import LocalProvider
from tests.support.store import BACKENDS, kreport
from vexfs_cockpit import DomainBase, TestResult, TestStatus, test_options
from vexfs_cockpit.commands.progress import ProgressPrinter
from vexfs_cockpit.config.load import load_config
from vexfs_cockpit.config.models import AlertRule, CockpitConfig, ExecutionSettings, MonitoringSettings
from vexfs_cockpit.engine import events as ev
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.runner import Runner, RunRequest
from vexfs_cockpit.engine.results import TestResult as Result
from vexfs_cockpit.errors import ConfigError
from vexfs_cockpit.klog.model import Severity
from vexfs_cockpit.monitoring import live as lv
from vexfs_cockpit.monitoring.live import LiveAlerts, LiveMonitor

RATE = AlertRule(name="FailRate", kind="failure_rate", threshold=0.3, severity="warning")
TIMEOUT = AlertRule(name="TimedOut", kind="test_timeout", severity="warning")
CRASH = AlertRule(name="Crash", kind="kernel_crash", severity="critical")
SLOWER = AlertRule(name="Slower", kind="metric_regression", metric="load_ms", threshold=50)


# -- the rules over an event stream ------------------------------------------------------
def _started(planned: dict[str, int], run_id: str = "r1") -> ev.RunStarted:
    return ev.RunStarted(run_id=run_id, config_path="", profile="p", env="test", domains=tuple(planned),
                         planned={d: tuple(f"t{i}" for i in range(n)) for d, n in planned.items()})


def _done(domain: str, name: str, status: TestStatus, run_id: str = "r1") -> ev.TestFinished:
    return ev.TestFinished(run_id=run_id, result=Result(status=status, name=name, domain=domain))


def _fired(alerts: LiveAlerts, *events: ev.Event) -> list[tuple[str, str]]:
    return [(f.firing.rule, f.domain) for e in events for f in alerts.feed(e)]


def test_failure_rate_fires_when_the_run_end_rate_is_certain_and_once() -> None:
    a = LiveAlerts([RATE])
    P, F, S = TestStatus.PASSED, TestStatus.FAILED, TestStatus.SKIPPED
    # 10 planned: the first failure (1/10) and the third (3/10) do not prove > 0.3 yet ...
    assert _fired(a, _started({"d": 10}), _done("d", "a", F), _done("d", "b", P), _done("d", "c", F),
                  _done("d", "e", F)) == []
    # ... a skip shrinks what is left to 9: 3/9 > 0.3, certain whatever the rest does.
    assert _fired(a, _done("d", "f", S)) == [("FailRate", "d")]
    assert _fired(a, _done("d", "g", F), ev.DomainFinished(run_id="r1", domain="d", status="failed", counts={})) == []
    # A new run starts over.
    assert _fired(a, _started({"d": 1}, "r2"), _done("d", "a", F, "r2")) == [("FailRate", "d")]


def test_failure_rate_at_domain_end_matches_the_stored_check() -> None:
    a = LiveAlerts([RATE])
    P, F = TestStatus.PASSED, TestStatus.FAILED
    # Planned unknown (a domain with no RunStarted plan): the exact rate at its end.
    assert _fired(a, _started({}), _done("d", "a", P), _done("d", "b", P), _done("d", "c", F)) == [("FailRate", "d")]
    b = LiveAlerts([RATE])
    assert _fired(b, _started({"d": 4}), _done("d", "a", P), _done("d", "b", P), _done("d", "c", P), _done("d", "e", F),
                  ev.DomainFinished(run_id="r1", domain="d", status="failed", counts={})) == []  # 0.25


def test_timeout_and_crash_fire_at_the_event_once_per_domain() -> None:
    a = LiveAlerts([TIMEOUT, CRASH])
    T = TestStatus.TIMEOUT
    oops = kreport("oops", "BUG: unable to handle page fault", Severity.CRITICAL)
    warn = kreport("warning", "WARNING in x")
    assert _fired(a, _started({"d": 3, "e": 1}), _done("d", "a", T), _done("d", "b", T), _done("e", "a", T)) == [
        ("TimedOut", "d"), ("TimedOut", "e")]
    crash = ev.KernelEventRaised(vm="vm", report=oops, run_id="r1", domain="d", test="c")
    assert _fired(a, ev.KernelEventRaised(vm="vm", report=oops, run_id="r1", domain="d", expected=True),
                  ev.KernelEventRaised(vm="vm", report=warn, run_id="r1", domain="d")) == []
    fired = a.feed(crash)
    assert [(f.firing.rule, f.firing.severity) for f in fired] == [("Crash", "critical")]
    assert fired[0].firing.summary == "kernel oops in d/c: BUG: unable to handle page fault"
    assert a.feed(crash) == []


def test_metric_regression_waits_for_the_baselines() -> None:
    a = LiveAlerts([SLOWER])
    rec = ev.MetricRecorded(run_id="r1", domain="km", test="load", name="load_ms", value=30.0)
    assert _fired(a, _started({"km": 1}), rec) == []  # no baselines read yet: it waits
    fired = a.set_baselines("r1", {("km", "load", "load_ms"): 10.0})
    assert [(f.firing.rule, f.firing.summary) for f in fired] == [
        ("Slower", "load_ms of km/load 30 vs 10 before: +200% > 50%")]
    assert a.set_baselines("old-run", {("km", "load", "load_ms"): 1.0}) == []
    b = LiveAlerts([SLOWER])
    b.feed(_started({"km": 1}))
    b.set_baselines("r1", {("km", "load", "load_ms"): 25.0})
    assert b.feed(rec) == []  # +20%


# -- a real run with a real webhook server ---------------------------------------------------
class Hook:
    """An HTTP server on 127.0.0.1. ``hold``: every answer waits until ``release`` is set
    (or 30 s pass, so a broken monitor fails the test instead of hanging it)."""

    def __init__(self, statuses: list[int] | None = None, hold: bool = False) -> None:
        self.statuses = list(statuses or [])
        self.bodies: list[dict] = []
        self.received = threading.Event()
        self.release = threading.Event()
        self.answered = 0
        if not hold:
            self.release.set()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                hook.bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
                hook.received.set()
                hook.release.wait(30)
                self.send_response(hook.statuses.pop(0) if hook.statuses else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()
                hook.answered += 1

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook/secret-token"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


class Flaky(DomainBase):
    """One test times out (an alert at once), then the run goes on."""

    name = "flaky"

    @test_options(timeout=0.3, priority=10)
    async def test_stuck(self) -> TestResult:
        await self.target.run("exec sleep 30", timeout=60)
        return TestResult(status=TestStatus.PASSED)

    async def test_after(self) -> TestResult:
        res = await self.target.run("echo still going", check=True)
        return TestResult(status=TestStatus.PASSED, message=res.output.strip())


def _config(**monitoring: object) -> CockpitConfig:
    return CockpitConfig(execution=ExecutionSettings(), monitoring=MonitoringSettings(alerts=[TIMEOUT], **monitoring))


async def _run(tmp_path: Path, monitor: LiveMonitor, bus: EventBus, registry: dict) -> list[ev.Event]:
    seen: list[ev.Event] = []
    bus.listen(seen.append)
    monitor.start()
    await Runner(bus, LocalProvider(tmp_path), registry).execute(
        RunRequest(config=monitor_cfg(monitor), domains=list(registry), run_id="r1", artifacts_dir=tmp_path / "art"))
    return seen


def monitor_cfg(monitor: LiveMonitor) -> CockpitConfig:
    return CockpitConfig(monitoring=monitor.settings)


async def test_a_webhook_that_does_not_answer_does_not_hold_up_the_run(tmp_path: Path) -> None:
    hook = Hook(hold=True)
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    monitor = LiveMonitor(_config(webhook_timeout_s=60, webhook_retries=0), bus, None, environ={"VEXFS_COCKPIT_WEBHOOK_URL": hook.url})
    try:
        seen = await _run(tmp_path, monitor, bus, {"flaky": Flaky})
        # The run is over (its last test ran after the alert) while the webhook has not answered.
        kinds = [type(e).__name__ for e in seen]
        assert kinds.index("AlertFired") < kinds.index("RunFinished")
        after = next(e for e in seen if isinstance(e, ev.TestFinished) and e.result.name == "after")
        assert after.result.status is TestStatus.PASSED
        assert await asyncio.to_thread(hook.received.wait, 60)  # it was sent, and still waits
        assert hook.answered == 0 and monitor.pending == 1
        hook.release.set()
        await monitor.aclose()
    finally:
        hook.close()
    assert hook.answered == 1 and monitor.pending == 0
    assert "flaky/stuck timed out" in hook.bodies[0]["text"] and "TimedOut" in hook.bodies[0]["text"]
    fired = [e for e in seen if isinstance(e, ev.AlertFired)]
    assert [(e.rule, e.kind, e.domain, e.run_id) for e in fired] == [("TimedOut", "test_timeout", "flaky", "r1")]
    # It fired when the timeout happened, while the next test was going.
    names = [(type(e).__name__, e.result.name if isinstance(e, ev.TestFinished) else "") for e in seen]
    assert names.index(("TestFinished", "stuck")) < names.index(("AlertFired", "")) < names.index(("TestFinished", "after"))


async def test_a_500_is_retried_and_a_dead_hook_leaves_a_dead_letter(tmp_path: Path) -> None:
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    hook = Hook([500])
    try:
        monitor = LiveMonitor(_config(webhook_timeout_s=5, webhook_retries=2), bus, None,
                              environ={"VEXFS_COCKPIT_WEBHOOK_URL": hook.url})
        seen = await _run(tmp_path, monitor, bus, {"flaky": Flaky})
        await monitor.aclose()
    finally:
        hook.close()
    assert len(hook.bodies) == 2 and hook.answered == 2  # a 500, then taken
    assert not any(isinstance(e, ev.InfraProblem) for e in seen)
    assert _sample(monitor, "vexfs_cockpit_session_webhook_deliveries_total", outcome="delivered") == 1

    # A server that accepts and never answers, retried once: the run ends, then the dead letter.
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    try:
        monitor = LiveMonitor(_config(webhook_timeout_s=0.5, webhook_retries=1), bus, None,
                              environ={"VEXFS_COCKPIT_WEBHOOK_URL": f"http://127.0.0.1:{silent.getsockname()[1]}/x/secret"})
        seen = await _run(tmp_path, monitor, bus, {"flaky": Flaky})
        assert not any(isinstance(e, ev.InfraProblem) for e in seen)  # the run did not wait for it
        await monitor.aclose()
    finally:
        silent.close()
    letters = [e for e in seen if isinstance(e, ev.InfraProblem)]
    assert len(letters) == 1 and letters[0].run_id == "r1", letters
    assert letters[0].message.startswith("alert TimedOut not delivered: webhook: POST failed after 2 attempt(s)")
    assert "secret" not in letters[0].message
    assert _sample(monitor, "vexfs_cockpit_session_webhook_deliveries_total", outcome="failed") == 1


async def test_live_alerts_in_the_plain_json_form(tmp_path: Path) -> None:
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    hook = Hook()
    try:
        monitor = LiveMonitor(_config(webhook_format="json"), bus, None, environ={"VEXFS_COCKPIT_WEBHOOK_URL": hook.url})
        await _run(tmp_path, monitor, bus, {"flaky": Flaky})
        await monitor.aclose()
    finally:
        hook.close()
    assert hook.bodies == [{"source": "vexfs-cockpit", "run_id": "r1", "alerts": [{
        "rule": "TimedOut", "severity": "warning", "summary": "flaky/stuck timed out after 0.3s (env dev)",
        "labels": {"domain": "flaky", "env": "dev"}}]}]


# -- metrics served while the run is going -----------------------------------------------------
def _scrape(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(url, timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _sample(monitor: LiveMonitor, name: str, **labels: str) -> float | None:
    return monitor.registry.get_sample_value(name, labels)


class Paced(DomainBase):
    """Its second test waits until the test body has scraped the exporter mid-run."""

    name = "paced"
    scraped: asyncio.Event | None = None
    ready: asyncio.Event | None = None

    @test_options(priority=10)
    async def test_first(self) -> TestResult:
        return TestResult(status=TestStatus.FAILED, message="planted")

    async def test_second(self) -> TestResult:
        assert Paced.ready is not None and Paced.scraped is not None
        Paced.ready.set()
        await Paced.scraped.wait()
        return TestResult(status=TestStatus.PASSED)


async def test_metrics_are_served_and_change_while_the_run_goes(tmp_path: Path) -> None:
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    monitor = LiveMonitor(_config(listen=f"127.0.0.1:{_free_port()}"), bus, tmp_path / "none.db", environ={})
    Paced.ready, Paced.scraped = asyncio.Event(), asyncio.Event()
    url = monitor.address
    assert url.startswith("http://127.0.0.1:") and url.endswith("/metrics")
    monitor.start()
    before = await asyncio.to_thread(_scrape, url)
    assert before[("vexfs_cockpit_session_runs_in_progress", ())] == 0
    run = asyncio.create_task(Runner(bus, LocalProvider(tmp_path), {"paced": Paced}).execute(
        RunRequest(config=CockpitConfig(), domains=["paced"], run_id="r1", artifacts_dir=tmp_path / "art")))
    await Paced.ready.wait()
    during = await asyncio.to_thread(_scrape, url)
    Paced.scraped.set()
    await run
    after = await asyncio.to_thread(_scrape, url)
    await monitor.aclose()

    tests = "vexfs_cockpit_session_run_tests"
    assert during[("vexfs_cockpit_session_runs_in_progress", ())] == 1
    assert during[(tests, (("domain", "paced"), ("status", "failed")))] == 1
    assert during[(tests, (("domain", "paced"), ("status", "passed")))] == 0
    assert during[("vexfs_cockpit_session_run_planned_tests", (("domain", "paced"),))] == 2
    assert after[("vexfs_cockpit_session_runs_in_progress", ())] == 0
    assert after[(tests, (("domain", "paced"), ("status", "passed")))] == 1
    assert ("vexfs_cockpit_store_size_bytes", ()) in after  # the history's series on the same endpoint
    with pytest.raises(OSError):  # closed with the session
        _scrape(url)


def test_vm_series_and_the_ready_histogram_stay_bounded() -> None:
    m = lv.LiveMetrics(lv.CollectorRegistry())
    for i in range(lv.MAX_VMS + 5):
        m.feed(ev.VmStateChanged(vm=f"vm-{i}", state="booting"))
        m.feed(ev.VmStateChanged(vm=f"vm-{i}", state="ready"))
    m.feed(ev.VmSample(vm="vm-68", state="running", cpu_pct=50.0, mem_kb=2, block_rd_bytes=7))
    m.feed(ev.VmReady(vm="vm-68", mode="restore", seconds=0.4))
    m.feed(ev.VmReady(vm="vm-68", mode="boot", seconds=9.5, reset=True))
    m.feed(ev.VmReady(vm="vm-68", mode="nonsense", seconds=1.0))
    fams = {f.name: f for f in m.vm_state.collect() + m.ready.collect() + m.vm_block.collect()}
    states = [s for s in fams[lv.SESSION_VM_STATE].samples]
    assert len(states) == lv.MAX_VMS and {s.labels["state"] for s in states} == {"ready", "running"}
    assert "vm-0" not in {s.labels["vm"] for s in states}
    hist = {(s.name, s.labels.get("mode"), s.labels.get("cause"), s.labels.get("le")): s.value
            for s in fams[lv.VM_READY].samples}
    assert hist[(lv.VM_READY + "_count", "restore", "start", None)] == 1
    assert hist[(lv.VM_READY + "_bucket", "restore", "start", "0.5")] == 1
    assert hist[(lv.VM_READY + "_bucket", "boot", "reset", "5.0")] == 0
    assert hist[(lv.VM_READY + "_bucket", "boot", "reset", "10.0")] == 1
    assert not any(k[1] == "nonsense" for k in hist)


# -- configuration and front ends ------------------------------------------------------------
def test_listen_is_checked_with_the_config() -> None:
    assert load_config(None, "test", {"monitoring.listen": "[::1]:9464"}).monitoring.listen == "[::1]:9464"
    with pytest.raises(ConfigError) as err:
        load_config(None, "test", {"monitoring.listen": "0.0.0.0:9464"})
    assert str(err.value).startswith("command line: monitoring.listen: expected a loopback address")
    assert "listen_any_address: true" in str(err.value)
    with pytest.raises(ConfigError, match="a fixed port"):  # Prometheus needs to know where to scrape
        load_config(None, "test", {"monitoring.listen": "127.0.0.1:0"})
    cfg = load_config(None, "test", {"monitoring.listen_any_address": True, "monitoring.listen": "0.0.0.0:9464"})
    assert cfg.monitoring.listen == "0.0.0.0:9464"


async def test_a_busy_port_is_one_line_naming_the_key() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen(1)
    port = taken.getsockname()[1]
    try:
        cfg = load_config(None, "test", {"monitoring.listen": f"127.0.0.1:{port}"})
        with pytest.raises(ConfigError) as err:
            lv.open_live_monitor(cfg, EventBus(), None)
    finally:
        taken.close()
    assert str(err.value) == (f"command line: monitoring.listen: 127.0.0.1:{port} is in use (another cockpit or "
                              "`metrics serve`?); set another port, or monitoring.listen: '' for no live metrics")


def test_batch_output_shows_a_fired_alert() -> None:
    out = io.StringIO()
    ProgressPrinter(out, colour=False).handle(ev.AlertFired(
        run_id="r1", rule="TimedOut", kind="test_timeout", severity="warning", summary="flaky/stuck timed out (0s)"))
    assert out.getvalue().endswith("] ALERT TimedOut [warning] flaky/stuck timed out (0s)\n")


# -- new_regression: a change confirmed by reruns on a fresh VM ------------------------------
NEW_REG = AlertRule(name="NewReg", kind="new_regression", severity="critical")


def _verdict(verdict: str, test: str = "unload", run_id: str = "r2") -> ev.TestVerdict:
    return ev.TestVerdict(run_id=run_id, domain="kernel_module", test=test, verdict=verdict, now="FAILED",
                          before="PASSED", reference="run r1", reruns=("FAILED",) * 3)


def test_new_regression_fires_live_on_the_verdict_only() -> None:
    a = LiveAlerts([NEW_REG])
    assert _fired(a, _started({"kernel_module": 2}, "r2"), _verdict("flaky", "load"), _verdict("fixed", "x")) == []
    fired = a.feed(_verdict("regression"))
    assert [(f.firing.rule, f.firing.severity, f.domain) for f in fired] == [("NewReg", "critical", "kernel_module")]
    assert fired[0].firing.summary == "kernel_module/unload: new regression (FAILED now)"


@pytest.mark.parametrize("backend", BACKENDS)
def test_new_regression_in_the_store_the_exporter_and_the_rules(backend: str, tmp_path: Path,
                                                               request: pytest.FixtureRequest) -> None:
    import asyncio as aio

    from tests.support.monitoring import make_history
    from tests.support.store import record
    from vexfs_cockpit.monitoring import exporter as x
    from vexfs_cockpit.monitoring.alerts import check_run, expr, resolve_run
    from vexfs_cockpit.store.location import PgUrl

    db = make_history(PgUrl(request.getfixturevalue("pg_server").new_database()) if backend == "postgresql"
                      else tmp_path / "h.db")
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for fam in text_string_to_metric_families(x.exposition(db).decode()) for s in fam.samples}
    key = (x.DOMAIN_LAST_RUN_VERDICTS, (("domain", "kernel_module"), ("env", "dev"), ("verdict", "regression")))
    assert got[key] == 0  # there from the start: a rule sees the first one
    assert check_run(db, resolve_run(db, "r2"), [NEW_REG]) == []

    # r2 is checked; r3 (never finished, its kernel_module part done) is the newest kernel_module run.
    aio.run(record(db, [_verdict("regression"), _verdict("regression", run_id="r3"), _verdict("flaky", "load", "r3")]))
    got = {(s.name, tuple(sorted(s.labels.items()))): s.value
           for fam in text_string_to_metric_families(x.exposition(db).decode()) for s in fam.samples}
    assert got[key] == 1
    assert got[(x.DOMAIN_LAST_RUN_VERDICTS, (("domain", "kernel_module"), ("env", "dev"), ("verdict", "flaky")))] == 1
    firing = check_run(db, resolve_run(db, "r2"), [NEW_REG])
    assert [(f.rule, f.summary) for f in firing] == [("NewReg", "kernel_module/unload: new regression (FAILED now)")]
    assert expr(NEW_REG) == 'vexfs_cockpit_domain_last_run_verdicts{verdict="regression"} > 0'


async def test_an_env_switch_brings_that_envs_alert_rules(tmp_path: Path) -> None:
    """The TUI's env switch (Session.switch_env): the next run is judged by the new env's
    rules, not the ones the session opened with."""
    import argparse

    from vexfs_cockpit.app.session import open_session

    (tmp_path / "env").mkdir()
    (tmp_path / "p.yaml").write_text("")
    (tmp_path / "env" / "dev.yaml").write_text(
        "monitoring:\n  alerts:\n    - {name: FailRate, kind: failure_rate, threshold: 0.3, severity: warning}\n")
    (tmp_path / "env" / "ci.yaml").write_text(
        "monitoring:\n  alerts:\n    - {name: Crash, kind: kernel_crash, severity: critical}\n")
    args = argparse.Namespace(config=str(tmp_path / "p.yaml"), env="dev", set=[], db=str(tmp_path / "h.db"))
    session = await open_session(args, provider_factory=lambda cfg, bus: LocalProvider(tmp_path))
    try:
        assert session.live is not None and [r.name for r in session.live.alerts.rules] == ["FailRate"]
        session.switch_env("ci")
        assert [r.name for r in session.live.alerts.rules] == ["Crash"]
        crash = ev.KernelEventRaised(run_id="r1", domain="d", test="t", vm="vm-0", report=kreport(
            "oops", "BUG: unable to handle page fault", Severity.CRITICAL), expected=False)
        assert _fired(session.live.alerts, _started({"d": 2}), crash) == [("Crash", "d")]
    finally:
        await session.aclose()
