"""Engine tests: discovery, timeouts, retries, dependencies, critical stop, the event
stream and evidence. Domains act on a LocalTarget (real subprocesses on the host):
the unit under test is the runner, not a VM."""

from __future__ import annotations

import os
import sys
import textwrap
from contextlib import asynccontextmanager

import pytest

from tests.support.engine import LocalProvider  # noqa: F401
from vexfs_cockpit import DomainBase, TestResult, TestStatus, test_options
from vexfs_cockpit.config.models import CockpitConfig
from vexfs_cockpit.engine import events as ev
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.discovery import discover_domains
from vexfs_cockpit.engine.provider import Lease as LocalLease
from vexfs_cockpit.engine.runner import Runner, RunRequest
from vexfs_cockpit.errors import InfraError
from vexfs_cockpit.transport.local import LocalTarget


class Counting(DomainBase):
    """Counts in a state file on the target, so retries are driven by real state."""

    name = "counting"

    async def test_passes(self) -> TestResult:
        res = await self.target.run("echo hello", check=True)
        return TestResult(status=TestStatus.PASSED, message=res.output.strip(), metrics={"answer": 42.0})

    @test_options(retries=2)
    async def test_flaky_then_passes(self) -> TestResult:
        # Fails on the first attempt, passes on the second: the counter file is the truth.
        res = await self.target.run("n=$(cat flaky 2>/dev/null || echo 0); echo $((n+1)) > flaky; [ $n -ge 1 ]")
        return TestResult(status=TestStatus.PASSED if res.ok else TestStatus.FAILED, message=f"exit {res.exit_code}")

    @test_options(timeout=0.5)
    async def test_too_slow(self) -> TestResult:
        await self.target.run("echo $$ > slow.pid; exec sleep 30", timeout=60)
        return TestResult(status=TestStatus.PASSED)

    async def test_fails(self) -> TestResult:
        await self.target.run(["sh", "-c", "echo broken >&2; exit 3"], check=True)
        return TestResult(status=TestStatus.PASSED)

    @test_options(depends_on=["fails"])
    async def test_needs_fails(self) -> TestResult:
        return TestResult(status=TestStatus.PASSED)

    @test_options(depends_on=["passes"], priority=200)
    async def test_needs_passes(self) -> TestResult:
        return TestResult(status=TestStatus.PASSED)

    async def test_raises(self) -> TestResult:
        raise RuntimeError("boom")


class Critical(DomainBase):
    name = "critical"

    @test_options(critical=True)
    async def test_first(self) -> TestResult:
        res = await self.target.run("false")
        return TestResult(status=TestStatus.PASSED if res.ok else TestStatus.FAILED, message="false is false")

    async def test_second(self) -> TestResult:
        return TestResult(status=TestStatus.PASSED)


class SetupMissing(DomainBase):
    name = "setup_missing"

    async def setup_domain(self) -> bool:
        res = await self.target.run("test -e /nonexistent/module.ko")
        if not res.ok:
            self.prerequisite_missing = "module did not build against 9.9.9-test"
            return False
        return True

    async def test_uses_module(self) -> TestResult:
        return TestResult(status=TestStatus.PASSED)


def _config(**execution) -> CockpitConfig:
    cfg = CockpitConfig()
    for k, v in execution.items():
        setattr(cfg.execution, k, v)
    return cfg


async def _run(tmp_path, registry, domains, provider=None, **execution):
    bus = EventBus()
    sub = bus.subscribe()
    provider = provider or LocalProvider(tmp_path)
    runner = Runner(bus, provider, registry)
    summary = await runner.execute(
        RunRequest(config=_config(**execution), domains=domains, run_id="r1", artifacts_dir=tmp_path / "art")
    )
    bus.close()
    events = [e async for e in sub]
    return summary, events


def _by_name(summary):
    return {r.name: r for r in summary.results}


