"""Break the target, and see exactly the tests that should fail, fail, saying why.

Each test runs the real Runner in-process on the session guest (tests/conftest_vm.py),
with the module under test broken through config: a compiler error, a leak on unload,
EIO on every read, slow I/O, a disabled hung-task detector. The clean control for all
of them is the full batch run in test_e2e_batch.py, where every test passes.
"""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest

from tests.support.e2e import cfg_with, explain, results_by_name, run_domains, statuses
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.discovery import discover_domains
from vexfs_cockpit.engine.provider import Lease
from vexfs_cockpit.engine.results import TestStatus

pytestmark = [pytest.mark.vm, pytest.mark.timeout(600)]

PASSED, FAILED, SKIPPED = TestStatus.PASSED, TestStatus.FAILED, TestStatus.SKIPPED
EIO = {"module.module_params": "eio_on_read=1"}
# What busybox/coreutils print for an EIO from read(2).
READ_ERROR = re.compile(r"I/O error|Input/output error|EIO", re.IGNORECASE)


def all_tests(domain: str) -> list[str]:
    return [s.name for s in discover_domains()[domain].discover_tests()]


# -- kernel_module ---------------------------------------------------------------------
async def test_kernel_module_compile_error(guest: Lease, tmp_path: Path) -> None:
    """BREAK_BUILD=1: module_build fails with gcc's own error line; every other test is
    skipped naming the failed dependency (none runs against a stale module)."""
    cfg = cfg_with({"domains.kernel_module.options.make_args": ["BREAK_BUILD=1"]})
    summary = await run_domains(guest, cfg, ["kernel_module"], tmp_path)
    res = results_by_name(summary, "kernel_module")
    assert list(res) == all_tests("kernel_module"), explain(res)
    build = res.pop("module_build")
    assert build.status is FAILED, explain({"module_build": build})
    # gcc's diagnostic, not a paraphrase: file:line:col: error: ... undeclared
    assert re.search(r"vexfs_selftest\.c:\d+:\d+: error: ['‘]vexfs_selftest_undeclared_symbol['’] undeclared", build.message), build.message
    assert "vexfs_selftest_undeclared_symbol" in build.artifacts["compiler_errors"]
    for name, r in res.items():
        assert r.status is SKIPPED, f"{name}: {r.status} — {r.message}"
        # Directly, or through a test that needed it (module_unload_basic <- module_load_basic).
        assert re.match(r"dependency (module_build|\w+ skipped: dependency module_build) failed", r.message), f"{name}: {r.message}"
    assert summary.status == "failed"


async def test_kernel_module_leak_on_unload(guest: Lease, tmp_path: Path) -> None:
    """leak_on_unload=1 (4 MiB kept per unload): memory_leak_detection fails with the slab
    growth it measured; load/unload themselves still pass."""
    cfg = cfg_with({"module.module_params": "leak_on_unload=1"})
    wanted = {"module_build", "module_load_basic", "module_unload_basic", "memory_leak_detection"}
    summary = await run_domains(guest, cfg, ["kernel_module"], tmp_path, only_tests={"kernel_module": wanted})
    res = results_by_name(summary, "kernel_module")
    assert statuses(res) == {
        "module_build": PASSED, "module_load_basic": PASSED, "module_unload_basic": PASSED,
        "memory_leak_detection": FAILED,
    }, explain(res)
    leak = res["memory_leak_detection"]
    m = re.search(r"unreclaimable slab grew (\d+) kB over (\d+) cycles \(memory_leak_threshold (\d+) kB\)", leak.message)
    assert m, leak.message
    grew, cycles, threshold = map(int, m.groups())
    # Each cycle leaks cache_kib=4096 kB of kmalloc-1k objects: the measurement must see them.
    assert grew >= 0.9 * 4096 * cycles > threshold, leak.message
    assert leak.metrics["slab_delta_kb"] == grew


# -- filesystem_operations ---------------------------------------------------------------
# Under eio_on_read=1 every read(2) of a file fails; these tests read file contents.
FS_READERS = {
    "file_read_write",  # sha256sum of what was written
    "permissions",  # cat of a 0644 file as the unprivileged user
    "hard_links_and_rename",  # cat through the other link
    "sparse_files",  # sha256sum of the hole
    "error_conditions",  # cat after freeing space
    "concurrent_operations",  # cp + cat | sha256sum
}


async def test_filesystem_operations_eio_on_read(guest: Lease, tmp_path: Path) -> None:
    summary = await run_domains(guest, cfg_with(EIO), ["filesystem_operations"], tmp_path)
    res = results_by_name(summary, "filesystem_operations")
    assert list(res) == all_tests("filesystem_operations"), explain(res)
    expected = {n: (FAILED if n in FS_READERS else PASSED) for n in res}
    assert statuses(res) == expected, explain(res)
    for name in FS_READERS:
        assert READ_ERROR.search(res[name].message), f"{name}: the message does not say why: {res[name].message}"


# -- vector_operations ---------------------------------------------------------------------
async def test_vector_operations_eio_on_read(guest: Lease, tmp_path: Path) -> None:
    """Every vector test reads its shards back: each fails naming the read error."""
    # One collection size instead of 1000 + 10000: the first read fails either way.
    cfg = cfg_with({**EIO, "domains.vector_operations.options.sizes": [1000]})
    summary = await run_domains(guest, cfg, ["vector_operations"], tmp_path)
    res = results_by_name(summary, "vector_operations")
    assert list(res) == all_tests("vector_operations"), explain(res)
    assert statuses(res) == {n: FAILED for n in res}, explain(res)
    for name, r in res.items():
        assert READ_ERROR.search(r.message), f"{name}: {r.message}"


