"""The VM actions a front end offers: the fleet's VMs listed, dev VMs started, stopped
and reset, on the session's libvirt connection and config."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from vexfs_cockpit.config.caps import check_host_fit, check_resource_caps
from vexfs_cockpit.config.models import CockpitConfig
from vexfs_cockpit.config.paths import data_dir
from vexfs_cockpit.fleet import devvm
from vexfs_cockpit.fleet.provider import LibvirtProvider


@dataclass(frozen=True, slots=True)
class VmListing:
    name: str
    state: str
    domain: str  # the domain its name says it runs ("" for a name outside the scheme)
    started_at: float | None  # a dev VM's start (wall clock); None when unknown


def domain_of(name: str) -> str:
    """``vexfs-<env>-<domain>-<n>`` -> ``<domain>``."""
    parts = name.split("-")
    return "-".join(parts[2:-1]) if len(parts) >= 4 else ""


def check_dev_vm_fits(cfg: CockpitConfig) -> None:
    """A dev VM is one VM: within the config's caps and this host's room, checked before
    anything boots (ConfigError, one line with the numbers)."""
    from vexfs_cockpit.fleet.host import measure_host

    check_resource_caps(cfg, ["dev"])
    check_host_fit(cfg, ["dev"], measure_host(data_dir()), vms=1)


class VmControl:
    def __init__(self, provider: LibvirtProvider, config: Callable[[], CockpitConfig]):
        self._provider = provider
        self._config = config  # the session's current config (it changes with the environment)

    @property
    def _uri(self) -> str:
        return self._config().fleet.libvirt_uri

    async def open(self) -> None:
        """Watch every vexfs-* VM (dev VMs too) and get the image and accelerator ready."""
        self._provider.fleet.watch_all = True
        await self._provider.prepare()

    async def list(self) -> list[VmListing]:
        out = []
        for v in await self._provider.fleet.list_vms():
            dev = devvm.read_state(v.name)
            out.append(VmListing(v.name, v.state, domain_of(v.name), dev.started_at if dev else None))
        return out

    async def start(self, name: str) -> None:
        check_dev_vm_fits(self._config())
        await devvm.start_dev_vm(self._config(), name, self._uri, say=lambda *_: None)

    async def stop(self, name: str) -> None:
        await devvm.stop_vm(self._config(), name, self._uri)

    async def reset(self, name: str) -> None:
        await devvm.reset_vm(self._config(), name, self._uri, say=lambda *_: None)
