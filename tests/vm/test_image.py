"""The guest image builder: real builds from this host's Debian packages (seconds each)."""

from __future__ import annotations

import asyncio
import gzip
import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from vexfs_cockpit.errors import InfraError
from vexfs_cockpit.images import initramfs as image_mod
from vexfs_cockpit.images.initramfs import (
    BuildRequest,
    GuestImage,
    build_image,
    find_image,
    module_load_order,
    prune_images,
    resolve_kernel_version,
    shared_libs,
)
from vexfs_cockpit.images.cpio import Entry, write_initramfs
from vexfs_cockpit.transport.asyncssh_import import asyncssh
from vexfs_cockpit.transport.ssh import SshTarget


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> GuestImage:
    root = tmp_path_factory.mktemp("images")
    return build_image(req=BuildRequest(root=root))


def _listing(data: bytes) -> dict[str, str]:
    """name -> `cpio -tv --numeric-uid-gid` line, listed by the real cpio(1)."""
    def run(*flags: str) -> list[str]:
        out = subprocess.run(["cpio", *flags, "--quiet"], input=data, capture_output=True, check=True)
        return out.stdout.decode().splitlines()

    return dict(zip(run("-t"), run("-tv", "--numeric-uid-gid"), strict=True))


def _members(img: GuestImage) -> dict[str, str]:
    return _listing(gzip.decompress(img.initrd.read_bytes()))


def _extract(img: GuestImage, member: str) -> bytes:
    data = gzip.decompress(img.initrd.read_bytes())
    out = subprocess.run(["cpio", "-i", "--to-stdout", "--quiet", member], input=data, capture_output=True, check=True)
    return out.stdout


def test_manifest_records_what_was_built(built: GuestImage) -> None:
    manifest = json.loads((built.dir / "manifest.json").read_text())
    assert manifest["kernel_version"] == resolve_kernel_version() == built.kernel_version
    assert manifest["input_hash"] == built.input_hash and built.dir.name == built.input_hash[:16]
    assert manifest["kernel"] == "vmlinuz" and manifest["initrd"] == "initrd.gz"
    assert set(manifest["packages"]) >= {"busybox-static", "dropbear-bin", "e2fsprogs"}
    assert built.kernel.read_bytes() == Path(f"/boot/vmlinuz-{built.kernel_version}").read_bytes()
    assert GuestImage.from_dir(built.dir) == built
    assert os.stat(built.client_key).st_mode & 0o077 == 0  # private key: owner only
    for f in (built.initrd, built.kernel):  # the initrd holds the guest host key: owner + QEMU only
        assert os.stat(f).st_mode & 0o037 == 0, oct(os.stat(f).st_mode)
    assert os.stat(built.dir).st_mode & 0o005 == 0o005  # libvirt-qemu must reach kernel+initrd


def test_second_build_is_a_cache_hit_and_force_rebuilds(tmp_path: Path) -> None:
    req = BuildRequest(root=tmp_path)
    first = build_image(req=req)
    started = time.monotonic()
    again = build_image(req=req)
    assert again == first  # same manifest, same keys: nothing rebuilt
    assert time.monotonic() - started < 5
    assert find_image(req=req) == first
    forced = build_image(req=req, force=True)
    assert forced.dir == first.dir and forced.built_at > first.built_at
    assert forced.host_pubkey != first.host_pubkey  # fresh keys on a real rebuild
    assert [p.name for p in tmp_path.iterdir() if p.is_dir()] == [first.dir.name]  # no leftovers


def test_changed_input_rebuilds_elsewhere(built: GuestImage, monkeypatch: pytest.MonkeyPatch) -> None:
    req = BuildRequest(root=built.dir.parent)
    original = image_mod._guest_text()
    changed = dict(original, init=original["init"] + "\n# changed\n")
    monkeypatch.setattr(image_mod, "_guest_text", lambda: changed)
    assert find_image(req=req) is None  # the current inputs have no image yet
    rebuilt = build_image(req=req)
    assert rebuilt.input_hash != built.input_hash and rebuilt.dir != built.dir
    assert _extract(rebuilt, "init").endswith(b"# changed\n")
    # An extra tool is an input too.
    with_tool = BuildRequest(root=built.dir.parent, extra_tools=(Path("/usr/bin/strace"),)) if Path("/usr/bin/strace").exists() else None
    if with_tool is not None:
        img = build_image(req=with_tool)
        assert img.input_hash != rebuilt.input_hash
        assert "usr/local/bin/strace" in _members(img)


