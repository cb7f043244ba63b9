"""The warm loop's fast rebuild: replay what kbuild recorded instead of running make.

A no-op ``make -C KDIR M=... modules`` costs 0.7-0.85 s here before it compiles
anything: the kernel's Makefiles probe the compiler (~40 gcc runs of ``cc-option``)
on every invocation. But kbuild writes down every command it ran, in
``.<target>.cmd`` files (``cmd_<target> := ...``, ``savedcmd_`` from 6.3 on), with
each object's source and the files it read (``deps_``). When a save changed only
files those records know, the same commands, run the same way (``sh -c`` in the
kernel's build directory), produce the same bytes make would: the out-of-date objects
(each followed by ``scripts/basic/fixdep``, which rewrites its record as make's rule
does), the composite ``ld -r`` of a multi-file module, ``modpost`` (which rewrites
``.mod.c`` only when the symbols it lists change), ``.mod.o`` when it did, and the
final ``ld -r`` into the ``.ko``. What is out of date is decided as make does: a target
older than its source or a recorded dependency.

Anything the records cannot answer exactly falls back to the full ``make`` (the reason
is given): the first build in a directory, other make words, environment, kernel or
compiler, a new, removed or unrecorded file (a Kbuild/Makefile edit), a kbuild layout
not seen here (6.13's relative paths, an arch post-link, LTO, trimmed exports, BTF
against a ``vmlinux``), a module exporting symbols with MODVERSIONS (genksyms' CRCs
go into the record by a step that is not recorded), and any replayed command failing.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import re
import shlex
import shutil
import struct
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vexfs_cockpit.engine.target import Target

STAMP = ".vexfs-cockpit-build.json"  # what the last good build of this dir was made from
_STAMP_VERSION = 1

# Environment that reaches kbuild's commands or the flags make would compute.
_ENV_KEYS = ("ARCH", "SUBARCH", "CROSS_COMPILE", "LLVM", "LLVM_IAS", "CC", "LD", "KCFLAGS", "KCPPFLAGS", "KAFLAGS",
             "KRUSTFLAGS", "OBJTOOL_ARGS", "SOURCE_DATE_EPOCH", "PATH", "LANG")
_ENV_PREFIXES = ("KBUILD_", "LC_", "INSTALL_MOD_")
# make words that add steps kbuild runs but does not record (sparse, kernel-doc, W= checks).
_UNRECORDED_MAKE_WORDS = ("C=", "W=", "CHECK=", "KBUILD_EXTRA_WARN=")
# Config options that add unrecorded steps to the object or module rules.
_UNRECORDED_CONFIG = ("CONFIG_TRIM_UNUSED_KSYMS", "CONFIG_LTO_CLANG", "CONFIG_FTRACE_MCOUNT_USE_RECORDMCOUNT")

_CMD_LINE = re.compile(r"^(?:saved)?cmd_(?P<target>\S+) := (?P<cmd>.*)$", re.MULTILINE)
_SOURCE_LINE = re.compile(r"^source_(?P<target>\S+) := (?P<source>\S+)$", re.MULTILINE)
_WILDCARD = re.compile(r"^\$\(wildcard (?P<path>[^)\s]+)\)$")
_MAKE_ESCAPE = re.compile(r"\$\$|\$\(pound\)")
_DEPFILE = re.compile(r"-Wp,-MM?D,(?P<path>\S+)")


class Fallback(Exception):
    """The records cannot answer this build exactly: make runs instead (``str`` says why)."""


@dataclass(frozen=True, slots=True)
class Record:
    """One ``.<target>.cmd`` file: the command make ran for ``target`` and, for a compiled
    object, its source, the files it read and the lines later steps of the rule added."""

    target: Path
    make_cmd: str  # as recorded (make's escaping): what fixdep is given back
    source: Path | None = None
    deps: tuple[str, ...] = ()  # paths (str: a thousand of them are stat'ed per save)
    optional: tuple[str, ...] = ()  # $(wildcard ...): a prerequisite only while it exists
    extra: str = ""  # after the deps: the objtool prerequisite line
    cmd_file: Path | None = None

    @property
    def shell(self) -> str:
        """The command as make hands it to ``sh -c``: kbuild's make-cmd wrote ``$`` as
        ``$$`` and ``#`` as ``$(pound)``, undone left to right as make reads them."""
        return _MAKE_ESCAPE.sub(lambda m: "$" if m[0] == "$$" else "#", self.make_cmd)


