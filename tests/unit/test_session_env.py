"""Switching a session's environment switches what its VMs are named after too
(issue 20: a TUI run in `ci` booted `vexfs-dev-*` VMs)."""

from __future__ import annotations

from pathlib import Path

from vexfs_cockpit.config.load import load_config
from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.fleet.libvirt import vm_name
from vexfs_cockpit.fleet.provider import LibvirtProvider


def test_use_config_renames_the_vms_to_come(tmp_path: Path) -> None:
    provider = LibvirtProvider(load_config(None, "dev"), EventBus(), tmp_path)
    assert vm_name(provider.env, "kernel_module", 0) == "vexfs-dev-kernel_module-0"
    provider.use_config(load_config(None, "ci"))
    assert provider.cfg.env == provider.env == provider.fleet.env == "ci"
    assert vm_name(provider.env, "kernel_module", 0) == "vexfs-ci-kernel_module-0"
