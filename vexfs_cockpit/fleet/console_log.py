"""A VM's console log on disk, bounded: past ``max_bytes`` the file rotates to ``.1``
(the older ``.1`` to ``.2``, up to ``keep`` old files), so a printk flood from a broken
module costs at most ``(keep + 1) * max_bytes`` per VM and never the disk that holds the
history. A dev VM's log is reused across boots; the same bound holds there."""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

DEFAULT_MAX_BYTES = 64 * 1024 * 1024
DEFAULT_KEEP = 2


class ConsoleLog:
    def __init__(self, path: Path, *, max_bytes: int = DEFAULT_MAX_BYTES, keep: int = DEFAULT_KEEP):
        self.path = path
        self.max_bytes = max(1, max_bytes)
        self.keep = max(0, keep)
        path.parent.mkdir(parents=True, exist_ok=True)
        self._file: IO[bytes] = self._open()
        self._size = self._file.tell()

    def _open(self) -> IO[bytes]:
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        return os.fdopen(fd, "ab")

    def rotated(self, n: int) -> Path:
        return self.path.with_name(f"{self.path.name}.{n}")

    def write(self, data: bytes) -> None:
        """Append and flush (evidence must be on disk if the cockpit dies next)."""
        if self._size and self._size + len(data) > self.max_bytes:
            self._rotate()
        self._file.write(data)
        self._file.flush()
        self._size += len(data)

    def _rotate(self) -> None:
        self._file.close()
        if self.keep == 0:
            self.path.unlink(missing_ok=True)
        else:
            for n in range(self.keep - 1, 0, -1):
                if self.rotated(n).exists():
                    os.replace(self.rotated(n), self.rotated(n + 1))
            os.replace(self.path, self.rotated(1))
        self._file = self._open()
        self._size = 0

    def close(self) -> None:
        self._file.close()
