"""The shipped vexfs profile (configs/vexfs.yaml) against a small fake VexFS checkout
whose kernel module has a real compile error: the honest outcome of pointing the
cockpit at a VexFS tree that does not build against the guest kernel (what the real
lspecian/vexfs tree does on Debian 12's 6.1).

Real VMs, a real kbuild against the guest kernel's headers, the real batch front
end: module_build FAILS with the compiler's error as evidence and the kernel version
in its message, every test that needs the module is SKIPPED with that reason (the other five domains
without booting a VM: they build on the host first), nothing ERRORs, the exit code is
1, and no traceback reaches the user.
"""

from __future__ import annotations

import argparse
import json
import os
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest_vm import _check_host, vm_config

pytestmark = pytest.mark.vm

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "configs" / "vexfs.yaml"
KO = "vexfs_deadlock_fix.ko"
MISSING = "vexfs_no_such_helper"  # undeclared on every kernel: the build must fail

# The real tree's shape: kernel_module/Kbuild names vexfs_deadlock_fix.o built from core/.
KBUILD = textwrap.dedent("""\
    obj-m := vexfs_deadlock_fix.o
    vexfs_deadlock_fix-objs := core/main.o
    ccflags-y += -I$(src)/include
""")
MAIN_C = textwrap.dedent(f"""\
    #include <linux/module.h>
    #include <linux/fs.h>
    #include "vexfs_core.h"

    static int __init vexfs_init(void)
    {{
    \treturn {MISSING}(VEXFS_MAGIC);
    }}

    static void __exit vexfs_exit(void)
    {{
    }}

    module_init(vexfs_init);
    module_exit(vexfs_exit);
    MODULE_LICENSE("GPL");
""")
MKFS_C = textwrap.dedent("""\
    #include <stdio.h>
    #include <string.h>
    int main(int argc, char **argv)
    {
    \tFILE *f;
    \tif (argc < 2 || !(f = fopen(argv[argc - 1], "r+b"))) { perror("mkfs.vexfs"); return 1; }
    \tfwrite("VEXFSFIX", 1, 8, f);
    \treturn fclose(f) != 0;
    }
""")


def fake_checkout(root: Path) -> Path:
    (root / "kernel_module" / "core").mkdir(parents=True)
    (root / "kernel_module" / "include").mkdir()
    (root / "tools").mkdir()
    (root / "kernel_module" / "Kbuild").write_text(KBUILD)
    (root / "kernel_module" / "include" / "vexfs_core.h").write_text("#define VEXFS_MAGIC 0x56455846\n")
    (root / "kernel_module" / "core" / "main.c").write_text(MAIN_C)
    (root / "tools" / "mkfs.vexfs.c").write_text(MKFS_C)
    return root


def batch_args(tmp_path: Path) -> argparse.Namespace:
    return argparse.Namespace(
        config=str(PROFILE), env="test", db=str(tmp_path / "history.db"), batch=True,
        # Two TCG guests at a time (the test overlay's caps allow it) halve the wall time.
        set=["execution.parallel_test_execution=true", "execution.max_parallel_tests=2"],
        domains=None, tests=None, timeout=None, retries=None,
        junit=str(tmp_path / "vexfs.xml"), json=str(tmp_path / "vexfs.json"), show_klog=False,
    )