@dataclass(frozen=True, slots=True)
class Module:
    ko: Path
    obj: Path  # X.o: compiled from X.c, or linked from the objects X.mod lists
    members: tuple[Path, ...]  # the compiled objects in it


@dataclass(slots=True)
class Plan:
    build_dir: Path
    kdir: Path  # resolved: gcc records the directory it ran in, as under make -C
    records: dict[Path, Record]
    modules: list[Module]
    modpost: Record
    modversions: bool
    stamp: dict[str, object]  # to write once the build is done
    changed: list[str] = field(default_factory=list)  # source files changed since the last build


@dataclass(slots=True)
class FastResult:
    ok: bool
    output: str
    duration_s: float
    steps: int  # commands replayed
    fallback: str = ""  # why make must run instead ("" when ok)
    kos: tuple[Path, ...] = ()


# ----------------------------------------------------------------------------- records
def parse_record(path: Path, kdir: Path) -> Record:
    """A kbuild ``.cmd`` file; relative paths in it are the kernel build dir's (make -C)."""
    text = path.read_text(errors="replace")
    m = _CMD_LINE.search(text)
    if m is None:
        raise Fallback(f"{path.name} records no command")
    target = Path(m["target"])
    if not target.is_absolute():  # 6.13+ builds external modules from their own directory
        raise Fallback(f"{path.name} names {target} relatively (a kbuild layout this fast path does not know)")
    src = _SOURCE_LINE.search(text)
    if src is None:
        return Record(target, m["cmd"], cmd_file=path)
    deps: list[str] = []
    optional: list[str] = []
    base = str(kdir)
    marker = f"$(deps_{target}):\n"
    head, sep, extra = text.partition(marker)
    if not sep:
        raise Fallback(f"{path.name} has no dependency list")
    in_deps = False
    for raw in head.splitlines():
        line = raw.strip().removesuffix("\\").strip()
        if raw.startswith(f"deps_{target} :="):
            in_deps = True
            continue
        if not in_deps:
            continue
        if not raw.startswith(" "):
            in_deps = False
            continue
        if w := _WILDCARD.match(line):
            optional.append(os.path.join(base, w["path"]))
        elif line:
            deps.append(os.path.join(base, line))
    for raw in extra.splitlines():
        line = raw.strip()
        if not line:
            continue
        t, colon, rest = line.partition(": ")
        w = _WILDCARD.match(rest.strip())
        if not colon or Path(t) != target or w is None:
            # e.g. genksyms' symbol CRCs (MODVERSIONS with exports): not a replayable record
            raise Fallback(f"{path.name} carries records of a step that is not replayed ({line[:60]})")
        optional.append(os.path.join(base, w["path"]))
    return Record(target, m["cmd"], kdir / src["source"], tuple(deps), tuple(optional), extra, path)


def cmd_file(target: Path) -> Path:
    return target.parent / f".{target.name}.cmd"


def _record(target: Path, kdir: Path) -> Record:
    path = cmd_file(target)
    if not path.is_file():
        raise Fallback(f"no record of {target.name} ({path.name})")
    rec = parse_record(path, kdir)
    if rec.target != target:
        raise Fallback(f"{path.name} records {rec.target}, not {target}")
    return rec


def read_config(kdir: Path) -> dict[str, str]:
    conf: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in (kdir / "include" / "config" / "auto.conf").read_text().splitlines():
            key, eq, value = line.partition("=")
            if eq and key.startswith("CONFIG_"):
                conf[key] = value
    return conf


# ----------------------------------------------------------------------------- what a build was made from
def source_manifest(build_dir: Path, is_artifact: Callable[[str], bool]) -> dict[str, list[int]]:
    """Each source file in the build dir (not build outputs, not kbuild.log) -> [mtime_ns, size]."""
    out: dict[str, list[int]] = {}
    for root, dirs, files in os.walk(build_dir):
        rel_root = Path(root).relative_to(build_dir)
        dirs[:] = [d for d in dirs if not is_artifact(d)]
        for name in files:
            if is_artifact(name) or name == "kbuild.log":
                continue
            st = os.stat(os.path.join(root, name))
            out[str(rel_root / name)] = [st.st_mtime_ns, st.st_size]
    return out


