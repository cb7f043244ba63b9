"""Shell text the SSH transport sends: the per-command tag, its killer, long-command staging.

SSH gives no reliable way to signal a remote process (dropbear ignores "signal"
requests, and closing the channel leaves e.g. ``sleep 600`` running). So every
command exports a random token: children inherit it and keep it across ``exec``,
and the session's shell carries it in its argv. On a timeout :func:`kill_command`
finds every tagged process through ``/proc``, freezes it (SIGSTOP, so nothing
forks past the scan), scans again, then SIGKILLs them all and any process group
one of them leads.

Why not ``setsid`` per command: dropbear's session shell shares a process group
with dropbear itself, so making a group costs two more execs per command (~8 ms
under TCG); the tag costs one shell builtin. Only POSIX sh and ``grep`` are needed.
"""

from __future__ import annotations

import secrets
import shlex

TOKEN_PREFIX = "vexfs-cockpit-"
TOKEN_VAR = "VEXFS_COCKPIT_TOKEN"

# dropbear refuses an exec request longer than MAX_CMD_LEN (9000 bytes) with
# "Session request failed"; longer scripts are staged through stdin first.
MAX_EXEC_BYTES = 8000

_KILL_ROUNDS = 5  # rescans after freezing, to catch children forked during a scan


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_hex(8)


GO_EXIT = 111  # the wrapper's exit when its session never got the go line


def wrap_command(command: str, token: str) -> str:
    """Shell text that runs ``command`` tagged with ``token``.

    A newline, not "; ", separates the tag: the command is parsed as its own lines,
    exactly as if it had been sent alone. The command waits for one "go" line on stdin,
    which the client sends only once the session is confirmed: dropbear was seen
    answering "Session request failed" for a session whose command it had already
    run, so a retry ran it twice. Behind the gate a refused session never runs anything
    (``read`` sees the channel close and exits), and a retry is always safe.
    """
    return f"export {TOKEN_VAR}={token}\nread _vexfs_go || exit {GO_EXIT}\n{command}"


def kill_command(token: str) -> str:
    """Shell text that SIGKILLs every process tagged ``token``.

    The grep pattern brackets one character (``[v]exfs-...``) so that it matches
    neither its own argv nor the killer's shell. ``kill -SIG -PID`` (no ``--``:
    dash rejects it) reaches a process group only where PID leads one, which a
    tagged process does only if it (or our session) made that group.
    """
    pattern = shlex.quote(f"[{token[0]}]{token[1:]}")
    return (
        "_all=; "
        f"for _r in {' '.join(str(i) for i in range(_KILL_ROUNDS))}; do _new=; "
        f"for _f in $(grep -l {pattern} /proc/[0-9]*/environ /proc/[0-9]*/cmdline 2>/dev/null); do "
        '_p=${_f#/proc/}; _p=${_p%/*}; case " $_all $_new " in *" $_p "*) ;; *) _new="$_new $_p";; esac; done; '
        '[ -z "$_new" ] && break; '
        "for _p in $_new; do kill -STOP -$_p 2>/dev/null; kill -STOP $_p 2>/dev/null; done; "
        '_all="$_all $_new"; done; '
        "for _p in $_all; do kill -9 -$_p 2>/dev/null; kill -9 $_p 2>/dev/null; done; true"
    )


def stage_command(path: str) -> str:
    """Run a script staged at ``path`` (see MAX_EXEC_BYTES) and remove it afterwards."""
    p = shlex.quote(path)
    return f"sh {p}; _rc=$?; rm -f {p}; exit $_rc"
