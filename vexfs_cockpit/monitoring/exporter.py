"""Prometheus metrics of the history DB, computed when scraped.

``HistoryCollector`` reads the DB on every ``collect()`` (monitoring/queries.py): no
counter lives in this process, so a restarted exporter, a second one, or the textfile
export all show the same numbers, and nothing is lost while no exporter runs. Each
server or export builds its own ``CollectorRegistry`` (no global registry state).

Label sets are bounded: domains, test statuses, kernel report kinds and run statuses
are small fixed sets; VMs are the most recently sampled (queries.MAX_VMS); stored
metrics are capped (queries.MAX_METRIC_SERIES) and keyed by env/domain/test/metric
of the domains' own catalogues.
"""

from __future__ import annotations

import os
import socket
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

from prometheus_client import CollectorRegistry, generate_latest, make_wsgi_app
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector

from vexfs_cockpit.config.models import split_listen
from vexfs_cockpit.engine.confirm import Verdict
from vexfs_cockpit.errors import ReportError, UsageError
from vexfs_cockpit.monitoring.queries import read_snapshot
from vexfs_cockpit.store.db import store_size
from vexfs_cockpit.store.history import History
from vexfs_cockpit.store.location import StoreLocation
from vexfs_cockpit.store.report import CRASH_KINDS

PREFIX = "vexfs_cockpit"
# Test durations: seconds, from a quick self-test check to the 30 min a guarded test may take.
DURATION_BUCKETS = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0)
STATUSES = ("PASSED", "FAILED", "SKIPPED", "TIMEOUT", "ERROR")
VERDICTS = tuple(v.value for v in Verdict)

# Every family the exporter emits, by its name in the exposition (counters with _total).
TESTS_TOTAL = f"{PREFIX}_tests_total"
TEST_DURATION = f"{PREFIX}_test_duration_seconds"
DOMAIN_LAST_RUN_TESTS = f"{PREFIX}_domain_last_run_tests"
DOMAIN_FAILURE_RATIO = f"{PREFIX}_domain_failure_ratio"
DOMAIN_LAST_RUN_TS = f"{PREFIX}_domain_last_run_timestamp_seconds"
DOMAIN_LAST_RUN_VERDICTS = f"{PREFIX}_domain_last_run_verdicts"
METRIC_VALUE = f"{PREFIX}_domain_metric_value"
METRIC_BASELINE = f"{PREFIX}_domain_metric_baseline_value"
VM_CPU = f"{PREFIX}_vm_cpu_usage_percent"
VM_MEMORY = f"{PREFIX}_vm_memory_bytes"
VM_SAMPLE_TS = f"{PREFIX}_vm_last_sample_timestamp_seconds"
KERNEL_REPORTS_TOTAL = f"{PREFIX}_kernel_reports_total"
RUNS_TOTAL = f"{PREFIX}_runs_total"
RUNS_IN_PROGRESS = f"{PREFIX}_runs_in_progress"
STORE_SIZE = f"{PREFIX}_store_size_bytes"

# name -> the series names it may show (a histogram's _bucket/_sum/_count)
SERIES_NAMES: dict[str, tuple[str, ...]] = {
    TESTS_TOTAL: (TESTS_TOTAL,),
    TEST_DURATION: (f"{TEST_DURATION}_bucket", f"{TEST_DURATION}_sum", f"{TEST_DURATION}_count"),
    **{n: (n,) for n in (DOMAIN_LAST_RUN_TESTS, DOMAIN_FAILURE_RATIO, DOMAIN_LAST_RUN_TS, DOMAIN_LAST_RUN_VERDICTS,
                         METRIC_VALUE,
                         METRIC_BASELINE, VM_CPU, VM_MEMORY, VM_SAMPLE_TS, KERNEL_REPORTS_TOTAL, RUNS_TOTAL,
                         RUNS_IN_PROGRESS, STORE_SIZE)},
}
ALL_SERIES = frozenset(s for names in SERIES_NAMES.values() for s in names)


