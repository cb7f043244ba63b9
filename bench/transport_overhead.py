#!/usr/bin/env python3
"""Per-command overhead of three ways to run a command in one guest, in one run.

1. SshTarget: one persistent asyncssh connection, N x ``true``.
2. A fresh OpenSSH ``ssh`` process per command (what shell-script harnesses do).
3. ``ansible-playbook`` with N ``raw: true`` tasks over ControlPersist; per task =
   (time of an N-task play - time of a 1-task play) / (N - 1), so Ansible's own
   start-up is not charged to the tasks.

Prints each median and its ratio to SshTarget. FIELD-NOTES measured ~12 ms, ~147 ms
and ~110 ms on a quiet host; the host's load average is printed alongside because
TCG guests slow down with it.

Usage:
  python bench/transport_overhead.py                 # boots its own guest (libvirt, TCG)
  python bench/transport_overhead.py --host 127.0.0.1 --port 2222 --key KEY --known-hosts FILE
Options: --n 50, --ansible-playbook PATH (default: on PATH, else /tmp/ansible-venv/bin/).
Needs: openssh-client (apt), ansible-core (pip; optional: without it that row says why).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from vexfs_cockpit.transport.ssh import SshTarget, pinned_known_hosts


@dataclass
class GuestAddr:
    host: str
    port: int
    key: Path
    known_hosts: Path  # OpenSSH known_hosts file (also accepted by SshTarget)


@contextmanager
def booted_guest() -> Iterator[GuestAddr]:
    """Boot a transient self-test guest on qemu:///system; destroy it on exit."""
    import libvirt

    from vexfs_cockpit.images.initramfs import build_image
    from vexfs_cockpit.fleet.templates import DomainSpec, free_port, render_domain_xml

    img = build_image()
    name = f"vexfs-bench-transport-{os.getpid()}"
    port = free_port()
    xml = render_domain_xml(DomainSpec(
        name=name, ssh_port=port, kernel=img.kernel, initrd=img.initrd,
        cmdline=img.kernel_cmdline(hostname=name), accel="qemu", memory_mb=512, cpus=1,
        metadata={"owner_pid": str(os.getpid()), "run_id": "bench-transport"},
    ))
    conn = libvirt.open("qemu:///system")
    dom = conn.createXML(xml, 0)
    try:
        # A known_hosts file trusting the guest's key on this VM's port only.
        kh = Path(tempfile.mkdtemp(prefix="vexfs-bench-")) / "known_hosts"
        kh.write_text(pinned_known_hosts("127.0.0.1", port, [img.host_pubkey]))
        yield GuestAddr("127.0.0.1", port, Path(img.client_key), kh)
    finally:
        try:
            dom.destroy()
        except libvirt.libvirtError:
            pass
        conn.close()


def ssh_argv(g: GuestAddr) -> list[str]:
    return [
        "ssh", "-F", "/dev/null", "-i", str(g.key), "-p", str(g.port),
        "-o", f"UserKnownHostsFile={g.known_hosts}", "-o", "StrictHostKeyChecking=yes",
        "-o", "BatchMode=yes", "-o", "ControlMaster=no", "-o", "ControlPath=none",
        "-o", "LogLevel=ERROR", f"root@{g.host}",
    ]


async def time_ssh_target(t: SshTarget) -> float:
    started = time.perf_counter()
    res = await t.run("true")
    if not res.ok:
        raise SystemExit(f"SshTarget `true` failed: {res.output}")
    return time.perf_counter() - started


