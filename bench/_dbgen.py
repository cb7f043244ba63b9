"""A large, realistic history DB for the history benchmarks, built through the store's schema.

The file is created and migrated by the store's own ``open_writer`` (so it carries the
real tables, indexes, application_id and user_version), then filled in bulk with
``executemany``: rows in the exact shapes ``store/writer.py`` writes (JSON columns made
with the store's codec, evidence windows of real-looking size, results interleaved by
finish time across the six domains as the recorder stores them). Outcomes are seeded
random with structure: per-test failure rates, flaky tests, regression windows, skipped
dependants after a failed build, retries, kernel reports with crash signatures.

Generation takes well under a minute for 10,000 runs; the file is cached under
``CACHE_DIR`` keyed by schema version, generator version and run count, so reruns are
instant. Usage: ``path, stats = cached_db(10_000)``.

The same rows on PostgreSQL (``cached_pg``): the store creates the schema on a running
server (``open_writer`` on a ``postgresql://`` URL: schema_pg.py), then every table of
the SQLite file is copied in by COPY, ids included, with the indexes built after the
load and the count triggers off (the file's domain_runs counts, kept by SQLite's
triggers, come along and are checked against the results), then VACUUM ANALYZE. The
bench keeps that cluster under ``CACHE_DIR`` (``pg_cluster_dir``: schema, generator and
loader versions, run count), so a rerun starts it in 0.1-1 s instead of loading again
(98 s for 10,000 runs here: 1.02M results, 1.8 GB on the server). Measured instead:
a custom-format dump (pg_dump -Fc, 40 s, 0.35 GB) restores in 31 s plus 1.6 s of
VACUUM ANALYZE, every run, on a cluster initdb made first.
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from vexfs_cockpit.engine.results import CommandRecord, Evidence
from vexfs_cockpit.klog.model import KernelReport, Severity
from vexfs_cockpit.store.codec import evidence_to_dict
from vexfs_cockpit.store.db import open_writer
from vexfs_cockpit.store.location import PgUrl
from vexfs_cockpit.store.schema import LATEST_VERSION

GEN_VERSION = 1  # bump when the generated content changes: invalidates cached files
CACHE_DIR = Path("/tmp/vexfs-cockpit-bench")
SEED = 20261125
RUN_SPACING_S = 3100.0  # ~28 runs a day: 10,000 runs span about a year
RUNS_PER_TX = 500  # one transaction per this many runs (~50k test results)

# The real domains' tests (domains/*.py), padded to 17 per domain with the
# parameterised variants a fuller suite would carry (block sizes, worker counts, sizes).
REAL_TESTS: dict[str, tuple[str, ...]] = {
    "kernel_module": (
        "module_build", "module_info", "module_sysfs_state", "module_load_basic", "module_unload_basic",
        "module_lifecycle_stress", "memory_leak_detection", "system_hang_prevention", "concurrent_operations",
        "error_handling_validation",
    ),
    "filesystem_operations": (
        "mount_unmount", "file_read_write", "directory_operations", "permissions", "metadata",
        "hard_links_and_rename", "large_directory", "sparse_files", "error_conditions", "concurrent_operations",
    ),
    "vector_operations": (
        "store_retrieve_bit_exact", "topk_search_recall", "concurrent_queries", "update_and_delete", "insert_throughput",
    ),
    "performance_metrics": (
        "sequential_throughput", "random_io", "metadata_latency", "mount_latency", "guest_cpu_memory", "scaling",
    ),
    "safety_validation": (
        "hang_detection", "soft_lockup_detection", "crash_recovery_oops", "crash_recovery_panic",
        "resource_leak_detection", "stability",
    ),
    "integration_testing": (
        "end_to_end_workflow", "cross_domain_interactions", "module_reload_cycle", "regression_pass",
    ),
}
VARIANTS: dict[str, tuple[str, ...]] = {
    "kernel_module": ("params", "smp"),
    "filesystem_operations": ("4k", "1m"),
    "vector_operations": ("dims64", "dims768", "k100"),
    "performance_metrics": ("4k", "64k", "1m"),
    "safety_validation": ("smp", "lowmem"),
    "integration_testing": ("small", "large", "dirty", "remount"),
}
TESTS_PER_DOMAIN = 17
DOMAINS = tuple(REAL_TESTS)

# Metrics the real tests record (domains/*.py), with a typical value.
METRICS: dict[tuple[str, str], dict[str, float]] = {
    ("kernel_module", "module_build"): {"build_time_s": 4.0},
    ("kernel_module", "module_load_basic"): {"load_time_ms": 300.0},
    ("kernel_module", "module_unload_basic"): {"unload_time_ms": 350.0},
    ("kernel_module", "module_lifecycle_stress"): {
        "load_p50_ms": 400.0, "load_p99_ms": 800.0, "unload_p50_ms": 420.0, "unload_p99_ms": 900.0, "cycles": 10.0,
    },
    ("kernel_module", "memory_leak_detection"): {"slab_delta_kb": 4.0, "memavailable_drop_kb": 60.0},
    ("kernel_module", "system_hang_prevention"): {"slowest_step_ms": 400.0},
    ("kernel_module", "concurrent_operations"): {"concurrent_mounts": 3.0},
    ("performance_metrics", "sequential_throughput"): {"read_mb_s": 180.0, "write_mb_s": 120.0, "write_mb_s_vs_prev_pct": 0.0},
    ("performance_metrics", "random_io"): {"read_iops": 9000.0, "write_iops": 5000.0},
    ("performance_metrics", "metadata_latency"): {
        "create_p50_ms": 0.4, "create_p99_ms": 2.0, "stat_p50_ms": 0.1, "stat_p99_ms": 0.5,
        "unlink_p50_ms": 0.3, "unlink_p99_ms": 1.5,
    },
    ("performance_metrics", "mount_latency"): {"mount_p50_ms": 25.0, "umount_p50_ms": 18.0},
    ("performance_metrics", "guest_cpu_memory"): {"guest_cpu_pct": 35.0, "guest_mem_kb": 190_000.0},
    ("performance_metrics", "scaling"): {"write_mb_s_1w": 110.0, "write_mb_s_2w": 190.0, "write_mb_s_4w": 260.0},
    ("vector_operations", "insert_throughput"): {"insert_per_s_1000": 5200.0, "insert_per_s_10000": 4100.0},
    ("vector_operations", "topk_search_recall"): {
        "index_build_ms_1000": 120.0, "recall_at_10_1000": 1.0, "search_p50_ms_1000": 2.0, "search_p99_ms_1000": 6.0,
        "index_build_ms_10000": 1500.0, "recall_at_10_10000": 0.98, "search_p50_ms_10000": 12.0,
        "search_p99_ms_10000": 40.0,
    },
}

ENVS = (("dev", 0.55), ("ci", 0.35), ("test", 0.10))
_COLS = {
    "runs": ("id", "started_at", "finished_at", "status", "env", "profile", "config_path", "config_json", "domains",
             "counts", "reason", "last_event_at", "pid", "proc_start", "hostname", "boot_id"),
    "domain_runs": ("run_id", "domain", "vm", "planned_tests", "started_at", "finished_at", "status", "counts",
                    "reason", "current_test"),
    "test_results": ("run_id", "domain", "test", "status", "message", "started_at", "finished_at", "duration_s",
                     "attempt_count", "attempts", "evidence", "metrics", "artifacts", "tags"),
    "metrics": ("run_id", "domain", "test", "name", "value", "ts", "env"),
    "kernel_events": ("run_id", "domain", "test", "vm", "kind", "title", "signature", "severity", "line", "module",
                      "text", "expected", "ts"),
    "crash_occurrences": ("signature", "kernel_event_id", "run_id", "domain", "test", "vm", "ts"),
    "vm_states": ("run_id", "vm", "state", "reason", "ts"),
    "vm_samples": ("run_id", "vm", "ts", "state", "cpu_pct", "mem_kb", "block_rd_bytes", "block_wr_bytes",
                   "net_rx_bytes", "net_tx_bytes"),
}
_INSERT = {t: f"INSERT INTO {t}({', '.join(c)}) VALUES ({', '.join('?' for _ in c)})" for t, c in _COLS.items()}


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)  # as store/writer.py writes


@dataclass(frozen=True, slots=True)
class GenStats:
    path: Path
    runs: int
    test_results: int
    metrics: int
    size_bytes: int
    seconds: float  # generation time; 0.0 when the cached file was reused
    cached: bool


@dataclass(slots=True)
class _TestSpec:
    domain: str
    name: str
    median_s: float
    fail_rate: float
    skip_rate: float
    flaky: bool
    metrics: dict[str, float]
    pass_evidence: tuple[str, ...]
    fail_evidence: str


def test_names(domain: str) -> tuple[str, ...]:
    real = REAL_TESTS[domain]
    names = list(real)
    for param in VARIANTS[domain]:
        for base in real:
            if len(names) >= TESTS_PER_DOMAIN:
                return tuple(names)
            names.append(f"{base}_{param}")
    return tuple(names[:TESTS_PER_DOMAIN])


def _kernel_report(rng: random.Random, domain: str, test: str, vm: str, line: int) -> KernelReport:
    kind, title, sev = rng.choice(
        (
            ("warning", f"WARNING in vexfs_{test.split('_')[0]}_write", Severity.WARNING),
            ("bug", "BUG: kernel NULL pointer dereference, address: 0000000000000018", Severity.ERROR),
            ("hung_task", "task vexfs_sync blocked for more than 5 seconds", Severity.ERROR),
            ("oops", "general protection fault in vexfs_lookup", Severity.CRITICAL),
        )
    )
    text = (
        "------------[ cut here ]------------\n"
        f"{title}\n"
        f"CPU: 0 PID: {rng.randint(200, 4000)} Comm: sh Tainted: G           OE      6.1.0-56-amd64 #1  Debian 6.1.158-1\n"
        "Hardware name: QEMU Standard PC (i440FX + PIIX, 1996), BIOS 1.16.2-debian-1.16.2-1 04/01/2014\n"
        "RIP: 0010:vexfs_write_iter+0x4e/0x90 [vexfs_fixed]\n"
        "Call Trace:\n <TASK>\n vfs_write+0x2a1/0x3f0\n ksys_write+0x6f/0xf0\n do_syscall_64+0x58/0xc0\n </TASK>\n"
        "---[ end trace 0000000000000000 ]---"
    )
    return KernelReport(kind=kind, title=title, severity=sev, line=line, module="vexfs_fixed", text=text, vm=vm)


def _evidence(rng: random.Random, domain: str, test: str, failing: bool) -> str:
    """One evidence JSON like the runner stores: commands with output tails and the
    test's kernel-log window (real rows average ~2.8 kB)."""
    vm = f"vexfs-ci-{domain}-0"
    cmds: list[CommandRecord] = []
    for i in range(rng.randint(2, 6)):
        out_lines = rng.randint(0, 14)
        output = "".join(
            f"{test}: step {i}.{j}: {rng.choice(('ok', 'wrote 65536 bytes', 'checksum 9f2c1e7a', 'mode 0644 uid 0'))}\n"
            for j in range(out_lines)
        )
        cmds.append(
            CommandRecord(
                cmd=f"/tmp/vexfs-cockpit/helper {test} --step {i} --mnt /mnt/vexfs --size {rng.choice((4, 64, 1024))}k",
                exit_code=0,
                duration_s=rng.uniform(0.005, 0.6),
                output_tail=output,
                target=vm,
            )
        )
    klog = [f"[{rng.uniform(10, 900):12.6f}] vexfs-cockpit: begin {domain}/{test}"]
    klog += [
        f"[{rng.uniform(10, 900):12.6f}] vexfs_fixed: {rng.choice(('mounted /dev/loop0', 'sync complete', 'inode cache 512 objects', 'block group 0 free 31744'))}"
        for _ in range(rng.randint(1, 8))
    ]
    notes: list[str] = []
    events: list[KernelReport] = []
    if failing:
        cmds[-1].exit_code = 1
        cmds[-1].output_tail += f"{test}: FAILED: expected 0 got -5 (EIO)\n"
        events.append(_kernel_report(rng, domain, test, vm, 4000))
        klog += events[0].text.splitlines()
        notes.append("kernel report during the test")
    return _json(evidence_to_dict(Evidence(commands=cmds, kernel_log=klog, kernel_events=events, notes=notes)))


