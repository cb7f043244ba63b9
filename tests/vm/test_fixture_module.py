"""The self-test module vexfs_selftest: real host builds, and real loads in a guest.

Host tests run kbuild against the installed headers of the guest kernel (~2 s each).
VM tests (``-m vm``) use the ``guest`` / ``fresh_guest`` fixtures of tests/conftest_vm.py
and leave the shared guest as they found it (unmounted, unloaded, untainted).
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from pathlib import Path

import pytest
import pytest_asyncio

from vexfs_cockpit.engine.provider import Lease
from vexfs_cockpit.images.initramfs import resolve_kernel_version
from vexfs_cockpit.builds.kbuild import KbuildResult, KernelHeadersMissing, kbuild, parse_errors
from vexfs_cockpit.transport.local import LocalTarget

FIXTURE = Path(__file__).parent.parent / "fixtures" / "selftest_fs"
PARAMS = {"slow_io_ms", "eio_on_read", "leak_on_unload", "max_files", "cache_kib"}
REMOTE_KO = "/tmp/vexfs_selftest.ko"
MNT = "/mnt/vst_test"
KNOBS = "/sys/kernel/debug/vexfs_selftest"
SYS_PARAMS = "/sys/module/vexfs_selftest/parameters"


@pytest.fixture(scope="module")
def host_kernel() -> str:
    return resolve_kernel_version()


def _modinfo() -> str:
    return shutil.which("modinfo") or "/sbin/modinfo"


# ---- host: kbuild ----------------------------------------------------------------------


async def test_module_builds_with_its_parameters(host_kernel: str, tmp_path: Path) -> None:
    host = LocalTarget()
    res = await kbuild(FIXTURE, host_kernel, tmp_path, host)

    assert res.ok, res.message
    assert res.ko is not None and res.ko.name == "vexfs_selftest.ko"
    assert res.ko.is_relative_to(tmp_path)
    assert res.errors == ()
    info = await host.run([_modinfo(), "-p", str(res.ko)], check=True)
    assert {ln.split(":", 1)[0] for ln in info.output.splitlines() if ln.strip()} == PARAMS
    vermagic = await host.run([_modinfo(), "-F", "vermagic", str(res.ko)], check=True)
    assert vermagic.output.split()[0] == host_kernel
    alias = await host.run([_modinfo(), "-F", "alias", str(res.ko)], check=True)
    assert alias.output.strip() == "fs-vexfs_selftest"  # mount -t autoloads it
    # The build happened in a copy: the repo collects no build outputs.
    assert not [p for p in FIXTURE.iterdir() if p.suffix in {".o", ".ko", ".mod"} or p.name == "Module.symvers"]


async def test_break_build_is_a_parsed_compiler_error(host_kernel: str, tmp_path: Path) -> None:
    res = await kbuild(FIXTURE, host_kernel, tmp_path, LocalTarget(), make_args=["BREAK_BUILD=1"])

    assert not res.ok and res.exit_code not in (0, None) and res.ko is None
    assert re.fullmatch(
        r"vexfs_selftest\.c:\d+:\d+: error: .vexfs_selftest_undeclared_symbol. undeclared.*", res.errors[0]
    ), res.errors
    assert res.message.startswith(f"build failed for {host_kernel}: vexfs_selftest.c:")
    assert "error:" in res.output  # the full compiler output is kept as evidence


async def test_undefined_symbol_is_a_parsed_modpost_error(host_kernel: str, tmp_path: Path) -> None:
    src = tmp_path / "undef_mod"
    src.mkdir()
    (src / "Kbuild").write_text("obj-m := undef_mod.o\n")
    (src / "undef_mod.c").write_text(
        "#include <linux/module.h>\n"
        "extern void vexfs_selftest_no_such_symbol(void);\n"
        "static int __init undef_init(void) { vexfs_selftest_no_such_symbol(); return 0; }\n"
        "module_init(undef_init);\nMODULE_LICENSE(\"GPL\");\n"
    )
    res = await kbuild(src, host_kernel, tmp_path / "out", LocalTarget())

    assert not res.ok
    assert res.errors and res.errors[0].startswith("modpost: ")
    assert "vexfs_selftest_no_such_symbol" in res.errors[0] and "undefined" in res.errors[0]


async def test_kbuild_timeout_kills_make(host_kernel: str, tmp_path: Path) -> None:
    res = await kbuild(FIXTURE, host_kernel, tmp_path, LocalTarget(), timeout=0.2)

    assert res.timed_out and res.exit_code is None and not res.ok
    assert "timed out" in res.message


async def test_missing_headers_name_the_package(tmp_path: Path) -> None:
    with pytest.raises(KernelHeadersMissing, match=r"apt-get install linux-headers-0\.0\.0-nope"):
        await kbuild(FIXTURE, "0.0.0-nope", tmp_path, LocalTarget())


def test_parse_errors_prefers_compiler_lines_over_make_lines() -> None:
    out = (
        "  CC [M]  /b/x/vexfs_selftest.c\n"
        "/b/x/vexfs_selftest.c:38:16: error: 'foo' undeclared (first use in this function)\n"
        "/b/x/vexfs_selftest.c:40:1: warning: control reaches end\n"
        "make[1]: *** [scripts/Makefile.build:255: /b/x/vexfs_selftest.o] Error 1\n"
    )
    assert parse_errors(out, Path("/b/x")) == ("vexfs_selftest.c:38:16: error: 'foo' undeclared (first use in this function)",)
    assert parse_errors("make: *** No rule to make target 'modules'.  Stop.\n") == (
        "make: No rule to make target 'modules'.  Stop.",
    )
    r = KbuildResult("k", "make", Path("/b/x"), 2, out, 1.0, errors=parse_errors(out, Path("/b/x")))
    assert r.message == "build failed for k: vexfs_selftest.c:38:16: error: 'foo' undeclared (first use in this function)"


# ---- guest: load, use, knobs ---------------------------------------------------------------


@pytest.fixture(scope="module")
def built_kos(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Path]]:
    """One real build per guest kernel for this module's VM tests: (build root, kernel -> .ko)."""
    return tmp_path_factory.mktemp("kbuild"), {}