async def time_fresh_ssh(g: GuestAddr) -> float:
    started = time.perf_counter()
    proc = await asyncio.create_subprocess_exec(
        *ssh_argv(g), "true", stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise SystemExit(f"ssh `true` failed ({proc.returncode}): {out.decode(errors='replace').strip()}")
    return time.perf_counter() - started


def find_ansible(explicit: str | None) -> str | None:
    if explicit:
        return explicit
    return shutil.which("ansible-playbook") or next(
        (str(p) for p in [Path("/tmp/ansible-venv/bin/ansible-playbook")] if p.exists()), None
    )


def time_ansible(g: GuestAddr, playbook_bin: str, n: int) -> tuple[float, str]:
    """Per-task seconds for `raw: true`, from an n-task and a 1-task play."""
    with tempfile.TemporaryDirectory(prefix="vexfs-bench-ansible-") as tmp:
        d = Path(tmp)
        common = f"-F /dev/null -o UserKnownHostsFile={g.known_hosts} -o StrictHostKeyChecking=yes"
        (d / "inventory.ini").write_text(
            f"guest ansible_host={g.host} ansible_port={g.port} ansible_user=root "
            f"ansible_ssh_private_key_file={g.key} ansible_ssh_common_args='{common}'\n"
        )
        for count in (1, n):
            tasks = "".join(f"    - raw: 'true'\n      changed_when: false\n" for _ in range(count))
            (d / f"play{count}.yml").write_text(f"- hosts: guest\n  gather_facts: false\n  tasks:\n{tasks}")
        env = {
            **os.environ,
            "ANSIBLE_SSH_CONTROL_PATH_DIR": str(d / "cp"),
            "ANSIBLE_SSH_ARGS": "-o ControlMaster=auto -o ControlPersist=60s",
            "ANSIBLE_PIPELINING": "True",
            "ANSIBLE_NOCOLOR": "1",
            "ANSIBLE_LOCAL_TEMP": str(d / "tmp"),
            "ANSIBLE_HOME": str(d / "home"),
        }

        def play(count: int) -> float:
            started = time.perf_counter()
            r = subprocess.run([playbook_bin, "-i", str(d / "inventory.ini"), str(d / f"play{count}.yml")],
                               env=env, capture_output=True, text=True, timeout=900)
            if r.returncode != 0:
                raise RuntimeError(r.stdout[-400:] + r.stderr[-400:])
            return time.perf_counter() - started

        play(1)  # warm: opens the ControlPersist master, fills Ansible's caches
        t1 = statistics.median(play(1) for _ in range(3))
        tn = play(n)
        return (tn - t1) / (n - 1), f"{n}-task play {tn:.2f}s, 1-task play {t1:.2f}s"


async def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int)
    ap.add_argument("--key", type=Path)
    ap.add_argument("--known-hosts", type=Path)
    ap.add_argument("--n", type=int, default=50)
    ap.add_argument("--ansible-playbook")
    args = ap.parse_args()
    if args.n < 2:
        ap.error("--n must be >= 2")

    if args.port:
        if not (args.key and args.known_hosts):
            ap.error("--port needs --key and --known-hosts")
        ctx: AbstractContextManager[GuestAddr] = nullcontext(GuestAddr(args.host, args.port, args.key, args.known_hosts))
    else:
        ctx = booted_guest()

    with ctx as g:
        t = SshTarget("bench", g.host, g.port, "root", [g.key], g.known_hosts, reconnect_deadline_s=180)
        connect_started = time.perf_counter()
        await t.connect()
        connect_s = time.perf_counter() - connect_started
        print(f"guest {g.host}:{g.port}  connected in {connect_s:.2f}s (includes boot if just started)")
        print(f"load average before: {os.getloadavg()[0]:.2f}")
        await t.run("true")  # warm the channel path once

        have_ssh = shutil.which("ssh") is not None
        # Interleave so a load change on the host hits both equally.
        ours: list[float] = []
        fresh: list[float] = []
        for _ in range(args.n):
            ours.append(await time_ssh_target(t))
            if have_ssh:
                fresh.append(await time_fresh_ssh(g))
        await t.close()

        base = statistics.median(ours)
        rows = [("SshTarget (one asyncssh connection)", base, "")]
        if have_ssh:
            rows.append(("fresh `ssh` process per command", statistics.median(fresh), ""))
        else:
            print("fresh ssh: skipped: no `ssh` on PATH (apt-get install openssh-client)")

        ansible = find_ansible(args.ansible_playbook)
        if ansible is None:
            print("ansible: skipped: no ansible-playbook (pip install ansible-core, or --ansible-playbook PATH)")
        else:
            try:
                per_task, note = await asyncio.to_thread(time_ansible, g, ansible, args.n)
                rows.append(("ansible-playbook raw task, ControlPersist", per_task, note))
            except (RuntimeError, OSError, subprocess.TimeoutExpired) as err:
                print(f"ansible: failed: {' '.join(str(err).split())[:300]}")

        print(f"load average after:  {os.getloadavg()[0]:.2f}")
        print(f"\nper-command overhead, median of N={args.n} (`true`):")
        for label, secs, note in rows:
            print(f"  {label:<42} {secs * 1000:8.1f} ms  x{secs / base:5.1f}  {note}".rstrip())
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
