"""The guest's SSH host key stays between the host's owner and QEMU, and it vouches for
one VM's port only; no guest connection reads the user's ssh config or offers their
agent; importing asyncssh prints no DSA deprecation noise."""

from __future__ import annotations

import grp
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from vexfs_cockpit.errors import InfraError
from vexfs_cockpit.fleet import devvm
from vexfs_cockpit.fleet.devvm import DevVmState
from vexfs_cockpit.images import initramfs as image_mod
from vexfs_cockpit.images.initramfs import BuildRequest, GuestImage, build_image, prune_images, qemu_group, qemu_readable
from vexfs_cockpit.transport import ssh as ssh_mod
from vexfs_cockpit.transport.asyncssh_import import asyncssh
from vexfs_cockpit.transport.ssh import SshTarget, pinned_known_hosts

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def _private_data_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> GuestImage:
    return build_image(req=BuildRequest(root=tmp_path_factory.mktemp("images")))


def _qemu_gid() -> int | None:
    try:
        return grp.getgrnam("libvirt-qemu").gr_gid
    except KeyError:
        return None


# ----------------------------------------------------------------------------- 4: image files
def test_the_initrd_with_the_host_key_is_not_world_readable(built: GuestImage) -> None:
    for f in (built.initrd, built.kernel):
        st = os.stat(f)
        assert st.st_mode & 0o007 == 0, f"{f.name} is {oct(st.st_mode & 0o777)}: any local user reads the guest host key"
        if os.geteuid() == 0 and _qemu_gid() is not None:
            assert (st.st_mode & 0o777, st.st_gid) == (0o640, _qemu_gid()), f.name  # QEMU (libvirt-qemu) reads it
        else:
            assert st.st_mode & 0o077 in (0, 0o040)
    assert os.stat(built.host_key_openssh).st_mode & 0o077 == 0 and os.stat(built.client_key).st_mode & 0o077 == 0
    assert os.stat(built.dir).st_mode & 0o005 == 0o005  # QEMU still reaches them


def test_a_new_builder_version_rebuilds_old_world_readable_images() -> None:
    assert image_mod.BUILDER_VERSION >= 4  # v3 images: 0644 initrd, any-port known_hosts


def test_qemu_readable_falls_back_to_owner_only(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    f = tmp_path / "initrd.gz"
    f.write_bytes(b"secret")
    os.chmod(f, 0o644)
    assert qemu_readable(f, gid=None) == 0o600 and os.stat(f).st_mode & 0o777 == 0o600

    def no_chown(*a: Any) -> None:
        raise PermissionError("not a member")

    monkeypatch.setattr(image_mod.os, "chown", no_chown)
    os.chmod(f, 0o644)
    assert qemu_readable(f, gid=12345) == 0o600 and os.stat(f).st_mode & 0o777 == 0o600


def test_qemu_group_follows_qemu_conf(tmp_path: Path) -> None:
    conf = tmp_path / "qemu.conf"
    conf.write_text('#group = "nobody"\n')
    assert qemu_group(conf) == _qemu_gid()  # commented out: Debian's default group
    conf.write_text('user = "libvirt-qemu"\n  group = "+4242"\n')
    assert qemu_group(conf) == 4242
    conf.write_text('group = "root"\n')
    assert qemu_group(conf) == 0
    conf.write_text('group = "no-such-group-here"\n')
    assert qemu_group(conf) is None
    assert qemu_group(tmp_path / "missing.conf") == _qemu_gid()


def test_prune_restricts_superseded_world_readable_images(built: GuestImage, tmp_path: Path) -> None:
    import json
    import time

    old = tmp_path / "old"
    old.mkdir()
    for name in ("initrd.gz", "vmlinuz"):
        (old / name).write_bytes(b"x")
        os.chmod(old / name, 0o644)
    (old / "manifest.json").write_text(json.dumps({"kernel_version": built.kernel_version, "built_at": time.time()}))
    keep = GuestImage(**{**{f: getattr(built, f) for f in built.__dataclass_fields__}, "dir": tmp_path / "new"})
    assert prune_images(tmp_path, keep) == []  # recent: kept (a running VM may boot from it) ...
    for name in ("initrd.gz", "vmlinuz"):
        assert os.stat(old / name).st_mode & 0o007 == 0  # ... but no longer world-readable


def test_disk_overlay_and_seed_are_not_world_readable(built: GuestImage, tmp_path: Path) -> None:
    from vexfs_cockpit.images.disk import make_overlay, make_seed_iso

    base = tmp_path / "base.qcow2"
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(base), "16M"], check=True)
    overlay = make_overlay(base, tmp_path / "vm" / "overlay.qcow2")  # the guest writes its host key into it
    seed = make_seed_iso(built, "vexfs-dev-x-0", tmp_path / "vm" / "seed.iso")  # holds the host key
    for f in (overlay, seed):
        assert os.stat(f).st_mode & 0o007 == 0, f"{f.name} is {oct(os.stat(f).st_mode & 0o777)}"