def env_digest(env: Mapping[str, str]) -> str:
    keys = sorted(k for k in env if k in _ENV_KEYS or k.startswith(_ENV_PREFIXES))
    return hashlib.sha256("\0".join(f"{k}={env[k]}" for k in keys).encode()).hexdigest()[:16]


def _stat_key(path: Path) -> list[int]:
    try:
        st = path.stat()
    except OSError:
        return [0, 0]
    return [st.st_mtime_ns, st.st_size]


def kernel_digest(kdir: Path, tools: Iterable[str] = ()) -> dict[str, list[int]]:
    """The kernel side's files whose change means other commands, and the programs the
    recorded commands start with (a compiler upgrade is a change)."""
    out = {name: _stat_key(kdir / name) for name in (
        "Makefile", "include/config/auto.conf", "Module.symvers", "scripts/Makefile.build", "scripts/Makefile.modpost",
        "scripts/Makefile.modfinal", "scripts/Makefile.lib", "scripts/mod/modpost", "scripts/basic/fixdep")}
    for tool in sorted(set(tools)):
        found = kdir / tool if "/" in tool else shutil.which(tool)  # kdir / an absolute path is that path
        out[f"tool:{tool}"] = _stat_key(Path(found)) if found else [0, 0]
    return out


def _tools(records: Iterable[Record]) -> list[str]:
    """The programs the recorded commands start with (gcc-12, ld, sed ...)."""
    # kbuild's commands start with a plain word (a make variable's value, unquoted)
    return [rec.shell.split(None, 1)[0] for rec in records if rec.shell.strip()]


def make_stamp(build_dir: Path, kdir: Path, make_args: Sequence[str], env: Mapping[str, str],
               manifest: dict[str, list[int]]) -> dict[str, object]:
    records, _modules, modpost = discover(build_dir, kdir.resolve())
    return {
        "version": _STAMP_VERSION, "kdir": str(kdir.resolve()), "make_args": list(make_args), "env": env_digest(env),
        "kernel": kernel_digest(kdir.resolve(), _tools([*records.values(), modpost])), "sources": manifest,
    }


def write_stamp(build_dir: Path, stamp: Mapping[str, object]) -> None:
    tmp = build_dir / f"{STAMP}.tmp"
    tmp.write_text(json.dumps(stamp))
    tmp.replace(build_dir / STAMP)


def record_build(build_dir: Path, kdir: Path, make_args: Sequence[str], env: Mapping[str, str],
                 manifest: dict[str, list[int]]) -> None:
    """After a good make: what it was made from, for the next save's fast path. Records
    it cannot replay are written down as the reason the next build is make's too."""
    try:
        write_stamp(build_dir, make_stamp(build_dir, kdir, make_args, env, manifest))
    except Fallback as why:
        write_stamp(build_dir, {"version": _STAMP_VERSION, "unreplayable": str(why)})
    except OSError:
        (build_dir / STAMP).unlink(missing_ok=True)