async def test_statuses_retries_timeouts_dependencies(tmp_path):
    summary, events = await _run(tmp_path, {"counting": Counting}, ["counting"])
    r = _by_name(summary)
    assert r["passes"].status is TestStatus.PASSED and r["passes"].message == "hello"
    assert r["passes"].metrics == {"answer": 42.0}

    flaky = r["flaky_then_passes"]
    assert flaky.status is TestStatus.PASSED
    assert [a.status for a in flaky.attempts] == [TestStatus.FAILED, TestStatus.PASSED]

    slow = r["too_slow"]
    assert slow.status is TestStatus.TIMEOUT and "0.5s" in slow.message
    pid = int((tmp_path / "slow.pid").read_text())
    with pytest.raises(ProcessLookupError):  # the timeout killed the command, not just the await
        os.kill(pid, 0)

    fails = r["fails"]
    assert fails.status is TestStatus.FAILED and "exit 3" in fails.message and "broken" in fails.message
    assert fails.evidence.commands[-1].exit_code == 3

    assert r["needs_fails"].status is TestStatus.SKIPPED
    assert r["needs_fails"].message.startswith("dependency fails failed")
    assert r["needs_passes"].status is TestStatus.PASSED
    assert r["raises"].status is TestStatus.ERROR and r["raises"].message == "RuntimeError: boom"
    assert summary.status == "failed" and summary.exit_code == 1
    # priority 200 runs last
    finished = [e.result.name for e in events if isinstance(e, ev.TestFinished)]
    assert finished[-1] == "needs_passes"


async def test_event_stream_shape(tmp_path):
    summary, events = await _run(tmp_path, {"counting": Counting}, ["counting"])
    kinds = [type(e).__name__ for e in events]
    assert kinds[0] == "RunStarted" and kinds[1] == "DomainStarted"
    assert kinds[-2:] == ["DomainFinished", "RunFinished"]
    started = [e for e in events if isinstance(e, ev.TestStarted)]
    assert [e.attempt for e in started if e.test == "flaky_then_passes"] == [1, 2]
    metrics = [e for e in events if isinstance(e, ev.MetricRecorded)]
    assert [(m.test, m.name, m.value) for m in metrics] == [("passes", "answer", 42.0)]
    fin = events[-1]
    assert isinstance(fin, ev.RunFinished) and fin.counts == summary.counts
    assert fin.counts["PASSED"] == 3 and fin.counts["SKIPPED"] == 1


async def test_evidence_records_every_command(tmp_path):
    summary, _ = await _run(tmp_path, {"counting": Counting}, ["counting"])
    cmds = _by_name(summary)["fails"].evidence.commands
    assert [c.cmd for c in cmds] == ["sh -c 'echo broken >&2; exit 3'"]
    assert "broken" in cmds[0].output_tail


async def test_critical_failure_stops_domain(tmp_path):
    summary, _ = await _run(tmp_path, {"critical": Critical}, ["critical"])
    r = _by_name(summary)
    assert r["first"].status is TestStatus.FAILED
    assert r["second"].status is TestStatus.SKIPPED and "critical test first failed" in r["second"].message


async def test_missing_prerequisite_skips_with_reason(tmp_path):
    summary, _ = await _run(tmp_path, {"setup_missing": SetupMissing}, ["setup_missing"])
    r = _by_name(summary)["uses_module"]
    assert r.status is TestStatus.SKIPPED and r.message == "module did not build against 9.9.9-test"


async def test_infra_error_marks_run_errored(tmp_path):
    provider = LocalProvider(tmp_path, fail="cannot reach libvirt at qemu:///nowhere: start libvirtd")
    summary, events = await _run(tmp_path, {"counting": Counting}, ["counting"], provider=provider)
    assert summary.status == "errored" and summary.exit_code == 3
    assert all(r.status is TestStatus.ERROR for r in summary.results)
    assert any(isinstance(e, ev.InfraProblem) and "qemu:///nowhere" in e.message for e in events)


class TeardownFails(LocalProvider):
    """The VM's release fails (e.g. libvirt lost the domain while it was torn down)."""

    @asynccontextmanager
    async def lease(self, domain: str, index: int):
        yield LocalLease(vm_name=f"local-{domain}", target=LocalTarget(name="local", cwd=self.workdir))
        raise InfraError(f"cannot destroy VM local-{domain}: domain not found")


async def test_a_failed_vm_release_keeps_the_domains_results(tmp_path):
    summary, events = await _run(tmp_path, {"critical": Critical}, ["critical"], provider=TeardownFails(tmp_path))
    r = _by_name(summary)
    assert r["first"].status is TestStatus.FAILED and r["second"].status is TestStatus.SKIPPED
    problems = [e for e in events if isinstance(e, ev.InfraProblem)]
    assert [p.vm for p in problems] == ["local-critical"]
    assert "cannot destroy VM local-critical" in problems[0].message
    assert isinstance(events[-1], ev.RunFinished) and summary.status == "errored"


