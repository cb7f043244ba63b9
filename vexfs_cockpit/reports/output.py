"""Where a report file goes: checked before a run, written safely after it.

- ``check_report_path``: before a run starts (before any VM boots), is this a place a
  file can be written? One ReportError line naming the path and the fix if not.
- ``write_atomic``: the file appears whole or not at all (CI may pick it up the moment
  it exists). The text goes to a temp file created with O_EXCL|O_NOFOLLOW beside the
  target, with its mode set at creation, then os.replace()s it: a fixed temp name in a
  shared directory could be a planted symlink, and a half-written report is never
  visible. Any failure is a ReportError (one line), never a traceback.
"""

from __future__ import annotations

import errno
import os
import secrets
from pathlib import Path

from vexfs_cockpit.errors import ReportError

REPORT_MODE = 0o644  # less the umask: CI's other users read reports


def _create_temp(directory: Path, name: str) -> tuple[int, Path]:
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC
    for _ in range(100):
        tmp = directory / f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            return os.open(tmp, flags, REPORT_MODE), tmp
        except FileExistsError:
            continue
    raise FileExistsError(errno.EEXIST, "no free temporary file name", str(directory))


def _nearest_existing(path: Path) -> Path:
    while not os.path.lexists(path) and path != path.parent:
        path = path.parent
    return path


def _problem(what: str, out: Path, exc: OSError) -> str:
    """One line: what went wrong writing ``out`` and what to do."""
    match exc.errno:
        case errno.EISDIR:
            return f"{what} {out} is a directory: give a file path (inside it, say)"
        case errno.ENOTDIR | errno.EEXIST:
            return f"{what} {out}: {_nearest_existing(out.parent)} is not a directory: give a path inside a directory"
        case errno.EROFS:
            return f"{what} {out}: {out.parent} is on a read-only filesystem: give a path on a writable one"
        case errno.EACCES | errno.EPERM:
            return f"{what} {out}: cannot write in {_nearest_existing(out.parent)}: fix its permissions or give another path"
        case errno.ENOSPC | errno.EDQUOT:
            return f"{what} {out}: disk full: free space there or give another path"
        case _:
            return f"{what} {out}: {exc.strerror or exc}: give another path"


def check_report_path(path: str | os.PathLike[str], what: str) -> Path:
    """Raise ReportError unless ``path`` can be written as a file later.

    The nearest existing directory on its way must take a new file: where the parent
    exists, a temp file is made there and removed again (the real test: permissions,
    read-only mounts, immutable directories, a full disk); where it does not yet (the
    writer will create it), the nearest existing ancestor must be a writable directory.
    """
    out = Path(path)
    try:
        if out.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(out))
        anc = _nearest_existing(out.parent)
        if not anc.is_dir():
            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(anc))
        if anc == out.parent:
            fd, tmp = _create_temp(anc, out.name)
            os.close(fd)
            tmp.unlink()
        elif not os.access(anc, os.W_OK | os.X_OK):
            read_only = bool(os.statvfs(anc).f_flag & os.ST_RDONLY)
            code = errno.EROFS if read_only else errno.EACCES
            raise PermissionError(code, os.strerror(code), str(anc))
    except OSError as exc:
        raise ReportError(_problem(what, out, exc)) from None
    return out


def write_atomic(path: str | os.PathLike[str], text: str, what: str) -> Path:
    """Write ``text`` to ``path`` atomically (see the module's doc); ReportError on failure."""
    out = Path(path)
    try:
        if out.is_dir():
            raise IsADirectoryError(errno.EISDIR, os.strerror(errno.EISDIR), str(out))
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = _create_temp(out.parent, out.name)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.replace(tmp, out)
        except BaseException:
            try:
                tmp.unlink()
            except OSError:
                pass
            raise
    except OSError as exc:
        raise ReportError(_problem(what, out, exc)) from None
    return out