# ----------------------------------------------------------------------------- the decision
def _mtime(path: Path | str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def out_of_date(rec: Record) -> bool:
    """make's rule: the target is missing, or its source or a dependency is newer (a
    dependency gone counts as newer: kbuild gives every one an empty rule)."""
    built = _mtime(rec.target)
    if built is None:
        return True
    for dep in (rec.source, *rec.deps):
        if dep is None:
            continue
        t = _mtime(dep)
        if t is None or t > built:
            return True
    return any((t := _mtime(dep)) is not None and t > built for dep in rec.optional)


def discover(build_dir: Path, kdir: Path) -> tuple[dict[Path, Record], list[Module], Record]:
    """The records of the last build's modules (modules.order): each compiled object, the
    composite of a multi-file module, its .mod.o and .ko, and modpost's; Fallback when one
    is missing or of a shape this fast path does not replay."""
    order = build_dir / "modules.order"
    try:
        listed = [Path(ln.strip()) for ln in order.read_text().splitlines() if ln.strip()]
    except OSError:
        raise Fallback("no modules.order from the last build") from None
    if not listed:
        raise Fallback("modules.order lists no module")
    records: dict[Path, Record] = {}
    modules: list[Module] = []
    for entry in listed:
        if not entry.is_absolute() or not entry.resolve().is_relative_to(build_dir.resolve()):
            raise Fallback(f"modules.order names {entry}, not a module of this directory")
        base = entry.with_suffix("")
        obj, ko = base.with_suffix(".o"), base.with_suffix(".ko")
        top = _record(obj, kdir)
        if top.source is not None:
            members: tuple[Path, ...] = (obj,)
        else:
            try:
                listed_members = base.with_suffix(".mod").read_text().split()
            except OSError:
                raise Fallback(f"no {base.name}.mod listing the objects of {obj.name}") from None
            members = tuple(Path(m) for m in listed_members)
            if not members or any(not m.is_absolute() for m in members):
                raise Fallback(f"{base.name}.mod does not list the objects of {obj.name}")
            records[obj] = top
        for m in members:
            rec = top if m == obj else _record(m, kdir)
            if rec.source is None:
                raise Fallback(f"{m.name} is linked, not compiled (a nested composite object)")
            records[m] = rec
        mod_o = base.with_suffix(".mod.o")
        records[mod_o] = _record(mod_o, kdir)
        ko_rec = _record(ko, kdir)
        if "postlink" in ko_rec.shell or re.search(r"(^|[\s;])make\s", ko_rec.shell):
            raise Fallback(f"linking {ko.name} runs make (an arch post-link step)")
        records[ko] = ko_rec
        modules.append(Module(ko, obj, members))
    modpost = _record(build_dir / "Module.symvers", kdir)
    return records, modules, modpost


def plan(build_dir: Path, kdir: Path, make_args: Sequence[str], env: Mapping[str, str],
         manifest: dict[str, list[int]]) -> Plan:
    """What the fast path would replay for this build dir, or Fallback saying why not."""
    kdir = kdir.resolve()
    try:
        stamp = json.loads((build_dir / STAMP).read_text())
    except (OSError, ValueError):
        raise Fallback("first build here") from None
    if not isinstance(stamp, dict) or stamp.get("version") != _STAMP_VERSION:
        raise Fallback("first build here")
    if stamp.get("unreplayable"):
        raise Fallback(str(stamp["unreplayable"]))
    if stamp.get("kdir") != str(kdir):
        raise Fallback("built against another kernel directory last time")
    if stamp.get("make_args") != list(make_args):
        raise Fallback("other make words than last time")
    if any(a.startswith(_UNRECORDED_MAKE_WORDS) for a in make_args):
        raise Fallback("make words that add unrecorded steps (C=, W=)")
    if stamp.get("env") != env_digest(env):
        raise Fallback("the build environment changed (KCFLAGS, PATH, ...)")
    conf = read_config(kdir)
    if bad := [c for c in _UNRECORDED_CONFIG if conf.get(c) == "y"]:
        raise Fallback(f"{bad[0]} adds steps kbuild does not record")
    if conf.get("CONFIG_DEBUG_INFO_BTF_MODULES") == "y" and (kdir / "vmlinux").exists():
        raise Fallback("BTF for the module against vmlinux is an unrecorded step")

    old: dict[str, list[int]] = dict(stamp.get("sources") or {})
    added = sorted(set(manifest) - set(old))
    removed = sorted(set(old) - set(manifest))
    if added or removed:
        what = f"new file {added[0]}" if added else f"{removed[0]} removed"
        raise Fallback(what)
    changed = sorted(rel for rel, key in manifest.items() if old[rel] != key)

    records, modules, modpost = discover(build_dir, kdir)
    known: set[str] = set()
    for rec in records.values():
        if rec.source is not None:
            known.add(str(rec.source))
            known.update(rec.deps)
            known.update(rec.optional)
    for rel in changed:
        if os.path.join(build_dir, rel) not in known:
            raise Fallback(f"{rel} changed and is no recorded source or dependency")
    if stamp.get("kernel") != kernel_digest(kdir, _tools([*records.values(), modpost])):
        raise Fallback("the kernel build files or the compiler changed")
    new_stamp = {**stamp, "sources": manifest}
    return Plan(build_dir, kdir, records, modules, modpost, conf.get("CONFIG_MODVERSIONS") == "y", new_stamp, changed)


# ----------------------------------------------------------------------------- running it
def exports_symbols(obj: Path) -> bool | None:
    """Whether an ELF object exports symbols (``__ksymtab*`` or 6.5+'s ``.export_symbol``
    sections); None when it cannot tell."""
    try:
        data = obj.read_bytes()
    except OSError:
        return None
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:  # 64-bit little-endian only
        return None
    try:
        shoff, = struct.unpack_from("<Q", data, 0x28)
        shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)
        def name_at(i: int) -> int:
            return int(struct.unpack_from("<I", data, shoff + i * shentsize)[0])
        str_off = struct.unpack_from("<Q", data, shoff + shstrndx * shentsize + 0x18)[0]
        for i in range(shnum):
            start = str_off + name_at(i)
            name = data[start:data.index(b"\0", start)].decode(errors="replace")
            if name.startswith("__ksymtab") or name == ".export_symbol":
                return True
    except (struct.error, ValueError, IndexError):
        return None
    return False