# ----------------------------------------------------------------------------- 4: known_hosts pinned
def _matches(known: Any, port: int | None, host: str = "127.0.0.1") -> list[str]:
    return sorted({k.export_public_key().decode().split()[1] for k in known.match(host, host, port)[0]})


@pytest.mark.parametrize("form", ["text", "list", "tuple", "pubfile"])
def test_ssh_target_pins_bare_host_keys_to_its_own_port(form: str, tmp_path: Path) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    pub = key.export_public_key().decode()
    (tmp_path / "host.pub").write_text(pub)
    spec: Any = {"text": pub, "list": [pub], "tuple": ([asyncssh.import_public_key(pub)], [], []),
                 "pubfile": tmp_path / "host.pub"}[form]
    known = SshTarget("v", "127.0.0.1", 40022, "root", [asyncssh.generate_private_key("ssh-ed25519")], spec)._known_hosts
    blob = pub.split()[1]
    assert _matches(known, 40022) == [blob]
    for port in (40023, 22, None):
        assert _matches(known, port) == [], port  # another VM's port, or what listens there later
    assert _matches(known, 40022, host="10.0.0.2") == []


def test_pinned_known_hosts_text() -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    alg, blob = key.export_public_key().decode().split()[:2]
    assert pinned_known_hosts("127.0.0.1", 40022, [key]) == f"[127.0.0.1]:40022 {alg} {blob}\n"
    assert pinned_known_hosts("127.0.0.1", 22, [f"{alg} {blob} comment"]) == f"127.0.0.1 {alg} {blob}\n"


def test_dev_vm_known_hosts_is_pinned_to_its_port(built: GuestImage) -> None:
    path = devvm.write_known_hosts("vexfs-dev-x-0", 40022, built.host_pubkey)
    assert path == devvm.known_hosts_path("vexfs-dev-x-0") and path.parent == devvm.state_dir()
    lines = path.read_text().splitlines()
    assert lines == [f"[127.0.0.1]:40022 {built.host_pubkey}"]
    known = asyncssh.read_known_hosts(str(path))
    assert _matches(known, 40022) == [built.host_pubkey.split()[1]]
    assert _matches(known, 40023) == [] and _matches(known, 22) == [] and _matches(known, None) == []