def test_initramfs_holds_what_the_guest_needs(built: GuestImage) -> None:
    members = _members(built)
    kv = built.kernel_version
    required = [
        "init", "bin/busybox", "bin/sh", "sbin/init", "usr/sbin/dropbear", "usr/sbin/mke2fs", "usr/sbin/mkfs.ext4",
        "usr/sbin/e2fsck", "usr/sbin/losetup", "usr/bin/setpriv", "etc/inittab", "etc/vexfs/ready",
        "etc/vexfs/udhcpc.script", "etc/vexfs/modules", "etc/passwd", "etc/group", "etc/shadow",
        "etc/dropbear/dropbear_ed25519_host_key", "root/.ssh/authorized_keys", "home/tester/.ssh/authorized_keys",
        "dev/console", "dev/null", "tmp", "lib64/ld-linux-x86-64.so.2", f"lib/modules/{kv}/modules.dep",
    ]
    missing = [m for m in required if m not in members]
    assert not missing, missing
    modules = (_extract(built, "etc/vexfs/modules").decode().split())
    names = [Path(m).name for m in modules]
    for mod in ("e1000.ko", "loop.ko", "ext4.ko", "jbd2.ko", "crc32c_generic.ko", "virtio-rng.ko"):
        assert mod in names, names
        assert f"lib/modules/{kv}/{modules[names.index(mod)]}" in members
    assert names.index("jbd2.ko") < names.index("ext4.ko")  # dependencies load first
    for lib in shared_libs(Path("/usr/sbin/dropbear")) + shared_libs(Path("/usr/sbin/mke2fs")):
        assert lib.lstrip("/") in members, lib
    # The ELOOP trap: no link named busybox, and the binary is a regular file.
    assert members["bin/busybox"].startswith("-rwx")
    assert members["bin/sh"].startswith("-rwx")  # dash, not busybox's applet-preferring sh
    assert members["sbin/init"].startswith("l") and "-> /bin/busybox" in members["sbin/init"]
    assert members["dev/console"].startswith("c")
    # Ownership without fakeroot: root everywhere, tester's home is uid 1000.
    assert " 1000 " in members["home/tester/.ssh/authorized_keys"]
    assert members["root/.ssh/authorized_keys"].split()[2:4] == ["0", "0"]
    assert _extract(built, "root/.ssh/authorized_keys") == built.client_pubkey.read_bytes()
    passwd = _extract(built, "etc/passwd").decode()
    assert "tester:x:1000:1000:" in passwd
    init = _extract(built, "init").decode()
    assert "hung_task_timeout_secs" in init and "debugfs" in init and "exec /sbin/init" in init
    ready = _extract(built, "etc/vexfs/ready").decode()
    assert built.ready_marker in ready


def test_host_key_is_trusted_on_the_vm_port_only(built: GuestImage) -> None:
    trusted, cas, revoked = built.host_key_known_hosts()
    assert [k.export_public_key().decode().split()[:2] for k in trusted] == [built.host_pubkey.split()]
    assert cas == [] and revoked == []
    # an SshTarget pins the image's key to its own port: no other loopback port, no other host
    known = SshTarget("v", "127.0.0.1", 54321, "root", built.client_keys(), built.host_key_known_hosts())._known_hosts
    keys = known.match("127.0.0.1", "", 54321)[0]
    assert [k.export_public_key().decode().split()[:2] for k in keys] == [built.host_pubkey.split()]
    for host, port in (("127.0.0.1", 2222), ("127.0.0.1", 22), ("127.0.0.1", None), ("10.0.0.1", 54321)):
        assert known.match(host, host, port)[0] == [], (host, port)
    # no image-wide known_hosts trusting the key on any port any more
    assert not (built.dir / "known_hosts").exists() and "known_hosts" not in built.to_manifest()
    # The OpenSSH-form host key (for cloud-init seeds) is the same key.
    assert asyncssh.read_private_key(str(built.host_key_openssh)).export_public_key().decode().split()[:2] == built.host_pubkey.split()
    assert built.client_keys()[0].export_public_key() == built.client_pubkey.read_bytes()


def test_kernel_cmdline(built: GuestImage) -> None:
    line = built.kernel_cmdline(hostname="vexfs-dev-km-0", extra=" nokaslr ")
    assert line.split() == ["console=ttyS0", "loglevel=7", "panic=-1", "printk.devkmsg=on", "vexfs.hostname=vexfs-dev-km-0", "nokaslr"]
    assert "oops=panic" not in line and "quiet" not in line


