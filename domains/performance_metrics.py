"""performance_metrics: throughput, metadata latency, CPU/memory cost and scaling, each
compared with the previous run's value for the same environment."""

from __future__ import annotations

from vexfs_cockpit import TestResult, failed, option, passed, percentile, q, test_options

from domains._common import DEFAULT_MNT, ModuleDomain, guest_tool, timed


class PerformanceMetricsDomain(ModuleDomain):
    """Sequential/random throughput, per-op latency, CPU/memory and scaling, with baselines."""

    async def after_setup(self) -> bool:
        self.mb = int(option(self, "io_size_mb", 16))
        self.has_fio = (await self.target.run("command -v fio")).ok
        return True

    def _baseline(self, test: str, metrics: dict[str, float], higher_is_better: set[str]) -> list[str]:
        """Compare with the previous run; return regressions beyond the threshold."""
        if self.ctx.history is None:
            return []
        threshold = float(option(self, "regression_threshold_pct", 50.0))
        out = []
        for name, value in list(metrics.items()):  # the loop adds *_vs_prev_pct keys
            prev = self.ctx.history.previous_metric(self.ctx.name, test, name, self.ctx.env)
            if not prev:
                continue
            change = (value - prev) / prev * 100
            worse = -change if name in higher_is_better else change
            metrics[f"{name}_vs_prev_pct"] = change
            if worse > threshold:
                out.append(f"{name} {value:.1f} vs previous {prev:.1f} ({worse:+.0f}% worse > {threshold:g}%)")
        return out

    async def _dd_rate(self, cmd: str, mb: int) -> float:
        res = await self.target.run(cmd, timeout=600, check=True)
        return mb / res.duration_s

    @test_options(priority=0)
    async def test_sequential_throughput(self) -> TestResult:
        f = f"{self.m.mountpoint}/seq"
        write = await self._dd_rate(f"dd if=/dev/zero of={q(f)} bs=1M count={self.mb} conv=fsync 2>&1", self.mb)
        await self.target.run("sync; echo 3 > /proc/sys/vm/drop_caches", check=True)
        read = await self._dd_rate(f"dd if={q(f)} of=/dev/null bs=1M 2>&1", self.mb)
        await self.target.run(["rm", "-f", f])
        metrics = {"seq_write_mb_s": write, "seq_read_mb_s": read}
        regressions = self._baseline("sequential_throughput", metrics, {"seq_write_mb_s", "seq_read_mb_s"})
        msg = f"seq write {write:.1f} MB/s, read {read:.1f} MB/s ({self.mb} MB, dd)"
        return failed("; ".join(regressions), **metrics) if regressions else passed(msg, **metrics)

    @test_options(priority=10)
    async def test_random_io(self) -> TestResult:
        f = f"{self.m.mountpoint}/rand"
        ops = int(option(self, "random_ops", 200))
        await self.target.run(f"dd if=/dev/zero of={q(f)} bs=1M count={self.mb} 2>&1", check=True, timeout=300)
        blocks = self.mb * 256
        if self.has_fio:
            res = await self.target.run(
                f"fio --name=r --filename={q(f)} --rw=randrw --bs=4k --size={self.mb}M --io_size={ops * 4}k "
                "--ioengine=psync --output-format=terse --terse-version=3 2>&1",
                timeout=600,
                check=True,
            )
            fields = res.output.strip().splitlines()[-1].split(";")
            read_iops, write_iops = float(fields[7]), float(fields[48])
            tool = "fio"
        else:
            # dd fallback: each op is a process spawn as well; reported as such.
            script = (
                f"i=0; while [ $i -lt {ops} ]; do o=$(( $(od -An -N2 -tu2 /dev/urandom) % {blocks} )); "
                f"dd if=/dev/urandom of={q(f)} bs=4k count=1 seek=$o conv=notrunc 2>/dev/null; i=$((i+1)); done"
            )
            w = await self.target.run(script, timeout=600, check=True)
            read_script = script.replace(f"if=/dev/urandom of={q(f)}", f"if={q(f)} of=/dev/null").replace(
                "seek=$o conv=notrunc", "skip=$o"
            )
            r = await self.target.run(read_script, timeout=600, check=True)
            read_iops, write_iops, tool = ops / r.duration_s, ops / w.duration_s, "dd"
        await self.target.run(["rm", "-f", f])
        metrics = {"rand_read_iops": read_iops, "rand_write_iops": write_iops}
        regressions = self._baseline("random_io", metrics, {"rand_read_iops", "rand_write_iops"})
        msg = f"random 4k: read {read_iops:.0f} IOPS, write {write_iops:.0f} IOPS ({tool})"
        return failed("; ".join(regressions), **metrics) if regressions else passed(msg, **metrics)

    @test_options(priority=20)
    async def test_metadata_latency(self) -> TestResult:
        """create/stat/unlink latency percentiles: each syscall timed in the guest by a
        small static helper (domains/tools/oplat.c) built on the host."""
        n = int(option(self, "metadata_ops", 200))
        d = f"{self.m.mountpoint}/meta"
        tool = await guest_tool(self, "oplat")
        await self.target.run(["mkdir", "-p", d], check=True)
        res = await self.target.run([tool, d, str(n)], timeout=600, check=True)
        per: dict[str, list[float]] = {"create": [], "stat": [], "unlink": []}
        for line in res.output.splitlines():
            parts = line.split()
            if len(parts) == 2 and parts[0] in per:
                per[parts[0]].append(int(parts[1]) / 1e6)
        metrics = {}
        for op, vals in per.items():
            if len(vals) != n:
                return failed(f"{op}: timed {len(vals)} of {n} operations")
            metrics[f"{op}_p50_ms"] = percentile(vals, 50)
            metrics[f"{op}_p99_ms"] = percentile(vals, 99)
        await self.target.run(["rm", "-rf", d])
        regressions = self._baseline("metadata_latency", metrics, set())
        msg = ", ".join(f"{op} p50 {metrics[f'{op}_p50_ms']:.3f} ms p99 {metrics[f'{op}_p99_ms']:.3f} ms" for op in per)
        return failed("; ".join(regressions), **metrics) if regressions else passed(msg, **metrics)

    @test_options(priority=25)
    async def test_mount_latency(self) -> TestResult:
        """mount + umount round trips of a second instance (the cost a workload pays per mount)."""
        cycles = int(option(self, "mount_cycles", 5))
        mounts, umounts = [], []
        for _ in range(cycles):
            t = await self.target.run(["true"])  # the link's own round trip, subtracted below
            m, took = await timed(self.mod.mount(f"{DEFAULT_MNT}-lat"))
            mounts.append(max(0.0, took - t.duration_s) * 1000)
            u = await self.mod.unmount(m)
            if not u.ok:
                return failed(f"umount failed: {u.first_line()}")
            umounts.append(max(0.0, u.duration_s - t.duration_s) * 1000)
        metrics = {"mount_p50_ms": percentile(mounts, 50), "umount_p50_ms": percentile(umounts, 50)}
        regressions = self._baseline("mount_latency", metrics, set())
        msg = f"mount p50 {metrics['mount_p50_ms']:.1f} ms, umount p50 {metrics['umount_p50_ms']:.1f} ms over {cycles} cycles"
        return failed("; ".join(regressions), **metrics) if regressions else passed(msg, **metrics)

    async def _cpu_mem(self) -> tuple[int, int, int]:
        res = await self.target.run("head -1 /proc/stat; grep -E '^(MemTotal|MemAvailable):' /proc/meminfo", check=True)
        lines = res.output.splitlines()
        cpu = [int(x) for x in lines[0].split()[1:]]
        idle = cpu[3] + cpu[4]
        mem = {ln.split(":")[0]: int(ln.split()[1]) for ln in lines[1:]}
        return sum(cpu), idle, mem["MemTotal"] - mem["MemAvailable"]

    @test_options(priority=30)
    async def test_guest_cpu_memory(self) -> TestResult:
        """Guest CPU busy % and memory in use while a write+read workload runs."""
        t0, i0, _ = await self._cpu_mem()
        f = f"{self.m.mountpoint}/load"
        await self.target.run(
            f"dd if=/dev/urandom of={q(f)} bs=1M count={self.mb} 2>&1 && cat {q(f)} > /dev/null", timeout=600, check=True
        )
        t1, i1, used_kb = await self._cpu_mem()
        await self.target.run(["rm", "-f", f])
        busy = 100.0 * (1 - (i1 - i0) / max(1, t1 - t0))
        metrics = {"guest_cpu_busy_pct": busy, "guest_mem_used_mb": used_kb / 1024}
        return passed(f"guest CPU {busy:.0f}% busy, {used_kb / 1024:.0f} MB in use during the workload", **metrics)

    @test_options(priority=40)
    async def test_scaling(self) -> TestResult:
        """Aggregate write throughput with 1, 2 and 4 parallel writers."""
        levels = [int(x) for x in option(self, "workers", [1, 2, 4])]
        per = max(1, self.mb // max(levels))
        metrics = {}
        for w in levels:
            cmd = " ".join(
                f"dd if=/dev/zero of={q(self.m.mountpoint)}/s{i} bs=1M count={per} conv=fsync 2>/dev/null &" for i in range(w)
            ) + " wait"
            res = await self.target.run(cmd, timeout=600, check=True)
            metrics[f"write_mb_s_{w}w"] = w * per / res.duration_s
            await self.target.run(f"rm -f {q(self.m.mountpoint)}/s*")
        regressions = self._baseline("scaling", metrics, set(metrics))
        msg = ", ".join(f"{w}w {metrics[f'write_mb_s_{w}w']:.1f} MB/s" for w in levels)
        return failed("; ".join(regressions), **metrics) if regressions else passed(msg, **metrics)