async def test_start_dev_vm_records_a_pinned_known_hosts(built: GuestImage, monkeypatch: pytest.MonkeyPatch) -> None:
    """`vm start` (provider faked): the state file's known_hosts is the VM's own, pinned."""
    from vexfs_cockpit.config.models import CockpitConfig, FleetSettings
    from vexfs_cockpit.fleet import provider as provider_mod

    class Vm:
        ssh_port = 40123
        boot_kind = "restored"
        snapshot = None

    class FakeProvider:
        def __init__(self, *a: Any, **kw: Any) -> None:
            self._prepared = type("P", (), {"image": built})()

        async def boot_vm(self, name: str, **kw: Any) -> Vm:
            return Vm()

        async def release_vm(self, name: str) -> None:
            pass

        async def aclose(self) -> None:
            pass

    monkeypatch.setattr(provider_mod, "LibvirtProvider", FakeProvider)
    st = await devvm.start_dev_vm(CockpitConfig(env="test", fleet=FleetSettings()), "vexfs-dev-y-0", "test:///default",
                                  say=lambda *_: None)
    assert Path(st.known_hosts) == devvm.known_hosts_path("vexfs-dev-y-0")
    assert Path(st.known_hosts).read_text() == f"[127.0.0.1]:40123 {built.host_pubkey}\n"
    assert devvm.read_state("vexfs-dev-y-0") == st


def test_dev_target_without_state_pins_the_image_key(built: GuestImage, monkeypatch: pytest.MonkeyPatch) -> None:
    from vexfs_cockpit.config.models import CockpitConfig, FleetSettings
    from vexfs_cockpit.fleet.libvirt import Owner, VmInfo

    monkeypatch.setattr(image_mod, "find_image", lambda fleet: built)
    info = VmInfo("vexfs-dev-z-0", "running", False, Owner.current(keep=True, ssh_port=40777))
    t = devvm.dev_target(CockpitConfig(env="test", fleet=FleetSettings()), "vexfs-dev-z-0", info)
    assert t.port == 40777
    assert _matches(t._known_hosts, 40777) == [built.host_pubkey.split()[1]] and _matches(t._known_hosts, 40778) == []


# ----------------------------------------------------------------------------- 5: no user ssh config, no agent
def test_ssh_argv_reads_no_ssh_config_and_forwards_no_agent() -> None:
    st = DevVmState("vexfs-dev-manual-0", "qemu:///system", 40022, "root", "/k/id", "/k/known_hosts", "/l.log", 1.0)
    argv = st.ssh_argv(["uname", "-r"])
    assert argv[:3] == ["ssh", "-F", "/dev/null"]  # not ~/.ssh/config, not /etc/ssh/ssh_config
    assert "-a" in argv and "IdentityAgent=none" in argv and "GlobalKnownHostsFile=/dev/null" in argv
    opts = subprocess.run([*argv[:-2], "-G", "root@127.0.0.1"], capture_output=True, text=True,
                          env={**os.environ, "HOME": "/nonexistent"})
    if opts.returncode == 0:  # ssh(1) present: ask it what it would do
        got = dict(ln.split(" ", 1) for ln in opts.stdout.splitlines() if " " in ln)
        assert got["forwardagent"] == "no" and got["identityagent"] == "none" and got["port"] == "40022"


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every asyncssh.connect call's keyword arguments (each one then refused)."""
    seen: list[dict[str, Any]] = []

    async def fake_connect(host: str, port: int, **kw: Any) -> Any:
        seen.append(kw)
        raise OSError("refused by the test")

    monkeypatch.setattr(asyncssh, "connect", fake_connect)
    return seen


def _isolated(kw: dict[str, Any]) -> bool:
    return (kw.get("config") == [] and "agent_path" in kw and kw["agent_path"] is None
            and kw.get("agent_forwarding") is False)


async def test_ssh_target_connects_without_user_config_or_agent(connects: list[dict[str, Any]]) -> None:
    key = asyncssh.generate_private_key("ssh-ed25519")
    t = SshTarget("v", "127.0.0.1", 40022, "root", [key], key.export_public_key().decode(), reconnect_deadline_s=0.1)
    with pytest.raises(InfraError):
        await t.connect()
    assert connects and all(_isolated(kw) for kw in connects), connects


