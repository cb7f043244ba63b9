"""The exporter and the rules file against the real Prometheus (Debian's `prometheus`
package, scripts/setup.sh): promtool checks and unit-tests the emitted rules, and a
Prometheus server started here scrapes `vexfs-cockpit metrics serve` every second and
answers /api/v1/query with the history's figures. Everything on 127.0.0.1; the
server runs with a temp TSDB and is stopped in a finally (no systemd)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.monitoring import as_promql, dashboard_exprs
from tests.support.monitoring import DAY, FS, KM, R1, R2, R3, ROOT, T0, VM_SAMPLES, cli
from tests.support.store import BACKENDS, P, RunSpec, kreport, new_history, record, record_sync, recorded
from vexfs_cockpit.store.location import StoreLocation
from vexfs_cockpit.klog.model import Severity

PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus; scripts/setup.sh)")
needs_prometheus = pytest.mark.skipif(PROMETHEUS is None,
                                      reason="prometheus not installed (Debian package prometheus; scripts/setup.sh)")


@pytest.fixture
def rules_file(tmp_path: Path) -> Path:
    out = tmp_path / "vexfs_cockpit.rules.yml"
    r = cli("alerts", "rules", "--output", str(out))  # the default config's monitoring.alerts
    assert r.returncode == 0, r.stderr
    return out


@needs_promtool
def test_promtool_checks_the_emitted_rules(rules_file: Path) -> None:
    r = subprocess.run([PROMTOOL, "check", "rules", str(rules_file)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS: 5 rules found" in r.stdout


RULE_TESTS = """
rule_files: [{rules}]
evaluation_interval: 1m
tests:
  - interval: 1m
    input_series:
      # a planted failure rate: 10% of kernel_module's tests bad, then 50%
      - series: 'vexfs_cockpit_domain_failure_ratio{{env="dev",domain="kernel_module"}}'
        values: '0.1 0.1 0.5 0.5'
      - series: 'vexfs_cockpit_domain_failure_ratio{{env="dev",domain="filesystem_operations"}}'
        values: '0 0 0 0'
      - series: 'vexfs_cockpit_kernel_reports_total{{kind="oops",expected="false"}}'
        values: '0 0 1 1'
      # a planted (expected) panic is no crash alert
      - series: 'vexfs_cockpit_kernel_reports_total{{kind="panic",expected="true"}}'
        values: '0 0 1 1'
      - series: 'vexfs_cockpit_domain_last_run_tests{{env="dev",domain="filesystem_operations",status="timeout"}}'
        values: '0 0 0 2'
      - series: 'vexfs_cockpit_domain_metric_value{{env="dev",domain="kernel_module",test="load",metric="load_p50_ms"}}'
        values: '10 12 12 30'
      - series: 'vexfs_cockpit_domain_metric_baseline_value{{env="dev",domain="kernel_module",test="load",metric="load_p50_ms"}}'
        values: '10 10 10 12'
      # a change confirmed by reruns on a fresh VM
      - series: 'vexfs_cockpit_domain_last_run_verdicts{{env="dev",domain="kernel_module",verdict="regression"}}'
        values: '0 0 1 1'
      - series: 'vexfs_cockpit_domain_last_run_verdicts{{env="dev",domain="kernel_module",verdict="flaky"}}'
        values: '1 1 1 1'
    alert_rule_test:
      - eval_time: 1m
        alertname: DomainFailureRateHigh
        exp_alerts: []
      - eval_time: 2m
        alertname: DomainFailureRateHigh
        exp_alerts:
          - exp_labels: {{severity: warning, alert_kind: failure_rate, env: dev, domain: kernel_module}}
            exp_annotations: {{summary: "kernel_module (dev) failure rate 0.5 > 0.2"}}
      - eval_time: 1m
        alertname: KernelCrash
        exp_alerts: []
      - eval_time: 3m
        alertname: KernelCrash
        exp_alerts:
          - exp_labels: {{severity: critical, alert_kind: kernel_crash, kind: oops}}
            exp_annotations: {{summary: "kernel oops report(s) in the last 15m"}}
      - eval_time: 2m
        alertname: TestTimedOut
        exp_alerts: []
      - eval_time: 3m
        alertname: TestTimedOut
        exp_alerts:
          - exp_labels: {{severity: warning, alert_kind: test_timeout, env: dev, domain: filesystem_operations,
                         status: timeout}}
            exp_annotations: {{summary: "2 filesystem_operations test(s) timed out (dev)"}}
      - eval_time: 2m
        alertname: ModuleLoadSlower
        exp_alerts: []
      - eval_time: 3m
        alertname: ModuleLoadSlower
        exp_alerts:
          - exp_labels: {{severity: warning, alert_kind: metric_regression, env: dev, domain: kernel_module,
                         test: load, metric: load_p50_ms}}
            exp_annotations: {{summary: "load_p50_ms of kernel_module/load (dev) up 150% (> 50%)"}}
      - eval_time: 1m
        alertname: NewRegression
        exp_alerts: []
      - eval_time: 2m
        alertname: NewRegression
        exp_alerts:
          - exp_labels: {{severity: critical, alert_kind: new_regression, env: dev, domain: kernel_module,
                         verdict: regression}}
            exp_annotations: {{summary: "1 new regression(s) in kernel_module (dev), confirmed on a fresh VM"}}