async def _put_module(lease: Lease, built: tuple[Path, dict[str, Path]]) -> None:
    kernel = lease.guest_kernel or (await lease.target.run("uname -r", check=True)).output.strip()
    out_dir, kos = built
    if kernel not in kos:
        res = await kbuild(FIXTURE, kernel, out_dir, LocalTarget())
        assert res.ok, res.message
        assert res.ko is not None
        kos[kernel] = res.ko
    await lease.target.put(kos[kernel], REMOTE_KO)


@pytest_asyncio.fixture
async def loaded_guest(guest: Lease, built_kos: tuple[Path, dict[str, Path]]):  # type: ignore[no-untyped-def]
    """The shared guest with the module copied in; unmounted and unloaded afterwards."""
    await _put_module(guest, built_kos)
    yield guest
    await guest.target.run(f"umount {MNT} 2>/dev/null; rmmod vexfs_selftest 2>/dev/null; rm -f {REMOTE_KO}")


async def _sh(lease: Lease, cmd: str, timeout: float = 60.0) -> str:
    return (await lease.target.run(cmd, timeout=timeout, check=True)).output


@pytest.mark.vm
async def test_load_mount_write_read_unload(loaded_guest: Lease, tmp_path: Path) -> None:
    g = loaded_guest
    data = os.urandom(1 << 20)
    (tmp_path / "data.bin").write_bytes(data)
    await g.target.put(tmp_path / "data.bin", "/tmp/vst_data.bin")

    await _sh(g, f"insmod {REMOTE_KO}")
    assert "vexfs_selftest" in await _sh(g, "cat /proc/filesystems")
    await _sh(g, f"mkdir -p {MNT} && mount -t vexfs_selftest -o size=4M,mode=0750 none {MNT}")
    assert "size=4096k,mode=750" in await _sh(g, f"grep ' {MNT} ' /proc/mounts")

    await _sh(g, f"cp /tmp/vst_data.bin {MNT}/f")
    assert (await _sh(g, f"sha256sum {MNT}/f")).split()[0] == hashlib.sha256(data).hexdigest()
    # append, write at an offset, truncate
    await _sh(g, f"printf tail >> {MNT}/f && printf AB | dd of={MNT}/f bs=1 seek=10 conv=notrunc 2>/dev/null")
    expect = bytearray(data + b"tail")
    expect[10:12] = b"AB"
    assert (await _sh(g, f"sha256sum {MNT}/f")).split()[0] == hashlib.sha256(expect).hexdigest()
    await _sh(g, f"truncate -s 100 {MNT}/f")
    assert (await _sh(g, f"stat -c %s {MNT}/f")).strip() == "100"
    # directories
    await _sh(g, f"mkdir {MNT}/d && touch {MNT}/d/x")
    r = await g.target.run(f"rmdir {MNT}/d")
    assert not r.ok and "not empty" in r.output.lower()
    await _sh(g, f"mv {MNT}/d/x {MNT}/d/y && rm {MNT}/d/y && rmdir {MNT}/d")
    # the size limit: a short write up to it, then ENOSPC; df agrees
    r = await g.target.run(f"dd if=/dev/zero of={MNT}/big bs=64k count=128")
    assert not r.ok and "No space left on device" in r.output
    assert (await _sh(g, f"df {MNT} | tail -1")).split()[4] == "100%"
    await _sh(g, f"rm {MNT}/big")
    # read-only remount: the VFS refuses writes
    await _sh(g, f"mount -o remount,ro {MNT}")
    r = await g.target.run(f"touch {MNT}/ro")
    assert not r.ok and "Read-only file system" in r.output

    await _sh(g, f"umount {MNT} && rmmod vexfs_selftest")
    assert "vexfs_selftest" not in await _sh(g, "cat /proc/filesystems /proc/modules")


