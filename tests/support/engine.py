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

    async def aclose(self) -> None:
        pass
