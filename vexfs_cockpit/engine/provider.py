"""Where domains get their VMs from. The fleet implements it; engine tests use a local one."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from vexfs_cockpit.engine.plugin import KernelLog, VmControl
from vexfs_cockpit.engine.target import Target

if TYPE_CHECKING:
    from vexfs_cockpit.config.models import CockpitConfig


@dataclass(slots=True)
class Lease:
    """One ready VM (booted, SSH up, console streaming) lent to one domain."""

    vm_name: str
    target: Target
    klog: KernelLog | None = None
    vm: VmControl | None = None
    guest_kernel: str = ""  # uname -r of the guest; kbuild builds against its headers
    # What a provider adds: "boot" (restored | cold), and over several hosts "host" (its
    # name), "host_lost" (() -> why the host is gone, "" while it answers) and
    # "host_gone" (async () -> why, once the host is gone: the runner races it with the test).
    extra: dict[str, object] = field(default_factory=dict)


class TargetProvider(Protocol):
    def lease(self, domain: str, index: int) -> AbstractAsyncContextManager[Lease]:
        """Boot (or reuse) VM ``index`` for ``domain``; tear it down on exit."""
        ...

    async def aclose(self) -> None:
        """Destroy everything this provider started (also on Ctrl-C)."""
        ...

    def use_config(self, cfg: CockpitConfig) -> None:
        """Lease from now on by ``cfg`` (the session switched environment)."""
        ...


@runtime_checkable
class SharesOneVm(Protocol):
    """A provider whose every lease is the same running VM (``ktest`` on a dev VM): it
    has no fresh VM to confirm a changed test on, so the runner does not rerun there."""

    shares_one_vm: bool


@runtime_checkable
class PlansGuestKernel(Protocol):
    """A provider that knows, before booting, which kernel its leases will run (what
    ``Lease.guest_kernel`` will be): the runner then lets domains prepare on the host
    first (``DomainBase.prepare_host``). Providers without it boot first."""

    async def planned_guest_kernel(self) -> str:
        """``uname -r`` the next lease will report, or "" when that is not known."""
        ...
