"""Files the cockpit writes as root go through names nobody else can plant (issue 13 item 6)."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

from vexfs_cockpit.images.base import export_image


def test_export_ignores_a_symlink_planted_at_the_old_temp_name(tmp_path: Path) -> None:
    image = tmp_path / "cache" / "base.qcow2"
    image.parent.mkdir()
    image.write_bytes(b"QFI\xfb image bytes")
    out_dir = tmp_path / "share"
    out_dir.mkdir()
    victim = tmp_path / "victim"
    victim.write_text("precious")
    (out_dir / ".base.qcow2.tmp").symlink_to(victim)  # where the export used to stage its copy

    out = export_image(SimpleNamespace(path=image), out_dir / "base.qcow2")  # type: ignore[arg-type]

    assert victim.read_text() == "precious"
    assert out.read_bytes() == image.read_bytes() and not out.is_symlink()
    assert sorted(p.name for p in out_dir.iterdir()) == [".base.qcow2.tmp", "base.qcow2"]  # no leftovers