@pytest.mark.vm
async def test_bad_module_parameter_fails_the_load(loaded_guest: Lease) -> None:
    g = loaded_guest
    r = await g.target.run(f"insmod {REMOTE_KO} max_files=0")

    assert not r.ok and "Invalid argument" in r.output
    assert "vexfs_selftest" not in await _sh(g, "cat /proc/modules")


@pytest.mark.vm
async def test_eio_and_slow_io_knobs(loaded_guest: Lease) -> None:
    g = loaded_guest
    await _sh(g, f"insmod {REMOTE_KO} eio_on_read=1 && mkdir -p {MNT} && mount -t vexfs_selftest none {MNT}")
    await _sh(g, f"echo payload > {MNT}/f")

    r = await g.target.run(f"cat {MNT}/f")
    assert not r.ok and "Input/output error" in r.output
    await _sh(g, f"echo 0 > {SYS_PARAMS}/eio_on_read")
    assert (await _sh(g, f"cat {MNT}/f")).strip() == "payload"

    one_read = f"dd if={MNT}/f of=/dev/null bs=4k count=1 2>/dev/null"
    fast = await g.target.run(one_read, check=True)
    await _sh(g, f"echo 400 > {KNOBS}/slow_io_ms")  # debugfs and sysfs share the variable
    assert (await _sh(g, f"cat {SYS_PARAMS}/slow_io_ms")).strip() == "400"
    slow = await g.target.run(one_read, check=True)
    assert slow.duration_s >= 0.4 > fast.duration_s


@pytest.mark.vm
async def test_warn_knob_reaches_the_kernel_log(fresh_guest: Lease, built_kos: tuple[Path, dict[str, Path]]) -> None:
    g = fresh_guest  # a WARN taints the kernel for good: not on the shared guest
    assert g.klog is not None, "the guest lease has no kernel log"
    await _put_module(g, built_kos)
    await _sh(g, f"insmod {REMOTE_KO}")
    since = g.klog.cursor()

    await _sh(g, f"echo 1 > {KNOBS}/warn")
    report = await g.klog.wait_for({"warning"}, since, timeout=60)

    assert report is not None, "no WARNING report within 60 s"
    assert "vexfs_selftest_warn_knob" in report.title + report.text
    lines, _ = g.klog.window(since)
    assert any("WARNING: CPU:" in ln and "vexfs_selftest_warn_knob" in ln for ln in lines)
    assert int((await _sh(g, "cat /proc/sys/kernel/tainted")).strip()) & (1 << 9)  # TAINT_WARN


@pytest.mark.vm
async def test_leak_on_unload_leaks_real_slab_memory(
    fresh_guest: Lease, built_kos: tuple[Path, dict[str, Path]]
) -> None:
    g = fresh_guest  # the leak stays until reboot: not on the shared guest
    await _put_module(g, built_kos)

    async def kmalloc_1k() -> int:
        return int((await _sh(g, "awk '$1 == \"kmalloc-1k\" {print $2}' /proc/slabinfo")).strip())

    base = await kmalloc_1k()
    await _sh(g, f"insmod {REMOTE_KO} cache_kib=2048 && rmmod vexfs_selftest")
    control = await kmalloc_1k()
    await _sh(g, f"insmod {REMOTE_KO} cache_kib=2048 leak_on_unload=1 && rmmod vexfs_selftest")
    leaked = await kmalloc_1k()

    assert control - base < 500, (base, control)  # freed on a normal unload
    assert leaked - control >= 2000, (control, leaked)  # 2048 objects stay allocated


async def test_identical_inputs_reuse_the_cached_build_and_a_change_rebuilds(host_kernel: str, tmp_path: Path) -> None:
    """The warm loop compiles once: byte-identical sources hit the cache (when allowed);
    any source change, or reuse_cache=False, is a real compile."""
    import shutil as _sh

    from vexfs_cockpit.builds.kbuild import kbuild as _kbuild
    from vexfs_cockpit.transport.local import LocalTarget as _LT

    src = tmp_path / "src"
    _sh.copytree(FIXTURE, src)
    cache = tmp_path / "cache"
    kernel = host_kernel
    first = await _kbuild(src, kernel, tmp_path / "o1", _LT("host"), cache_dir=cache)
    assert first.ok and not first.cached
    again = await _kbuild(src, kernel, tmp_path / "o2", _LT("host"), cache_dir=cache)
    assert again.ok and again.cached and "cache" in again.message
    fresh = await _kbuild(src, kernel, tmp_path / "o3", _LT("host"), cache_dir=cache, reuse_cache=False)
    assert fresh.ok and not fresh.cached
    (src / "vexfs_selftest.c").write_text((src / "vexfs_selftest.c").read_text() + "\n/* changed */\n")
    changed = await _kbuild(src, kernel, tmp_path / "o4", _LT("host"), cache_dir=cache)
    assert changed.ok and not changed.cached
