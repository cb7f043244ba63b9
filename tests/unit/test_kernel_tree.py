"""A built kernel tree as the guest kernel (issue 14 item 1): validation in one line
each, the depmod'ed module staging (a tiny fake tree holding real modules of the
installed kernel, and a real depmod run), the image key and the kbuild against a tree."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from vexfs_cockpit import cli
from vexfs_cockpit.builds.kbuild import inputs_key, kbuild
from vexfs_cockpit.config.load import load_config
from vexfs_cockpit.errors import ConfigError, InfraError
from vexfs_cockpit.images.initramfs import BuildRequest, image_dir_for, module_load_order
from vexfs_cockpit.images.kconfig import fragment
from vexfs_cockpit.images.kernel_tree import BZIMAGE, load_tree, stage_modules, staged_modules
from vexfs_cockpit.transport.local import LocalTarget

INSTALLED = sorted(p for p in Path("/lib/modules").glob("*/modules.dep"))
# Real modules with a real dependency chain: ext4 needs crc16, mbcache and jbd2.
MODULES = {
    "fs/ext4/ext4.ko": "kernel/fs/ext4/ext4.ko",
    "fs/jbd2/jbd2.ko": "kernel/fs/jbd2/jbd2.ko",
    "fs/mbcache.ko": "kernel/fs/mbcache.ko",
    "lib/crc16.ko": "kernel/lib/crc16.ko",
    "drivers/net/ethernet/intel/e1000/e1000.ko": "kernel/drivers/net/ethernet/intel/e1000/e1000.ko",
}


def _installed_moddir() -> Path:
    for dep in INSTALLED:
        if all((dep.parent / rel).is_file() for rel in MODULES.values()):
            return dep.parent
    pytest.skip("no installed kernel with uncompressed ext4/jbd2/mbcache/crc16/e1000 modules")


def fake_tree(root: Path, release: str = "6.12.0-fake") -> Path:
    """A tree as `make bzImage modules` leaves it, but its .ko files are copies of the
    installed kernel's (depmod reads their symbols) and its bzImage a few bytes."""
    src = _installed_moddir()
    tree = root / "linux"
    for name in ("Makefile", "Kconfig"):
        (tree / name).parent.mkdir(parents=True, exist_ok=True)
        (tree / name).write_text("# fake\n")
    (tree / ".config").write_text(fragment())
    for rel, installed in MODULES.items():
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src / installed, tree / rel)
    # since 6.2 modules.order names each module's .o; modules.builtin has kernel/ paths
    (tree / "modules.order").write_text("".join(rel[:-3] + ".o\n" for rel in MODULES))
    (tree / "modules.builtin").write_text("kernel/drivers/block/loop.ko\nkernel/drivers/virtio/virtio_pci.ko\n")
    (tree / "modules.builtin.modinfo").write_bytes(b"loop.max_loop=int\0")
    (tree / "include/config").mkdir(parents=True)
    (tree / "include/config/kernel.release").write_text(release + "\n")
    bz = tree / BZIMAGE
    bz.parent.mkdir(parents=True)
    bz.write_bytes(b"fake bzImage 1")
    (tree / "Module.symvers").write_text("")
    return tree


def test_staging_links_the_listed_modules_and_depmod_orders_their_dependencies(tmp_path: Path) -> None:
    tree = load_tree(str(fake_tree(tmp_path)))
    moddir = stage_modules(tree, tmp_path / "stage")
    assert moddir == tmp_path / "stage/lib/modules/6.12.0-fake"
    ext4 = moddir / "kernel/fs/ext4/ext4.ko"
    assert ext4.resolve() == tree.path / "fs/ext4/ext4.ko"  # linked from the tree, no modules_install
    order = module_load_order(moddir, ["e1000", "ext4", "loop"])
    # depmod found ext4's dependencies in the staged modules; loop is built in (modules.builtin)
    assert order == [
        "kernel/drivers/net/ethernet/intel/e1000/e1000.ko",
        "kernel/lib/crc16.ko", "kernel/fs/mbcache.ko", "kernel/fs/jbd2/jbd2.ko", "kernel/fs/ext4/ext4.ko",
    ]
    assert (moddir / "modules.builtin.modinfo").read_bytes() == b"loop.max_loop=int\0"
    with pytest.raises(InfraError, match="virtio_rng is not in"):
        module_load_order(moddir, ["virtio_rng"])  # an installed kernel must have it...
    assert module_load_order(moddir, ["virtio_rng"], skip_absent=True) == []  # ...a tree may lack it


def test_staging_is_reused_until_a_module_changes(tmp_path: Path) -> None:
    tree_dir = fake_tree(tmp_path)
    first = staged_modules(load_tree(str(tree_dir)), tmp_path / "images")
    dep_mtime = (first / "modules.dep").stat().st_mtime_ns
    assert staged_modules(load_tree(str(tree_dir)), tmp_path / "images") == first
    assert (first / "modules.dep").stat().st_mtime_ns == dep_mtime  # no second depmod
    os.utime(tree_dir / "fs/jbd2/jbd2.ko", ns=(1, 1))  # rebuilt module
    second = staged_modules(load_tree(str(tree_dir)), tmp_path / "images")
    assert second != first and (second / "modules.dep").is_file()


