"""Count each kernel line once when the console and an SSH `dmesg -w`/`cat /dev/kmsg` both feed.

Both sources print the same printk records with the same microsecond timestamp,
so (timestamp, message) identifies a record. A line from one source is a
duplicate iff another source already delivered that key and it has not been
matched yet; matching consumes it, so a message legitimately printed twice in the
same microsecond is still kept twice. Lines without a timestamp (user-space
output on the console) cannot be matched and always pass.

Usage (fleet)::

    dedup = LineDeduper()
    for line in kmsg_to_console(raw):         # only for /dev/kmsg records
        if dedup.accept(line, "dmesg"):
            buffer.feed(line)

Thread-safe: the console thread and the SSH reader task may call it concurrently.
"""

from __future__ import annotations

import re
import threading
from collections import Counter, deque

from vexfs_cockpit.klog.classify import KMSG_RE, parse_line

_ESCAPE_RE = re.compile(r"\\x([0-9a-fA-F]{2})")


def kmsg_to_console(record: str) -> list[str]:
    """A /dev/kmsg record as the console prints it: ``[   12.345678] msg``, one line per line.

    Dictionary lines (starting with a space: ``SUBSYSTEM=...``) are dropped; ``\\xNN``
    escapes (embedded newlines, control bytes) are undone. Anything that is not a
    kmsg record is returned unchanged (already in console/dmesg form).
    """
    record = record.rstrip("\r\n")
    if record.startswith(" "):
        return []
    m = KMSG_RE.match(record)
    if not m:
        return [record]
    usec = int(m["usec"])
    prefix = f"[{usec // 1_000_000:5d}.{usec % 1_000_000:06d}] "
    msg = _ESCAPE_RE.sub(lambda e: chr(int(e[1], 16)), m["msg"])
    return [prefix + part for part in msg.split("\n")]


class LineDeduper:
    """Accept each (timestamp, message) once across sources; remembers the last ``window`` keys."""

    def __init__(self, window: int = 20_000):
        self.window = window
        self._lock = threading.Lock()
        self._unmatched: dict[str, Counter[tuple[int, str]]] = {}
        self._order: deque[tuple[str, tuple[int, str]]] = deque()
        self.dropped = 0

    def accept(self, line: str, source: str) -> bool:
        """True if ``line`` (console/dmesg/kmsg form) is new and should be fed on."""
        pl = parse_line(line)
        if pl.ts_us is None:
            return True
        key = (pl.ts_us, pl.body.rstrip())
        with self._lock:
            for other, pending in self._unmatched.items():
                if other != source and pending[key] > 0:
                    pending[key] -= 1
                    if pending[key] == 0:
                        del pending[key]
                    self.dropped += 1
                    return False
            self._unmatched.setdefault(source, Counter())[key] += 1
            self._order.append((source, key))
            while len(self._order) > self.window:
                old_src, old_key = self._order.popleft()
                pending = self._unmatched[old_src]
                if pending[old_key] > 0:
                    pending[old_key] -= 1
                    if pending[old_key] == 0:
                        del pending[old_key]
        return True