# -- performance_metrics ---------------------------------------------------------------------
async def test_performance_metrics_slow_io_regression(guest: Lease, tmp_path: Path) -> None:
    """A recorded baseline run, then the same tests with every read/write delayed: the
    throughput test fails as worse than the previous run, for writes and for reads;
    guest_cpu_memory (no baseline comparison) passes."""
    from vexfs_cockpit.store.history import History
    from vexfs_cockpit.store.recorder import HistoryStore, Recorder

    db = tmp_path / "history.db"
    # scaling is left out: at a few MiB its time is dd process spawns, not I/O.
    wanted = {"performance_metrics": {"sequential_throughput", "guest_cpu_memory"}}
    base_id, slow_id = "perf-baseline", "perf-slow-io"
    small = {"domains.performance_metrics.options.io_size_mb": 2}  # 2 MiB per workload, not 16

    store = await HistoryStore.aopen(db)
    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    recorder = Recorder(store, bus)
    recorder.start()
    try:
        base = await run_domains(guest, cfg_with(small), ["performance_metrics"], tmp_path / "base", only_tests=wanted,
                                 history=History(db).for_run(base_id), bus=bus, run_id=base_id, env="perf-e2e")
    finally:
        await recorder.aclose()
        await asyncio.to_thread(store.close)
    base_res = results_by_name(base, "performance_metrics")
    assert statuses(base_res) == {n: PASSED for n in wanted["performance_metrics"]}, explain(base_res)
    hist = History(db).for_run(slow_id)
    prev_write = hist.previous_metric("performance_metrics", "sequential_throughput", "seq_write_mb_s", "perf-e2e")
    assert prev_write == pytest.approx(base_res["sequential_throughput"].metrics["seq_write_mb_s"])

    # 400 ms before every read and write: 2 dd blocks each way cost >= 0.8 s more, against a
    # baseline of 0.05-0.3 s (a loaded host's TCG guest): far beyond the 25% threshold.
    slow_cfg = cfg_with({**small, "module.module_params": "slow_io_ms=400"})
    slow = await run_domains(guest, slow_cfg, ["performance_metrics"],
                             tmp_path / "slow", only_tests=wanted, history=hist, run_id=slow_id, env="perf-e2e")
    res = results_by_name(slow, "performance_metrics")
    both = f"baseline:\n{explain(base_res)}\nslowed:\n{explain(res)}"
    assert statuses(res) == {"sequential_throughput": FAILED, "guest_cpu_memory": PASSED}, both
    seq = res["sequential_throughput"].message
    assert re.search(r"seq_write_mb_s [\d.]+ vs previous [\d.]+ \(\+\d+% worse > 25%\)", seq), both
    assert re.search(r"seq_read_mb_s [\d.]+ vs previous [\d.]+ \(\+\d+% worse > 25%\)", seq), both
    assert res["sequential_throughput"].metrics["seq_write_mb_s_vs_prev_pct"] < -25


# -- safety_validation ---------------------------------------------------------------------
async def test_safety_hang_detector_disabled(guest: Lease, tmp_path: Path) -> None:
    """With the guest's hung-task detector off, a real D-state hang goes unreported and
    hang_detection must fail rather than pass on the hang alone."""
    knob = "/proc/sys/kernel/hung_task_timeout_secs"
    before = (await guest.target.run(["cat", knob], check=True)).output.strip()
    try:
        # The domain applies the configured value in its setup: 0 switches the detector off.
        cfg = cfg_with({"domains.safety_validation.hang_detection_timeout": 10,
                        "domains.safety_validation.options.hung_task_timeout_secs": 0})
        summary = await run_domains(guest, cfg, ["safety_validation"], tmp_path,
                                    only_tests={"safety_validation": {"hang_detection"}})
    finally:
        await guest.target.run(f"echo {before} > {knob}", check=True)
    assert (await guest.target.run(["cat", knob], check=True)).output.strip() == before
    res = results_by_name(summary, "safety_validation")
    assert statuses(res) == {"hang_detection": FAILED}, explain(res)
    assert res["hang_detection"].message.startswith("no hung-task report within hang_detection_timeout 10s"), res["hang_detection"].message
    assert not [k for k in res["hang_detection"].evidence.kernel_events if k.kind == "hung_task"]


# -- integration_testing ---------------------------------------------------------------------
async def test_integration_eio_on_read(guest: Lease, tmp_path: Path) -> None:
    """The end-to-end workflow stops at its first read; what builds on it is skipped."""
    wanted = {"end_to_end_workflow", "cross_domain_interactions", "module_reload_cycle"}
    summary = await run_domains(guest, cfg_with(EIO), ["integration_testing"], tmp_path,
                                only_tests={"integration_testing": wanted})
    res = results_by_name(summary, "integration_testing")
    assert statuses(res) == {"end_to_end_workflow": FAILED, "cross_domain_interactions": SKIPPED,
                             "module_reload_cycle": SKIPPED}, explain(res)
    assert READ_ERROR.search(res["end_to_end_workflow"].message), res["end_to_end_workflow"].message
    for name in ("cross_domain_interactions", "module_reload_cycle"):
        assert "end_to_end_workflow failed" in res[name].message, f"{name}: {res[name].message}"
