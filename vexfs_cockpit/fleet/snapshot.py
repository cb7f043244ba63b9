"""Golden snapshots: a fresh guest restored from a booted one's saved RAM instead of booted.

A cold boot of the self-test guest under TCG takes ~10 s; restoring a saved,
booted guest takes about one. For each guest image and VM shape the provider
boots one *golden* VM, waits until it is ready (console marker + SSH), closes
SSH and the console, and saves its memory with libvirt (``virDomainSave``). The
file sits under the image's cache dir, ``<image>/snapshots/<key>/``, 0600 (the
saved RAM holds the guest's host key, like the initrd), with a manifest of its
inputs. The key hashes every input: the image's input hash, the golden domain's
XML with its name and port taken out (kernel, initrd, command line, memory,
CPUs, template, accelerator, devices) and the QEMU and libvirt versions. A
changed input is a different key, so the snapshot is rebuilt; ``image build
--force`` replaces the image dir and the snapshots in it. A saved image whose
manifest or size does not match is deleted and rebuilt, never half-restored.

Many copies of one snapshot at once. libvirt refuses a restore whose XML differs
from the saved one in name or UUID (an ABI check), and two domains may not share
a UUID. So each copy is restored from its own file: the libvirt save header
(magic, lengths, then the domain XML and a cookie, then QEMU's migration stream)
is rewritten with the copy's name, a new UUID, a new VM generation ID, its own
forwarded SSH port and owner metadata, and the migration stream is copied after
it with ``sendfile`` (~60 ms for 95 MB into /dev/shm). The copy is deleted as
soon as the restore returns.

Fresh randomness: the golden domain has a ``<genid/>`` (QEMU's vmgenid device);
each copy gets a new generation ID, and Linux (CONFIG_VMGENID, 6.1) reseeds its
CRNG at once ("crng reseeded due to virtual machine fork"). ``refresh_guest``
also writes host random bytes into /dev/urandom, sets the guest clock to the
host's (the saved guest's clock stopped when it was saved) and its hostname.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import hashlib
import json
import logging
import os
import re
import shlex
import shutil
import struct
import tempfile
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from vexfs_cockpit.engine.target import Target
from vexfs_cockpit.errors import CockpitError, InfraError

log = logging.getLogger(__name__)

SNAPSHOT_FORMAT = 2  # bump when the save layout or the golden recipe changes
SAVE_FILE = "memory.save"
BOOT_LOG = "boot.log"  # the golden VM's console up to ready: replayed into each copy's log
MANIFEST = "manifest.json"
GOLDEN_PREFIX = "vexfs-golden-"
KEEP_OTHERS = 2  # snapshots of other inputs kept per image (~100 MB each) when one is built
MAGIC = b"LibvirtQemudSave"
# libvirt's virQEMUSaveHeader: magic[16], version, data_len, was_running, compressed,
# cookieOffset, unused[14] (uint32, host order: x86_64 little-endian).
_HEADER = struct.Struct("<16s5I56s")
_PAD = 64 * 1024  # libvirt leaves room after the XML; so do we
_SHM = Path("/dev/shm")


class SnapshotUnusable(InfraError):
    """The saved image cannot be restored (missing, truncated, another QEMU): boot cold."""


# ---------------------------------------------------------------------------- inputs / key


def version_text(n: int) -> str:
    """libvirt's packed version number (major*1e6 + minor*1e3 + micro) as text."""
    return f"{n // 1_000_000}.{n // 1000 % 1000}.{n % 1000}"


def host_versions(conn: Any) -> dict[str, str]:
    """The QEMU and libvirt versions a saved image depends on (blocking libvirt calls)."""
    return {"qemu": version_text(conn.getVersion()), "libvirt": version_text(conn.getLibVersion())}


def with_genid(xml: str) -> str:
    """``xml`` with a ``<genid/>`` (VM generation ID) so restored copies can reseed."""
    if "<genid" in xml:
        return xml
    xml, n = re.subn(r"(</vcpu>)", r"\1\n  <genid/>", xml, count=1)
    if n != 1:
        raise InfraError("domain XML has no <vcpu>: the VM template is broken")
    return xml