async def test_domains_run_in_parallel_up_to_the_cap(tmp_path):
    """Two domains each wait on a barrier file the other creates: only parallel runs finish."""

    class A(DomainBase):
        name = "a"

        async def test_meet(self) -> TestResult:
            res = await self.target.run("touch a.here; for i in $(seq 40); do [ -e b.here ] && exit 0; sleep 0.05; done; exit 1", timeout=10)
            return TestResult(status=TestStatus.PASSED if res.ok else TestStatus.FAILED)

    class B(DomainBase):
        name = "b"

        async def test_meet(self) -> TestResult:
            res = await self.target.run("touch b.here; for i in $(seq 40); do [ -e a.here ] && exit 0; sleep 0.05; done; exit 1", timeout=10)
            return TestResult(status=TestStatus.PASSED if res.ok else TestStatus.FAILED)

    summary, _ = await _run(tmp_path, {"a": A, "b": B}, ["a", "b"], parallel_test_execution=True, max_parallel_tests=2)
    assert summary.status == "passed"
    (tmp_path / "a.here").unlink()
    (tmp_path / "b.here").unlink()
    serial, _ = await _run(tmp_path, {"a": A, "b": B}, ["a", "b"])
    assert serial.status == "failed"  # one at a time, the first never meets the second


def test_discovery_picks_up_a_dropped_in_module(tmp_path, monkeypatch):
    pkg = tmp_path / "mydomains"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    # The example, with only its import line changed.
    (pkg / "custom_check.py").write_text(textwrap.dedent('''
        from vexfs_cockpit import DomainBase, TestResult, TestStatus

        class CustomDomain(DomainBase):
            def get_domain_description(self) -> str:
                return "custom checks"
            async def setup_domain(self) -> bool:
                return True
            async def teardown_domain(self) -> bool:
                return True
            async def validate_domain_constraints(self) -> bool:
                return True
            async def test_custom_functionality(self) -> TestResult:
                return TestResult(status=TestStatus.PASSED, message="ok")
    '''))
    monkeypatch.syspath_prepend(str(tmp_path))
    found = discover_domains("mydomains")
    assert list(found) == ["custom_check"]
    assert [t.name for t in found["custom_check"].discover_tests()] == ["custom_functionality"]
    sys.modules.pop("mydomains.custom_check", None)


