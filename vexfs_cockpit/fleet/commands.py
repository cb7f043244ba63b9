"""`vm list|start|stop|reset|console NAME` and `ssh NAME`: the kernel developer's warm loop.

``vm start NAME`` boots a standalone dev VM (``vexfs-<env>-NAME-0``, or NAME
itself when it starts with ``vexfs-``) that stays up after the command returns;
its SSH port, key and known_hosts go into ``<data dir>/vms/<vm>.json`` so `ssh`,
`vm reset` and `vm stop` find it. Dev VMs are marked ``keep`` in their libvirt
metadata: no cockpit ever reaps them; only `vm stop` removes them.

Imports of libvirt/asyncssh stay inside the functions: the CLI imports this
module to build its parser and must stay fast.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vexfs_cockpit.errors import CockpitError, InfraError

if TYPE_CHECKING:
    from vexfs_cockpit.config.models import CockpitConfig

VM_PREFIX = "vexfs-"  # == fleet.libvirt.VM_PREFIX (not imported: that pulls in libvirt)


# ----------------------------------------------------------------------------- state files
@dataclass(frozen=True, slots=True)
class DevVmState:
    name: str
    uri: str
    ssh_port: int
    user: str
    client_key: str
    known_hosts: str
    console_log: str
    started_at: float

    def ssh_argv(self, command: list[str]) -> list[str]:
        argv = [
            "ssh", "-i", self.client_key, "-p", str(self.ssh_port),
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes", "-o", "LogLevel=ERROR",
            f"{self.user}@127.0.0.1",
        ]
        return argv + ([remote_command(command)] if command else [])


def remote_command(command: list[str]) -> str:
    """One word is shell text as typed (`ssh vm 'dmesg | tail'`); several are quoted word by word."""
    import shlex

    return command[0] if len(command) == 1 else shlex.join(command)


def state_dir() -> Path:
    from vexfs_cockpit.engine.session import data_dir

    return data_dir() / "vms"


def state_path(name: str) -> Path:
    return state_dir() / f"{name}.json"


def write_state(st: DevVmState) -> Path:
    path = state_path(st.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(asdict(st), indent=2) + "\n")
    tmp.replace(path)
    return path


def read_state(name: str) -> DevVmState | None:
    try:
        return DevVmState(**json.loads(state_path(name).read_text()))
    except (OSError, ValueError, TypeError):
        return None


def full_name(name: str, env: str) -> str:
    """``manual`` -> ``vexfs-<env>-manual-0``; a ``vexfs-*`` name is taken as is."""
    if name.startswith(VM_PREFIX):
        return name
    from vexfs_cockpit.fleet.libvirt import vm_name

    return vm_name(env, name, 0)


# ----------------------------------------------------------------------------- parser
def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="config file (default: configs/default.yaml)")
    p.add_argument("--env", default=None, help="config environment overlay (dev, test, ci)")
    p.add_argument("--uri", default=None, help="libvirt URI (default: fleet.libvirt_uri)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override a config key, e.g. fleet.template=disk (repeatable)")


def add_parser(subparsers: Any) -> None:
    vm = subparsers.add_parser("vm", help="list, start, stop, reset the cockpit's VMs; attach to a console")
    vsub = vm.add_subparsers(dest="vm_command", metavar="VM_COMMAND")
    vm.set_defaults(handler=lambda a: _usage(vm))

    p = vsub.add_parser("list", help="every vexfs-* VM with its state, owner and SSH port")
    _common(p)
    p.set_defaults(handler=cmd_vm_list)

    p = vsub.add_parser("start", help="boot a dev VM that stays up (for `ssh NAME`)")
    _common(p)
    p.add_argument("name", nargs="?", default="manual", help="short name (-> vexfs-<env>-NAME-0) or a full vexfs-* name")
    p.set_defaults(handler=cmd_vm_start)

    for verb, helptext, fn in (
        ("stop", "power a VM off and remove it", "cmd_vm_stop"),
        ("reset", "hard-reset a VM and wait until it is ready again", "cmd_vm_reset"),
        ("console", "attach this terminal to a VM's serial console (Ctrl-] leaves)", "cmd_vm_console"),
    ):
        p = vsub.add_parser(verb, help=helptext)
        _common(p)
        p.add_argument("name", help="short name (-> vexfs-<env>-NAME-0) or a full vexfs-* name")
        if verb == "stop":
            p.add_argument("--force", action="store_true", help="destroy at once, no clean power-off")
        p.set_defaults(handler=globals()[fn])

    p = subparsers.add_parser("ssh", help="a shell (or one command) on a VM, as root")
    _common(p)
    p.add_argument("--user", default=None, help="log in as this user (root, or the image's tester)")
    p.add_argument("name", help="short name (-> vexfs-<env>-NAME-0) or a full vexfs-* name")
    p.add_argument("command", nargs=argparse.REMAINDER, help="command to run instead of a shell (after --)")
    p.set_defaults(handler=cmd_ssh)


def _usage(p: argparse.ArgumentParser) -> int:
    p.print_help(sys.stderr)
    return 2


def _config(args: argparse.Namespace) -> CockpitConfig:
    from vexfs_cockpit.config.load import config_from_args

    return config_from_args(args)


def _uri(args: argparse.Namespace, cfg: CockpitConfig) -> str:
    return getattr(args, "uri", None) or cfg.fleet.libvirt_uri


async def _fleet(uri: str, env: str):  # -> FleetManager (connected, no reaping)
    from vexfs_cockpit.engine.bus import EventBus
    from vexfs_cockpit.fleet.libvirt import FleetManager

    fm = FleetManager(uri, EventBus(), env)
    await fm.connect(reap=False)
    return fm


# ----------------------------------------------------------------------------- vm list
def format_vm_table(vms: list[Any]) -> list[str]:
    rows = [("NAME", "STATE", "SSH", "OWNER")]
    for v in vms:
        o = v.owner
        if o is None:
            owner = "no cockpit metadata (not managed)"
        elif o.keep:
            owner = "dev VM (vm start)"
        else:
            owner = f"pid {o.pid}" + (f" run {o.run_id}" if o.run_id else "") + ("" if o.alive() else " — owner dead: stale")
        port = str(o.ssh_port) if o is not None and o.ssh_port else "-"
        rows.append((v.name, v.state, port, owner))
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    return [f"{r[0]:<{widths[0]}}  {r[1]:<{widths[1]}}  {r[2]:<{widths[2]}}  {r[3]}".rstrip() for r in rows]


def cmd_vm_list(args: argparse.Namespace) -> int:
    cfg = _config(args)

    async def go() -> list[str]:
        fm = await _fleet(_uri(args, cfg), cfg.env)
        try:
            vms = await fm.list_vms()
        finally:
            await fm.aclose()
        return format_vm_table(vms) if vms else []

    lines = asyncio.run(go())
    print("\n".join(lines) if lines else f"no vexfs-* VMs at {_uri(args, cfg)}")
    return 0


# ----------------------------------------------------------------------------- vm start
async def start_dev_vm(cfg: CockpitConfig, name: str, uri: str, say: Any = print) -> DevVmState:
    """Boot ``name`` to ready, leave it running, record how to reach it."""
    from vexfs_cockpit.engine.bus import EventBus
    from vexfs_cockpit.engine.session import data_dir
    from vexfs_cockpit.fleet.provider import LibvirtProvider

    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    provider = LibvirtProvider(cfg, bus, data_dir() / "runs", run_id="dev", uri=uri, sample_interval_s=3600)
    console_log = state_dir() / f"{name}.console.log"
    try:
        say(f"booting {name} (console log: {console_log}) ...")
        t0 = time.monotonic()
        vm = await provider.boot_vm(name, keep=True, console_log=console_log)
        img = provider._prepared.image  # type: ignore[union-attr]
        st = DevVmState(
            name=name, uri=uri, ssh_port=vm.ssh_port, user="root",
            client_key=str(cfg.fleet.ssh_key_path or img.client_key),  # type: ignore[attr-defined]
            known_hosts=str(img.known_hosts), console_log=str(console_log),  # type: ignore[attr-defined]
            started_at=time.time(),
        )
        write_state(st)
        await provider.release_vm(name)  # stays up after we exit
        say(f"{name} ready in {time.monotonic() - t0:.0f}s: SSH on 127.0.0.1:{vm.ssh_port} — "
            f"`vexfs-cockpit ssh {name}`, `vexfs-cockpit vm console {name}`, `vexfs-cockpit vm stop {name}`")
        return st
    finally:
        await provider.aclose()  # stops only what was not released: a failed/interrupted boot


def cmd_vm_start(args: argparse.Namespace) -> int:
    cfg = _config(args)
    name = full_name(args.name, cfg.env)
    asyncio.run(start_dev_vm(cfg, name, _uri(args, cfg)))
    return 0


# ----------------------------------------------------------------------------- vm stop
async def stop_vm(cfg: CockpitConfig, name: str, uri: str, *, force: bool = False) -> str:
    fm = await _fleet(uri, cfg.env)
    try:
        info = await fm.info(name)
        if info is None:
            state_path(name).unlink(missing_ok=True)
            raise InfraError(f"no VM named {name} at {uri} — see `vexfs-cockpit vm list`")
        how = "destroyed"
        if not force and info.state == "running":
            if await _ssh_poweroff(cfg, name, info):
                how = "powered off" if await fm.wait_stopped(name, cfg.fleet.stop_timeout_s) else "destroyed"
        await fm.stop(name, grace_s=0 if force or how == "powered off" else cfg.fleet.stop_timeout_s)
        state_path(name).unlink(missing_ok=True)
        from vexfs_cockpit.fleet.image import default_image_root
        from vexfs_cockpit.fleet.image_disk import discard_vm_files

        discard_vm_files(default_image_root(cfg.fleet), name)  # a disk VM's overlay and seed
        return how
    finally:
        await fm.aclose()


async def _ssh_poweroff(cfg: CockpitConfig, name: str, info: Any) -> bool:
    """`sync; poweroff -f` inside the guest (busybox ignores ACPI); False if unreachable."""
    try:
        target = _target_for(cfg, name, info, reconnect_deadline_s=3.0)
    except CockpitError:
        return False
    try:
        async with asyncio.timeout(8):
            await target.run("sync; (sleep 0.2; poweroff -f) >/dev/null 2>&1 &", timeout=5.0)
        return True
    except (TimeoutError, CockpitError, OSError):
        return False
    finally:
        await target.close()


def _target_for(cfg: CockpitConfig, name: str, info: Any, *, reconnect_deadline_s: float = 30.0, user: str = "root"):
    """An SshTarget for ``name`` from its state file, else its metadata port + the image."""
    from vexfs_cockpit.transport.ssh import SshTarget

    st = read_state(name)
    if st is not None:
        port, key, known = st.ssh_port, st.client_key, Path(st.known_hosts)
    else:
        from vexfs_cockpit.fleet.image import find_image

        img = find_image(cfg.fleet)
        port = info.owner.ssh_port if info is not None and info.owner is not None else None
        if img is None or not port:
            raise InfraError(f"VM {name} has no SSH details (no state file, no port in its metadata)")
        key, known = str(cfg.fleet.ssh_key_path or img.client_key), img.known_hosts
    return SshTarget(name, "127.0.0.1", port, user, client_keys=key, known_hosts=known,
                     reconnect_deadline_s=reconnect_deadline_s, connect_timeout=min(20.0, reconnect_deadline_s))


def cmd_vm_stop(args: argparse.Namespace) -> int:
    cfg = _config(args)
    name = full_name(args.name, cfg.env)
    how = asyncio.run(stop_vm(cfg, name, _uri(args, cfg), force=args.force))
    print(f"{name} {how} and removed")
    return 0


# ----------------------------------------------------------------------------- vm reset
async def reset_vm(cfg: CockpitConfig, name: str, uri: str, say: Any = print) -> None:
    """Destroy + start ``name`` again and wait for its console marker and SSH."""
    from vexfs_cockpit.fleet.console import ConsoleStream
    from vexfs_cockpit.fleet.image import READY_MARKER
    from vexfs_cockpit.fleet.vmctl import GuestVm

    fm = await _fleet(uri, cfg.env)
    try:
        info = await fm.info(name)
        if info is None:
            raise InfraError(f"no VM named {name} at {uri} — start it with `vexfs-cockpit vm start {name}`")
        st = read_state(name)
        log_path = Path(st.console_log) if st else None
        console = ConsoleStream(lambda: fm.conn, name, lambda lines, ts: None, log_path=log_path)
        target = _target_for(cfg, name, info, reconnect_deadline_s=min(60.0, cfg.fleet.template_boot_timeout_s))
        vm = GuestVm(fm, fm.bus, name=name, xml="", ssh_port=target.port, target=target, console=console,
                     ready_marker=READY_MARKER, boot_timeout_s=cfg.fleet.template_boot_timeout_s, keep=True)
        t0 = time.monotonic()
        try:
            await vm.reset("vm reset")
            fm.release(name)  # the new instance stays up
        finally:
            await target.close()
            await console.aclose()
        say(f"{name} reset and ready in {time.monotonic() - t0:.0f}s")
    finally:
        await fm.aclose()


def cmd_vm_reset(args: argparse.Namespace) -> int:
    cfg = _config(args)
    asyncio.run(reset_vm(cfg, full_name(args.name, cfg.env), _uri(args, cfg)))
    return 0


# ----------------------------------------------------------------------------- console, ssh
def cmd_vm_console(args: argparse.Namespace) -> int:
    cfg = _config(args)
    name = full_name(args.name, cfg.env)
    uri = _uri(args, cfg)

    async def exists() -> bool:
        fm = await _fleet(uri, cfg.env)
        try:
            return await fm.state(name) not in ("undefined", "stopped")
        finally:
            await fm.aclose()

    if not asyncio.run(exists()):
        raise InfraError(f"VM {name} is not running at {uri} — see `vexfs-cockpit vm list`")
    virsh = shutil.which("virsh")
    if virsh is None:
        raise InfraError("virsh not found: `apt-get install libvirt-clients`")
    # --force takes the console over from a cockpit that may hold it.
    os.execv(virsh, [virsh, "-c", uri, "console", "--force", name])
    return 0  # not reached


def cmd_ssh(args: argparse.Namespace) -> int:
    cfg = _config(args)
    name = full_name(args.name, cfg.env)
    command = list(args.command or [])
    if command[:1] == ["--"]:
        command = command[1:]
    st = read_state(name)
    if st is None:
        raise InfraError(
            f"no SSH details for {name} (only VMs from `vexfs-cockpit vm start` have them) — "
            f"start one with `vexfs-cockpit vm start {args.name}`"
        )
    if args.user:
        st = DevVmState(**{**asdict(st), "user": args.user})
    ssh = shutil.which("ssh")
    if ssh is not None:
        argv = st.ssh_argv(command)
        os.execv(ssh, argv)
    return asyncio.run(_asyncssh_session(st, command))  # no OpenSSH client: asyncssh, same key checks


async def _asyncssh_session(st: DevVmState, command: list[str]) -> int:
    """Interactive shell (or one command) over asyncssh, the terminal in raw mode."""
    import asyncssh
    import termios
    import tty

    try:
        conn = await asyncssh.connect(
            "127.0.0.1", st.ssh_port, username=st.user, client_keys=[st.client_key],
            known_hosts=st.known_hosts, connect_timeout=20,
        )
    except (OSError, asyncssh.Error) as err:
        raise InfraError(f"cannot SSH to {st.name} on 127.0.0.1:{st.ssh_port} ({err}) — is it up? `vexfs-cockpit vm list`") from None
    interactive = not command and sys.stdin.isatty()
    saved = termios.tcgetattr(sys.stdin.fileno()) if interactive else None
    try:
        if saved is not None:
            tty.setraw(sys.stdin.fileno())
        size = os.get_terminal_size() if interactive else None
        res = await conn.run(
            remote_command(command) if command else None,
            term_type=os.environ.get("TERM", "xterm") if interactive else None,
            term_size=(size.columns, size.lines) if size else None,
            stdin=sys.stdin.buffer if interactive or not sys.stdin.isatty() else asyncssh.DEVNULL,
            stdout=sys.stdout.buffer, stderr=sys.stderr.buffer, encoding=None,
        )
    finally:
        if saved is not None:
            termios.tcsetattr(sys.stdin.fileno(), termios.TCSADRAIN, saved)
        conn.close()
    return int(res.exit_status or 0)
