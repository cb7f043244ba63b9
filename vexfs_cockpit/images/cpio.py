"""A tiny writer for initramfs archives (cpio "newc", gzip-compressed).

Written in Python rather than shelling out to cpio(1) so the image can hold
/dev/console and root-owned files without privileges or fakeroot, and so the
bytes depend only on the inputs (fixed mtimes, sorted order).
"""

from __future__ import annotations

import gzip
import stat
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import BinaryIO, Iterable

_MAGIC = b"070701"


@dataclass(frozen=True, slots=True)
class Entry:
    """One archive member. ``path`` is relative to the root, without a leading slash."""

    path: str
    mode: int  # full st_mode: type bits + permissions
    data: bytes = b""  # file contents, or the target of a symlink
    uid: int = 0
    gid: int = 0
    rdev: tuple[int, int] = (0, 0)  # (major, minor) for device nodes

    @staticmethod
    def directory(path: str, perm: int = 0o755, uid: int = 0, gid: int = 0) -> "Entry":
        return Entry(path, stat.S_IFDIR | perm, uid=uid, gid=gid)

    @staticmethod
    def file(path: str, data: bytes, perm: int = 0o644, uid: int = 0, gid: int = 0) -> "Entry":
        return Entry(path, stat.S_IFREG | perm, data, uid, gid)

    @staticmethod
    def symlink(path: str, target: str) -> "Entry":
        return Entry(path, stat.S_IFLNK | 0o777, target.encode())

    @staticmethod
    def chardev(path: str, major: int, minor: int, perm: int = 0o600) -> "Entry":
        return Entry(path, stat.S_IFCHR | perm, rdev=(major, minor))


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _header(ino: int, e: Entry, name: bytes) -> bytes:
    fields = (
        ino, e.mode, e.uid, e.gid, 1, 0, len(e.data),
        0, 0, e.rdev[0], e.rdev[1], len(name) + 1, 0,
    )
    return _MAGIC + b"".join(b"%08X" % f for f in fields)


def write_newc(out: BinaryIO, entries: Iterable[Entry]) -> None:
    """Write ``entries`` (parents before children is the caller's job) plus the trailer."""
    ino = 1
    for e in entries:
        name = e.path.lstrip("/").encode()
        hdr = _header(ino, e, name)
        out.write(hdr + name + b"\0" + _pad(len(hdr) + len(name) + 1))
        out.write(e.data + _pad(len(e.data)))
        ino += 1
    trailer = Entry("TRAILER!!!", 0)
    name = trailer.path.encode()
    hdr = _header(0, trailer, name)
    out.write(hdr + name + b"\0" + _pad(len(hdr) + len(name) + 1))


def with_parents(entries: Iterable[Entry]) -> list[Entry]:
    """Sort entries by path and add any missing parent directories (root-owned, 0755)."""
    by_path = {e.path.lstrip("/"): e for e in entries}
    for path in list(by_path):
        for parent in PurePosixPath(path).parents:
            p = str(parent)
            if p != "." and p not in by_path:
                by_path[p] = Entry.directory(p)
    return [by_path[p] for p in sorted(by_path, key=lambda p: PurePosixPath(p).parts)]


def write_initramfs(path: str, entries: Iterable[Entry]) -> None:
    """Write a gzip-compressed newc archive; mtime=0 and no file name keep equal inputs byte-identical."""
    with open(path, "wb") as raw, gzip.GzipFile(filename="", fileobj=raw, mode="wb", compresslevel=6, mtime=0) as gz:
        write_newc(gz, with_parents(entries))  # type: ignore[arg-type]
