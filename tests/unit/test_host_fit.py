"""The fleet must fit the host, not only its own caps: refused before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from vexfs_cockpit.config.caps import HostCapacity, check_host_fit
from vexfs_cockpit.config.load import load_config
from vexfs_cockpit.errors import ConfigError
from vexfs_cockpit.fleet.host import measure_host

DOMAINS = ["kernel_module"]


def _host(**kw: float) -> HostCapacity:
    base = {"cpus": 2, "memory_available_gb": 8.0, "disk_free_gb": 50.0, "disk_path": "/var/lib/x"}
    base.update(kw)
    return HostCapacity(**base)  # type: ignore[arg-type]


def test_a_fleet_that_fits_passes() -> None:
    check_host_fit(load_config(None, "ci"), DOMAINS, _host())


def test_memory_beyond_what_the_host_has_is_refused_with_the_numbers() -> None:
    cfg = load_config(None, "ci", {"resources.memory_mb": 4096})
    with pytest.raises(ConfigError, match=r"resources.memory_mb: 1 VMs x 4096 MB = 4 GB does not fit in this host's 3 GB available"):
        check_host_fit(cfg, DOMAINS, _host(memory_available_gb=3.0))


def test_more_vcpus_per_vm_than_host_cpus_is_refused() -> None:
    cfg = load_config(None, "dev", {"resources.cpus": 4})
    with pytest.raises(ConfigError, match=r"each VM asks for 4 vCPUs but this host has 2 CPUs"):
        check_host_fit(cfg, DOMAINS, _host(cpus=2))


def test_disk_beyond_free_space_is_refused_naming_where() -> None:
    cfg = load_config(None, "ci", {"resources.disk_gb": 40})
    with pytest.raises(ConfigError, match=r"40 GB > 10 GB free on /var/lib/x"):
        check_host_fit(cfg, DOMAINS, _host(disk_free_gb=10.0))


def test_a_dev_vm_counts_as_one() -> None:
    cfg = load_config(None, "dev", {"resources.memory_mb": 3072})  # dev runs 2 domains at once
    check_host_fit(cfg, ["kernel_module", "filesystem_operations"], _host(memory_available_gb=4.0), vms=1)
    with pytest.raises(ConfigError):
        check_host_fit(cfg, ["kernel_module", "filesystem_operations"], _host(memory_available_gb=4.0))


def test_measure_host_reads_this_machine(tmp_path: Path) -> None:
    host = measure_host(tmp_path / "not" / "yet")
    assert host.cpus >= 1 and host.memory_available_gb > 0 and host.disk_free_gb > 0
    assert host.disk_path == str(tmp_path)


def test_vm_start_refuses_a_dev_vm_the_host_cannot_hold(capsys: pytest.CaptureFixture[str]) -> None:
    from vexfs_cockpit import cli

    rc = cli.main(["vm", "start", "--set", "resources.memory_mb=10000000", "--set", "resources.max_total_memory_gb=100000", "x"])
    err = capsys.readouterr().err
    assert rc == 2 and err.count("\n") == 1 and "does not fit in this host's" in err