def _base(name: str) -> str:
    """CounterMetricFamily takes the name without _total and adds it."""
    return name[: -len("_total")] if name.endswith("_total") else name


class HistoryCollector(Collector):
    """Reads ``db`` at every collect(); holds nothing between scrapes."""

    def __init__(self, db: StoreLocation) -> None:
        self.db = db

    def collect(self) -> Iterator[Metric]:
        snap = read_snapshot(self.db, DURATION_BUCKETS)

        tests = CounterMetricFamily(_base(TESTS_TOTAL), "Test results stored, by domain and final status",
                                    labels=("domain", "status"))
        durations = HistogramMetricFamily(TEST_DURATION, "Duration of stored test results (all attempts)",
                                          labels=("domain",), unit="")
        per_domain: dict[str, tuple[int, float, list[int]]] = {}
        for domain in sorted({d for d, _ in snap.tests}):
            for status in STATUSES:
                n, total, cum = snap.tests.get((domain, status), (0, 0.0, [0] * len(DURATION_BUCKETS)))
                tests.add_metric((domain, status.lower()), n)
                agg = per_domain.setdefault(domain, (0, 0.0, [0] * len(DURATION_BUCKETS)))
                per_domain[domain] = (agg[0] + n, agg[1] + total, [a + b for a, b in zip(agg[2], cum)])
        for domain, (n, total, cum) in per_domain.items():
            buckets = [(repr(b), c) for b, c in zip(DURATION_BUCKETS, cum)] + [("+Inf", n)]
            durations.add_metric((domain,), buckets, total)
        yield tests
        yield durations

        last_tests = GaugeMetricFamily(DOMAIN_LAST_RUN_TESTS, "Test results of the newest finished run of each env/domain",
                                       labels=("env", "domain", "status"))
        ratio = GaugeMetricFamily(DOMAIN_FAILURE_RATIO,
                                  "Failed, timed-out and errored tests / (those + passed) in the newest finished run "
                                  "of each env/domain", labels=("env", "domain"))
        last_ts = GaugeMetricFamily(DOMAIN_LAST_RUN_TS, "Start of the newest finished run of each env/domain",
                                    labels=("env", "domain"))
        verdicts = GaugeMetricFamily(DOMAIN_LAST_RUN_VERDICTS,
                                     "Changed tests of the newest finished run of each env/domain, by the verdict of "
                                     "their confirmation reruns (regression: a new regression)",
                                     labels=("env", "domain", "verdict"))
        for d in snap.domain_last:
            for status in STATUSES:
                last_tests.add_metric((d.env, d.domain, status.lower()), d.counts.get(status, 0))
            for verdict in VERDICTS:  # every one from 0: a rule sees the first regression
                verdicts.add_metric((d.env, d.domain, verdict), d.verdicts.get(verdict, 0))
            if d.failure_ratio is not None:
                ratio.add_metric((d.env, d.domain), d.failure_ratio)
            last_ts.add_metric((d.env, d.domain), d.started_at)
        yield last_tests
        yield verdicts
        yield ratio
        yield last_ts

        value = GaugeMetricFamily(METRIC_VALUE, "A stored domain metric (its unit is in its name), newest run",
                                  labels=("env", "domain", "test", "metric"))
        baseline = GaugeMetricFamily(METRIC_BASELINE, "The same metric in the run before the newest",
                                     labels=("env", "domain", "test", "metric"))
        for m in snap.metrics:
            value.add_metric((m.env, m.domain, m.test, m.name), m.value)
            if m.baseline is not None:
                baseline.add_metric((m.env, m.domain, m.test, m.name), m.baseline)
        yield value
        yield baseline

        cpu = GaugeMetricFamily(VM_CPU, "Newest stored CPU sample of each VM (100 = one vCPU busy)", labels=("vm",))
        mem = GaugeMetricFamily(VM_MEMORY, "Newest stored memory sample of each VM", labels=("vm",))
        seen = GaugeMetricFamily(VM_SAMPLE_TS, "When each VM was last sampled", labels=("vm",))
        for v in snap.vms:
            cpu.add_metric((v.vm,), v.cpu_pct)
            mem.add_metric((v.vm,), v.mem_kb * 1024)
            seen.add_metric((v.vm,), v.ts)
        yield cpu
        yield mem
        yield seen

        # The crash kinds are always there (0 until one happens): increase() sees the first one.
        kernel = CounterMetricFamily(_base(KERNEL_REPORTS_TOTAL),
                                     "Kernel reports stored, by kind; expected: planted by a fault-injection test",
                                     labels=("kind", "expected"))
        counts = {(kind, exp): 0 for kind in CRASH_KINDS for exp in (False, True)} | snap.kernel
        for (kind, exp), n in sorted(counts.items()):
            kernel.add_metric((kind, "true" if exp else "false"), n)
        yield kernel

        runs = CounterMetricFamily(_base(RUNS_TOTAL), "Runs stored, by status", labels=("status",))
        for status, n in sorted(snap.runs.items()):
            runs.add_metric((status,), n)
        yield runs
        running = len(History(self.db).list_runs(status="running", limit=1000))
        yield GaugeMetricFamily(RUNS_IN_PROGRESS, "Runs whose process is still running", value=running)
        yield GaugeMetricFamily(STORE_SIZE, "History DB size: the SQLite file with its WAL, or the PostgreSQL database", value=store_size(self.db))


