"""`vm list|start|stop|reset|console` and `ssh`: helpers and errors without a VM, the
whole dev loop on a real one (marked ``vm``)."""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vexfs_cockpit.errors import InfraError
from vexfs_cockpit.commands import vm as commands
from vexfs_cockpit.fleet.devvm import DevVmState, full_name, read_state, remote_command, stop_vm, write_state
from vexfs_cockpit.fleet.libvirt import Owner, VmInfo


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """State files go to a temp data dir, never the user's."""
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


def _args(**kw: object) -> argparse.Namespace:
    base: dict[str, object] = {"config": None, "env": "test", "uri": None}
    base.update(kw)
    return argparse.Namespace(**base)


def test_names_and_remote_command() -> None:
    assert full_name("manual", "dev") == "vexfs-dev-manual-0"
    assert full_name("vexfs-ci-x-3", "dev") == "vexfs-ci-x-3"
    assert remote_command(["dmesg | tail -2"]) == "dmesg | tail -2"  # one word: shell text
    assert remote_command(["sh", "-c", "exit 3"]) == "sh -c 'exit 3'"  # several: quoted


def test_state_file_round_trip_and_ssh_argv(tmp_path: Path) -> None:
    st = DevVmState("vexfs-dev-manual-0", "qemu:///system", 40022, "root", "/k/id", "/k/known_hosts", "/l.log", 1.0)
    path = write_state(st)
    assert path.is_relative_to(tmp_path) and read_state(st.name) == st
    argv = st.ssh_argv(["uname", "-r"])
    assert argv[0] == "ssh" and "root@127.0.0.1" in argv and argv[-1] == "uname -r"
    assert "UserKnownHostsFile=/k/known_hosts" in argv and "StrictHostKeyChecking=yes" in argv
    assert read_state("vexfs-dev-other-0") is None


def test_vm_table() -> None:
    me = Owner.current(run_id="r1", ssh_port=4000)
    dead = Owner(999_999_999, 1, me.host, me.boot_id)
    lines = commands.format_vm_table([
        VmInfo("vexfs-ci-a-0", "running", False, me),
        VmInfo("vexfs-dev-manual-0", "running", False, Owner.current(keep=True, ssh_port=4001)),
        VmInfo("vexfs-ci-b-0", "stopped", True, dead),
        VmInfo("vexfs-x", "running", False, None),
    ])
    assert lines[0].split() == ["NAME", "STATE", "SSH", "OWNER"]
    assert "4000" in lines[1] and f"pid {me.pid} run r1" in lines[1]
    assert "dev VM (vm start)" in lines[2]
    assert "stale" in lines[3] and "not managed" in lines[4]