def test_module_load_order_puts_dependencies_first(tmp_path: Path) -> None:
    (tmp_path / "modules.dep").write_text(
        "kernel/fs/a.ko: kernel/lib/c.ko kernel/lib/b.ko\nkernel/lib/b.ko: kernel/lib/c.ko\nkernel/lib/c.ko:\nkernel/x-y.ko:\n"
    )
    (tmp_path / "modules.builtin").write_text("kernel/fs/builtin_fs.ko\n")
    assert module_load_order(tmp_path, ["a", "x_y", "builtin_fs"]) == [
        "kernel/lib/c.ko", "kernel/lib/b.ko", "kernel/fs/a.ko", "kernel/x-y.ko",
    ]
    with pytest.raises(InfraError, match="nosuch is not in"):
        module_load_order(tmp_path, ["nosuch"])


def test_missing_guest_kernel_is_one_line_with_the_fix(tmp_path: Path) -> None:
    with pytest.raises(InfraError) as err:
        build_image(req=BuildRequest(kernel_version="0.0.0-nosuch-amd64", root=tmp_path))
    msg = str(err.value)
    assert "\n" not in msg and "apt-get install linux-image-0.0.0-nosuch-amd64" in msg


def test_cpio_writer_round_trips_through_real_cpio(tmp_path: Path) -> None:
    out = tmp_path / "t.gz"
    write_initramfs(str(out), [
        Entry.file("a/b/file.txt", b"hello\n", 0o640, uid=1000, gid=1000),
        Entry.symlink("a/link", "b/file.txt"),
        Entry.chardev("dev/console", 5, 1),
    ])
    data = gzip.decompress(out.read_bytes())
    lines = _listing(data)
    assert set(lines) >= {"a", "a/b", "a/b/file.txt", "a/link", "dev", "dev/console"}
    assert lines["a/b/file.txt"].startswith("-rw-r-----") and " 1000 " in lines["a/b/file.txt"]
    assert lines["dev/console"].startswith("crw-------")
    content = subprocess.run(["cpio", "-i", "--to-stdout", "--quiet", "a/b/file.txt"], input=data, capture_output=True, check=True)
    assert content.stdout == b"hello\n"
    # Equal inputs, equal bytes (fixed mtimes, sorted order).
    again = tmp_path / "u.gz"
    write_initramfs(str(again), [Entry.chardev("dev/console", 5, 1), Entry.symlink("a/link", "b/file.txt"),
                                 Entry.file("a/b/file.txt", b"hello\n", 0o640, uid=1000, gid=1000)])
    assert again.read_bytes() == out.read_bytes()


def test_prune_removes_only_superseded_images(built: GuestImage, tmp_path: Path) -> None:
    root = tmp_path / "root"
    root.mkdir()
    keep = GuestImage(**{**{f: getattr(built, f) for f in GuestImage.__dataclass_fields__}, "dir": root / "keep"})
    old = root / "old"
    other_kernel = root / "other"
    foreign = root / "foreign"
    for d, kv in ((old, built.kernel_version), (other_kernel, "9.9.9-other")):
        d.mkdir()
        (d / "manifest.json").write_text(json.dumps({"kernel_version": kv, "built_at": 0}))
    foreign.mkdir()
    (root / "keep").mkdir()
    assert prune_images(root, keep) == [old]
    assert other_kernel.exists() and foreign.exists() and (root / "keep").exists()


