"""An in-process provider for runner tests: the host as each domain's target."""

from __future__ import annotations

from contextlib import asynccontextmanager
from pathlib import Path

from vexfs_cockpit.engine.provider import Lease
from vexfs_cockpit.errors import InfraError
from vexfs_cockpit.transport.local import LocalTarget


class LocalProvider:
    """Leases the host itself (engine tests only: never a stand-in for a guest)."""

    def __init__(self, workdir: Path, fail: str | None = None):
        self.workdir = workdir
        self.fail = fail
        self.leased: list[str] = []

    @asynccontextmanager
    async def lease(self, domain: str, index: int):
        if self.fail:
            raise InfraError(self.fail)
        self.leased.append(domain)
        yield Lease(vm_name=f"local-{domain}", target=LocalTarget(name="local", cwd=self.workdir))

    def use_config(self, cfg: object) -> None:
        pass  # the host is the same in every env

    async def aclose(self) -> None:
        pass


class FreshLocalProvider:
    """Like LocalProvider, but every lease gets a directory of its own (a fresh "VM":
    nothing a test left in an earlier lease is there); records (domain, index) per lease."""

    def __init__(self, workdir: Path):
        self.workdir = workdir
        self.leases: list[tuple[str, int]] = []

    @asynccontextmanager
    async def lease(self, domain: str, index: int):
        self.leases.append((domain, index))
        d = self.workdir / f"lease-{len(self.leases)}"
        d.mkdir(parents=True)
        yield Lease(vm_name=f"local-{domain}-{index}", target=LocalTarget(name="local", cwd=d))

    async def aclose(self) -> None:
        pass
