"""integration_testing: the whole workflow end to end, domains interacting on one mount,
and a regression pass re-running what failed in this environment's previous run."""

from __future__ import annotations

import asyncio
import dataclasses
import hashlib

import numpy as np

from vexfs_cockpit import (
    Severity,
    TestResult,
    TestStatus,
    discover_domains,
    failed,
    mount_argv,
    option,
    passed,
    q,
    test_options,
    verdict,
)

from domains._common import DEFAULT_MNT, ModuleDomain
from domains._vectors import FileShardStore, exact_topk


class IntegrationTestingDomain(ModuleDomain):
    """build → load → mount → files and vectors → search → unmount → unload → clean log."""

    # Every test here (the regression re-runs too) needs the module: a build that failed
    # is kernel_module/module_build's failure, here a reason to skip. The workflow test
    # loads and mounts by itself.
    mount_in_setup = False
    load_in_setup = False

    @test_options(priority=0, critical=True)
    async def test_end_to_end_workflow(self) -> TestResult:
        steps: list[str] = []
        start = self.ctx.klog.cursor() if self.ctx.klog else 0
        why = await self.mod.ensure_ready()
        if why:
            return failed(f"build: {why}")
        steps.append("build")
        if self.mod.has_module:
            r = await self.mod.load()
            if not r.ok:
                return failed(f"load: {r.first_line()}")
            steps.append("load")
        m = await self.mod.mount(DEFAULT_MNT, str(option(self, "mount_options", "")))
        steps.append("mount")
        blob = np.random.default_rng(3).bytes(64 * 1024)
        (self.ctx.workdir / "e2e.bin").write_bytes(blob)
        await self.target.put(self.ctx.workdir / "e2e.bin", f"{m.mountpoint}/e2e.bin")
        got = (await self.target.run(["sha256sum", f"{m.mountpoint}/e2e.bin"], check=True)).output.split()[0]
        if got != hashlib.sha256(blob).hexdigest():
            return failed("files: checksum mismatch after write")
        steps.append("files")
        dims = int(option(self, "dims", 128))
        data = np.random.default_rng(5).standard_normal((500, dims), dtype=np.float32)
        store = FileShardStore(self.target, f"{m.mountpoint}/vectors", self.ctx.workdir, dims)
        await store.insert(data)
        back = await store.fetch_all()
        if not np.array_equal(back, data):
            return failed("vectors: read-back differs")
        steps.append("vectors")
        queries = data[:5] + 0.001
        truth = exact_topk(data, queries, 5)
        for i, qv in enumerate(queries):
            if await store.search(qv, 5) != [int(x) for x in truth[i]]:
                return failed(f"search: query {i} top-5 differs from ground truth")
        steps.append("search")
        u = await self.mod.unmount(m)
        if not u.ok:
            return failed(f"unmount: {u.first_line()}")
        steps.append("unmount")
        if self.mod.has_module:
            r = await self.mod.unload()
            if not r.ok:
                return failed(f"unload: {r.first_line()}")
            steps.append("unload")
        if self.ctx.klog is not None and self.ctx.vm is not None:
            end = await self.ctx.klog.sync(self.target, "integration e2e done")
            _, reports = self.ctx.klog.window(start, end)
            bad = [r for r in reports if r.severity >= Severity.WARNING]
            if bad:
                return failed(f"kernel log not clean: {bad[0].title}")
            steps.append("kernel log clean")
        return passed(" → ".join(steps))

    @test_options(priority=10, depends_on=["end_to_end_workflow"])
    async def test_cross_domain_interactions(self) -> TestResult:
        """Vector shards and ordinary files share one mount under concurrent use; a
        read-only remount keeps both readable; block-backed data survives a remount."""
        await self.mod.ensure_loaded()
        m = await self.mod.mount(DEFAULT_MNT, str(option(self, "mount_options", "")))
        dims = 32
        data = np.random.default_rng(11).standard_normal((2000, dims), dtype=np.float32)
        store = FileShardStore(self.target, f"{m.mountpoint}/vec", self.ctx.workdir, dims)
        problems = []
        files_job = self.target.run(
            f"mkdir -p {q(m.mountpoint)}/docs && for i in $(seq 100); do echo doc$i > {q(m.mountpoint)}/docs/$i; done; "
            f"cat {q(m.mountpoint)}/docs/* | wc -l"
        )
        (_, files) = await asyncio.gather(store.insert(data), files_job)
        if files.output.strip() != "100":
            problems.append(f"files beside vectors: {files.output.strip()} of 100 readable")
        await self.target.run(["mount", "-o", "remount,ro", m.mountpoint], check=True)
        if not np.array_equal(await store.fetch_all(), data):
            problems.append("vectors differ after read-only remount")
        await self.target.run(["mount", "-o", "remount,rw", m.mountpoint], check=True)
        if m.device:
            await self.target.run(["umount", m.mountpoint], check=True)
            await self.target.run(mount_argv(self.mod.fs_type, m.device, m.mountpoint), check=True)
            if not np.array_equal(await store.fetch_all(), data):
                problems.append("vectors lost across umount/mount of the block device")
        await self.mod.unmount(m)
        return verdict(problems, "2000 vectors + 100 files concurrently; readable after ro remount" + (", persisted across remount" if m.device else ""))

    @test_options(priority=15, depends_on=["end_to_end_workflow"])
    async def test_module_reload_cycle(self) -> TestResult:
        """Unmount, unload, reload, mount again: a block-backed filesystem keeps its data,
        a device-less one comes back empty; either way the module is reusable."""
        await self.mod.ensure_loaded()
        m = await self.mod.mount(DEFAULT_MNT, str(option(self, "mount_options", "")))
        await self.target.run(f"echo keep > {q(m.mountpoint)}/marker && sync", check=True)
        await self.target.run(["umount", m.mountpoint], check=True)
        if self.mod.has_module:
            r = await self.mod.unload()
            if not r.ok:
                return failed(f"unload failed: {r.first_line()}")
            await self.mod.ensure_loaded()
        problems = []
        if m.device:
            await self.target.run(mount_argv(self.mod.fs_type, m.device, m.mountpoint), check=True)
            got = (await self.target.run(["cat", f"{m.mountpoint}/marker"])).output.strip()
            if got != "keep":
                problems.append(f"data lost across unload/reload: marker reads {got!r}")
            await self.mod.unmount(m)
        else:
            m2 = await self.mod.mount(DEFAULT_MNT, str(option(self, "mount_options", "")))
            left = (await self.target.run(f"ls -A {q(m2.mountpoint)}")).output.split()
            if left:
                problems.append(f"a fresh in-memory mount is not empty: {left[:3]}")
            await self.target.run(f"echo again > {q(m2.mountpoint)}/x && cat {q(m2.mountpoint)}/x", check=True)
            await self.mod.unmount(m2)
        return verdict(problems, "reload cycle: " + ("data persisted" if m.device else "fresh empty mount, writable"))

    @test_options(priority=20, timeout=1800)
    async def test_regression_pass(self) -> TestResult:
        """Re-run, for real, each test that failed in this environment's previous run."""
        if self.ctx.history is None:
            return TestResult(status=TestStatus.SKIPPED, message="no history store in this session")
        previous = [(d, t) for d, t in self.ctx.history.failed_in_previous_run(self.ctx.env) if d != self.ctx.name]
        if not previous:
            return passed(f"no failures in the previous {self.ctx.env} run to re-check")
        registry = discover_domains()
        still, fixed = [], []
        for domain, test in previous:
            cls = registry.get(domain)
            if cls is None:
                still.append(f"{domain}/{test} (domain gone)")
                continue
            settings = dict(self.ctx.config.domain(domain).model_dump()) if self.ctx.config else dict(self.settings)
            ctx = dataclasses.replace(self.ctx, name=domain, settings=settings)
            plugin = cls(ctx)
            try:
                if not await plugin.setup_domain():
                    still.append(f"{domain}/{test} (setup: {plugin.prerequisite_missing})")
                    continue
                result = await getattr(plugin, f"test_{test}")()
            except Exception as err:  # a re-run that errors is still failing
                result = TestResult(status=TestStatus.ERROR, message=f"{type(err).__name__}: {err}")
            finally:
                await plugin.teardown_domain()
            (fixed if result.status is TestStatus.PASSED else still).append(f"{domain}/{test}")
        metrics = {"rechecked": float(len(previous)), "still_failing": float(len(still))}
        if still:
            return failed(f"still failing: {', '.join(still[:3])}; fixed: {len(fixed)}", **metrics)
        return passed(f"all {len(fixed)} previously failing tests now pass: {', '.join(fixed[:3])}", **metrics)