"""


@needs_promtool
def test_promtool_rule_tests_fire_on_a_planted_failure_rate(rules_file: Path, tmp_path: Path) -> None:
    tests = tmp_path / "rules_test.yml"
    tests.write_text(RULE_TESTS.format(rules=json.dumps(str(rules_file))))
    r = subprocess.run([PROMTOOL, "test", "rules", str(tests)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "SUCCESS" in r.stdout


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=5) as resp:
        return json.loads(resp.read())


def _query(base: str, promql: str) -> list[dict]:
    body = _get(f"{base}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    assert body["status"] == "success", body
    return body["data"]["result"]


def _wait(what: str, probe, timeout: float = 90.0):  # noqa: ANN001 - a callable returning a truthy answer
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            last = probe()
        except OSError as exc:  # not listening yet
            last = exc
        if last and not isinstance(last, Exception):
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}: last {last!r}")


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(params=BACKENDS)
def history(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreLocation]:
    """R1-R3 and the VM samples, with the writer kept open: r3 reads as in progress on
    either backend (on PostgreSQL a run is live while its writer holds its lock)."""
    with recorded(new_history(request, tmp_path), [R1, R2, R3]) as loc:
        asyncio.run(record(loc, VM_SAMPLES))
        yield loc


@needs_prometheus
def test_real_prometheus_scrapes_the_cockpit(tmp_path: Path, rules_file: Path, history: StoreLocation) -> None:
    db = history
    exporter = subprocess.Popen(
        [sys.executable, "-m", "vexfs_cockpit", "metrics", "serve", "--listen", "127.0.0.1:0", "--db", str(db)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    prom = None
    try:
        line = exporter.stdout.readline()
        assert line.startswith("metrics: serving http://127.0.0.1:"), (line, exporter.stderr.read() if exporter.poll() else "")
        target = line.split("http://", 1)[1].split("/", 1)[0]
        port = _free_port()
        (tmp_path / "prometheus.yml").write_text(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{json.dumps(str(rules_file))}]\n"
            "scrape_configs:\n"
            f"  - job_name: vexfs-cockpit\n    static_configs: [{{targets: ['{target}']}}]\n")
        prom = subprocess.Popen(
            [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
             f"--web.listen-address=127.0.0.1:{port}"],
            stdout=subprocess.DEVNULL, stderr=(tmp_path / "prometheus.log").open("w"))
        base = f"http://127.0.0.1:{port}"
        up = _wait("the scrape", lambda: [r for r in _query(base, 'up{job="vexfs-cockpit"} == 1')])
        assert up[0]["metric"]["instance"] == target

        def one(promql: str) -> float:
            res = _wait(promql, lambda: _query(base, promql))
            assert len(res) == 1, res
            return float(res[0]["value"][1])

        assert one('vexfs_cockpit_tests_total{domain="kernel_module",status="passed"}') == 4
        assert one('vexfs_cockpit_tests_total{domain="filesystem_operations",status="timeout"}') == 1
        assert one('vexfs_cockpit_test_duration_seconds_count{domain="kernel_module"}') == 6
        assert one('vexfs_cockpit_domain_failure_ratio{env="dev",domain="filesystem_operations"}') == 0.5
        assert one('vexfs_cockpit_domain_metric_value{metric="load_p50_ms"}') == 25
        assert one('vexfs_cockpit_domain_metric_value{metric="unload_p50_ms"}') == 5
        assert one('vexfs_cockpit_vm_cpu_usage_percent{vm="vm-1"}') == 80
        assert one('vexfs_cockpit_vm_memory_bytes{vm="vm-0"}') == 2048 * 1024
        assert one('vexfs_cockpit_kernel_reports_total{kind="oops",expected="false"}') == 1
        assert one("vexfs_cockpit_runs_in_progress") == 1
        assert one("vexfs_cockpit_store_size_bytes") > 0
        assert one('histogram_quantile(0.5, sum by (le) (rate(vexfs_cockpit_test_duration_seconds_bucket[1m])))'
                   ' or vector(0)') >= 0

        # the rules Prometheus loaded fire on the history: FS failed half its tests, one timed out
        def firing() -> set[tuple[str, str]]:
            alerts = _get(f"{base}/api/v1/alerts")["data"]["alerts"]
            return {(a["labels"]["alertname"], a["labels"].get("domain", a["labels"].get("kind", "")))
                    for a in alerts if a["state"] == "firing"}

        _wait("DomainFailureRateHigh", lambda: {("DomainFailureRateHigh", FS), ("TestTimedOut", FS)} <= firing())
        # every query of the Grafana dashboard evaluates, and the instant ones have data
        for expr in dashboard_exprs():
            promql = as_promql(expr)
            res = _query(base, promql)
            assert res or "[" in promql, f"{promql}: no data"
        # a crash lands while Prometheus watches: the counter steps and KernelCrash fires
        record_sync(db, [RunSpec("r4", T0 + 3 * DAY, outcomes={(KM, "load"): P},
                                 kernel=[(KM, "load", kreport("panic", "Kernel panic - not syncing", Severity.CRITICAL),
                                          False)])])
        _wait("KernelCrash", lambda: ("KernelCrash", "panic") in firing())
        _wait("the new run's results", lambda: [r for r in _query(
            base, 'vexfs_cockpit_tests_total{domain="kernel_module",status="passed"} == 5')])
    finally:
        if prom is not None:
            _stop(prom)
        _stop(exporter)
