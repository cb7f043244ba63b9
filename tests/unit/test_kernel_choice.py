"""Which kernel the guest boots: auto, host or an installed version (issue 14 item 1),
checked before anything is recorded or booted."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from vexfs_cockpit import cli
from vexfs_cockpit.config.load import load_config
from vexfs_cockpit.errors import ConfigError, InfraError
from vexfs_cockpit.images.initramfs import kernel_files, resolve_kernel_version

INSTALLED = sorted(p.name.removeprefix("vmlinuz-") for p in Path("/boot").glob("vmlinuz-*"))
needs_a_kernel = pytest.mark.skipif(not INSTALLED, reason="no kernel installed in /boot")


@needs_a_kernel
def test_auto_is_an_installed_kernel() -> None:
    assert resolve_kernel_version("auto") in INSTALLED


@needs_a_kernel
def test_a_version_names_an_installed_kernel() -> None:
    vmlinuz, moddir = kernel_files(resolve_kernel_version(INSTALLED[0]))
    assert vmlinuz == Path("/boot") / f"vmlinuz-{INSTALLED[0]}" and (moddir / "modules.dep").is_file()


def test_host_is_the_running_kernel_or_one_line_saying_why_not() -> None:
    release = os.uname().release
    if release in INSTALLED:
        assert resolve_kernel_version("host") == release
    else:  # this machine: the sandbox's own kernel is not a guest kernel
        with pytest.raises(InfraError, match=rf"the running kernel {release} is not in /boot .*set fleet.guest_kernel to auto"):
            resolve_kernel_version("host")


def test_a_kernel_release_is_never_a_path() -> None:
    # a value with a "/" is a kernel tree (tests/unit/test_kernel_tree.py): never /boot/vmlinuz-../..
    with pytest.raises(ConfigError, match="fleet.guest_kernel: .*an installed release"):
        load_config(None, "ci", {"fleet.guest_kernel": "..vmlinuz"})
    with pytest.raises(ConfigError, match="fleet.guest_kernel /etc: not a kernel source tree"):
        resolve_kernel_version(load_config(None, "ci", {"fleet.guest_kernel": "/etc/"}).fleet.guest_kernel)


def test_kernel_flag_is_the_config_key_and_checked_before_a_run_is_recorded(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "h.db"
    rc = cli.main(["run", "--batch", "--env", "ci", "--db", str(db), "--domains", "kernel_module", "--kernel", "0.0.1-nope"])
    err = capsys.readouterr().err
    assert rc == 3 and err.count("\n") == 1 and "guest kernel 0.0.1-nope is not installed" in err
    from vexfs_cockpit.store.history import History

    assert History(db).list_runs() == []  # nothing recorded, nothing booted
