"""fleet.snapshot without a VM: keys, version invalidation, the save-image rewrite."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import pytest

from vexfs_cockpit.fleet import snapshot as snapmod
from vexfs_cockpit.fleet.snapshot import SnapshotUnusable

XML = """<domain type='qemu'>
  <name>vexfs-golden-x-1</name>
  <uuid>aaa9314a-8d82-42c9-b9d9-921f137ae3c3</uuid>
  <genid>497f35cc-8184-48a6-af70-c486adce28c4</genid>
  <vcpu placement='static'>1</vcpu>
  <os><cmdline>console=ttyS0 vexfs.hostname=vexfs-golden-x-1 panic=-1</cmdline></os>
  <qemu:commandline><qemu:arg value='user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:42693-:22'/></qemu:commandline>
</domain>"""
COOKIE = b"<cookie>\n  <slirpHelper/>\n</cookie>\n"
STREAM = b"QEVM\x00\x00\x00\x03" + bytes(range(256)) * 40


def _save_image(path: Path, xml: str = XML) -> Path:
    xb = xml.encode() + b"\0"
    data = xb + COOKIE + b"\0" + b"\0" * 1000
    head = struct.pack("<16s5I56s", b"LibvirtQemudSave", 2, len(data), 1, 0, len(xb), b"\0" * 56)
    path.write_bytes(head + data + STREAM)
    return path


def _inputs(qemu: str = "7.2.22", libvirt: str = "9.0.0", image: str = "abc") -> dict:
    return snapmod.snapshot_inputs(
        xml=XML, name="vexfs-golden-x-1", port=42693, image_hash=image, versions={"qemu": qemu, "libvirt": libvirt},
    )


def _store(root: Path, inputs: dict) -> snapmod.Snapshot:
    d = root / snapmod.snapshot_key(inputs)
    d.mkdir(parents=True)
    _save_image(d / snapmod.SAVE_FILE)
    snap = snapmod.Snapshot(d, inputs, (d / snapmod.SAVE_FILE).stat().st_size, saved_at=1.0)
    (d / snapmod.MANIFEST).write_text(json.dumps(snap.manifest()))
    return snap


def test_key_ignores_name_and_port_but_not_versions_or_shape() -> None:
    other = XML.replace("vexfs-golden-x-1", "vexfs-golden-y-2").replace("42693", "40000")
    a = _inputs()
    b = snapmod.snapshot_inputs(xml=other, name="vexfs-golden-y-2", port=40000, image_hash="abc",
                                versions={"qemu": "7.2.22", "libvirt": "9.0.0"})
    assert snapmod.snapshot_key(a) == snapmod.snapshot_key(b)
    assert snapmod.snapshot_key(a) != snapmod.snapshot_key(_inputs(qemu="8.0.0"))
    assert snapmod.snapshot_key(a) != snapmod.snapshot_key(_inputs(libvirt="9.1.0"))
    assert snapmod.snapshot_key(a) != snapmod.snapshot_key(_inputs(image="def"))
    more_ram = snapmod.snapshot_inputs(xml=XML.replace("<vcpu placement='static'>1", "<vcpu placement='static'>2"),
                                       name="vexfs-golden-x-1", port=42693, image_hash="abc", versions={})
    assert more_ram["domain_xml_sha256"] != a["domain_xml_sha256"]


def test_a_snapshot_of_another_qemu_is_not_found_and_the_reason_names_the_versions(tmp_path: Path) -> None:
    root = tmp_path / "snapshots"
    _store(root, _inputs(qemu="7.2.22"))
    snap, why = snapmod.find_snapshot(root, _inputs(qemu="8.0.0"))
    assert snap is None
    assert "qemu 7.2.22 -> 8.0.0" in why
    found, why = snapmod.find_snapshot(root, _inputs(qemu="7.2.22"))
    assert found is not None and why == ""


def test_a_manifest_whose_versions_do_not_match_its_key_is_deleted(tmp_path: Path) -> None:
    root = tmp_path / "snapshots"
    snap = _store(root, _inputs())
    m = json.loads((snap.dir / snapmod.MANIFEST).read_text())
    m["inputs"]["qemu"] = "6.0.0"  # faked: saved by another QEMU under this key
    (snap.dir / snapmod.MANIFEST).write_text(json.dumps(m))
    found, why = snapmod.find_snapshot(root, _inputs())
    assert found is None and "does not match" in why
    assert not snap.dir.exists()


def test_a_truncated_snapshot_is_deleted_at_lookup(tmp_path: Path) -> None:
    root = tmp_path / "snapshots"
    snap = _store(root, _inputs())
    with open(snap.path, "r+b") as f:
        f.truncate(snap.size - 10)
    found, why = snapmod.find_snapshot(root, _inputs())
    assert found is None and "truncated" in why
    assert not snap.dir.exists()


def test_retarget_sets_name_uuid_genid_port_and_hostname() -> None:
    out = snapmod.retarget_xml(XML, "vexfs-ci-kernel_module-0", 41000)
    assert "<name>vexfs-ci-kernel_module-0</name>" in out
    assert "aaa9314a" not in out and "497f35cc" not in out
    assert "hostfwd=tcp:127.0.0.1:41000-:22" in out and "42693" not in out
    assert "vexfs.hostname=vexfs-ci-kernel_module-0" in out
    assert snapmod.retarget_xml(XML, "a", 1) != snapmod.retarget_xml(XML, "a", 1)  # fresh ids each time


def test_write_copy_rewrites_the_header_and_keeps_cookie_and_stream(tmp_path: Path) -> None:
    src = _save_image(tmp_path / "g.save")
    copy = snapmod.write_copy(src, lambda x: snapmod.retarget_xml(x, "vexfs-a-b-0", 41001), tmp_dir=tmp_path)
    try:
        assert copy.stat().st_mode & 0o077 == 0
        raw = copy.read_bytes()
        magic, version, data_len, running, _comp, cookie_at, _ = struct.unpack("<16s5I56s", raw[:92])
        data = raw[92:92 + data_len]
        assert magic == b"LibvirtQemudSave" and version == 2 and running == 1
        assert b"<name>vexfs-a-b-0</name>" in data.split(b"\0", 1)[0]
        assert data[cookie_at:].startswith(COOKIE)
        assert raw[92 + data_len:] == STREAM
        assert "vexfs-a-b-0" in snapmod.saved_xml(copy)
    finally:
        copy.unlink()


def test_write_copy_refuses_a_file_without_memory(tmp_path: Path) -> None:
    src = _save_image(tmp_path / "g.save")
    raw = src.read_bytes()
    src.write_bytes(raw[: len(raw) - len(STREAM)])
    with pytest.raises(SnapshotUnusable):
        snapmod.write_copy(src, lambda x: x, tmp_dir=tmp_path)
    assert list(tmp_path.glob(".restore-*")) == []


def test_with_genid_adds_one_generation_id() -> None:
    xml = "<domain><name>n</name><vcpu>1</vcpu></domain>"
    out = snapmod.with_genid(xml)
    assert out.count("<genid/>") == 1 and snapmod.with_genid(out) == out


def test_restore_defaults_to_auto_and_accepts_off() -> None:
    from vexfs_cockpit.config.models import FleetSettings

    assert FleetSettings().restore == "auto"
    assert FleetSettings(restore="off").restore == "off"
    with pytest.raises(ValueError):
        FleetSettings(restore="sometimes")


def test_restore_off_from_yaml_or_the_command_line_is_off_not_false() -> None:
    import yaml

    from vexfs_cockpit.config.models import FleetSettings

    # YAML 1.1 reads a bare `off` as false (`--set fleet.restore=off` too).
    assert FleetSettings(**yaml.safe_load("restore: off")).restore == "off"
    assert FleetSettings(**yaml.safe_load("restore: auto")).restore == "auto"


def test_write_copy_of_a_deleted_snapshot_is_unusable(tmp_path: Path) -> None:
    """Another cockpit may delete the snapshot between lookup and restore: the restore
    must fall back (SnapshotUnusable), not fail the lease."""
    with pytest.raises(SnapshotUnusable, match="is gone"):
        snapmod.write_copy(tmp_path / "gone.save", lambda x: x, tmp_dir=tmp_path)


def test_prune_keeps_the_new_snapshot_and_the_newest_others(tmp_path: Path) -> None:
    root = tmp_path / "snapshots"
    dirs = []
    for n in range(5):
        d = root / f"k{n}"
        d.mkdir(parents=True)
        (d / snapmod.MANIFEST).write_text(json.dumps({"inputs": {}, "saved_at": 1000 + n}))
        dirs.append(d)
    snapmod.prune_snapshots(root, keep=dirs[0], others=2)  # k0 just built (an older clock), k4 and k3 newest
    assert sorted(p.name for p in root.iterdir()) == ["k0", "k3", "k4"]
    snapmod.prune_snapshots(root, keep=None)
    assert list(root.iterdir()) == []