def test_discovery_reports_a_broken_plugin_in_one_line(tmp_path, monkeypatch):
    pkg = tmp_path / "brokendomains"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "oops.py").write_text("import does_not_exist_anywhere\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    from vexfs_cockpit.errors import ConfigError

    with pytest.raises(ConfigError) as err:
        discover_domains("brokendomains")
    assert str(err.value) == (
        "brokendomains.oops: cannot import domain plugin: ModuleNotFoundError: No module named 'does_not_exist_anywhere'"
    )


def test_sync_test_method_is_rejected():
    class Bad(DomainBase):
        def test_sync(self):  # not async
            return None

    with pytest.raises(TypeError, match="must be `async def`"):
        Bad.discover_tests()


async def test_rerunning_one_test_brings_its_dependencies(tmp_path):
    bus = EventBus()
    summary = await Runner(bus, LocalProvider(tmp_path), {"counting": Counting}).execute(
        RunRequest(
            config=_config(), domains=["counting"], run_id="r2", artifacts_dir=tmp_path / "a",
            only_tests={"counting": {"needs_passes"}},
        )
    )
    assert [(r.name, r.status) for r in summary.results] == [
        ("passes", TestStatus.PASSED),
        ("needs_passes", TestStatus.PASSED),
    ]


async def test_a_run_where_everything_skipped_is_not_a_pass(tmp_path):
    summary, events = await _run(tmp_path, {"setup_missing": SetupMissing}, ["setup_missing"])
    assert summary.status == "failed" and summary.exit_code == 1
    assert events[-1].reason == "no test passed: every test was skipped"


async def test_an_unreachable_host_is_reported_once_and_not_retried_per_domain(tmp_path):
    from vexfs_cockpit.errors import HostUnavailable

    class DownProvider(LocalProvider):
        @asynccontextmanager
        async def lease(self, domain, index):
            self.leased.append(domain)
            raise HostUnavailable("cannot reach libvirt at qemu:///nowhere: start libvirtd")
            yield  # pragma: no cover

    provider = DownProvider(tmp_path)
    summary, events = await _run(tmp_path, {"counting": Counting, "critical": Critical}, ["counting", "critical"], provider=provider)
    assert provider.leased == ["counting"]  # the second domain did not try again
    assert summary.status == "errored" and all(r.status is TestStatus.ERROR for r in summary.results)
    assert [e.message for e in events if isinstance(e, ev.InfraProblem)] == ["cannot reach libvirt at qemu:///nowhere: start libvirtd"]
    assert events[-1].reason == "cannot reach libvirt at qemu:///nowhere: start libvirtd"


class PlanningProvider(LocalProvider):
    """A LocalProvider that knows its leases' kernel before booting (as LibvirtProvider
    does for the direct-kernel guest)."""

    kernel = "9.9.9-planned"

    async def planned_guest_kernel(self) -> str:
        return self.kernel


class BuildsOnHost(DomainBase):
    """Its 'module' builds on the host: ``make.sh`` in the workdir's parent decides."""

    name = "builds_on_host"
    seen: list[tuple[str, str]] = []

    async def prepare_host(self) -> bool:
        assert self.ctx.host is not None
        res = await self.ctx.host.run(["sh", str(self.ctx.workdir.parent.parent / "make.sh"), self.ctx.guest_kernel])
        BuildsOnHost.seen.append((self.ctx.guest_kernel, res.output.strip()))
        if not res.ok:
            self.prerequisite_missing = f"module did not build against {self.ctx.guest_kernel}: {res.first_line()}"
        return res.ok

    async def test_uses_module(self) -> TestResult:
        return TestResult(status=TestStatus.PASSED, message=(await self.target.run("echo on-the-vm", check=True)).first_line())


class TouchesGuestEarly(DomainBase):
    name = "touches_guest_early"

    async def prepare_host(self) -> bool:
        await self.target.run("true")  # a bug: there is no guest yet
        return True

    async def test_anything(self) -> TestResult:
        return TestResult(status=TestStatus.PASSED)


async def _run_on_host(tmp_path, registry, domains, provider):
    bus = EventBus()
    sub = bus.subscribe()
    runner = Runner(bus, provider, registry, host=LocalTarget(name="host", cwd=tmp_path))
    summary = await runner.execute(
        RunRequest(config=_config(), domains=domains, run_id="r1", artifacts_dir=tmp_path / "art")
    )
    bus.close()
    return summary, [e async for e in sub]


@pytest.mark.parametrize("compiles", [True, False])
async def test_prepare_host_runs_before_any_vm_and_a_failure_boots_none(tmp_path, compiles):
    (tmp_path / "make.sh").write_text(
        "echo building for $1\n" + ("exit 0\n" if compiles else "echo 'main.c:3: error: no_such_helper' >&2; exit 2\n")
    )
    BuildsOnHost.seen = []
    provider = PlanningProvider(tmp_path)
    summary, events = await _run_on_host(tmp_path, {"builds_on_host": BuildsOnHost}, ["builds_on_host"], provider)
    assert BuildsOnHost.seen == [("9.9.9-planned", "building for 9.9.9-planned" + ("" if compiles else "\nmain.c:3: error: no_such_helper"))]
    r = _by_name(summary)["uses_module"]
    done = next(e for e in events if isinstance(e, ev.DomainFinished))
    if compiles:
        assert provider.leased == ["builds_on_host"]
        assert r.status is TestStatus.PASSED and r.message == "on-the-vm"
    else:
        assert provider.leased == []  # no VM for a module that does not compile
        assert r.status is TestStatus.SKIPPED
        assert r.message == "module did not build against 9.9.9-planned: building for 9.9.9-planned"
        assert done.status == "skipped" and done.reason == r.message
        assert next(e for e in events if isinstance(e, ev.DomainStarted)).vm == ""
        assert not [e for e in events if isinstance(e, ev.InfraProblem)]  # a build failure is not infrastructure


async def test_prepare_host_waits_for_a_vm_when_the_kernel_is_not_known_before_boot(tmp_path):
    (tmp_path / "make.sh").write_text("exit 2\n")
    BuildsOnHost.seen = []
    provider = LocalProvider(tmp_path)  # no planned_guest_kernel: the domain prepares on its VM
    summary, _ = await _run_on_host(tmp_path, {"builds_on_host": BuildsOnHost}, ["builds_on_host"], provider)
    assert BuildsOnHost.seen == [] and provider.leased == ["builds_on_host"]
    assert _by_name(summary)["uses_module"].status is TestStatus.PASSED


async def test_prepare_host_cannot_reach_the_guest(tmp_path):
    provider = PlanningProvider(tmp_path)
    summary, _ = await _run_on_host(tmp_path, {"touches_guest_early": TouchesGuestEarly}, ["touches_guest_early"], provider)
    r = _by_name(summary)["anything"]
    assert provider.leased == []
    assert r.status is TestStatus.SKIPPED
    assert "prepare_host raised RuntimeError" in r.message and "before it booted" in r.message