async def test_vexfs_profile_with_a_module_that_does_not_compile(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from vexfs_cockpit.commands.run import run_batch
    from vexfs_cockpit.images.initramfs import resolve_kernel_version
    from vexfs_cockpit.fleet.provider import LibvirtProvider

    cfg = vm_config()
    _check_host(cfg)
    kernel = resolve_kernel_version(cfg.fleet.guest_kernel)
    monkeypatch.setenv("VEXFS_SOURCE", str(fake_checkout(tmp_path / "vexfs")))
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))  # run artifacts (kbuild dirs) stay in tmp
    args = batch_args(tmp_path)

    def provider(c, bus):  # VM names of our own: a concurrent `run --env test` must not clash
        return LibvirtProvider(c, bus, tmp_path / "runs", env=f"pytest-vexfs{os.getpid()}")

    rc = await run_batch(args, provider_factory=provider)
    out, err = capsys.readouterr()
    assert "Traceback" not in out + err
    assert rc == 1, out + err

    report = json.loads(Path(args.json).read_text())
    assert report["run"]["profile"] == "vexfs" and report["run"]["status"] == "failed"
    assert not report["infra_problems"], report["infra_problems"]
    tests = {(d["name"], t["name"]): t for d in report["domains"] for t in d["tests"]}
    assert {d for d, _ in tests} == {
        "kernel_module", "filesystem_operations", "vector_operations",
        "performance_metrics", "safety_validation", "integration_testing",
    }

    build = tests.pop(("kernel_module", "module_build"))
    assert build["status"] == "FAILED"
    assert kernel in build["message"] and "core/main.c:" in build["message"] and MISSING in build["message"]
    assert MISSING in build["artifacts"]["compiler_errors"]  # the compiler's own lines are the evidence
    assert any(c["cmd"].startswith("make -C /lib/modules/" + kernel) and c["exit_code"] not in (0, None)
               for c in build["evidence"]["commands"])

    # Everything else needs the module: skipped, naming why (directly or via module_build).
    for (domain, name), t in tests.items():
        assert t["status"] == "SKIPPED", f"{domain}/{name}: {t['status']} {t['message']}"
        assert MISSING in t["message"], f"{domain}/{name}: {t['message']}"
        if domain != "kernel_module":
            assert t["message"].startswith(f"{KO} did not build against {kernel}: core/main.c:"), t["message"]

    status = {d["name"]: d["status"] for d in report["domains"]}
    assert status.pop("kernel_module") == "failed"
    assert set(status.values()) == {"skipped"}, status
    # The other domains built on the host before booting: a module that does not
    # compile costs them no VM (kernel_module's own VM runs module_build as a test).
    booted = {d["name"]: d["vm"] for d in report["domains"] if d["vm"]}
    assert list(booted) == ["kernel_module"], booted

    suites = ET.parse(args.junit).getroot()
    assert (suites.get("failures"), suites.get("errors"), suites.get("skipped")) == ("1", "0", str(len(tests)))
    assert out.rstrip().splitlines()[-1] == f"0 passed, 1 failed, {len(tests)} skipped"


async def test_mkfs_is_built_from_the_checkouts_source_and_formats_a_loop_device(guest, tmp_path: Path) -> None:
    """device.mkfs names ``${VEXFS_SOURCE}/tools/mkfs.vexfs``; VexFS also commits a
    binary of that name. The cockpit builds ``mkfs.vexfs.c`` statically instead (the
    guest has no compiler and maybe another libc) and formats a real loop device with it."""
    from vexfs_cockpit.engine.plugin import DomainBase, DomainContext
    from vexfs_cockpit.transport.local import LocalTarget

    from domains._common import ModuleUnderTest

    checkout = fake_checkout(tmp_path / "vexfs")
    stale = checkout / "tools" / "mkfs.vexfs"
    stale.write_text("#!/bin/sh\necho 'stale committed binary ran' >&2; exit 1\n")
    stale.chmod(0o755)
    settings = {
        "module_name": "vexfs_deadlock_fix", "fs_type": "vexfs_fixed", "module_path": KO,
        "build_path": "kernel_module", "device": {"loop": "4M", "mkfs": f"{stale} -f"},
    }
    ctx = DomainContext(name="filesystem_operations", settings=settings, target=guest.target,
                        host=LocalTarget("host"), guest_kernel=guest.guest_kernel, workdir=tmp_path)
    mod = ModuleUnderTest(DomainBase(ctx))
    dev = await mod.make_loop_device(tag="pytest-mkfs")
    try:
        magic = await guest.target.run(f"head -c 8 {dev}", check=True)
        assert magic.output == "VEXFSFIX"  # written by the binary built from mkfs.vexfs.c
    finally:
        await guest.target.run(["/usr/sbin/losetup", "-d", dev])
