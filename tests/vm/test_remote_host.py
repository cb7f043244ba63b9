"""A real guest on a libvirt host reached through ``qemu+ssh://`` (issue 18, Done when):
a local sshd on a loopback port with its own host key stands in for the remote host;
the guest's SSH goes through a tunnel over SSH to that host, never to a port of its own.
31-61 s here under TCG (one cold boot over qemu+ssh, one restore on qemu:///system)."""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.e2e import CI_PROFILE, cockpit_run, owned_vms
from tests.support.sshd import SSH_HOST_HINT, SSHD, SshHost, start_sshd

pytestmark = pytest.mark.vm


@pytest.fixture
def ssh_host(tmp_path: Path) -> Iterator[SshHost]:
    if not SSHD.exists():
        if os.environ.get("VEXFS_TEST_SSH_HOST") == "1":
            pytest.fail(f"{SSHD} is missing: {SSH_HOST_HINT}", pytrace=False)
        pytest.skip(f"no {SSHD}: {SSH_HOST_HINT}")
    host = start_sshd(tmp_path / "sshd")
    try:
        yield host
    finally:
        host.stop()


def test_domains_lease_vms_on_two_hosts_one_over_qemu_ssh(tmp_path: Path, ssh_host: SshHost) -> None:
    uri = ssh_host.libvirt_uri()
    hosts = (f"hosts=[{{name: here, uri: 'qemu:///system'}}, {{name: loop, uri: '{uri}', labels: [remote], "
             f"ssh_key: '{ssh_host.client_key}', ssh_known_hosts: '{ssh_host.known_hosts}'}}]")
    proc, pid = cockpit_run(
        "run", "--batch", *CI_PROFILE, "--db", str(tmp_path / "h.db"), "--set", hosts,
        "--set", "placement.affinity={kernel_module: [remote]}",
        "--domains", "kernel_module,filesystem_operations",
        "--tests", "kernel_module/module_load_basic,filesystem_operations/mount_unmount",
        timeout=400,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr
    assert f"placement: here (qemu:///system): filesystem_operations; loop ({uri}): kernel_module" in proc.stdout
    for test in ("kernel_module/module_build", "kernel_module/module_load_basic", "filesystem_operations/mount_unmount"):
        assert f"{test}: PASSED" in proc.stdout, proc.stdout
    log = ssh_host.log()
    # libvirt's own SSH connection and the cockpit's to the host, both by the test's key ...
    assert len(re.findall(r"Accepted publickey for root from 127\.0\.0\.1", log)) >= 2, log[-3000:]
    # ... and the guest's SSH tunnelled through the host to its loopback-only forwarded port
    tunnels = re.findall(r"server_request_direct_tcpip: originator .* target 127\.0\.0\.1 port (\d+)", log)
    assert tunnels and all(int(p) > 1024 for p in tunnels), log[-3000:]
    assert owned_vms(pid) == []  # every VM destroyed, on both hosts (one libvirtd here)
