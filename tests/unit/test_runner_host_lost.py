"""A host lost while a domain runs on it (issue 18 item 3): the runner sends the
domain's unfinished tests to a VM leased anew (the provider places it on a host left),
keeps what finished, and with no host left reports the rest as infrastructure errors
naming the lost host. A lease that cannot tell its host is lost (one host) is as before.

Each "host" is a directory on this machine; a target on a dead host raises
TargetUnavailable, as an SSH link through a vanished host does."""

from __future__ import annotations

import asyncio
from contextlib import asynccontextmanager
from pathlib import Path

from vexfs_cockpit import DomainBase, TestResult, TestStatus, test_options
from vexfs_cockpit.config.models import CockpitConfig
from vexfs_cockpit.engine import events as ev
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.provider import Lease
from vexfs_cockpit.engine.runner import Runner, RunRequest
from vexfs_cockpit.engine.target import TargetUnavailable
from vexfs_cockpit.errors import HostUnavailable
from vexfs_cockpit.transport.local import LocalTarget


class Staged(DomainBase):
    """``build`` leaves a file on its VM that ``load`` needs, like a pushed module."""

    name = "staged"

    @test_options(priority=0)
    async def test_build(self) -> TestResult:
        await self.target.run("echo module > built.ko", check=True)
        return TestResult(status=TestStatus.PASSED, message="built")

    @test_options(depends_on=["build"], priority=10)
    async def test_load(self) -> TestResult:
        res = await self.target.run("cat built.ko", check=True)
        return TestResult(status=TestStatus.PASSED, message=res.output.strip())

    @test_options(priority=20)
    async def test_after(self) -> TestResult:
        await self.target.run("true", check=True)
        return TestResult(status=TestStatus.PASSED, message="after")


class HostTarget(LocalTarget):
    """A command on a dead host never reaches it."""

    def __init__(self, hosts: Hosts, host: str, cwd: Path):
        super().__init__(name=f"vm-on-{host}", cwd=cwd)
        self.hosts, self.host = hosts, host

    async def run(self, cmd, **kw):  # type: ignore[no-untyped-def, override]
        if self.host in self.hosts.dead:
            raise TargetUnavailable(f"SSH to the guest on {self.host}: connection lost")
        return await super().run(cmd, **kw)


class Hosts:
    """Leases on the first host not dead, a fresh directory (VM) each; says through
    ``extra["host_lost"]`` when the lease's host is gone (unless ``tells`` is off)."""

    def __init__(self, workdir: Path, names: list[str], tells: bool = True, signals: bool = False):
        self.workdir, self.names, self.tells, self.signals = workdir, names, tells, signals
        self.dead: set[str] = set()
        self.leases: list[str] = []
        self.gone = {h: asyncio.Event() for h in names}  # set when the host dies (its libvirt link closes)

    def kill(self, host: str) -> None:
        self.dead.add(host)
        self.gone[host].set()

    async def _wait_gone(self, host: str) -> str:
        await self.gone[host].wait()
        return f"lost the libvirt connection to {host}"

    @asynccontextmanager
    async def lease(self, domain: str, index: int):
        host = next((h for h in self.names if h not in self.dead), None)
        if host is None:
            raise HostUnavailable(f"every host is lost: {', '.join(f'{h}: connection closed' for h in sorted(self.dead))}")
        self.leases.append(host)
        d = self.workdir / f"lease-{len(self.leases)}-{host}"
        d.mkdir(parents=True)
        extra: dict[str, object] = {"host": host}
        if self.tells:
            extra["host_lost"] = lambda: f"host {host} lost (connection closed)" if host in self.dead else ""
        if self.signals:
            extra["host_gone"] = lambda: self._wait_gone(host)
        yield Lease(vm_name=f"vm-{domain}-{host}", target=HostTarget(self, host, d), extra=extra)

    async def aclose(self) -> None:
        pass


class Hung(DomainBase):
    """``wait`` never returns on host a: an SSH link through a vanished host that hangs
    instead of breaking (no error, no heartbeat here to notice)."""

    name = "hung"

    @test_options(priority=0)
    async def test_build(self) -> TestResult:
        return TestResult(status=TestStatus.PASSED, message="built")

    @test_options(priority=10)
    async def test_wait(self) -> TestResult:
        if self.target.name == "vm-on-a":
            await asyncio.Event().wait()
        return TestResult(status=TestStatus.PASSED, message=f"on {self.target.name}")


