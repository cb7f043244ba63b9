"""safety_validation: provoke real hangs, lockups, oopses, a panic and a leak, and check the
cockpit detects, classifies and recovers from each. Uses the module's fault knobs
(``options.knobs_dir``); a module without knobs gets those tests SKIPPED with the reason."""

from __future__ import annotations

import asyncio
import time

from vexfs_cockpit import TargetUnavailable, TestResult, TestStatus, failed, option, q, test_options, verdict, write_cmd

from domains._common import DEFAULT_MNT, ModuleDomain

# Taint bits an unsigned out-of-tree module sets on load: expected, not a finding.
EXPECTED_TAINT = (1 << 12) | (1 << 13)  # O (out-of-tree), E (unsigned)


class SafetyValidationDomain(ModuleDomain):
    """Hang and crash detection with recovery, leak detection, and a clean stress period."""

    mount_in_setup = False

    async def after_setup(self) -> bool:
        # The kernel's own detectors, tuned so reports arrive within the test's patience.
        hung = int(option(self, "hung_task_timeout_secs", 5))
        await self.target.run(write_cmd("/proc/sys/kernel/hung_task_timeout_secs", hung), check=True)
        self.knobs = str(option(self, "knobs_dir", f"/sys/kernel/debug/{self.mod.name}"))
        self.has_knobs = (await self.target.run(["test", "-e", f"{self.knobs}/warn"])).ok
        self.timeout = float(self.settings["hang_detection_timeout"])
        return True

    def _no_knobs(self) -> TestResult | None:
        if self.has_knobs:
            return None
        return TestResult(status=TestStatus.SKIPPED, message=f"no fault-injection knobs at {self.knobs}")

    async def _detect(self, kinds: set[str], since: int) -> tuple[object | None, float]:
        assert self.ctx.klog is not None, "safety tests need the VM's kernel log"
        t0 = time.monotonic()
        report = await self.ctx.klog.wait_for(kinds, since, self.timeout)
        return report, time.monotonic() - t0

    async def _recover(self, why: str) -> list[str]:
        """Reset the VM and bring the module back; return problems."""
        assert self.ctx.vm is not None
        await self.ctx.vm.reset(why)
        problems = []
        if not await self.ctx.vm.is_responsive(timeout=10):
            problems.append("guest not answering after reset")
            return problems
        await self.mod.push()  # the guest's /tmp did not survive the reset
        res = await self.mod.load()
        if not res.ok:
            problems.append(f"module did not load after reset: {res.first_line()}")
        return problems

    @test_options(priority=0, expects_kernel_events=["hung_task"], timeout=300)
    async def test_hang_detection(self) -> TestResult:
        if skip := self._no_knobs():
            return skip
        assert self.ctx.klog is not None
        since = self.ctx.klog.cursor()
        hold = int(self.timeout * 2)
        await self.target.run(write_cmd(f"{self.knobs}/hang", hold, background=True))
        report, took = await self._detect({"hung_task"}, since)
        await self.target.run(write_cmd(f"{self.knobs}/unhang", 1))
        problems = []
        if report is None:
            problems.append(f"no hung-task report within hang_detection_timeout {self.timeout:g}s")
        elif "hang_knob" not in report.title:  # type: ignore[attr-defined]
            problems.append(f"hung task attributed to the wrong function: {report.title}")  # type: ignore[attr-defined]
        gone = await self.target.run("for i in $(seq 50); do grep -q ' D ' /proc/*/stat 2>/dev/null || exit 0; sleep 0.1; done; exit 1")
        if not gone.ok:
            problems.append("the hung task did not return after unhang")
        title = getattr(report, "title", "")
        return verdict(problems, f"'{title}' detected in {took:.1f}s, task released, guest fine", hang_detect_s=took)

    @test_options(priority=10, expects_kernel_events=["soft_lockup", "rcu_stall"], timeout=300)
    async def test_soft_lockup_detection(self) -> TestResult:
        if skip := self._no_knobs():
            return skip
        assert self.ctx.klog is not None
        thresh = int(option(self, "watchdog_thresh", 2))
        await self.target.run(write_cmd("/proc/sys/kernel/watchdog_thresh", thresh), check=True)
        since = self.ctx.klog.cursor()
        spin = int(option(self, "softlockup_seconds", 10))
        try:
            await self.target.run(write_cmd(f"{self.knobs}/softlockup", spin, background=True), timeout=spin + 30)
        except TargetUnavailable:
            pass  # one vCPU spinning with preemption off: SSH may drop; the console still talks
        report, took = await self._detect({"soft_lockup"}, since)
        problems = [] if report else [f"no soft-lockup report within {self.timeout:g}s"]
        if self.ctx.vm and not await self.ctx.vm.is_responsive(timeout=spin + 30):
            problems += await self._recover("soft lockup did not end")
        return verdict(problems, f"'{getattr(report, 'title', '')}' detected in {took:.1f}s, guest recovered", lockup_detect_s=took)

    @test_options(priority=20, expects_kernel_events=["oops", "bug", "warning"], timeout=300)
    async def test_crash_recovery_oops(self) -> TestResult:
        if skip := self._no_knobs():
            return skip
        assert self.ctx.klog is not None
        since = self.ctx.klog.cursor()
        await self.target.run(write_cmd(f"{self.knobs}/oops", 1))  # the shell is killed: no check
        report, took = await self._detect({"oops"}, since)
        problems = [] if report else [f"no oops report within {self.timeout:g}s"]
        if report and "oops_knob" not in report.title:  # type: ignore[attr-defined]
            problems.append(f"oops attributed to {report.title}")  # type: ignore[attr-defined]
        problems += await self._recover("oops injected")
        return verdict(problems, f"'{getattr(report, 'title', '')}' classified in {took:.1f}s; VM reset, module reloaded", oops_detect_s=took)

    @test_options(priority=30, expects_kernel_events=["panic", "oops"], timeout=300)
    async def test_crash_recovery_panic(self) -> TestResult:
        assert self.ctx.klog is not None
        since = self.ctx.klog.cursor()
        try:
            await self.target.run("echo c > /proc/sysrq-trigger", timeout=10)
        except TargetUnavailable:
            pass  # the guest died under the command: that is the point
        report, took = await self._detect({"panic"}, since)
        problems = [] if report else [f"no panic report within {self.timeout:g}s"]
        problems += await self._recover("sysrq panic")
        return verdict(problems, f"'{getattr(report, 'title', '')}' in {took:.1f}s; VM reset, module reloaded", panic_detect_s=took)

    async def _slab_kb(self) -> int:
        res = await self.target.run("sync; echo 3 > /proc/sys/vm/drop_caches; grep '^SUnreclaim:' /proc/meminfo", check=True)
        return int(res.output.split()[1])

    @test_options(priority=40)
    async def test_resource_leak_detection(self) -> TestResult:
        params = option(self, "leak_params", "leak_on_unload=1" if self.has_knobs else None)
        if not params:
            return TestResult(status=TestStatus.SKIPPED, message="no leak_params configured for this module")
        threshold_kb = int(self.settings["memory_leak_threshold"]) / 1024
        await self.mod.ensure_unloaded()
        # Control: a clean load/unload must stay under the threshold...
        base = await self._slab_kb()
        await self.mod.load()
        await self.mod.unload()
        control = await self._slab_kb() - base
        # ...and the leaking one must be caught.
        base = await self._slab_kb()
        await self.mod.load(str(params))
        await self.mod.unload()
        leaked = await self._slab_kb() - base
        await self.mod.load()
        metrics = {"control_delta_kb": float(control), "leak_delta_kb": float(leaked)}
        problems = []
        if control > threshold_kb:
            problems.append(f"control load/unload already grew slab {control} kB")
        if leaked <= threshold_kb:
            problems.append(f"injected leak not detected: slab grew only {leaked} kB (threshold {threshold_kb:.0f} kB)")
        return verdict(problems, f"leak of {leaked} kB detected (control {control} kB)", **metrics)

    @test_options(priority=50)
    async def test_stability(self) -> TestResult:
        """A stress period of mixed I/O: no kernel report (the runner fails the test on any)
        and no new taint beyond the expected out-of-tree/unsigned bits."""
        seconds = int(option(self, "stress_seconds", 15))
        await self.mod.ensure_loaded()
        m = await self.mod.mount(f"{DEFAULT_MNT}-stress")
        taint0 = int((await self.target.run("cat /proc/sys/kernel/tainted", check=True)).output)
        worker = (
            f"end=$(( $(date +%s) + {seconds} )); n=0; while [ $(date +%s) -lt $end ]; do "
            f"d={q(m.mountpoint)}/w$W.$n; mkdir \"$d\" && dd if=/dev/urandom of=\"$d/f\" bs=4k count=8 2>/dev/null && "
            "cat \"$d/f\" > /dev/null && rm -r \"$d\" || exit 1; n=$((n+1)); done; echo $n"
        )
        runs = await asyncio.gather(
            *(self.target.run(f"W={w}; {worker}", timeout=seconds + 60) for w in range(3))
        )
        taint1 = int((await self.target.run("cat /proc/sys/kernel/tainted", check=True)).output)
        await self.mod.unmount(m)
        ops = sum(int(r.output.strip() or 0) for r in runs if r.ok and r.output.strip().isdigit())
        problems = [f"worker {i} failed: {r.first_line()}" for i, r in enumerate(runs) if not r.ok]
        new_taint = (taint1 & ~taint0) & ~EXPECTED_TAINT
        if new_taint:
            problems.append(f"kernel taint gained bits {new_taint:#x} during the stress period ({taint0} -> {taint1})")
        if not ops:
            return failed("no stress iterations completed")
        return verdict(problems, f"{ops} stress iterations in {seconds}s, no new taint", stress_iterations=float(ops))