def _argv(kdir: Path, cmd: str) -> list[str]:
    # As make -C runs kbuild's recipe: `set -e; CMD` (Kbuild.include's cmd: the compiler
    # failing fails `gcc ...; objtool ...`) by sh in the kernel dir, LC_ALL unset and the
    # C collation kbuild exports; PWD set to it (gcc records the directory it ran in).
    return ["env", "-C", str(kdir), "-u", "LC_ALL", f"PWD={kdir}", "LC_COLLATE=C", "LC_NUMERIC=C",
            "/bin/sh", "-ec", cmd]


class _Run:
    def __init__(self, p: Plan, host: Target, timeout: float):
        self.p, self.host, self.timeout = p, host, timeout
        self.out: list[str] = []
        self.steps = 0
        self.in_flight: set[Path] = set()

    async def sh(self, label: str, rec: Record) -> None:
        self.out.append(f"  {label:<8}{rec.target}")
        self.in_flight.add(rec.target)
        res = await self.host.run(_argv(self.p.kdir, rec.shell), timeout=self.timeout)
        self.steps += 1
        if res.output.strip():
            self.out.append(res.output.rstrip("\n"))
        if not res.ok:
            _remove(rec.target)  # as make's .DELETE_ON_ERROR
            self.in_flight.discard(rec.target)
            raise Fallback(f"{label.strip()} {rec.target.name} " + ("timed out" if res.timed_out else f"exited {res.exit_code}"))
        self.in_flight.discard(rec.target)

    async def compile(self, rec: Record, label: str) -> None:
        m = _DEPFILE.search(rec.shell)
        if m is None:
            raise Fallback(f"the command for {rec.target.name} writes no dependency file")
        depfile = Path(m["path"]) if Path(m["path"]).is_absolute() else self.p.kdir / m["path"]
        await self.sh(label, rec)
        assert rec.cmd_file is not None
        tmp = rec.cmd_file.with_name(rec.cmd_file.name + ".tmp")
        self.in_flight.add(rec.target)
        # kbuild's cmd_and_fixdep: the record is rewritten from the compiler's dependency file
        res = await self.host.run(
            ["env", "-C", str(self.p.kdir), "/bin/sh", "-c", 'scripts/basic/fixdep "$1" "$2" "$3" > "$4"', "fixdep",
             str(depfile), str(rec.target), rec.make_cmd, str(tmp)], timeout=self.timeout)
        self.steps += 1
        if not res.ok:
            _remove(rec.target)
            tmp.unlink(missing_ok=True)
            raise Fallback(f"fixdep for {rec.target.name} exited {res.exit_code}")
        tmp.write_text(tmp.read_text() + rec.extra)
        tmp.replace(rec.cmd_file)
        depfile.unlink(missing_ok=True)
        self.in_flight.discard(rec.target)


def _remove(path: Path) -> None:
    with contextlib.suppress(OSError):
        path.unlink()