def _specs(rng: random.Random) -> dict[str, list[_TestSpec]]:
    specs: dict[str, list[_TestSpec]] = {}
    for domain in DOMAINS:
        specs[domain] = [
            _TestSpec(
                domain=domain,
                name=name,
                median_s=rng.lognormvariate(0.3, 1.1),
                fail_rate=rng.choice((0.0, 0.0, 0.0, 0.001, 0.003, 0.01)),
                skip_rate=rng.choice((0.0,) * 6 + (0.05,)),
                flaky=rng.random() < 0.08,
                metrics=METRICS.get((domain, name), {}),
                pass_evidence=tuple(_evidence(rng, domain, name, False) for _ in range(3)),
                fail_evidence=_evidence(rng, domain, name, True),
            )
            for name in test_names(domain)
        ]
    return specs


def _config_json(env: str) -> str:
    domains = {d: {"enabled": True, "max_load_time": 5.0, "max_unload_time": 5.0, "memory_leak_threshold": 4194304,
                   "hang_detection_timeout": 30.0, "stop_on_critical_failure": True,
                   "options": {"seed": 1234, "workers": [1, 2, 4], "sizes": [1000, 10000]}} for d in DOMAINS}
    return _json({
        "profile": "vexfs", "description": "VexFS in direct-kernel TCG guests",
        "fleet": {"libvirt_uri": "qemu:///system", "template": "direct-kernel", "guest_kernel": "auto",
                  "accel": "auto", "boot_timeout_s": 120.0, "stop_timeout_s": 10.0},
        "resources": {"vms_per_domain": 1, "memory_mb": 512, "cpus": 1, "disk_gb": 1.0},
        "execution": {"test_timeout_minutes": 10.0, "parallel_test_execution": True, "retry_count": 1},
        "module": {"module_name": "vexfs_deadlock_fix", "fs_type": "vexfs_fixed", "build_path": "kernel_module"},
        "domains": domains, "env": env,
    })