def snapshot_inputs(*, xml: str, name: str, port: int, image_hash: str, versions: dict[str, str]) -> dict[str, Any]:
    """Everything a golden snapshot depends on (its name and port taken out of the XML)."""
    norm = xml.replace(f"127.0.0.1:{port}-", "127.0.0.1:@PORT@-").replace(name, "@NAME@")
    return {
        "format": SNAPSHOT_FORMAT,
        "image": image_hash,
        "domain_xml_sha256": hashlib.sha256(norm.encode()).hexdigest(),
        "qemu": versions.get("qemu", ""),
        "libvirt": versions.get("libvirt", ""),
    }


def snapshot_key(inputs: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()[:16]


# ---------------------------------------------------------------------------- the cache


@dataclass(slots=True)
class Snapshot:
    dir: Path
    inputs: dict[str, Any]
    size: int
    saved_at: float = 0.0
    boot_s: float = 0.0  # the golden VM's cold boot to ready
    save_s: float = 0.0
    broken: str = ""  # set when a restore failed: the provider stops handing it out

    @property
    def path(self) -> Path:
        return self.dir / SAVE_FILE

    def boot_lines(self) -> list[str]:
        """The golden VM's console lines up to its ready marker ([] if not kept)."""
        try:
            return (self.dir / BOOT_LOG).read_text(errors="replace").splitlines()
        except OSError:
            return []

    def manifest(self) -> dict[str, Any]:
        return {
            "inputs": self.inputs, "size": self.size, "saved_at": self.saved_at,
            "boot_s": round(self.boot_s, 3), "save_s": round(self.save_s, 3),
        }

    def check(self) -> None:
        """SnapshotUnusable unless the saved file is whole and libvirt's."""
        try:
            st = self.path.stat()
            with open(self.path, "rb") as f:
                head = f.read(_HEADER.size)
        except OSError as err:
            raise SnapshotUnusable(f"snapshot {self.path} is unreadable ({err.strerror})") from None
        if st.st_size != self.size:
            raise SnapshotUnusable(f"snapshot {self.path} is {st.st_size} bytes, its manifest says {self.size} (truncated?)")
        if len(head) < _HEADER.size or not head.startswith(MAGIC):
            raise SnapshotUnusable(f"snapshot {self.path} is not a libvirt save image")

    def invalidate(self, why: str) -> None:
        """Never hand this snapshot out again, and delete it so the next run rebuilds it."""
        self.broken = why
        shutil.rmtree(self.dir, ignore_errors=True)


def snapshot_root(image_dir: Path) -> Path:
    """Snapshots live in the image's dir: rebuilding the image (``--force``) drops them."""
    return image_dir / "snapshots"


def _read_manifest(d: Path) -> dict[str, Any] | None:
    try:
        m = json.loads((d / MANIFEST).read_text())
        return m if isinstance(m, dict) and isinstance(m.get("inputs"), dict) else None
    except (OSError, ValueError):
        return None


def find_snapshot(root: Path, inputs: dict[str, Any]) -> tuple[Snapshot | None, str]:
    """The usable snapshot for ``inputs``, or (None, why there is none)."""
    d = root / snapshot_key(inputs)
    m = _read_manifest(d)
    if m is None:
        return None, stale_reason(root, inputs)
    if m["inputs"] != inputs:
        shutil.rmtree(d, ignore_errors=True)
        return None, "its manifest does not match its inputs"
    snap = Snapshot(d, inputs, int(m.get("size", -1)), float(m.get("saved_at", 0)),
                    float(m.get("boot_s", 0)), float(m.get("save_s", 0)))
    try:
        snap.check()
    except SnapshotUnusable as err:
        snap.invalidate(str(err))
        return None, str(err)
    return snap, ""


def stale_reason(root: Path, inputs: dict[str, Any]) -> str:
    """Why no snapshot matches: what changed since the newest other one (or "none yet")."""
    best: dict[str, Any] | None = None
    try:
        dirs = [p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")]
    except OSError:
        dirs = []
    for p in dirs:
        m = _read_manifest(p)
        if m is not None and (best is None or m.get("saved_at", 0) > best.get("saved_at", 0)):
            best = m
    if best is None:
        return "none saved yet"
    old = best["inputs"]
    changed = [
        f"{k} {old.get(k)} -> {inputs.get(k)}" if k in ("qemu", "libvirt", "format") else k
        for k in sorted(set(old) | set(inputs)) if old.get(k) != inputs.get(k)
    ]
    return "inputs changed: " + ", ".join(changed) if changed else "none saved yet"


def prune_snapshots(root: Path, keep: Path | None, others: int = 0) -> None:
    """Delete every snapshot but ``keep`` and the ``others`` newest besides it: another
    cockpit on this host may be restoring one of another shape (memory, command line)."""
    try:
        entries = [p for p in root.iterdir() if p.is_dir() and p != keep and not p.name.startswith(".")]
    except OSError:
        return
    entries.sort(key=lambda p: float((_read_manifest(p) or {}).get("saved_at", 0)), reverse=True)
    for p in entries[others:]:
        shutil.rmtree(p, ignore_errors=True)


@contextlib.asynccontextmanager
async def locked(root: Path) -> AsyncIterator[None]:
    """An exclusive lock on ``root`` (two cockpits building one snapshot: the second
    waits, off the event loop, and reuses it)."""
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    with open(root / ".lock", "w") as lock:
        await asyncio.to_thread(fcntl.flock, lock, fcntl.LOCK_EX)
        yield


# ---------------------------------------------------------------------------- one copy


def retarget_xml(xml: str, name: str, port: int) -> str:
    """The saved domain XML for one copy: its name, a new UUID and generation ID, its port."""
    out, n = re.subn(r"<name>[^<]*</name>", f"<name>{name}</name>", xml, count=1)
    if n != 1:
        raise SnapshotUnusable("the saved domain XML has no <name>")
    out = re.sub(r"<uuid>[^<]*</uuid>", f"<uuid>{uuid.uuid4()}</uuid>", out, count=1)
    out = re.sub(r"<genid>[^<]*</genid>", f"<genid>{uuid.uuid4()}</genid>", out, count=1)
    out, n = re.subn(r"hostfwd=tcp:127\.0\.0\.1:\d+-:22", f"hostfwd=tcp:127.0.0.1:{port}-:22", out)
    if n != 1:
        raise SnapshotUnusable("the saved domain XML has no SSH forward (hostfwd) to move")
    return re.sub(r"vexfs\.hostname=\S+", f"vexfs.hostname={name}", out)


def saved_xml(path: Path) -> str:
    """The domain XML in a libvirt save image's header."""
    with open(path, "rb") as f:
        head = f.read(_HEADER.size)
        if len(head) < _HEADER.size:
            raise SnapshotUnusable(f"snapshot {path} is truncated")
        magic, _ver, data_len, *_ = _HEADER.unpack(head)
        if magic != MAGIC:
            raise SnapshotUnusable(f"snapshot {path} is not a libvirt save image")
        data = f.read(data_len)
    return data.split(b"\0", 1)[0].decode()


def write_copy(src: Path, edit: Callable[[str], str], tmp_dir: Path | None = None) -> Path:
    """A private (0600) copy of the save image ``src`` with its domain XML passed through
    ``edit``. On /dev/shm when it is there (the copy lives for one restore)."""
    try:
        f = open(src, "rb")
    except FileNotFoundError:
        raise SnapshotUnusable(f"snapshot {src} is gone (deleted since it was looked up)") from None
    with f:
        head = f.read(_HEADER.size)
        if len(head) < _HEADER.size:
            raise SnapshotUnusable(f"snapshot {src} is truncated")
        magic, version, data_len, was_running, compressed, cookie_at, unused = _HEADER.unpack(head)
        if magic != MAGIC or version < 2:
            raise SnapshotUnusable(f"snapshot {src} is not a libvirt save image (version 2+)")
        data = f.read(data_len)
        if len(data) != data_len:
            raise SnapshotUnusable(f"snapshot {src} is truncated in its header")
        xml = data.split(b"\0", 1)[0].decode()
        cookie = data[cookie_at:].split(b"\0", 1)[0] if cookie_at else b""
        new_xml = edit(xml).encode() + b"\0"
        body = new_xml + (cookie + b"\0" if cookie else b"")
        body += b"\0" * _PAD
        new_head = _HEADER.pack(magic, version, len(body), was_running, compressed, len(new_xml) if cookie else 0, unused)
        where = tmp_dir or (_SHM if os.access(_SHM, os.W_OK) else src.parent)
        fd, name = tempfile.mkstemp(prefix=".restore-", suffix=".save", dir=where)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(new_head)
                out.write(body)
                out.flush()
                size = os.fstat(f.fileno()).st_size
                off = _HEADER.size + data_len
                if size <= off:
                    raise SnapshotUnusable(f"snapshot {src} holds no memory image (truncated)")
                while off < size:
                    sent = os.sendfile(out.fileno(), f.fileno(), off, size - off)
                    if sent == 0:
                        raise SnapshotUnusable(f"snapshot {src} shrank while being copied")
                    off += sent
        except BaseException:
            os.unlink(name)
            raise
    return Path(name)


# ---------------------------------------------------------------------------- after a restore


async def refresh_guest(target: Target, name: str, *, timeout: float = 15.0) -> None:
    """Make a restored copy its own guest: host randomness into /dev/urandom (the CRNG was
    already reseeded by the generation ID), the host's clock, its own hostname."""
    # Integer seconds (busybox date -s @N), rounded: within ~0.5 s plus one round trip.
    now = round(time.time())
    cmd = f"cat >/dev/urandom && date -u -s @{now} >/dev/null && hostname {shlex.quote(name)}"
    res = await target.run(cmd, input=os.urandom(512), timeout=timeout)
    if not res.ok:
        raise InfraError(f"VM {name}: refreshing the restored guest failed: {res.first_line() or f'exit {res.exit_code}'}")


# ---------------------------------------------------------------------------- the golden VM


class _Fleet(Protocol):
    async def save(self, name: str, path: Path) -> None: ...


class _GoldenVm(Protocol):
    name: str
    target: Any
    console: Any

    async def boot(self) -> None: ...
    async def aclose(self, grace_s: float = 10.0) -> None: ...


async def build_golden(
    fleet: _Fleet, vm: _GoldenVm, root: Path, inputs: dict[str, Any], boot_lines: list[str] | None = None,
) -> Snapshot:
    """Boot ``vm`` (the golden domain, with a ``<genid/>``) to ready and save its RAM as
    the snapshot for ``inputs``; ``boot_lines`` (filled by the VM's console sink) is kept
    as its boot log. The VM is gone afterwards (saved or destroyed)."""
    final = root / snapshot_key(inputs)
    tmp = Path(tempfile.mkdtemp(prefix=".build-", dir=root))  # 0700 until renamed in
    saved = False
    try:
        t0 = time.monotonic()
        await vm.boot()
        boot_s = time.monotonic() - t0
        # No SSH session may be open in the saved RAM: every copy would hold a half
        # connection. Closing it makes dropbear's child exit; give it a moment.
        await vm.target.close()
        await vm.console.detach()
        await asyncio.sleep(0.5)
        t1 = time.monotonic()
        await fleet.save(vm.name, tmp / SAVE_FILE)
        saved = True
        save_s = time.monotonic() - t1
        os.chmod(tmp / SAVE_FILE, 0o600)
        snap = Snapshot(final, inputs, (tmp / SAVE_FILE).stat().st_size, time.time(), boot_s, save_s)
        (tmp / BOOT_LOG).write_text("".join(f"{ln}\n" for ln in boot_lines or []))
        (tmp / MANIFEST).write_text(json.dumps(snap.manifest(), indent=2) + "\n")
        if final.exists():
            shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        prune_snapshots(root, keep=final, others=KEEP_OTHERS)
        log.info("golden snapshot %s: boot %.1fs, save %.1fs, %d MB", final, boot_s, save_s, snap.size >> 20)
        return snap
    except (CockpitError, OSError) as err:
        raise InfraError(f"could not build the golden snapshot: {err}") from None
    finally:
        if not saved:
            await vm.aclose(grace_s=0)
        else:
            with contextlib.suppress(CockpitError, OSError):
                await vm.aclose(grace_s=0)  # releases console/SSH; the domain is gone
        shutil.rmtree(tmp, ignore_errors=True)
