"""Shell text the SSH transport sends: the per-command wrapper and its killer.

SSH gives no reliable way to signal a remote process (dropbear ignores "signal"
requests, and closing the channel leaves e.g. ``sleep 600`` running). So every
command runs in a session of its own, tagged with a random token in its argv; a
timeout runs :func:`kill_command`, which finds the tagged processes through
``/proc/*/cmdline`` and SIGKILLs their whole process group. Only POSIX sh,
``grep`` and ``setsid`` are needed (busybox has all three).
"""

from __future__ import annotations

import secrets
import shlex

TOKEN_PREFIX = "vexfs-cockpit-"

# dropbear refuses an exec request longer than MAX_CMD_LEN (9000 bytes) with
# "Session request failed"; longer scripts are staged through stdin first.
MAX_EXEC_BYTES = 8000


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_hex(8)


def wrap_command(command: str, token: str) -> str:
    """Shell text that runs ``command`` as the leader of a new session tagged ``token``.

    A process that already leads its process group (OpenSSH's session child does
    ``setsid()``) just evals the command: ``setsid`` would fork there and lose the
    exit status. Otherwise (dropbear) it ``exec``s ``setsid``, which keeps the pid,
    so the exit status and stdin/stdout reach the channel untouched.
    """
    q = shlex.quote(command)
    return (
        f"read -r _s < /proc/$$/stat; set -- $_s; "
        f'if [ "$5" = "$$" ] || ! command -v setsid >/dev/null 2>&1; then eval {q}; '
        f"else exec setsid sh -c 'eval \"$1\"' {token} {q}; fi"
    )


def kill_command(token: str) -> str:
    """SIGKILL every process group led by a process tagged ``token``, then each tagged pid.

    The grep pattern brackets one character (``[v]exfs-...``) so that it does not
    match its own argv, nor this killer's shell.
    """
    pattern = shlex.quote(f"[{token[0]}]{token[1:]}")
    return (
        f"for _f in $(grep -l {pattern} /proc/[0-9]*/cmdline 2>/dev/null); do "
        "_p=${_f#/proc/}; _p=${_p%/cmdline}; "
        "kill -9 -$_p 2>/dev/null || kill -9 $_p 2>/dev/null; "
        "done; true"
    )


def stage_command(path: str) -> str:
    """Run a script staged at ``path`` (see MAX_EXEC_BYTES) and remove it afterwards."""
    p = shlex.quote(path)
    return f"sh {p}; _rc=$?; rm -f {p}; exit $_rc"