class _Generator:
    """Yields the rows of one run at a time; keeps the cross-run state (signatures, drift)."""

    def __init__(self, runs: int, end: float, seed: int) -> None:
        self.rng = random.Random(seed)
        self.runs = runs
        self.start = end - runs * RUN_SPACING_S
        self.specs = _specs(self.rng)
        self.config = {env: _config_json(env) for env, _ in ENVS}
        self.signatures: dict[str, list[Any]] = {}  # signature -> crash_signatures row
        self.kernel_event_id = 0
        # Regression windows: a test that fails every run for a stretch, then is fixed.
        self.regressions: list[tuple[int, int, str, str]] = []
        for _ in range(max(1, runs // 800)):
            first = self.rng.randrange(runs)
            domain = self.rng.choice(DOMAINS)
            self.regressions.append((first, first + self.rng.randint(5, 60), domain, self.rng.choice(test_names(domain))))

    def _env(self) -> str:
        x = self.rng.random()
        for env, weight in ENVS:
            if x < weight:
                return env
            x -= weight
        return ENVS[-1][0]

    def run(self, n: int) -> dict[str, list[tuple[Any, ...]]]:
        rng = self.rng
        rows: dict[str, list[tuple[Any, ...]]] = {t: [] for t in _COLS}
        t0 = self.start + n * RUN_SPACING_S + rng.uniform(-600, 600)
        env = self._env()
        run_id = time.strftime("%Y%m%d-%H%M%S", time.gmtime(t0)) + f"-{rng.getrandbits(16):04x}"
        infra_error = rng.random() < 0.004
        aborted = not infra_error and rng.random() < 0.003
        regressed_now = {(d, t) for a, b, d, t in self.regressions if a <= n < b}
        results: list[tuple[Any, ...]] = []
        run_counts = dict.fromkeys(("PASSED", "FAILED", "SKIPPED", "TIMEOUT", "ERROR"), 0)
        ends: list[float] = []
        for domain in DOMAINS:
            vm = f"vexfs-{env}-{domain}-0"
            boot = rng.uniform(7.5, 12.0)  # TCG boot to SSH
            clock = d_start = t0 + boot
            rows["vm_states"].append((run_id, vm, "booting", "booted", t0))
            rows["vm_states"].append((run_id, vm, "ready", "ssh up", d_start))
            counts = dict.fromkeys(run_counts, 0)
            build_failed = False
            specs = self.specs[domain]
            stop_at = rng.randrange(len(specs)) if aborted else len(specs)
            for spec in specs[:stop_at]:
                regressed = (domain, spec.name) in regressed_now
                attempts = 1
                if build_failed:
                    status, dur, message = "SKIPPED", 0.0, "dependency module_build did not run"
                elif rng.random() < spec.skip_rate:
                    status, dur, message = "SKIPPED", 0.0, f"{spec.name}: needs a guest with 2 CPUs"
                else:
                    dur = spec.median_s * rng.lognormvariate(0.0, 0.25) * (1.0 + n / (self.runs * 4))
                    x = rng.random()
                    if regressed or x < spec.fail_rate:
                        status = "TIMEOUT" if rng.random() < 0.15 else "FAILED"
                        message = f"{spec.name}: expected 0 got -5 (EIO)" if status == "FAILED" else f"{spec.name}: no answer in 600s"
                    elif spec.flaky and x < spec.fail_rate + 0.05:
                        status, attempts, message = "PASSED", 2, f"{spec.name}: ok after a retry"
                    elif infra_error and rng.random() < 0.3:
                        status, message = "ERROR", f"lost SSH to {vm}: connection reset"
                    else:
                        status, message = "PASSED", f"{spec.name}: ok in {dur * 1000:.0f} ms"
                    if status != "PASSED" and spec.name == "module_build":
                        build_failed = True
                started, clock = clock, clock + dur
                bad = status in ("FAILED", "TIMEOUT", "ERROR")
                evidence = spec.fail_evidence if bad else (
                    spec.pass_evidence[n % 3] if status != "SKIPPED" else '{"commands":[],"kernel_log":[],"kernel_events":[],"notes":[]}')
                attempt_list = [{"number": 1, "status": "FAILED" if attempts > 1 else status, "message": message, "duration_s": dur}]
                if attempts > 1:
                    attempt_list.append({"number": 2, "status": status, "message": message, "duration_s": dur})
                metrics: dict[str, float] = {}
                if status == "PASSED":
                    drift = 1.0 + 0.3 * n / self.runs
                    metrics = {k: v if k in ("cycles", "concurrent_mounts") else v * drift * rng.lognormvariate(0, 0.1)
                               for k, v in spec.metrics.items()}
                results.append((
                    run_id, domain, spec.name, status, message, started, clock, dur, attempts, _json(attempt_list),
                    evidence, _json(metrics), "{}", "[]",
                ))
                for name, value in metrics.items():
                    rows["metrics"].append((run_id, domain, spec.name, name, value, clock, env))
                if bad and status != "ERROR":
                    self._kernel_event(rows, rng, run_id, domain, spec.name, vm, clock - dur / 2)
                counts[status] += 1
            for i in range(4):
                rows["vm_samples"].append((run_id, vm, d_start + i * (clock - d_start) / 4, "running",
                                           rng.uniform(5, 100), rng.randint(120_000, 260_000),
                                           rng.randint(0, 1 << 26), rng.randint(0, 1 << 27), rng.randint(0, 1 << 20),
                                           rng.randint(0, 1 << 20)))
            rows["vm_states"].append((run_id, vm, "stopped", "shutdown", clock + 1.0))
            d_status = ("aborted" if aborted else "errored" if counts["ERROR"] else
                        "failed" if counts["FAILED"] + counts["TIMEOUT"] else "passed")
            current = specs[stop_at].name if aborted and stop_at < len(specs) else ""
            rows["domain_runs"].append((
                run_id, domain, vm, _json([s.name for s in specs]), d_start, clock, d_status, _json(counts),
                "cockpit process died during test " + current if aborted else "", current,
            ))
            for k, v in counts.items():
                run_counts[k] += v
            ends.append(clock)
        finished = max(ends) + 1.0
        bad_total = run_counts["FAILED"] + run_counts["TIMEOUT"] + run_counts["ERROR"]
        status = "aborted" if aborted else "errored" if infra_error and run_counts["ERROR"] else "failed" if bad_total else "passed"
        reason = "cockpit process 4242 on ci-runner died during the run" if aborted else (
            "infrastructure: lost SSH during the run" if status == "errored" else "")
        rows["runs"].append((
            run_id, t0, finished, status, env, "vexfs", "/work/main/configs/default.yaml", self.config[env],
            _json(list(DOMAINS)), _json(run_counts), reason, finished, 4242 + n % 30000, 100_000 + n, "ci-runner",
            "111525ba-8b2c-4d7d-9d1e-5ae1420a8427",
        ))
        results.sort(key=lambda r: r[6])  # the recorder writes each result when it finishes
        rows["test_results"] = results
        return rows

    def _kernel_event(self, rows: dict[str, list[tuple[Any, ...]]], rng: random.Random, run_id: str, domain: str,
                      test: str, vm: str, ts: float) -> None:
        if rng.random() > 0.4:
            return
        rep = _kernel_report(rng, domain, test, vm, rng.randint(300, 90_000))
        self.kernel_event_id += 1
        rows["kernel_events"].append((run_id, domain, test, vm, rep.kind, rep.title, rep.signature, int(rep.severity),
                                      rep.line, rep.module, rep.text, 0, ts))
        rows["crash_occurrences"].append((rep.signature, self.kernel_event_id, run_id, domain, test, vm, ts))
        sig = self.signatures.get(rep.signature)
        if sig is None:
            self.signatures[rep.signature] = [rep.signature, rep.kind, rep.title, int(rep.severity), ts, ts, 1, run_id]
        else:
            sig[5], sig[6], sig[7] = ts, sig[6] + 1, run_id


def generate(path: Path, runs: int, seed: int = SEED, end: float | None = None) -> GenStats:
    """Write a fresh DB of ``runs`` runs at ``path`` (replaced if present)."""
    t_start = time.perf_counter()
    for side in ("", "-wal", "-shm"):
        Path(f"{path}{side}").unlink(missing_ok=True)
    conn = open_writer(path, deep_check=False)  # the store creates and migrates it
    conn.close()
    conn = sqlite3.connect(str(path), isolation_level=None)
    # Bulk load without a journal (a half-written file is deleted, never used), then
    # back to WAL as the store leaves it.
    conn.execute("PRAGMA journal_mode = DELETE")
    conn.execute("PRAGMA journal_mode = OFF")
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -400000")
    gen = _Generator(runs, end if end is not None else time.time() - 3600.0, seed)
    n_results = n_metrics = 0
    for first in range(0, runs, RUNS_PER_TX):
        batch: dict[str, list[tuple[Any, ...]]] = {t: [] for t in _COLS}
        for n in range(first, min(runs, first + RUNS_PER_TX)):
            for table, rows in gen.run(n).items():
                batch[table].extend(rows)
        conn.execute("BEGIN")
        for table, rows in batch.items():
            conn.executemany(_INSERT[table], rows)
        conn.execute("COMMIT")
        n_results += len(batch["test_results"])
        n_metrics += len(batch["metrics"])
    conn.execute("BEGIN")
    conn.executemany(
        "INSERT INTO crash_signatures(signature, kind, title, severity, first_seen, last_seen, count, last_run_id) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        list(gen.signatures.values()),
    )
    conn.execute("COMMIT")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.close()
    return GenStats(path, runs, n_results, n_metrics, path.stat().st_size, time.perf_counter() - t_start, False)


def cache_path(runs: int, cache_dir: Path = CACHE_DIR) -> Path:
    return cache_dir / f"history-schema{LATEST_VERSION}-gen{GEN_VERSION}-{runs}runs.db"


def cached_db(runs: int, cache_dir: Path = CACHE_DIR) -> GenStats:
    """The cached DB for ``runs`` runs at the current schema version, generated if absent."""
    path = cache_path(runs, cache_dir)
    if path.exists():
        conn = sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True)  # leaves no -wal/-shm
        try:
            (n_runs,) = conn.execute("SELECT count(*) FROM runs").fetchone()
            (n_results,) = conn.execute("SELECT max(id) FROM test_results").fetchone()
            (n_metrics,) = conn.execute("SELECT max(id) FROM metrics").fetchone()
        finally:
            conn.close()
        if n_runs == runs:
            return GenStats(path, runs, n_results or 0, n_metrics or 0, path.stat().st_size, 0.0, True)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + f".tmp{os.getpid()}")
    try:
        stats = generate(tmp, runs)
        os.replace(tmp, path)  # only a complete file ever carries the cache name
    finally:
        for side in ("", "-wal", "-shm"):
            Path(f"{tmp}{side}").unlink(missing_ok=True)
    return GenStats(path, stats.runs, stats.test_results, stats.metrics, path.stat().st_size, stats.seconds, False)


