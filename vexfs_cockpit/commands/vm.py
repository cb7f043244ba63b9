"""`vm list|start|stop|reset|console NAME` and `ssh NAME`: the dev VM commands.

``vm start NAME`` boots a standalone dev VM (``vexfs-<env>-NAME-0``, or NAME itself when
it starts with ``vexfs-``) that stays up after the command returns; `ssh`, `vm reset` and
`vm stop` find it by its state file (``fleet.devvm``).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vexfs_cockpit.app.vms import check_dev_vm_fits
from vexfs_cockpit.errors import InfraError
from vexfs_cockpit.fleet.devvm import (
    DevVmState,
    connect_fleet,
    full_name,
    read_state,
    remote_command,
    reset_vm,
    start_dev_vm,
    stop_vm,
)

if TYPE_CHECKING:
    from vexfs_cockpit.config.models import CockpitConfig


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
    p.add_argument("--kernel", metavar="V|TREE", help="guest kernel: auto, host, an installed version or a built kernel tree (= --set fleet.guest_kernel=V)")
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
        fm = await connect_fleet(_uri(args, cfg), cfg.env)
        try:
            vms = await fm.list_vms()
        finally:
            await fm.aclose()
        return format_vm_table(vms) if vms else []

    lines = asyncio.run(go())
    print("\n".join(lines) if lines else f"no vexfs-* VMs at {_uri(args, cfg)}")
    return 0


def cmd_vm_start(args: argparse.Namespace) -> int:
    cfg = _config(args)
    name = full_name(args.name, cfg.env)
    check_dev_vm_fits(cfg)
    asyncio.run(start_dev_vm(cfg, name, _uri(args, cfg)))
    return 0


def cmd_vm_stop(args: argparse.Namespace) -> int:
    cfg = _config(args)
    name = full_name(args.name, cfg.env)
    how = asyncio.run(stop_vm(cfg, name, _uri(args, cfg), force=args.force))
    print(f"{name} {how} and removed")
    return 0


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
        fm = await connect_fleet(uri, cfg.env)
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
    import termios
    import tty

    from vexfs_cockpit.transport.asyncssh_import import asyncssh
    from vexfs_cockpit.transport.ssh import connect_guest

    try:
        conn = await connect_guest(  # without ~/.ssh/config and the agent, like every guest connection
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
