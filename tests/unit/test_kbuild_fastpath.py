"""The warm loop's fast rebuild (builds/fastpath.py): which saves it replays from
kbuild's records and which fall back to make, and that what it replays is what make
builds (byte for byte, against this machine's kernel headers and, when it is built,
the 6.12 test tree)."""

from __future__ import annotations

import asyncio
import os
import subprocess
from pathlib import Path

import pytest

from vexfs_cockpit.builds import fastpath
from vexfs_cockpit.builds.fastpath import Fallback
from vexfs_cockpit.builds.kbuild import _is_artifact, kbuild
from vexfs_cockpit.engine.target import CommandResult
from vexfs_cockpit.transport.local import LocalTarget


# ----------------------------------------------------------------------------- records made by hand
def _write_records(kdir: Path, bd: Path, *, target_prefix: str | None = None, extra: str = "",
                   ko_cmd: str | None = None) -> None:
    """The records a one-file module's make leaves (6.1's shape), the files they name."""
    (kdir / "include" / "config").mkdir(parents=True, exist_ok=True)
    (kdir / "include" / "config" / "auto.conf").write_text("CONFIG_MODULES=y\nCONFIG_MODVERSIONS=y\n")
    (kdir / "Makefile").write_text("# kernel\n")
    (kdir / "include" / "linux").mkdir(parents=True, exist_ok=True)
    (kdir / "include" / "linux" / "module.h").write_text("/* kernel header */\n")
    cc = kdir / "cc"  # the "compiler" the records start with
    cc.write_text("#!/bin/sh\n")
    bd.mkdir(parents=True, exist_ok=True)
    (bd / "Kbuild").write_text("obj-m := m.o\n")
    (bd / "m.c").write_text("int x;\n")
    (bd / "m.h").write_text("#define M 1\n")
    (bd / "README").write_text("notes\n")
    t = f"{target_prefix}m.o" if target_prefix is not None else f"{bd}/m.o"
    (bd / ".m.o.cmd").write_text(
        f"cmd_{t} := {cc} -Wp,-MMD,{bd}/.m.o.d -c -o {bd}/m.o {bd}/m.c\n\n"
        f"source_{t} := {bd}/m.c\n\n"
        f"deps_{t} := \\\n  {kdir}/include/linux/module.h \\\n    $(wildcard include/config/FOO) \\\n  {bd}/m.h \\\n\n"
        f"{t}: $(deps_{t})\n\n$(deps_{t}):\n{extra}"
    )
    (bd / ".m.mod.o.cmd").write_text(
        f"cmd_{bd}/m.mod.o := {cc} -Wp,-MMD,{bd}/.m.mod.o.d -c -o {bd}/m.mod.o {bd}/m.mod.c\n\n"
        f"source_{bd}/m.mod.o := {bd}/m.mod.c\n\n"
        f"deps_{bd}/m.mod.o := \\\n  {kdir}/include/linux/module.h \\\n\n"
        f"{bd}/m.mod.o: $(deps_{bd}/m.mod.o)\n\n$(deps_{bd}/m.mod.o):\n"
    )
    (bd / ".m.ko.cmd").write_text(f"cmd_{bd}/m.ko := {ko_cmd or f'ld -r -o {bd}/m.ko {bd}/m.o {bd}/m.mod.o;  true'}\n")
    (bd / ".Module.symvers.cmd").write_text(f"cmd_{bd}/Module.symvers :=  sed 's/ko$$/o/' {bd}/modules.order | "
                                            f"scripts/mod/modpost -o {bd}/Module.symvers -T -\n")
    (bd / "modules.order").write_text(f"{bd}/m.ko\n")
    for name in ("m.mod.c", "m.o", "m.mod.o", "m.ko", "Module.symvers"):
        (bd / name).write_text("built\n")