def iter_counts(path: Path) -> Iterator[tuple[str, int]]:
    """Row counts per table (for the report)."""
    conn = sqlite3.connect(f"{path.as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        for table in ("runs", "domain_runs", "test_results", "metrics", "kernel_events", "crash_signatures"):
            yield table, conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]
    finally:
        conn.close()


# -- the same history on PostgreSQL ------------------------------------------------------------
PG_LOAD_VERSION = 1  # bump when the loader changes what lands in PostgreSQL
PG_DBNAME = "history"
_PG_BATCH = 5_000  # rows fetched from SQLite per round trip of the copy


@dataclass(frozen=True, slots=True)
class PgStats:
    url: str
    runs: int
    test_results: int
    size_bytes: int
    seconds: float  # load time; 0.0 when the cached database was reused
    cached: bool


def pg_cluster_dir(runs: int, cache_dir: Path = CACHE_DIR) -> Path:
    """Where the bench keeps its PostgreSQL cluster for ``runs`` runs (running_postgres(keep=True))."""
    return cache_dir / f"pg-schema{LATEST_VERSION}-gen{GEN_VERSION}-load{PG_LOAD_VERSION}-{runs}runs"


def cached_pg(source: GenStats, server_url: Callable[[str], str], marker: Path) -> PgStats:
    """The rows of the SQLite history ``source`` in database ``history`` of a running
    server (``server_url(dbname)`` gives a URL), loaded once: ``marker`` (next to the
    kept cluster) records which SQLite file the database holds, so a regenerated file
    (new timestamps) is loaded again."""
    stamp = f"{source.path.name} {source.path.stat().st_mtime_ns} {source.size_bytes}"
    url = server_url(PG_DBNAME)
    if marker.exists() and marker.read_text() == stamp:
        with psycopg.connect(url) as conn:
            (n,) = conn.execute("SELECT count(*) FROM runs").fetchone()  # type: ignore[misc]
            (size,) = conn.execute("SELECT pg_database_size(current_database())").fetchone()  # type: ignore[misc]
        return PgStats(url, n, source.test_results, size, 0.0, True)
    marker.unlink(missing_ok=True)
    t0 = time.perf_counter()
    with psycopg.connect(server_url("postgres"), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {PG_DBNAME}")
        admin.execute(f"CREATE DATABASE {PG_DBNAME}")
    open_writer(PgUrl(url)).close()  # the store creates the schema (schema_pg), as for a team's server
    src = sqlite3.connect(f"{source.path.as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            n_results = _load_pg(src, conn)
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]  # type: ignore[index]
    finally:
        src.close()
    marker.write_text(stamp)
    return PgStats(url, source.runs, n_results, size, time.perf_counter() - t0, False)


def _load_pg(src: sqlite3.Connection, conn: psycopg.Connection[Any]) -> int:
    """Every row of every history table, ids included, by COPY; indexes built after the
    load and the count triggers off: the SQLite file's domain_runs counts were kept by
    its own triggers and come along; checked below against the results."""
    conn.execute("SET session_replication_role = replica")  # no user triggers fire in this session
    conn.execute("SET maintenance_work_mem = '512MB'")
    indexes = conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
        "AND indexname NOT IN (SELECT conname FROM pg_constraint)").fetchall()
    for name, _ in indexes:
        conn.execute(f'DROP INDEX "{name}"')
    tables = [r[0] for r in src.execute("SELECT name FROM sqlite_master WHERE type = 'table' "
                                        "AND name NOT LIKE 'sqlite%' AND name != 'schema_version'")]
    n_results = 0
    for table in tables:
        pg_cols = {r[0] for r in conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_schema = current_schema() "
            "AND table_name = %s", (table,))}
        cols = [r[1] for r in src.execute(f"PRAGMA table_info({table})") if r[1] in pg_cols]
        if not pg_cols or not cols:
            continue
        rows = src.execute(f"SELECT {', '.join(cols)} FROM {table}")
        with conn.cursor().copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as copy:
            while batch := rows.fetchmany(_PG_BATCH):
                for row in batch:
                    copy.write_row(row)
                if table == "test_results":
                    n_results += len(batch)
        if "id" in cols and conn.execute("SELECT pg_get_serial_sequence(%s, 'id')", (table,)).fetchone()[0]:  # type: ignore[index]
            conn.execute(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), coalesce(max(id), 0) + 1, false) "
                         f"FROM {table}")
    for _, definition in indexes:
        conn.execute(definition)
    (bad,) = conn.execute(
        "SELECT count(*) FROM domain_runs d FULL JOIN (SELECT run_id, domain, count(*) AS n FROM test_results "
        "GROUP BY run_id, domain) t USING (run_id, domain) WHERE coalesce(d.n_results, -1) != coalesce(t.n, 0)"
    ).fetchone()  # type: ignore[misc]
    if bad:
        raise SystemExit(f"bench: {bad} domain runs' result counts do not match their results after the load")
    conn.execute("VACUUM (ANALYZE)")  # statistics, and the visibility map index-only scans need
    return n_results


if __name__ == "__main__":
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
    s = cached_db(n)
    print(f"{s.path}: {s.runs:,} runs, {s.test_results:,} test results, {s.metrics:,} metrics, "
          f"{s.size_bytes / 1e6:.0f} MB, {'cached' if s.cached else f'generated in {s.seconds:.1f}s'}")
