"""vector_operations through the Qdrant adapter in qdrant-client's embedded local mode:
the same adapter code VexFS's Qdrant-compatible REST API is spoken with, exercised for
real without a server. No module, so no VM: the lease is the host (engine-test target)."""

from __future__ import annotations

from contextlib import asynccontextmanager

from vexfs_cockpit.config.load import load_config
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.discovery import discover_domains
from vexfs_cockpit.engine.provider import Lease
from vexfs_cockpit.engine.results import TestStatus
from vexfs_cockpit.engine.runner import Runner, RunRequest
from vexfs_cockpit.transport.local import LocalTarget


class HostProvider:
    @asynccontextmanager
    async def lease(self, domain, index):
        yield Lease(vm_name="host", target=LocalTarget("host"))

    async def aclose(self):
        pass


async def _run(tmp_path, **options):
    overrides = {f"domains.vector_operations.options.{k}": v for k, v in options.items()}
    cfg = load_config(None, "ci", overrides)
    runner = Runner(EventBus(), HostProvider(), discover_domains(), host=LocalTarget("host"))
    return await runner.execute(
        RunRequest(config=cfg, domains=["vector_operations"], run_id="q", artifacts_dir=tmp_path)
    )


async def test_qdrant_local_mode_passes_every_vector_test(tmp_path):
    summary = await _run(tmp_path, adapter="qdrant", sizes=[1000, 2000], queries=20)
    by = {r.name: r for r in summary.results}
    assert {n: r.status for n, r in by.items()} == {n: TestStatus.PASSED for n in by}, {n: r.message for n, r in by.items()}
    assert by["topk_search_recall"].metrics["recall_at_10_1000"] >= 0.95
    assert "bit-exact" in by["store_retrieve_bit_exact"].message


async def test_an_impossible_recall_bar_goes_red(tmp_path):
    """Break the expectation, not the code: recall can never exceed 1.0."""
    summary = await _run(tmp_path, adapter="qdrant", sizes=[1000], queries=10, min_recall=1.01)
    by = {r.name: r for r in summary.results}
    assert by["topk_search_recall"].status is TestStatus.FAILED
    assert by["topk_search_recall"].message.startswith("recall@10 1.000 < 1.01 at 1000 vectors")