def test_cli_builds_and_shows(capsys: pytest.CaptureFixture[str]) -> None:
    from vexfs_cockpit.cli import main

    assert main(["image", "build"]) == 0
    out = capsys.readouterr().out
    assert "guest image ready:" in out and resolve_kernel_version() in out
    assert main(["image", "show"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["kernel_version"] == resolve_kernel_version()


@pytest.mark.vm
async def test_guest_boots_to_ssh_under_libvirt() -> None:
    """Define+start the rendered direct-kernel domain, see the ready marker on the
    libvirt console stream, run commands over SSH as root and tester with the
    image's key and verified host key, and always destroy the domain."""
    import libvirt

    from vexfs_cockpit.fleet.accel import probe_accel
    from vexfs_cockpit.fleet.events_thread import ensure_event_loop
    from vexfs_cockpit.fleet.templates import DomainSpec, free_port, render_domain_xml

    ensure_event_loop()  # before the connection opens, or the stream never fires
    img = await asyncio.to_thread(build_image)
    accel = await asyncio.to_thread(probe_accel)
    name = f"vexfs-test-image-{os.getpid()}"
    port = free_port()
    xml = render_domain_xml(DomainSpec(
        name=name, ssh_port=port, kernel=img.kernel, initrd=img.initrd, accel=accel,
        cmdline=img.kernel_cmdline(hostname=name), metadata={"owner_pid": str(os.getpid()), "purpose": "test_image"},
    ))
    conn = await asyncio.to_thread(libvirt.open, "qemu:///system")
    loop = asyncio.get_running_loop()
    ready = asyncio.Event()
    lines: list[str] = []
    pending = bytearray()

    def on_readable(stream: libvirt.virStream, _events: int, _opaque: object) -> None:
        while True:
            try:
                data = stream.recv(65536)
            except libvirt.libvirtError:
                return
            if data == -2 or not data:
                return
            pending.extend(data)
            while b"\n" in pending:
                raw, _, rest = bytes(pending).partition(b"\n")
                pending[:] = rest
                lines.append(raw.decode(errors="replace").rstrip("\r"))
                if lines[-1].strip() == img.ready_marker:
                    loop.call_soon_threadsafe(ready.set)

    dom = None
    stream = None
    try:
        dom = await asyncio.to_thread(conn.defineXML, xml)
        await asyncio.to_thread(dom.create)
        stream = conn.newStream(libvirt.VIR_STREAM_NONBLOCK)
        dom.openConsole(None, stream, libvirt.VIR_DOMAIN_CONSOLE_FORCE)
        stream.eventAddCallback(libvirt.VIR_STREAM_EVENT_READABLE, on_readable, None)
        try:
            await asyncio.wait_for(ready.wait(), 120)
        except TimeoutError:
            pytest.fail(f"no ready marker in 120 s; last console lines: {lines[-15:]}")
        assert any("Linux version " + img.kernel_version in line for line in lines)
        async with asyncssh.connect(
            "127.0.0.1", port, username="root", client_keys=img.client_keys(),
            known_hosts=img.host_key_known_hosts(), connect_timeout=60,
        ) as ssh:
            result = await ssh.run("uname -r; hostname; id -u; lsmod | cut -d' ' -f1", check=True)
            out = str(result.stdout).split()
            assert out[:3] == [img.kernel_version, name, "0"]
            assert {"ext4", "loop", "e1000"} <= set(out[3:])
            fs = await ssh.run(
                "set -e; cd /tmp; truncate -s 32M f.img; mkfs.ext4 -q f.img; L=$(/usr/sbin/losetup -f --show f.img);"
                " mkdir -p /mnt/t; mount -t ext4 $L /mnt/t; echo data > /mnt/t/x; su tester -c 'id -u; touch /mnt/t/y' 2>&1 || true;"
                " cat /mnt/t/x; umount /mnt/t; /usr/sbin/losetup -d $L", check=True)
            assert str(fs.stdout).split()[0] == "1000"
            assert "Permission denied" in str(fs.stdout)  # tester cannot write root's fs root
            assert str(fs.stdout).split()[-1] == "data"
        async with asyncssh.connect(
            "127.0.0.1", port, username="tester", client_keys=img.client_keys(),
            known_hosts=img.host_key_known_hosts(), connect_timeout=60,
        ) as ssh:
            assert str((await ssh.run("id -u", check=True)).stdout).strip() == "1000"
        # A wrong host key must be refused: the check is real.
        wrong = asyncssh.generate_private_key("ssh-ed25519")
        with pytest.raises((asyncssh.HostKeyNotVerifiable, asyncssh.DisconnectError)):
            await asyncssh.connect("127.0.0.1", port, username="root", client_keys=img.client_keys(),
                                   known_hosts=([wrong.export_public_key()], [], []), connect_timeout=60)
    finally:
        if stream is not None:
            try:
                stream.eventRemoveCallback()
                stream.abort()
            except libvirt.libvirtError:
                pass
        if dom is not None:
            for step in (dom.destroy, dom.undefine):
                try:
                    await asyncio.to_thread(step)
                except libvirt.libvirtError:
                    pass
        names = [d.name() for d in await asyncio.to_thread(conn.listAllDomains)]
        conn.close()
    assert name not in names
