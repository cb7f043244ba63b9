"""Every run records where it came from (issue 20 item 13): kernel, module source and
commit (or tree hash), config hash, cockpit version, host; shown by history show."""

from __future__ import annotations

import subprocess
from pathlib import Path

from vexfs_cockpit.app.provenance import collect, module_source, tree_hash
from vexfs_cockpit.config.load import load_config
from vexfs_cockpit.store.render import provenance_line


def _git(repo: Path, *argv: str) -> None:
    subprocess.run(["git", "-C", str(repo), *argv], check=True, capture_output=True)


def test_a_git_checkout_gives_its_commit_and_dirty_flag(tmp_path: Path) -> None:
    src = tmp_path / "mod"
    src.mkdir()
    (src / "a.c").write_text("int a;\n")
    _git(src, "init", "-q")
    _git(src, "-c", "user.email=t@x.invalid", "-c", "user.name=t", "commit", "-q", "--allow-empty", "-m", "empty")
    _git(src, "add", "a.c")
    _git(src, "-c", "user.email=t@x.invalid", "-c", "user.name=t", "commit", "-q", "-m", "a")
    prov = module_source(src)
    assert len(prov["module_commit"]) == 40 and prov["module_dirty"] == "no"
    (src / "a.c").write_text("int a = 1;\n")
    assert module_source(src)["module_dirty"] == "yes"


def test_a_plain_tree_gets_a_hash_of_its_sources_only(tmp_path: Path) -> None:
    src = tmp_path / "mod"
    src.mkdir()
    (src / "a.c").write_text("int a;\n")
    before = tree_hash(src)
    (src / "a.o").write_bytes(b"\x7fELF build output")  # not source: same hash
    assert tree_hash(src) == before and module_source(src)["module_tree"] == before
    (src / "a.c").write_text("int b;\n")
    assert tree_hash(src) != before


def test_collect_names_kernel_config_and_cockpit() -> None:
    cfg = load_config(None, "ci")
    prov = collect(cfg, None)
    assert prov["profile"] == "selftest" and prov["env"] == "ci" and len(prov["config_sha256"]) == 16
    assert prov["kernel_from"] == "linux-image-amd64" and prov["kernel"]
    assert collect(load_config(None, "ci", {"execution.retry_count": 2}), None)["config_sha256"] != prov["config_sha256"]
    line = provenance_line(prov)
    assert line.startswith(f"kernel {prov['kernel']} (linux-image-amd64)") and "config selftest/ci" in line
    assert provenance_line({}) == ""