@pytest.fixture
def tree(tmp_path: Path) -> tuple[Path, Path]:
    kdir, bd = tmp_path / "kdir", tmp_path / "build" / "m-6.1"
    _write_records(kdir, bd)
    _recorded(kdir, bd)
    return kdir, bd


def _recorded(kdir: Path, bd: Path, make_args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> None:
    fastpath.record_build(bd, kdir, make_args, env or {"PATH": "/usr/bin"}, fastpath.source_manifest(bd, _is_artifact))


def _plan(kdir: Path, bd: Path, make_args: tuple[str, ...] = (), env: dict[str, str] | None = None) -> fastpath.Plan:
    return fastpath.plan(bd, kdir, make_args, env or {"PATH": "/usr/bin"}, fastpath.source_manifest(bd, _is_artifact))


def _touch_later(path: Path, text: str | None = None) -> None:
    if text is not None:
        path.write_text(text)
    later = path.stat().st_mtime_ns + 10**9
    os.utime(path, ns=(later, later))


def _stale(p: fastpath.Plan) -> list[str]:
    return [path.name for path, r in p.records.items() if r.source is not None and fastpath.out_of_date(r)]


def test_nothing_changed_is_nothing_to_replay(tree: tuple[Path, Path]) -> None:
    kdir, bd = tree
    p = _plan(kdir, bd)
    assert p.changed == [] and _stale(p) == []
    assert [m.ko.name for m in p.modules] == ["m.ko"]


def test_an_edited_source_or_a_header_it_reads_is_replayed(tree: tuple[Path, Path]) -> None:
    kdir, bd = tree
    _touch_later(bd / "m.c", "int y;\n")
    p = _plan(kdir, bd)
    assert p.changed == ["m.c"] and _stale(p) == ["m.o"]
    _touch_later(bd / "m.h", "#define M 2\n")  # recorded in m.o's deps: make would recompile m.o for it
    assert _plan(kdir, bd).changed == ["m.c", "m.h"]


def test_a_kernel_header_newer_than_the_object_makes_it_stale_as_make_would(tree: tuple[Path, Path]) -> None:
    kdir, bd = tree
    _touch_later(kdir / "include" / "linux" / "module.h")
    assert _stale(_plan(kdir, bd)) == ["m.o", "m.mod.o"]
    (kdir / "include" / "linux" / "module.h").unlink()  # a dependency gone: kbuild rebuilds, so do we
    assert "m.o" in _stale(_plan(kdir, bd))


@pytest.mark.parametrize(("change", "why"), [
    (lambda kdir, bd: _touch_later(bd / "Kbuild", "obj-m := m.o\nccflags-y := -DX\n"),
     "Kbuild changed and is no recorded source or dependency"),
    (lambda kdir, bd: _touch_later(bd / "README", "more notes\n"), "README changed and is no recorded source"),
    (lambda kdir, bd: (bd / "n.c").write_text("int n;\n"), "new file n.c"),
    (lambda kdir, bd: (bd / "m.h").unlink(), "m.h removed"),
    (lambda kdir, bd: (bd / fastpath.STAMP).unlink(), "first build here"),
    (lambda kdir, bd: (bd / ".m.mod.o.cmd").unlink(), "no record of m.mod.o"),
    (lambda kdir, bd: (bd / ".Module.symvers.cmd").unlink(), "no record of Module.symvers"),
    (lambda kdir, bd: (bd / "modules.order").unlink(), "no modules.order"),
    (lambda kdir, bd: _touch_later(kdir / "cc"), "the kernel build files or the compiler changed"),
    (lambda kdir, bd: _touch_later(kdir / "include" / "config" / "auto.conf",
                                   "CONFIG_MODULES=y\nCONFIG_TRIM_UNUSED_KSYMS=y\n"), "CONFIG_TRIM_UNUSED_KSYMS"),
    (lambda kdir, bd: [(kdir / "include" / "config" / "auto.conf").write_text("CONFIG_DEBUG_INFO_BTF_MODULES=y\n"),
                       (kdir / "vmlinux").write_text("")], "BTF"),
])
def test_what_the_records_cannot_answer_falls_back_to_make(tree: tuple[Path, Path], change, why: str) -> None:
    kdir, bd = tree
    _touch_later(bd / "m.c", "int y;\n")
    change(kdir, bd)
    with pytest.raises(Fallback, match=why.replace("(", r"\(").replace(")", r"\)")):
        _plan(kdir, bd)


def test_btf_without_a_vmlinux_is_skipped_by_make_too_so_it_is_replayed(tree: tuple[Path, Path]) -> None:
    kdir, bd = tree
    (kdir / "include" / "config" / "auto.conf").write_text("CONFIG_DEBUG_INFO_BTF_MODULES=y\n")
    _recorded(kdir, bd)
    assert _plan(kdir, bd).changed == []


def test_other_make_words_or_environment_fall_back(tree: tuple[Path, Path]) -> None:
    kdir, bd = tree
    with pytest.raises(Fallback, match="other make words"):
        _plan(kdir, bd, ("BREAK_BUILD=1",))
    _recorded(kdir, bd, ("W=1",))
    with pytest.raises(Fallback, match="C=, W="):  # W= adds checks kbuild does not record
        _plan(kdir, bd, ("W=1",))
    _recorded(kdir, bd)
    with pytest.raises(Fallback, match="environment"):
        _plan(kdir, bd, env={"PATH": "/usr/bin", "KCFLAGS": "-DDEBUG"})
    assert _plan(kdir, bd, env={"PATH": "/usr/bin", "HOME": "/elsewhere"}).changed == []  # not kbuild's business


def test_records_of_unreplayed_steps_or_layouts_fall_back(tmp_path: Path) -> None:
    kdir, bd = tmp_path / "k", tmp_path / "b1"
    # genksyms' CRCs appended to the record (MODVERSIONS and an EXPORT_SYMBOL)
    _write_records(kdir, bd, extra="\n#SYMVER m_fn 0x12345678\n")
    with pytest.raises(Fallback, match="step that is not replayed"):
        fastpath.parse_record(bd / ".m.o.cmd", kdir)
    # the objtool line kbuild appends is fine, and a prerequisite while objtool exists
    bd2 = tmp_path / "b2"
    _write_records(kdir, bd2, extra=f"\n{bd2}/m.o: $(wildcard ./tools/objtool/objtool)\n")
    rec = fastpath.parse_record(bd2 / ".m.o.cmd", kdir)
    assert Path(rec.optional[-1]) == kdir / "tools/objtool/objtool" and rec.source == bd2 / "m.c"
    # 6.13+ runs external modules from their own directory: relative targets
    bd3 = tmp_path / "b3"
    _write_records(kdir, bd3, target_prefix="")
    with pytest.raises(Fallback, match="relatively"):
        fastpath.parse_record(bd3 / ".m.o.cmd", kdir)
    # an arch post-link step runs make
    bd4 = tmp_path / "b4"
    _write_records(kdir, bd4, ko_cmd=f"ld -r -o {tmp_path}/b4/m.ko {tmp_path}/b4/m.o; make -f ./arch/x86/Makefile.postlink x")
    with pytest.raises(Fallback, match="post-link"):
        fastpath.discover(bd4, kdir)


def test_make_escaping_is_undone_as_make_does() -> None:
    rec = fastpath.Record(Path("/b/x.o"), "printf '%s\\n' a | awk '!x[$$0]++' $(pound)c")
    assert rec.shell == "printf '%s\\n' a | awk '!x[$0]++' #c"
    # a literal "$(pound)" in the command was recorded as "$$(pound)": a $ and the text
    assert fastpath.Record(Path("/b/x.o"), "echo '$$(pound)'").shell == "echo '$(pound)'"


def test_exports_are_read_from_the_object_and_anything_else_cannot_tell(tmp_path: Path) -> None:
    (tmp_path / "x.o").write_text("not an ELF file")
    assert fastpath.exports_symbols(tmp_path / "x.o") is None
    assert fastpath.exports_symbols(tmp_path / "missing.o") is None


class _Stuck:
    """A host whose compile writes half a target and then never finishes."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def run(self, cmd, *, timeout: float = 60.0, input=None, check: bool = False) -> CommandResult:
        words = cmd[-1].split()  # [..., "/bin/sh", "-ec", "<the recorded command>"]
        target = Path(words[words.index("-o") + 1])
        target.write_text("half an object")
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_cancelled_replay_leaves_no_half_made_target_and_keeps_its_stamp(tree: tuple[Path, Path]) -> None:
    kdir, bd = tree
    stamp = (bd / fastpath.STAMP).read_text()
    _touch_later(bd / "m.c", "int y;\n")
    host = _Stuck()
    task = asyncio.create_task(fastpath.replay(_plan(kdir, bd), host))  # type: ignore[arg-type]
    await host.started.wait()
    assert not (bd / fastpath.STAMP).exists()  # killed now, the next build would be make's
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not (bd / "m.o").exists()  # make would otherwise think it newer than m.c
    assert (bd / fastpath.STAMP).read_text() == stamp


# ----------------------------------------------------------------------------- real builds
def _kernels() -> list[tuple[str, Path | None, str]]:
    """(kernel, tree, make -C dir) for each kernel here the module can build against."""
    out: list[tuple[str, Path | None, str]] = []
    for mod in sorted(Path("/lib/modules").glob("*/build/Makefile")):
        out.append((mod.parent.parent.name, None, str(mod.parent)))
        break
    from tests.support.kernel_tree import CACHE

    tree = CACHE / "linux-source-6.12"
    if (tree / "Module.symvers").is_file() and (tree / "include" / "config" / "kernel.release").is_file():
        out.append(((tree / "include" / "config" / "kernel.release").read_text().strip(), tree, str(tree)))
    return out


_KERNELS = _kernels()
A_C = """#include <linux/module.h>
#include "common.h"
static int __init two_init(void) { pr_info(TWO_MSG " %d\\n", two_helper()); return 0; }
static void __exit two_exit(void) { }
module_init(two_init);
module_exit(two_exit);
MODULE_LICENSE("GPL");
"""


def _two_file_module(src: Path) -> None:
    src.mkdir(parents=True)
    (src / "Kbuild").write_text("obj-m := twofile.o\ntwofile-y := a.o b.o\n")
    (src / "common.h").write_text('#define TWO_MSG "hello"\nint two_helper(void);\n')
    (src / "a.c").write_text(A_C)
    (src / "b.c").write_text('#include <linux/kernel.h>\n#include "common.h"\nint two_helper(void) { return 41; }\n')


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))


def _what_make_builds(bd: Path, kdir: str) -> tuple[bytes, dict[str, str]]:
    """The .ko and records make makes from scratch in the same directory (the path is in
    the debug info), after a copy of what the fast path made is taken."""
    for pattern in ("*.o", "*.ko", "*.mod.c", ".*.o.cmd", ".*.ko.cmd"):
        for p in bd.glob(pattern):
            p.unlink()
    subprocess.run(["make", "-C", kdir, f"M={bd}", "modules"], capture_output=True, check=True)
    return (bd / "twofile.ko").read_bytes(), {p.name: p.read_text() for p in bd.glob(".*.o.cmd")}


@pytest.mark.skipif(not _KERNELS, reason="no kernel headers or built kernel tree on this host")
@pytest.mark.parametrize(("kernel", "tree", "kdir"), _KERNELS, ids=[k[0] for k in _KERNELS])
@pytest.mark.timeout(300)
async def test_a_replayed_build_is_the_ko_make_builds(tmp_path: Path, kernel: str, tree: Path | None, kdir: str) -> None:
    """Each save the fast path takes (a .c edited; a new kernel symbol used, so modpost
    rewrites .mod.c and .mod.o is rebuilt; a header both objects read) gives the .ko and
    the records make gives from scratch, byte for byte."""
    src, out, host = tmp_path / "twofile", tmp_path / "out", LocalTarget("host")
    _two_file_module(src)
    out.mkdir()

    async def build():
        return await kbuild(src, kernel, out, host, incremental=True, tree=tree)

    first = await build()
    assert first.ok and not first.fast and first.fallback == "first build here", first.output
    saves = [
        ("a.c", "two_exit(void) { }", 'two_exit(void) { pr_info("bye\\n"); }'),
        ("a.c", "return 0;", "msleep(1); return 0;"),
        ("common.h", "hello", "hi"),
    ]
    for name, old, new in saves:
        if "msleep" in new:
            _edit(src / "a.c", "#include <linux/module.h>", "#include <linux/module.h>\n#include <linux/delay.h>")
        _edit(src / name, old, new)
        res = await build()
        assert res.ok and res.fast and res.how == "fast", res.output
        compiled = [ln.split()[-1].rsplit("/", 1)[-1] for ln in res.output.splitlines() if ln.startswith("  CC [M]")]
        assert {"a.o", "b.o"} & set(compiled) == ({"a.o", "b.o"} if name == "common.h" else {"a.o"}), res.output
        assert "  MODPOST " in res.output and res.output.rstrip().splitlines()[-1].endswith("twofile.ko")
        if "msleep" in new and tree is None:  # MODVERSIONS lists each used symbol in .mod.c
            assert "twofile.mod.o" in compiled, res.output
        fast_ko = (res.build_dir / "twofile.ko").read_bytes()
        fast_records = {p.name: p.read_text() for p in res.build_dir.glob(".*.o.cmd")}
        ko, records = _what_make_builds(res.build_dir, kdir)
        assert fast_ko == ko, f"the replayed {name} save's .ko differs from make's"
        assert fast_records == records  # fixdep rewrote the records as make's rule does
        again = await build()  # make rebuilt all from the same sources: nothing is out of date
        assert again.ok and again.fast and "nothing out of date" in again.output, again.output


@pytest.mark.skipif(not _KERNELS, reason="no kernel headers or built kernel tree on this host")
@pytest.mark.timeout(300)
async def test_saves_the_records_cannot_answer_run_make_and_say_why(tmp_path: Path) -> None:
    kernel, tree, _kdir = _KERNELS[0]
    src, out, host = tmp_path / "twofile", tmp_path / "out", LocalTarget("host")
    _two_file_module(src)
    out.mkdir()

    async def build():
        return await kbuild(src, kernel, out, host, incremental=True, tree=tree)

    assert (await build()).ok
    _edit(src / "Kbuild", "twofile-y := a.o b.o\n", "twofile-y := a.o b.o\nccflags-y += -DTWO_EXTRA=1\n")
    res = await build()
    assert res.ok and not res.fast and res.fallback.startswith("Kbuild changed"), res.output
    assert res.how.startswith("make: Kbuild changed") and f"fast path not taken ({res.fallback})" in res.output

    _edit(src / "b.c", "return 41;", "return 41 +;")  # the replayed compile fails: make runs and says so
    broken = await build()
    assert not broken.ok and broken.fallback == "CC [M] b.o exited 1", broken.output
    assert broken.errors and "b.c:3" in broken.errors[0] and "error: expected expression" in broken.errors[0]
    assert broken.output.count("error: expected expression") == 1  # make's words once, not the replay's too

    _edit(src / "b.c", "return 41 +;", "return 42;")
    fixed = await build()
    assert fixed.ok and fixed.fast, fixed.output

    (src / "c.c").write_text("int c;\n")  # a new file may be anything (a new object once Kbuild names it)
    added = await build()
    assert added.ok and added.fallback == "new file c.c"
    (src / "c.c").unlink()
    assert (await build()).fallback == "c.c removed"
    assert (await build()).fast


@pytest.mark.skipif(not _KERNELS or _KERNELS[0][1] is not None, reason="no kernel headers on this host")
async def test_exports_with_modversions_fall_back(tmp_path: Path) -> None:
    """A module that starts exporting a symbol needs genksyms' CRCs in its record (with
    MODVERSIONS, as Debian's kernels have): make does that, and the records it leaves
    send later saves to make too."""
    kernel, _tree, kdir = _KERNELS[0]
    if "CONFIG_MODVERSIONS=y" not in (Path(kdir) / "include" / "config" / "auto.conf").read_text():
        pytest.skip("this kernel has no MODVERSIONS")
    src, out, host = tmp_path / "twofile", tmp_path / "out", LocalTarget("host")
    _two_file_module(src)
    out.mkdir()
    assert (await kbuild(src, kernel, out, host, incremental=True)).ok
    _edit(src / "b.c", "int two_helper(void) { return 41; }",
          "int two_helper(void) { return 41; }\nint two_api(void) { return 1; }\nEXPORT_SYMBOL(two_api);")
    (src / "b.c").write_text("#include <linux/export.h>\n" + (src / "b.c").read_text())
    res = await kbuild(src, kernel, out, host, incremental=True)
    assert res.ok and not res.fast and "b.o exports symbols" in res.fallback, res.output
    assert fastpath.exports_symbols(res.build_dir / "b.o") is True
    assert fastpath.exports_symbols(res.build_dir / "a.o") is False
    _edit(src / "b.c", "return 41;", "return 40;")
    res = await kbuild(src, kernel, out, host, incremental=True)
    assert res.ok and "step that is not replayed" in res.fallback, res.fallback


def test_the_stamp_is_a_build_output_never_copied_from_the_source(tmp_path: Path) -> None:
    assert _is_artifact(fastpath.STAMP) and _is_artifact(f"{fastpath.STAMP}.tmp")


class _StuckMake:
    """The host: copies for real; its make writes half an object and never finishes."""

    def __init__(self, build_dir: Path) -> None:
        self.local, self.build_dir, self.started = LocalTarget("host"), build_dir, asyncio.Event()

    async def run(self, cmd, *, timeout: float = 60.0, input=None, check: bool = False) -> CommandResult:
        if not str(cmd).startswith("make "):
            return await self.local.run(cmd, timeout=timeout)
        (self.build_dir / "m.o").write_text("half an object")
        self.started.set()
        await asyncio.Event().wait()
        raise AssertionError("unreachable")


async def test_a_cancelled_make_leaves_no_half_made_object(tmp_path: Path) -> None:
    """A save during make kills it with its process group (SIGKILL): make cannot delete
    the object it was writing, so kbuild does (else it would look newer than its source)."""
    src = tmp_path / "m"
    src.mkdir()
    (src / "Kbuild").write_text("obj-m := m.o\n")
    (src / "m.c").write_text("int x;\n")
    tree = tmp_path / "tree"  # a kernel tree as kbuild checks one (make never really runs here)
    (tree / "include" / "config").mkdir(parents=True)
    (tree / "include" / "config" / "kernel.release").write_text("9.9.9-test\n")
    (tree / "Module.symvers").write_text("")
    host = _StuckMake(tmp_path / "out" / "m-9.9.9-test")
    task = asyncio.create_task(kbuild(src, "9.9.9-test", tmp_path / "out", host, incremental=True, tree=tree))  # type: ignore[arg-type]
    await host.started.wait()
    assert (host.build_dir / "m.o").exists()
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    assert not (host.build_dir / "m.o").exists() and (host.build_dir / "m.c").exists()