def test_vm_list_against_a_test_driver(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    node = tmp_path / "node.xml"
    own = Owner.current(ssh_port=4242).to_xml()
    node.write_text(
        "<node><domain type='test'><name>other-vm</name><memory>65536</memory><os><type>hvm</type></os></domain>"
        "<domain type='test'><name>vexfs-test-k-0</name><memory>65536</memory><os><type>hvm</type></os>"
        f"<metadata>{own}</metadata></domain></node>"
    )
    assert commands.cmd_vm_list(_args(uri=f"test://{node}")) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[1].split()[:3] == ["vexfs-test-k-0", "running", "4242"]


def test_vm_stop_removes_a_disk_vms_overlay_and_seed(tmp_path: Path) -> None:
    from vexfs_cockpit.config.load import load_config
    from vexfs_cockpit.images.disk import vm_dir

    node = tmp_path / "node.xml"
    own = Owner.current(ssh_port=4242).to_xml()
    node.write_text("<node><domain type='test'><name>vexfs-test-k-0</name><memory>65536</memory>"
                    f"<os><type>hvm</type></os><metadata>{own}</metadata></domain></node>")
    cfg = load_config(None, "test", {"fleet.image_dir": str(tmp_path / "images")})
    files = vm_dir(argparse.Namespace(dir=tmp_path / "images" / "0123abcd"), "vexfs-test-k-0")  # type: ignore[arg-type]
    files.mkdir(parents=True)
    (files / "seed.iso").write_bytes(b"host key")
    other = files.parent / "vexfs-test-other-0"
    other.mkdir()
    assert asyncio.run(stop_vm(cfg, "vexfs-test-k-0", f"test://{node}", force=True)) == "destroyed"
    assert not files.exists() and other.exists()


def test_errors_are_one_line_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(InfraError, match=r"no SSH details for vexfs-test-nope-0 .*`vexfs-cockpit vm start nope`"):
        commands.cmd_ssh(_args(name="nope", command=[], user=None))
    node = tmp_path / "node.xml"
    node.write_text("<node></node>")
    with pytest.raises(InfraError, match=r"no VM named vexfs-test-nope-0 .* `vexfs-cockpit vm list`") as ei:
        commands.cmd_vm_stop(_args(name="nope", uri=f"test://{node}", force=False))
    assert "\n" not in str(ei.value)
    with pytest.raises(InfraError, match="not running"):
        commands.cmd_vm_console(_args(name="nope", uri=f"test://{node}"))
    with pytest.raises(InfraError, match="cannot reach libvirt at qemu\\+unix.*libvirtd -d"):
        commands.cmd_vm_list(_args(uri="qemu+unix:///system?socket=/nonexistent/sock"))


def test_vm_commands_take_config_overrides() -> None:
    """`vm start --set fleet.template=disk`: a disk dev VM without editing a profile."""
    from vexfs_cockpit.cli import build_parser
    from vexfs_cockpit.errors import ConfigError

    args = build_parser("vm").parse_args(["vm", "start", "--env", "test", "--set", "fleet.template=disk", "k"])
    assert commands._config(args).fleet.template == "disk"
    bad = build_parser("vm").parse_args(["vm", "list", "--set", "fleet.templat=disk"])
    with pytest.raises(ConfigError, match=r"^command line: fleet.templat: unknown key 'templat' \(did you mean 'template'\?\)$"):
        commands._config(bad)


@pytest.mark.vm
def test_dev_loop_start_ssh_reset_stop(tmp_path: Path) -> None:
    """The kernel developer's warm loop, through the real CLI entry point."""
    from tests.conftest_vm import _check_host, vm_config

    _check_host(vm_config())
    env = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "xdg"))
    name = f"vexfs-test-cmd{os.getpid()}-0"

    def cli(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "vexfs_cockpit", *argv], capture_output=True, text=True,
                              env=env, timeout=timeout)

    try:
        r = cli("vm", "start", "--env", "test", name)
        assert r.returncode == 0, r.stderr
        assert re.search(rf"{name} (restored|booted) and ready in ", r.stdout), r.stdout
        restored = f"{name} restored and ready" in r.stdout
        assert "CryptographyDeprecationWarning" not in r.stderr  # asyncssh's DSA noise is silenced
        known = tmp_path / "xdg" / "vexfs-cockpit" / "vms" / f"{name}.known_hosts"
        assert known.read_text().startswith("[127.0.0.1]:")  # the key on this VM's port only
        r = cli("vm", "list", "--env", "test")
        row = next(ln for ln in r.stdout.splitlines() if ln.startswith(name))
        assert "running" in row and "dev VM" in row
        r = cli("ssh", "--env", "test", name, "--", "sh", "-c", "touch /tmp/mark; exit 7")
        assert r.returncode == 7, r.stderr
        r = cli("vm", "reset", "--env", "test", name)
        assert r.returncode == 0 and "reset and ready" in r.stdout, r.stderr
        assert ("(restored from its golden snapshot)" in r.stdout) == restored, r.stdout  # a restored dev VM resets by restore
        r = cli("ssh", "--env", "test", name, "test -e /tmp/mark || echo fresh")
        assert r.returncode == 0 and r.stdout.strip() == "fresh", r.stderr
        # a dev VM survives another cockpit's stale-VM reaping (keep=1)
        from vexfs_cockpit.engine.bus import EventBus
        from vexfs_cockpit.fleet.libvirt import FleetManager

        async def reap() -> list[str]:
            fm = FleetManager("qemu:///system", EventBus(), "test")
            try:
                return await fm.connect(reap=True)
            finally:
                await fm.aclose()

        assert name not in asyncio.run(reap())
        r = cli("vm", "stop", "--env", "test", name)
        assert r.returncode == 0 and "powered off and removed" in r.stdout, r.stderr
        assert not known.exists()
        r = cli("ssh", "--env", "test", name, "true")
        assert r.returncode == 3 and "no SSH details" in r.stderr and r.stderr.count("\n") == 1
    finally:
        subprocess.run([sys.executable, "-m", "vexfs_cockpit", "vm", "stop", "--force", "--env", "test", name],
                       capture_output=True, env=env, timeout=120)
