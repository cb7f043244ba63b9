"""Shell text the SSH transport sends: the per-command wrapper, its killer, the probe.

SSH gives no reliable way to signal a remote process (dropbear ignores "signal"
requests, and closing the channel leaves e.g. ``sleep 600`` running). So every
command runs as the leader of its own process group with a random token in its
environment (inherited by children, kept across ``exec``); a timeout runs
:func:`kill_command`, which finds the tagged processes through ``/proc`` and
SIGKILLs their process groups. Only POSIX sh, ``grep`` and ``setsid`` are needed.

Whether the session's shell already leads a process group depends on the server
(dropbear 2022.83 and OpenSSH: yes; older dropbear: no), so :data:`PROBE` asks once
per connection and :func:`wrap_command` picks the cheapest wrapper that works.
Checking on every command would cost ~30 ms under TCG (``read`` on /proc is
byte by byte).
"""

from __future__ import annotations

import secrets
import shlex
from enum import Enum

TOKEN_PREFIX = "vexfs-cockpit-"
TOKEN_VAR = "VEXFS_COCKPIT_TOKEN"

# dropbear refuses an exec request longer than MAX_CMD_LEN (9000 bytes) with
# "Session request failed"; longer scripts are staged through stdin first.
MAX_EXEC_BYTES = 8000


class SessionMode(Enum):
    LEADER = "leader"  # the session shell leads its group: run the command in it
    SETSID = "setsid"  # it does not: exec setsid (no fork, so exit status and pid stay)
    PLAIN = "plain"  # neither: only the tagged processes themselves can be killed


# One line per answer: "leader"/"member", then "setsid"/"nosetsid".
PROBE = (
    'read -r _s < /proc/$$/stat; set -- $_s; if [ "$5" = "$$" ]; then echo leader; else echo member; fi; '
    "if command -v setsid >/dev/null 2>&1; then echo setsid; else echo nosetsid; fi"
)


def parse_probe(output: str) -> SessionMode:
    words = output.split()
    if "leader" in words:
        return SessionMode.LEADER
    if "setsid" in words:
        return SessionMode.SETSID
    return SessionMode.PLAIN


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_hex(8)


def wrap_command(command: str, token: str, mode: SessionMode) -> str:
    """Shell text that runs ``command`` as a tagged process-group leader."""
    tag = f"export {TOKEN_VAR}={token}"
    if mode is SessionMode.SETSID:
        # `sh -c CMD sh`: $0 stays "sh" so error messages read as usual.
        return f"{tag}; exec setsid sh -c {shlex.quote(command)} sh"
    # A newline, not "; ": the command is parsed as its own lines, as if sent alone.
    return f"{tag}\n{command}"


def kill_command(token: str) -> str:
    """SIGKILL the process group of every process tagged ``token`` (or the process
    itself when it leads no group).

    The grep pattern brackets one character (``[v]exfs-...``) so that it matches
    neither its own argv nor this killer's shell.
    """
    pattern = shlex.quote(f"[{token[0]}]{token[1:]}")
    return (
        f"for _f in $(grep -l {pattern} /proc/[0-9]*/cmdline /proc/[0-9]*/environ 2>/dev/null); do "
        "_p=${_f#/proc/}; _p=${_p%/*}; "
        "kill -9 -$_p 2>/dev/null || kill -9 $_p 2>/dev/null; "
        "done; true"
    )


def stage_command(path: str) -> str:
    """Run a script staged at ``path`` (see MAX_EXEC_BYTES) and remove it afterwards."""
    p = shlex.quote(path)
    return f"sh {p}; _rc=$?; rm -f {p}; exit $_rc"