def _newer_than(target: Path, inputs: Iterable[Path]) -> bool:
    built = _mtime(target)
    return built is None or any((t := _mtime(i)) is None or t > built for i in inputs)


async def replay(p: Plan, host: Target, *, jobs: int = 2, timeout: float = 600.0) -> FastResult:
    """Run the plan. A step that cannot be replayed exactly, or fails, ends it with
    ``fallback`` set (a failed step's target is removed, as make's .DELETE_ON_ERROR does,
    so make redoes it). The stamp is away while it runs: a build killed half-way leaves
    the next one to make."""
    started = time.monotonic()
    stamp_path = p.build_dir / STAMP
    old_stamp = stamp_path.read_text()
    stamp_path.unlink()
    run = _Run(p, host, timeout)
    try:
        kos = await _steps(p, run, jobs)
    except Fallback as why:
        stamp_path.write_text(old_stamp)
        return FastResult(False, "\n".join(run.out), time.monotonic() - started, run.steps, fallback=str(why))
    except BaseException:
        for target in run.in_flight:  # cancelled mid-command: a half-written target must not look new
            _remove(target)
        with contextlib.suppress(OSError):
            stamp_path.write_text(old_stamp)
        raise
    write_stamp(p.build_dir, p.stamp)
    what = (f" for {', '.join(p.changed[:3])}{' …' if len(p.changed) > 3 else ''}" if p.changed
            else ", nothing out of date" if not run.steps else "")
    head = f"fast rebuild from kbuild's records (make skipped): {run.steps} commands{what}"
    return FastResult(True, "\n".join([head, *run.out]) + "\n", time.monotonic() - started, run.steps, kos=kos)


async def _steps(p: Plan, run: _Run, jobs: int) -> tuple[Path, ...]:
    compiled = [r for path, r in p.records.items()
                if r.source is not None and not path.name.endswith(".mod.o") and out_of_date(r)]
    gate = asyncio.Semaphore(max(1, jobs))

    async def one(rec: Record) -> None:
        async with gate:
            await run.compile(rec, "CC [M]")

    await asyncio.gather(*(one(r) for r in compiled))
    if p.modversions:
        for rec in compiled:
            if exports_symbols(rec.target) is not False:
                _remove(rec.target)  # its record lacks genksyms' CRCs: make must redo it
                raise Fallback(f"{rec.target.name} exports symbols: with MODVERSIONS their CRCs need genksyms (make)")
    for mod in p.modules:
        if mod.members != (mod.obj,) and _newer_than(mod.obj, mod.members):
            await run.sh("LD [M]", p.records[mod.obj])
    if _newer_than(p.build_dir / "Module.symvers", [m.obj for m in p.modules]):
        await run.sh("MODPOST", p.modpost)
    for mod in p.modules:
        mod_o = p.records[mod.ko.with_suffix(".mod.o")]
        if out_of_date(mod_o):
            await run.compile(mod_o, "CC [M]")
    for mod in p.modules:
        ko = p.records[mod.ko]
        inputs = [Path(w) if Path(w).is_absolute() else p.kdir / w for w in shlex.split(ko.shell) if w.endswith(".o")]
        if _newer_than(mod.ko, inputs):
            await run.sh("LD [M]", ko)
    kos = tuple(m.ko for m in p.modules)
    if not all(k.is_file() for k in kos):
        raise Fallback("the replayed link left no .ko")
    return kos


async def fast_rebuild(build_dir: Path, kdir: Path, host: Target, *, make_args: Sequence[str] = (),
                       env: Mapping[str, str] | None = None, jobs: int = 2, timeout: float = 600.0,
                       manifest: dict[str, list[int]]) -> FastResult:
    """Rebuild ``build_dir`` from its records if that is exact; else a FastResult with
    ``fallback`` saying why make must run (and what was replayed before it stopped)."""
    started = time.monotonic()
    env = os.environ if env is None else env
    try:
        p = plan(build_dir, kdir, make_args, env, manifest)
    except Fallback as why:
        return FastResult(False, "", time.monotonic() - started, 0, fallback=str(why))
    except OSError as err:
        return FastResult(False, "", time.monotonic() - started, 0, fallback=f"cannot read the records: {err}")
    return await replay(p, host, jobs=jobs, timeout=timeout)