@pytest.mark.parametrize(
    ("breakage", "says"),
    [
        ("no dir", "no such directory: give a built kernel tree"),
        ("no Makefile", "not a kernel source tree"),
        ("no .config", "not configured (no .config): `make -C {tree} tinyconfig`"),
        ("no bzImage", "not built (arch/x86/boot/bzImage missing): run `make -C {tree} bzImage modules`"),
        ("no modules.order", "not built (modules.order missing): run `make -C {tree} bzImage modules`"),
        ("stale", ".config is newer than arch/x86/boot/bzImage (the build is stale): run `make -C {tree} bzImage modules`"),
        ("module gone", "modules.order lists fs/mbcache.ko but it is not built: run `make -C {tree} modules`"),
        ("bad release", "not a kernel release"),
    ],
)
def test_a_tree_that_is_not_built_says_so_in_one_line_with_the_fix(tmp_path: Path, breakage: str, says: str) -> None:
    tree = fake_tree(tmp_path)
    if breakage == "no dir":
        shutil.rmtree(tree)
    elif breakage == "no Makefile":
        (tree / "Makefile").unlink()
    elif breakage == "no .config":
        (tree / ".config").unlink()
    elif breakage == "no bzImage":
        (tree / BZIMAGE).unlink()
    elif breakage == "no modules.order":
        (tree / "modules.order").unlink()
    elif breakage == "stale":
        os.utime(tree / BZIMAGE, (1, 1))
    elif breakage == "module gone":
        (tree / "fs/mbcache.ko").unlink()
    elif breakage == "bad release":
        (tree / "include/config/kernel.release").write_text("../../etc\n")
    wrong_value = breakage in ("no dir", "no Makefile")  # a bad setting: exit 2; the rest need a make
    with pytest.raises(ConfigError if wrong_value else InfraError) as err:
        load_tree(str(tree))
    msg = str(err.value)
    assert msg.startswith(f"fleet.guest_kernel {tree}: ") and "\n" not in msg
    assert says.format(tree=tree) in msg


def test_the_kernel_flag_takes_a_tree_and_an_unbuilt_one_stops_the_run_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    tree = fake_tree(tmp_path)
    (tree / BZIMAGE).unlink()
    rc = cli.main(["run", "--batch", "--env", "ci", "--db", str(tmp_path / "h.db"), "--domains", "kernel_module", "--kernel", str(tree)])
    err = capsys.readouterr().err
    assert rc == 3 and err.count("\n") == 1 and f"run `make -C {tree} bzImage modules`" in err


def test_config_makes_a_tree_absolute_and_keeps_releases_one_component(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    cfg = load_config(None, "ci", {"fleet.guest_kernel": "./linux"})
    assert cfg.fleet.guest_kernel == str(tmp_path / "linux") and cfg.fleet.kernel_tree == tmp_path / "linux"
    assert load_config(None, "ci", {"fleet.guest_kernel": "auto"}).fleet.kernel_tree is None
    with pytest.raises(ConfigError, match="fleet.guest_kernel"):
        load_config(None, "ci", {"fleet.guest_kernel": "6.1..x"})


def test_the_image_boots_the_trees_bzimage_with_its_staged_modules_keyed_by_content(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path)
    req = BuildRequest(kernel_version=str(tree), root=tmp_path / "images")
    path, plan = image_dir_for(req)
    assert plan.vmlinuz == tree / BZIMAGE and plan.kernel_version == "6.12.0-fake"
    assert "kernel/fs/ext4/ext4.ko" in plan.modules and "kernel/fs/jbd2/jbd2.ko" in plan.modules
    guest_ext4 = plan.host_files["lib/modules/6.12.0-fake/kernel/fs/ext4/ext4.ko"]
    assert guest_ext4.read_bytes() == (tree / "fs/ext4/ext4.ko").read_bytes()
    # same size and mtime, other bytes: a rebuilt bzImage is a new image
    st = (tree / BZIMAGE).stat()
    (tree / BZIMAGE).write_bytes(b"fake bzImage 2")
    os.utime(tree / BZIMAGE, ns=(st.st_atime_ns, st.st_mtime_ns))
    assert image_dir_for(req)[0] != path
    (tree / ".config").write_text(fragment().replace("CONFIG_DEVTMPFS=y", "# CONFIG_DEVTMPFS is not set"))
    os.utime(tree / ".config", ns=(st.st_atime_ns, st.st_mtime_ns))
    with pytest.raises(InfraError, match=r"CONFIG_DEVTMPFS not set in its \.config \(/dev is a devtmpfs"):
        image_dir_for(req)  # the fitness check reads the tree's .config


async def test_kbuild_runs_make_in_the_tree_and_refuses_a_tree_of_another_kernel(tmp_path: Path) -> None:
    tree = fake_tree(tmp_path)
    src = tmp_path / "mod"
    src.mkdir()
    (src / "Kbuild").write_text("obj-m := m.o\n")
    assert inputs_key(src, "6.12.0-fake", (), tree) != inputs_key(src, "6.12.0-fake", ())
    with pytest.raises(InfraError, match=f"the guest runs 6.1.0-other but the kernel tree {tree} is 6.12.0-fake"):
        await kbuild(src, "6.1.0-other", tmp_path / "out", LocalTarget("host"), tree=tree)
    # the fake tree's Makefile has no targets: what matters is where make ran
    res = await kbuild(src, "6.12.0-fake", tmp_path / "out", LocalTarget("host"), tree=tree)
    assert res.command.startswith(f"make -C {tree} M=") and not res.ok


def test_a_tree_with_everything_built_in_stages_no_modules(tmp_path: Path) -> None:
    # the README's recipe (tinyconfig + the fragment, all =y) leaves modules.order empty
    tree_dir = fake_tree(tmp_path)
    (tree_dir / "modules.order").write_text("")
    (tree_dir / "modules.builtin").write_text("kernel/drivers/net/ethernet/intel/e1000/e1000.ko\nkernel/fs/ext4/ext4.ko\n")
    moddir = stage_modules(load_tree(str(tree_dir)), tmp_path / "stage")
    assert (moddir / "modules.dep").read_text() == ""
    assert module_load_order(moddir, ["e1000", "ext4", "virtio_rng"], skip_absent=True) == []
