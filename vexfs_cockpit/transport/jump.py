"""SSH to a libvirt host that guests are reached through (``hosts[].ssh_jump``).

A guest's SSH port is forwarded on its host's loopback only (QEMU ``hostfwd`` on
127.0.0.1), so a guest on another host is reached by tunnelling through one SSH
connection to that host (asyncssh ``tunnel=``: a direct-tcpip channel per guest
connection). Nothing of a guest is ever exposed beyond its host's loopback.

Unlike a guest connection this one is the user's own: it may use their SSH keys,
agent and ``~/.ssh/known_hosts`` (as libvirt's ``qemu+ssh`` does), unless the host's
config names a key and a known_hosts file.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vexfs_cockpit.errors import ConfigError
from vexfs_cockpit.transport.asyncssh_import import asyncssh
from vexfs_cockpit.transport.ssh import connect_host

_SPEC = re.compile(r"(?:(?P<user>[A-Za-z0-9._-]+)@)?(?P<host>[A-Za-z0-9.-]+)(?::(?P<port>[0-9]{1,5}))?")
_SSH_URI = re.compile(r"^[a-z0-9]+\+(ssh|libssh|libssh2)://(?P<spec>[^/?]+)")


@dataclass(frozen=True, slots=True)
class JumpSpec:
    user: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.user}@{self.host}:{self.port}"


def parse_jump(text: str, *, where: str) -> JumpSpec:
    """``user@host[:port]`` (user defaults to root, port to 22); ConfigError naming ``where``."""
    m = _SPEC.fullmatch(text.strip())
    port = int(m.group("port") or 22) if m else 0
    if not m or not 0 < port < 65536:
        raise ConfigError(f"{where}: expected user@host[:port], found {text!r}")
    return JumpSpec(m.group("user") or "root", m.group("host"), port)


def jump_for(uri: str, ssh_jump: str, *, where: str) -> JumpSpec | None:
    """The host guests are tunnelled through: ``ssh_jump`` if set, else the user@host[:port]
    of an SSH libvirt URI; None for a local URI (the guests' ports are on this loopback)."""
    if ssh_jump:
        return parse_jump(ssh_jump, where=f"{where}.ssh_jump")
    m = _SSH_URI.match(uri)
    return parse_jump(m.group("spec"), where=f"{where}.uri") if m else None


class JumpHost:
    """One SSH connection to a host, opened on first use, opened again once it drops;
    shared by every guest connection tunnelled through it."""

    def __init__(self, spec: JumpSpec, *, client_keys: Path | None = None, known_hosts: Path | None = None,
                 connect_timeout: float = 20.0) -> None:
        self.spec = spec
        self._options: dict[str, Any] = {"username": spec.user, "connect_timeout": connect_timeout,
                                          "keepalive_interval": 10.0, "keepalive_count_max": 3}
        if client_keys is not None:
            self._options["client_keys"] = [str(client_keys)]
        if known_hosts is not None:
            self._options["known_hosts"] = str(known_hosts)
        self._conn: asyncssh.SSHClientConnection | None = None
        self._lock: asyncio.Lock | None = None

    async def connection(self) -> asyncssh.SSHClientConnection:
        if self._conn is not None and not self._conn.is_closed():
            return self._conn
        if self._lock is None:
            self._lock = asyncio.Lock()
        async with self._lock:
            if self._conn is None or self._conn.is_closed():
                self._conn = await connect_host(self.spec.host, self.spec.port, **self._options)
            return self._conn

    async def aclose(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()
            await asyncio.wait_for(conn.wait_closed(), 5.0)


__all__ = ["JumpHost", "JumpSpec", "jump_for", "parse_jump"]
