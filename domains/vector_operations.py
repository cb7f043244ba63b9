"""vector_operations: store, retrieve and search 128-d float32 vectors through the
configured adapter; recall@k against exact ground truth computed with numpy on the host."""

from __future__ import annotations

import asyncio
import time

import numpy as np

from vexfs_cockpit import DomainBase, TestResult, TestStatus, failed, option, passed, percentile, test_options, verdict

from domains._common import DEFAULT_MNT, ModuleUnderTest
from domains._vectors import FileShardStore, FuseProtocolStore, QdrantStore, VectorStore, exact_topk


class VectorOperationsDomain(DomainBase):
    """128-d float32 vectors: bit-exact storage, top-k recall, latency and throughput."""

    async def prepare_host(self) -> bool:
        # The files and fuse adapters store through the module: no build, no boot.
        if str(option(self, "adapter", "files")) in ("files", "fuse"):
            self.prerequisite_missing = await ModuleUnderTest(self).ensure_built()
        return self.prerequisite_missing is None

    async def setup_domain(self) -> bool:
        self.dims = int(option(self, "dims", 128))
        self.sizes = [int(n) for n in option(self, "sizes", [1000, 10000])]
        self.k = int(option(self, "k", 10))
        self.queries_n = int(option(self, "queries", 50))
        self.adapter = str(option(self, "adapter", "files"))
        self.rng = np.random.default_rng(int(option(self, "seed", 7)))
        self.mod = ModuleUnderTest(self)
        self.m = None
        if self.adapter in ("files", "fuse"):
            await self.mod.cleanup()
            why = await self.mod.ensure_ready()
            if why:
                self.prerequisite_missing = why
                return False
            await self.mod.ensure_loaded()
            if self.adapter == "files":
                self.m = await self.mod.mount(DEFAULT_MNT, str(option(self, "mount_options", "")))
        elif self.adapter != "qdrant":
            self.prerequisite_missing = f"vector_operations.options.adapter: unknown adapter {self.adapter!r} (files, fuse, qdrant)"
            return False
        return True

    async def teardown_domain(self) -> bool:
        if self.adapter in ("files", "fuse"):
            await self.mod.cleanup()
        return True

    def _store(self, tag: str) -> VectorStore:
        if self.adapter == "qdrant":
            return QdrantStore(self.dims, url=option(self, "url", None), collection=f"cockpit_{tag}")
        if self.adapter == "fuse":
            return FuseProtocolStore(self.target, str(option(self, "fuse_mount", "/mnt/vexfs")), self.dims)
        assert self.m is not None
        return FileShardStore(self.target, f"{self.m.mountpoint}/vectors_{tag}", self.ctx.workdir, self.dims)

    def _data(self, n: int) -> np.ndarray:
        return self.rng.standard_normal((n, self.dims), dtype=np.float32)

    @test_options(priority=0)
    async def test_store_retrieve_bit_exact(self) -> TestResult:
        problems, metrics = [], {}
        for n in self.sizes:
            data = self._data(n)
            store = self._store(f"exact{n}")
            t0 = time.perf_counter()
            await store.insert(data)
            ins = time.perf_counter() - t0
            back = await store.fetch_all()
            await store.close()
            metrics[f"insert_per_s_{n}"] = n / ins
            if back.shape != data.shape:
                problems.append(f"{n} vectors: read back shape {back.shape}, expected {data.shape}")
            elif not np.array_equal(back.view(np.uint32), data.view(np.uint32)):
                bad = int((back.view(np.uint32) != data.view(np.uint32)).any(axis=1).sum())
                problems.append(f"{n} vectors: {bad} differ bit-wise after read-back")
        return verdict(problems, f"{'/'.join(map(str, self.sizes))} vectors of {self.dims}-d float32 read back bit-exact", **metrics)

    @test_options(priority=10)
    async def test_topk_search_recall(self) -> TestResult:
        threshold = float(option(self, "min_recall", 0.95))
        metrics, problems = {}, []
        for n in self.sizes:
            data = self._data(n)
            queries = self._data(self.queries_n)
            truth = exact_topk(data, queries, self.k)
            store = self._store(f"recall{n}")
            await store.insert(data)
            t0 = time.perf_counter()
            await store.fetch_all() if isinstance(store, FileShardStore) else None
            metrics[f"index_build_ms_{n}"] = (time.perf_counter() - t0) * 1000
            lat, hits = [], 0
            for qi, qv in enumerate(queries):
                t = time.perf_counter()
                got = await store.search(qv, self.k)
                lat.append((time.perf_counter() - t) * 1000)
                hits += len(set(got) & set(int(x) for x in truth[qi]))
            await store.close()
            recall = hits / (self.k * len(queries))
            metrics[f"recall_at_{self.k}_{n}"] = recall
            metrics[f"search_p50_ms_{n}"] = percentile(lat, 50)
            metrics[f"search_p99_ms_{n}"] = percentile(lat, 99)
            if recall < threshold:
                problems.append(f"recall@{self.k} {recall:.3f} < {threshold} at {n} vectors")
        return verdict(problems, f"recall@{self.k} " + ", ".join(f"{metrics[f'recall_at_{self.k}_{n}']:.3f}@{n}" for n in self.sizes), **metrics)

    @test_options(priority=20)
    async def test_concurrent_queries(self) -> TestResult:
        n = self.sizes[0]
        data = self._data(n)
        queries = self._data(self.queries_n)
        truth = exact_topk(data, queries, self.k)
        store = self._store("conc")
        await store.insert(data)
        if isinstance(store, FileShardStore):
            await store.fetch_all()
        t0 = time.perf_counter()
        results = await asyncio.gather(*(store.search(q, self.k) for q in queries))
        wall = time.perf_counter() - t0
        await store.close()
        wrong = sum(1 for i, got in enumerate(results) if set(got) != set(int(x) for x in truth[i]))
        qps = len(queries) / wall if wall > 0 else 0.0
        if wrong:
            return failed(f"{wrong}/{len(queries)} concurrent queries returned a different top-{self.k}", concurrent_qps=qps)
        return passed(f"{len(queries)} concurrent queries, {qps:.0f} q/s, all exact", concurrent_qps=qps)

    @test_options(priority=25)
    async def test_update_and_delete(self) -> TestResult:
        """Overwrite the first 1000 vectors and delete the last 1000: read-back and search
        see exactly the new state."""
        data = self._data(3000)
        store = self._store("upd")
        await store.insert(data)
        fresh = self._data(1000)
        try:
            await store.update(0, fresh)
            await store.delete_tail(1000)
        except NotImplementedError as err:
            await store.close()
            return TestResult(status=TestStatus.SKIPPED, message=f"adapter {self.adapter}: {err}")
        want = np.concatenate([fresh, data[1000:2000]])
        back = await store.fetch_all()
        problems = []
        if back.shape != want.shape:
            problems.append(f"after update+delete: {back.shape[0]} vectors, expected {want.shape[0]}")
        elif not np.array_equal(back.view(np.uint32), want.view(np.uint32)):
            problems.append("after update+delete the stored vectors differ from the expected state")
        hit = await store.search(fresh[0], 1)
        if hit != [0]:
            problems.append(f"search for an updated vector returned {hit}, expected [0]")
        gone = await store.search(data[2500], 1)
        if gone and gone[0] >= 2000:
            problems.append(f"a deleted vector is still found (id {gone[0]})")
        await store.close()
        return verdict(problems, "update of 1000 and delete of 1000 reflected in read-back and search")

    @test_options(priority=30)
    async def test_insert_throughput(self) -> TestResult:
        n = max(self.sizes)
        data = self._data(n)
        store = self._store("tput")
        t0 = time.perf_counter()
        await store.insert(data)
        secs = time.perf_counter() - t0
        count = (await store.fetch_all()).shape[0]
        await store.close()
        rate = n / secs
        floor = float(option(self, "min_insert_per_s", 100.0))
        if count != n:
            return failed(f"inserted {n} vectors, {count} present", insert_per_s=rate)
        if rate < floor:
            return failed(f"insert throughput {rate:.0f}/s below min_insert_per_s {floor:g}", insert_per_s=rate)
        return passed(f"{n} vectors inserted at {rate:.0f}/s ({rate * self.dims * 4 / 1e6:.1f} MB/s)", insert_per_s=rate)
