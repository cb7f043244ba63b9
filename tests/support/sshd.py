"""A throwaway OpenSSH server on a loopback port for the qemu+ssh tests: its own host
key and client key in a temporary directory, root login by that key only, nothing
outside 127.0.0.1. ``SshHost.libvirt_uri()`` is a ``qemu+ssh://`` URI to it that
verifies its host key (through an ``ssh`` wrapper: libvirt's ssh transport has no
known_hosts parameter of its own)."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

SSHD = Path("/usr/sbin/sshd")
SSH_HOST_HINT = "VEXFS_TEST_SSH_HOST=1 scripts/setup.sh installs openssh-server (its service is never started)"


def _free_loopback_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class SshHost:
    root: Path
    port: int
    proc: subprocess.Popen[str]
    lines: list[str] = field(default_factory=list)

    @property
    def client_key(self) -> Path:
        return self.root / "client_key"

    @property
    def known_hosts(self) -> Path:
        return self.root / "known_hosts"

    def libvirt_uri(self) -> str:
        return f"qemu+ssh://root@127.0.0.1:{self.port}/system?keyfile={self.client_key}&command={self.root / 'ssh-wrap'}"

    def log(self) -> str:
        return "\n".join(self.lines)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


def start_sshd(root: Path, timeout: float = 20.0) -> SshHost:
    """Start sshd -D on a free port above 1024 of 127.0.0.1 and wait for its
    "Server listening" line (its stderr is drained by a thread, kept in ``lines``)."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / name)], check=True)
    shutil.copy(root / "client_key.pub", root / "authorized_keys")
    port = _free_loopback_port()
    assert port > 1024
    (root / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {root / 'host_key'}\n"
        f"AuthorizedKeysFile {root / 'authorized_keys'}\nPermitRootLogin prohibit-password\n"
        "PasswordAuthentication no\nKbdInteractiveAuthentication no\nUsePAM no\nStrictModes no\n"
        f"PidFile {root / 'sshd.pid'}\nAllowTcpForwarding local\nLogLevel DEBUG1\n"
    )
    host_pub = (root / "host_key.pub").read_text().split()[:2]
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {' '.join(host_pub)}\n")
    wrap = root / "ssh-wrap"
    wrap.write_text(
        "#!/bin/sh\n"
        f"exec ssh -F /dev/null -o UserKnownHostsFile={root / 'known_hosts'} -o StrictHostKeyChecking=yes "
        '-o IdentitiesOnly=yes -o BatchMode=yes "$@"\n'
    )
    wrap.chmod(0o755)
    os.makedirs("/run/sshd", mode=0o755, exist_ok=True)  # sshd's privilege separation directory
    proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(root / "sshd_config")],
                            stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    host = SshHost(root, port, proc)
    listening = threading.Event()

    def drain() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            host.lines.append(line.rstrip("\n"))
            if f"Server listening on 127.0.0.1 port {port}" in line:
                listening.set()

    threading.Thread(target=drain, name="sshd-log", daemon=True).start()
    if not listening.wait(timeout):
        proc.kill()
        raise AssertionError(f"sshd did not listen on 127.0.0.1:{port} within {timeout:g}s:\n{host.log()}")
    return host
