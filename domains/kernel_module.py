"""kernel_module: build, load, unload, stress, leak and error paths of the module under test."""

from __future__ import annotations

import asyncio

from vexfs_cockpit import (
    DomainBase,
    TestResult,
    errno_problem,
    failed,
    option,
    passed,
    percentile,
    q,
    sysfs_params_cmd,
    sysfs_state_cmd,
    test_options,
    verdict,
)

from domains._common import DEFAULT_MNT, ModuleUnderTest

NEEDS_BUILD = ("module_build",)


class KernelModuleDomain(DomainBase):
    """Build, load, unload, stress and leak-check the module under test."""

    async def setup_domain(self) -> bool:
        self.mod = ModuleUnderTest(self)
        await self.mod.cleanup()  # a previous domain run on this VM may have left it loaded
        return True

    async def teardown_domain(self) -> bool:
        await self.mod.cleanup()
        return True

    @test_options(priority=0, critical=False, tags=["build"])
    async def test_module_build(self) -> TestResult:
        make_args = tuple(option(self, "make_args", ()))
        build = await self.mod.kbuild(make_args, reuse_identical=bool(option(self, "reuse_identical_build", False)))
        if not build.ok:
            # The compiler's first errors are the evidence a developer needs first.
            res = failed(build.message, build_time_s=build.duration_s)
            res.artifacts["compiler_errors"] = "\n".join(build.errors)
            res.artifacts["build_output_tail"] = build.output[-4000:]
            return res
        await self.mod.push()
        return passed(build.message, build_time_s=build.duration_s)

    @test_options(depends_on=NEEDS_BUILD, priority=5)
    async def test_module_info(self) -> TestResult:
        """The built .ko says what it is: vermagic of the guest kernel, a license, a description."""
        ko = self.mod.built_ko()
        assert ko is not None and self.ctx.host is not None
        info = await self.ctx.host.run(["modinfo", str(ko)], check=True)
        fields: dict[str, str] = {}
        for line in info.output.splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())
        problems = []
        vermagic = fields.get("vermagic", "")
        if not vermagic.startswith(self.ctx.guest_kernel + " "):
            problems.append(f"vermagic {vermagic!r} does not match the guest kernel {self.ctx.guest_kernel}")
        if not fields.get("license"):
            problems.append("no MODULE_LICENSE: the kernel would taint it as proprietary (P)")
        if fields.get("name", self.mod.name) != self.mod.name:
            problems.append(f"module name {fields.get('name')!r} != configured module_name {self.mod.name!r}")
        return verdict(problems, f"vermagic {vermagic.split()[0]}, license {fields.get('license')}")

    @test_options(depends_on=NEEDS_BUILD, priority=6)
    async def test_module_sysfs_state(self) -> TestResult:
        """After insmod: /sys/module/<name> is live, refcount 0, and every writable parameter
        that modinfo lists is readable there."""
        ko = self.mod.built_ko()
        assert ko is not None and self.ctx.host is not None
        params = (await self.ctx.host.run(["modinfo", "-F", "parm", str(ko)])).output.splitlines()
        names = [p.split(":", 1)[0] for p in params if p.strip()]
        await self.mod.ensure_unloaded()
        res = await self.mod.load()
        if not res.ok:
            return failed(f"insmod failed: {res.first_line()}")
        state = await self.target.run(sysfs_state_cmd(self.mod.name))
        problems = []
        if state.output.split() != ["live", "0"]:
            problems.append(f"initstate/refcnt = {' '.join(state.output.split())}, expected live 0")
        listed = await self.target.run(sysfs_params_cmd(self.mod.name))
        present = set(listed.output.split())
        missing = [n for n in names if n not in present]
        if present and missing:
            problems.append(f"parameters not in sysfs: {', '.join(missing)}")
        await self.mod.unload()
        return verdict(problems, f"live, refcnt 0, {len(present)} parameters in sysfs")

    @test_options(depends_on=NEEDS_BUILD, priority=10)
    async def test_module_load_basic(self) -> TestResult:
        await self.mod.ensure_unloaded()
        res = await self.mod.load()
        if not res.ok:
            return failed(f"insmod failed: {res.first_line()}")
        problems = []
        module, fs = await self.mod.registered()
        if not module:
            problems.append(f"{self.mod.name} not in /proc/modules after insmod")
        if not fs:
            problems.append(f"filesystem {self.mod.fs_type} not registered in /proc/filesystems")
        limit = float(self.settings["max_load_time"])
        if res.duration_s > limit:
            problems.append(f"load took {res.duration_s:.2f}s > max_load_time {limit:g}s")
        return verdict(problems, f"loaded in {res.duration_s * 1000:.0f} ms", load_time_ms=res.duration_s * 1000)

    @test_options(depends_on=("module_load_basic",), priority=11)
    async def test_module_unload_basic(self) -> TestResult:
        await self.mod.ensure_loaded()
        res = await self.mod.unload()
        if not res.ok:
            return failed(f"rmmod failed: {res.first_line()}")
        problems = []
        module, fs = await self.mod.registered()
        if module:
            problems.append(f"{self.mod.name} still in /proc/modules after rmmod")
        if fs:
            problems.append(f"filesystem {self.mod.fs_type} still registered after rmmod")
        limit = float(self.settings["max_unload_time"])
        if res.duration_s > limit:
            problems.append(f"unload took {res.duration_s:.2f}s > max_unload_time {limit:g}s")
        return verdict(problems, f"unloaded in {res.duration_s * 1000:.0f} ms", unload_time_ms=res.duration_s * 1000)

    @test_options(depends_on=NEEDS_BUILD, priority=20)
    async def test_module_lifecycle_stress(self) -> TestResult:
        cycles = int(option(self, "stress_cycles", 10))
        await self.mod.ensure_unloaded()
        loads, unloads = [], []
        for i in range(cycles):
            res = await self.mod.load()
            if not res.ok:
                return failed(f"cycle {i + 1}/{cycles}: insmod failed: {res.first_line()}")
            loads.append(res.duration_s * 1000)
            res = await self.mod.unload()
            if not res.ok:
                return failed(f"cycle {i + 1}/{cycles}: rmmod failed: {res.first_line()}")
            unloads.append(res.duration_s * 1000)
        metrics = {
            "load_p50_ms": percentile(loads, 50),
            "load_p99_ms": percentile(loads, 99),
            "unload_p50_ms": percentile(unloads, 50),
            "unload_p99_ms": percentile(unloads, 99),
            "cycles": float(cycles),
        }
        return passed(
            f"{cycles} load/unload cycles, load p50 {metrics['load_p50_ms']:.0f} ms p99 {metrics['load_p99_ms']:.0f} ms",
            **metrics,
        )

    async def _unreclaimable_kb(self) -> tuple[int, int]:
        """(SUnreclaim, MemAvailable) in kB after dropping caches: kmalloc leaks land in SUnreclaim."""
        res = await self.target.run(
            "sync; echo 3 > /proc/sys/vm/drop_caches; grep -E '^(SUnreclaim|MemAvailable):' /proc/meminfo", check=True
        )
        vals = {ln.split(":")[0]: int(ln.split()[1]) for ln in res.output.splitlines() if ":" in ln}
        return vals["SUnreclaim"], vals["MemAvailable"]

    @test_options(depends_on=NEEDS_BUILD, priority=30)
    async def test_memory_leak_detection(self) -> TestResult:
        cycles = int(option(self, "leak_cycles", 5))
        threshold_kb = int(self.settings["memory_leak_threshold"]) / 1024
        await self.mod.ensure_unloaded()
        kmemleak = (await self.target.run("test -w /sys/kernel/debug/kmemleak")).ok
        if kmemleak:
            await self.target.run("echo clear > /sys/kernel/debug/kmemleak")
        # Warm up once so first-use allocations (module loader caches) are not counted.
        await self.mod.load()
        await self.mod.unload()
        slab0, avail0 = await self._unreclaimable_kb()
        for i in range(cycles):
            if not (await self.mod.load()).ok:
                return failed(f"cycle {i + 1}: insmod failed")
            m = await self.mod.mount(DEFAULT_MNT)
            await self.target.run(f"dd if=/dev/zero of={q(m.mountpoint)}/leak bs=4k count=64 2>&1", check=True)
            await self.mod.unmount(m)
            if not (await self.mod.unload()).ok:
                return failed(f"cycle {i + 1}: rmmod failed")
        slab1, avail1 = await self._unreclaimable_kb()
        slab_delta, avail_delta = slab1 - slab0, avail0 - avail1
        metrics = {"slab_delta_kb": float(slab_delta), "memavailable_drop_kb": float(avail_delta)}
        problems = []
        if slab_delta > threshold_kb:
            problems.append(
                f"unreclaimable slab grew {slab_delta} kB over {cycles} cycles (memory_leak_threshold {threshold_kb:.0f} kB)"
            )
        if kmemleak:
            await self.target.run("echo scan > /sys/kernel/debug/kmemleak", timeout=120)
            leaks = await self.target.run("grep -c 'unreferenced object' /sys/kernel/debug/kmemleak")
            n = int(leaks.output.strip() or 0) if leaks.output.strip().isdigit() else 0
            metrics["kmemleak_objects"] = float(n)
            if n:
                problems.append(f"kmemleak reports {n} unreferenced objects")
        return verdict(problems, f"slab delta {slab_delta} kB over {cycles} cycles (threshold {threshold_kb:.0f} kB)", **metrics)

    @test_options(depends_on=NEEDS_BUILD, priority=40)
    async def test_system_hang_prevention(self) -> TestResult:
        """Every lifecycle step completes within hang_detection_timeout and the guest keeps answering."""
        limit = float(self.settings["hang_detection_timeout"])
        armed = await self.target.run("cat /proc/sys/kernel/hung_task_timeout_secs")
        await self.mod.ensure_unloaded()
        steps: list[tuple[str, float]] = []
        res = await self.mod.load(timeout=limit)
        steps.append(("insmod", res.duration_s))
        m = await self.mod.mount(DEFAULT_MNT)
        for name, cmd in (
            ("write", f"dd if=/dev/urandom of={q(m.mountpoint)}/h bs=64k count=16 2>&1"),
            ("sync", "sync"),
            ("read", f"cat {q(m.mountpoint)}/h > /dev/null"),
            ("unlink", f"rm {q(m.mountpoint)}/h"),
        ):
            r = await self.target.run(cmd, timeout=limit)
            steps.append((name, r.duration_s))
            if r.timed_out:
                return failed(f"{name} did not finish within hang_detection_timeout {limit:g}s")
        r = await self.mod.unmount(m)
        steps.append(("umount", r.duration_s))
        r = await self.mod.unload(timeout=limit)
        steps.append(("rmmod", r.duration_s))
        responsive = await self.ctx.vm.is_responsive(timeout=5) if self.ctx.vm else True
        problems = [f"{n} took {d:.1f}s" for n, d in steps if d > limit]
        if not responsive:
            problems.append("guest stopped answering")
        slowest = max(steps, key=lambda s: s[1])
        return verdict(
            problems,
            f"{len(steps)} steps, slowest {slowest[0]} {slowest[1] * 1000:.0f} ms; hung-task timeout {armed.output.strip()}s",
            slowest_step_ms=slowest[1] * 1000,
        )

    @test_options(depends_on=NEEDS_BUILD, priority=50)
    async def test_concurrent_operations(self) -> TestResult:
        """Parallel mounts with I/O in each, started while the module is loading."""
        n = int(option(self, "concurrent_mounts", 3))
        await self.mod.ensure_unloaded()
        load = asyncio.ensure_future(self.mod.load())
        await load
        if not load.result().ok:
            return failed(f"insmod failed: {load.result().first_line()}")
        mounts = await asyncio.gather(*(self.mod.mount(f"{DEFAULT_MNT}-c{i}") for i in range(n)))

        async def io(mp: str, i: int) -> str | None:
            w = await self.target.run(
                f"dd if=/dev/urandom of={q(mp)}/f bs=4k count=32 2>/dev/null && sha256sum {q(mp)}/f | cut -d' ' -f1 && "
                f"cp {q(mp)}/f {q(mp)}/g && sha256sum {q(mp)}/g | cut -d' ' -f1"
            )
            sums = w.output.split()
            if not w.ok or len(sums) != 2 or sums[0] != sums[1]:
                return f"mount {i}: copy checksum mismatch or I/O error ({w.first_line()})"
            return None

        errors = [e for e in await asyncio.gather(*(io(m.mountpoint, i) for i, m in enumerate(mounts))) if e]
        for m in mounts:
            r = await self.mod.unmount(m)
            if not r.ok:
                errors.append(f"umount {m.mountpoint}: {r.first_line()}")
        r = await self.mod.unload()
        if not r.ok:
            errors.append(f"rmmod after concurrent use failed: {r.first_line()}")
        return verdict(errors, f"{n} concurrent mounts with I/O, all checksums match", concurrent_mounts=float(n))

    @test_options(depends_on=NEEDS_BUILD, priority=60)
    async def test_error_handling_validation(self) -> TestResult:
        problems: list[str] = []
        await self.mod.ensure_unloaded()
        checked = []
        # Unknown parameters are only warned about by the kernel, so the config names a
        # value the module itself must reject (the self-test module: max_files=0).
        bad = option(self, "bad_params", None)
        if bad:
            r = await self.mod.load(str(bad))
            checked.append("bad params rejected")
            if r.ok:
                problems.append(f"insmod with bad parameters '{bad}' succeeded")
                await self.mod.unload()
        r = await self.mod.load()
        if not r.ok:
            return failed(f"insmod failed: {r.first_line()}")
        dbl = await self.mod.load()
        if p := errno_problem(dbl, "EEXIST", "double insmod"):
            problems.append(p)
        m = await self.mod.mount(DEFAULT_MNT)
        busy = await self.mod.unload()
        if busy.ok:
            problems.append("rmmod while mounted succeeded (expected EBUSY)")
        # rmmod asks with O_NONBLOCK, so an in-use module answers EAGAIN (EWOULDBLOCK), not EBUSY.
        elif not any(w in busy.output.lower() for w in ("in use", "busy", "resource temporarily unavailable")):
            problems.append(f"rmmod while mounted: expected EBUSY, got: {busy.first_line()}")
        await self.mod.unmount(m)
        final = await self.mod.unload()
        if not final.ok:
            problems.append(f"rmmod after umount failed: {final.first_line()}")
        checked += ["double load EEXIST", "unload while mounted EBUSY"]
        return verdict(problems, ", ".join(checked) + ("" if bad else " (no bad_params configured)"))
