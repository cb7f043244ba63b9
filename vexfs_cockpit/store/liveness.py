"""Is the process that started a run still alive? (For marking abandoned runs aborted.)

A pid alone lies: pids are reused and a reboot resets them. So a run records pid,
the process's start time (in clock ticks since boot, /proc/<pid>/stat field 22),
the hostname and the boot id; all four must match a live process for it to count.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from pathlib import Path

_BOOT_ID = Path("/proc/sys/kernel/random/boot_id")


def _read_boot_id() -> str:
    try:
        return _BOOT_ID.read_text().strip()
    except OSError:
        return ""


def proc_start_ticks(pid: int) -> int | None:
    """Start time of ``pid`` in clock ticks since boot, or None if it is not running.

    A zombie (killed, not yet reaped) is not running.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return None
    except OSError:
        return None
    # comm (field 2) may contain spaces and parens: split after the last ')'.
    fields = stat[stat.rindex(")") + 2:].split()
    if fields[0] in ("Z", "X"):
        return None
    return int(fields[19])  # field 22 overall; fields[0] is field 3


@dataclass(frozen=True, slots=True)
class ProcessIdentity:
    pid: int
    proc_start: int | None
    hostname: str
    boot_id: str

    @classmethod
    def current(cls) -> ProcessIdentity:
        pid = os.getpid()
        return cls(pid, proc_start_ticks(pid), socket.gethostname(), _read_boot_id())

    def is_gone(self, here: ProcessIdentity | None = None) -> bool | None:
        """True: certainly dead. False: alive. None: cannot tell (another host)."""
        here = here or ProcessIdentity.current()
        if self.hostname != here.hostname:
            return None
        if self.boot_id and here.boot_id and self.boot_id != here.boot_id:
            return True  # the machine rebooted since
        if self.pid == here.pid:
            return self.proc_start != here.proc_start
        start = proc_start_ticks(self.pid)
        if start is None:
            return True
        return self.proc_start is not None and start != self.proc_start


# -- runs whose process died ------------------------------------------------------------
# One rule for the writer, which marks such runs aborted in the DB when it opens, and
# for readers, which show them aborted before any writer has (history.py).
def owner_gone(pid: int | None, proc_start: int | None, hostname: str | None, boot_id: str | None,
               here: ProcessIdentity | None = None) -> bool:
    """True only if the process that recorded a run is certainly dead (not: another host)."""
    if not pid:
        return False
    return ProcessIdentity(pid, proc_start, hostname or "", boot_id or "").is_gone(here) is True


def run_died_reason(pid: int | None, hostname: str | None) -> str:
    return f"cockpit process {pid} on {hostname} died during the run"


def domain_died_reason(current_test: str | None) -> str:
    return f"cockpit process died during test {current_test}" if current_test else "cockpit process died"