def build_registry(db: StoreLocation) -> CollectorRegistry:
    registry = CollectorRegistry(auto_describe=False)
    registry.register(HistoryCollector(db))
    return registry


def exposition(db: StoreLocation) -> bytes:
    """The text exposition format, as a scrape gets it."""
    return generate_latest(build_registry(db))


def write_textfile(db: StoreLocation, path: Path) -> int:
    """Write the metrics for node_exporter's textfile collector, atomically (a temp file
    in the same directory, fsynced, renamed over ``path``): a scrape never reads half a
    file. Returns the bytes written."""
    path = Path(path)
    if path.is_dir():
        raise ReportError(f"{path} is a directory: give a file path, e.g. {path / 'vexfs_cockpit.prom'}")
    if not path.parent.is_dir():
        raise ReportError(f"{path}: directory {path.parent} does not exist")
    data = exposition(db)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        raise ReportError(f"cannot write in {path.parent}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except OSError as exc:
        Path(tmp).unlink(missing_ok=True)
        raise ReportError(f"cannot write {path}: {exc.strerror}") from None
    return len(data)


# -- the HTTP endpoint ---------------------------------------------------------------
def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:9464', '[::1]:9464', 'localhost:0' -> (host, port). Only loopback:
    the history names tests, VMs and kernel reports, and this host serves nothing off it."""
    try:
        split_listen(text, any_address=True)
    except ValueError:
        raise UsageError(f"--listen {text!r}: use HOST:PORT, e.g. 127.0.0.1:9464") from None
    try:
        return split_listen(text)
    except ValueError:
        raise UsageError(f"--listen {text}: metrics are served on a loopback address only (127.0.0.1, ::1, localhost)") from None


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _V6ThreadingServer(_ThreadingServer):
    address_family = socket.AF_INET6


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base's name
        pass  # a 1 s scrape interval would flood the terminal


def make_metrics_server(db: StoreLocation, host: str, port: int) -> WSGIServer:
    """A threaded WSGI server answering /metrics from a registry of its own. Call
    ``serve_forever()``; ``server_address[1]`` is the port (also when 0 was asked)."""
    app = make_wsgi_app(build_registry(db))
    cls = _V6ThreadingServer if ":" in host else _ThreadingServer
    try:
        return make_server(host, port, app, server_class=cls, handler_class=_QuietHandler)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror}") from None


def serve_in_thread(db: StoreLocation, host: str = "127.0.0.1", port: int = 0) -> tuple[WSGIServer, threading.Thread]:
    server = make_metrics_server(db, host, port)
    thread = threading.Thread(target=server.serve_forever, name="metrics-server", daemon=True)
    thread.start()
    return server, thread