async def test_a_test_hung_on_a_host_that_is_gone_moves_the_moment_the_provider_says_so(tmp_path: Path) -> None:
    """The provider's ``host_gone`` (the host's libvirt connection closed) stops the test
    on the lost host at once; it runs again on a VM leased anew."""
    hosts = Hosts(tmp_path, ["a", "b"], signals=True)
    bus = EventBus()
    sub = bus.subscribe()
    bus.listen(lambda e: hosts.kill("a") if isinstance(e, ev.TestStarted) and e.test == "wait" and "-a" in e.vm
               else None)
    summary = await Runner(bus, hosts, {"hung": Hung}).execute(
        RunRequest(config=CockpitConfig(), domains=["hung"], run_id="r1", artifacts_dir=tmp_path / "art"))
    bus.close()
    events = [e async for e in sub]
    assert hosts.leases == ["a", "b"]
    assert _finished(events) == [("build", TestStatus.PASSED, "built"), ("wait", TestStatus.PASSED, "on vm-on-b")]
    assert summary.status == "passed"
    assert [e.message for e in events if isinstance(e, ev.InfraProblem)] == [
        "hung: host a lost (connection closed): its 1 unfinished test(s) go to a VM leased anew"]


async def _run(tmp_path: Path, hosts: Hosts):
    """Run ``staged``; host ``a`` dies once ``build`` finished (before ``load`` starts)."""
    bus = EventBus()
    sub = bus.subscribe()

    def kill_a(e: ev.Event) -> None:
        if isinstance(e, ev.TestFinished) and e.result.name == "build":
            hosts.dead.add("a")

    bus.listen(kill_a)
    summary = await Runner(bus, hosts, {"staged": Staged}).execute(
        RunRequest(config=CockpitConfig(), domains=["staged"], run_id="r1", artifacts_dir=tmp_path / "art"))
    bus.close()
    return summary, [e async for e in sub]


def _finished(events) -> list[tuple[str, TestStatus, str]]:
    return [(e.result.name, e.result.status, e.result.message) for e in events if isinstance(e, ev.TestFinished)]


async def test_the_unfinished_tests_of_a_domain_whose_host_is_lost_run_on_a_new_lease(tmp_path: Path) -> None:
    hosts = Hosts(tmp_path, ["a", "b"])
    summary, events = await _run(tmp_path, hosts)
    assert hosts.leases == ["a", "b"]
    # build's result from host a is the one stored (published once); load ran on b, where
    # build was replayed (unpublished) so its file is there.
    assert _finished(events) == [("build", TestStatus.PASSED, "built"), ("load", TestStatus.PASSED, "module"),
                                 ("after", TestStatus.PASSED, "after")]
    assert summary.status == "passed" and summary.counts[TestStatus.PASSED.value] == 3 and summary.infra_errors == []
    assert [e.vm for e in events if isinstance(e, ev.DomainStarted)] == ["vm-staged-a", "vm-staged-b"]
    problems = [e.message for e in events if isinstance(e, ev.InfraProblem)]
    assert problems == ["staged: host a lost (connection closed): its 2 unfinished test(s) go to a VM leased anew"]
    (done,) = [e for e in events if isinstance(e, ev.DomainFinished)]
    assert done.status == "passed" and done.counts[TestStatus.PASSED.value] == 3


async def test_with_no_host_left_the_unfinished_tests_are_infrastructure_errors_naming_the_host(tmp_path: Path) -> None:
    hosts = Hosts(tmp_path, ["a"])
    summary, events = await _run(tmp_path, hosts)
    assert hosts.leases == ["a"]
    got = _finished(events)
    assert got[0] == ("build", TestStatus.PASSED, "built")
    assert [(n, s) for n, s, _ in got[1:]] == [("load", TestStatus.ERROR), ("after", TestStatus.ERROR)]
    assert all("host a lost" in m for _, _, m in got[1:]), got
    assert summary.status == "errored" and "host a lost" in summary.infra_errors[0]
    assert "host a lost" in events[-1].reason


async def test_a_lease_that_cannot_tell_its_host_is_lost_keeps_todays_behaviour(tmp_path: Path) -> None:
    """One host (no ``host_lost``): the lost guest is the test's error, no new lease."""
    hosts = Hosts(tmp_path, ["a", "b"], tells=False)
    summary, events = await _run(tmp_path, hosts)
    assert hosts.leases == ["a"]
    got = {n: (s, m) for n, s, m in _finished(events)}
    assert got["build"] == (TestStatus.PASSED, "built")
    assert got["load"][0] is TestStatus.ERROR and "lost the guest" in got["load"][1]
    assert summary.status == "failed"