async def test_vexfs_cockpit_ssh_fallback_connects_without_user_config_or_agent(
    connects: list[dict[str, Any]], tmp_path: Path
) -> None:
    """`vexfs-cockpit ssh` without an OpenSSH client: its asyncssh session."""
    from vexfs_cockpit.commands import vm as vm_cmd

    key = tmp_path / "id"
    key.write_bytes(asyncssh.generate_private_key("ssh-ed25519").export_private_key())
    st = DevVmState("vexfs-dev-manual-0", "qemu:///system", 40022, "root", str(key), str(tmp_path / "kh"), "/l.log", 1.0)
    with pytest.raises(InfraError, match="cannot SSH to vexfs-dev-manual-0"):
        await vm_cmd._asyncssh_session(st, ["true"])
    assert len(connects) == 1 and _isolated(connects[0]), connects


def test_every_asyncssh_connect_goes_through_connect_guest() -> None:
    """A guest connection is isolated (connect_guest); the only other asyncssh.connect is
    to a libvirt host guests are tunnelled through (connect_host), which forwards nothing."""
    calls = []
    for path in sorted((ROOT / "vexfs_cockpit").rglob("*.py")):
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if re.search(r"\basyncssh\.connect\(", line) and not line.lstrip().startswith(("#", '"')):
                calls.append(f"{path.relative_to(ROOT)}:{no}")
    assert calls == [f"vexfs_cockpit/transport/ssh.py:{_line_of(ssh_mod.connect_guest)}",
                     f"vexfs_cockpit/transport/ssh.py:{_line_of(ssh_mod.connect_host)}"], calls


async def test_a_jump_host_connection_forwards_nothing(connects: list[dict[str, Any]]) -> None:
    from vexfs_cockpit.transport.jump import JumpHost, JumpSpec

    jump = JumpHost(JumpSpec("root", "127.0.0.1", 1), connect_timeout=1.0)
    with pytest.raises(OSError):
        await jump.connection()
    assert len(connects) == 1 and connects[0]["agent_forwarding"] is False and connects[0]["x11_forwarding"] is False


def _line_of(fn: Any) -> int:
    import inspect

    src, start = inspect.getsourcelines(fn)
    return start + next(i for i, ln in enumerate(src) if "asyncssh.connect(" in ln and "return" in ln)


# ----------------------------------------------------------------------------- 12: no DSA warning
def _stderr_of(code: str) -> str:
    proc = subprocess.run([sys.executable, "-W", "default", "-c", code], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_plain_asyncssh_import_does_warn_here() -> None:
    """The check below means something: this cryptography does warn about DSA."""
    if "CryptographyDeprecationWarning" not in _stderr_of("import asyncssh"):
        pytest.skip("this cryptography prints no DSA warning for asyncssh")


@pytest.mark.parametrize("module", ["vexfs_cockpit.transport.asyncssh_import", "vexfs_cockpit.transport.ssh"])
def test_importing_our_asyncssh_prints_no_dsa_warning(module: str) -> None:
    err = _stderr_of(f"import {module}")
    assert "CryptographyDeprecationWarning" not in err and "DSA" not in err, err


def test_only_that_warning_is_silenced() -> None:
    err = _stderr_of(
        "import warnings, vexfs_cockpit.transport.asyncssh_import\n"
        "from cryptography.utils import CryptographyDeprecationWarning as W\n"
        "warnings.warn('something else is deprecated', W)\n"
    )
    assert "something else is deprecated" in err


def test_lazy_asyncssh_users_print_no_dsa_warning(built: GuestImage) -> None:
    err = _stderr_of(
        "from pathlib import Path\n"
        "from vexfs_cockpit.images.initramfs import GuestImage\n"
        f"GuestImage.from_dir(Path({str(built.dir)!r})).client_keys()\n"
    )
    assert "CryptographyDeprecationWarning" not in err, err


def test_no_module_imports_asyncssh_directly() -> None:
    direct = []
    for path in sorted((ROOT / "vexfs_cockpit").rglob("*.py")):
        if path.name == "asyncssh_import.py":
            continue
        for no, line in enumerate(path.read_text().splitlines(), 1):
            if re.match(r"\s*(import asyncssh\b|from asyncssh\b)", line):
                direct.append(f"{path.relative_to(ROOT)}:{no}")
    assert direct == [], direct
