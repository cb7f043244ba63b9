"""Dev VMs: the kernel developer's VMs that outlive a command.

``start_dev_vm`` boots a standalone dev VM (``vexfs-<env>-NAME-0``, or NAME
itself when it starts with ``vexfs-``) that stays up after the command returns;
its SSH port, key and known_hosts go into ``<data dir>/vms/<vm>.json`` so `ssh`,
`vm reset` and `vm stop` find it. Its known_hosts (``<vm>.known_hosts``) trusts the
guest's host key on that VM's own port only. Dev VMs are marked ``keep`` in their libvirt
metadata: no cockpit ever reaps them; only `vm stop` removes them.

Imports of libvirt/asyncssh stay inside the functions: the CLI and the TUI import this
module without needing either.
"""

from __future__ import annotations

import asyncio
import json
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
    snapshot: str = ""  # key of the golden snapshot it was restored from ("" booted): `vm reset` restores it again

    def ssh_argv(self, command: list[str]) -> list[str]:
        # -F /dev/null: neither ~/.ssh/config nor /etc/ssh/ssh_config (a `ForwardAgent yes`
        # there would hand the host's agent to a test guest); -a -x: no agent, no X11
        # forwarding; IdentityAgent=none: only the image's key, never the agent's.
        argv = [
            "ssh", "-F", "/dev/null", "-a", "-x", "-i", self.client_key, "-p", str(self.ssh_port),
            "-o", f"UserKnownHostsFile={self.known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "IdentitiesOnly=yes", "-o", "IdentityAgent=none", "-o", "LogLevel=ERROR",
            f"{self.user}@127.0.0.1",
        ]
        return argv + ([remote_command(command)] if command else [])


def remote_command(command: list[str]) -> str:
    """One word is shell text as typed (`ssh vm 'dmesg | tail'`); several are quoted word by word."""
    import shlex

    return command[0] if len(command) == 1 else shlex.join(command)


def state_dir() -> Path:
    from vexfs_cockpit.config.paths import data_dir

    return data_dir() / "vms"


def state_path(name: str) -> Path:
    return state_dir() / f"{name}.json"


def known_hosts_path(name: str) -> Path:
    return state_dir() / f"{name}.known_hosts"


def write_known_hosts(name: str, port: int, host_pubkey: str, host: str = "127.0.0.1") -> Path:
    """``<vm>.known_hosts``: the guest's host key for ``[host]:port`` only (not any port:
    once the VM is gone, whatever listens there next is not trusted with its key)."""
    from vexfs_cockpit.transport.ssh import pinned_known_hosts

    path = known_hosts_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".known_hosts.tmp")
    tmp.write_text(pinned_known_hosts(host, port, [host_pubkey]))
    tmp.replace(path)
    return path


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


async def connect_fleet(uri: str, env: str):  # -> FleetManager (connected, no reaping)
    from vexfs_cockpit.engine.bus import EventBus
    from vexfs_cockpit.fleet.libvirt import FleetManager

    fm = FleetManager(uri, EventBus(), env)
    await fm.connect(reap=False)
    return fm


# ----------------------------------------------------------------------------- vm start
async def start_dev_vm(cfg: CockpitConfig, name: str, uri: str, say: Any = print) -> DevVmState:
    """Boot ``name`` to ready, leave it running, record how to reach it."""
    from vexfs_cockpit.engine.bus import EventBus
    from vexfs_cockpit.config.paths import data_dir
    from vexfs_cockpit.fleet.provider import LibvirtProvider
    from vexfs_cockpit.fleet.snapshot import snapshot_key

    bus = EventBus()
    bus.bind_loop(asyncio.get_running_loop())
    provider = LibvirtProvider(cfg, bus, data_dir() / "runs", run_id="dev", uri=uri, sample_interval_s=3600)
    console_log = state_dir() / f"{name}.console.log"
    try:
        say(f"booting {name} (console log: {console_log}) ...")
        t0 = time.monotonic()
        # Restored from the golden snapshot when fleet.restore allows (~1 s, not ~10 s).
        vm = await provider.boot_vm(name, keep=True, console_log=console_log, restore=True)
        img = provider._prepared.image  # type: ignore[union-attr]
        st = DevVmState(
            name=name, uri=uri, ssh_port=vm.ssh_port, user="root",
            client_key=str(cfg.fleet.ssh_key_path or img.client_key),  # type: ignore[attr-defined]
            known_hosts=str(write_known_hosts(name, vm.ssh_port, img.host_pubkey)),  # type: ignore[attr-defined]
            console_log=str(console_log),
            started_at=time.time(),
            snapshot=snapshot_key(vm.snapshot.inputs) if vm.boot_kind == "restored" and vm.snapshot else "",
        )
        write_state(st)
        await provider.release_vm(name)  # stays up after we exit
        how = "restored" if vm.boot_kind == "restored" else "booted"
        say(f"{name} {how} and ready in {time.monotonic() - t0:.1f}s: SSH on 127.0.0.1:{vm.ssh_port} — "
            f"`vexfs-cockpit ssh {name}`, `vexfs-cockpit vm console {name}`, `vexfs-cockpit vm stop {name}`")
        return st
    finally:
        await provider.aclose()  # stops only what was not released: a failed/interrupted boot


# ----------------------------------------------------------------------------- vm stop
async def stop_vm(cfg: CockpitConfig, name: str, uri: str, *, force: bool = False) -> str:
    fm = await connect_fleet(uri, cfg.env)
    try:
        info = await fm.info(name)
        if info is None:
            state_path(name).unlink(missing_ok=True)
            known_hosts_path(name).unlink(missing_ok=True)
            raise InfraError(f"no VM named {name} at {uri} — see `vexfs-cockpit vm list`")
        how = "destroyed"
        if not force and info.state == "running":
            if await _ssh_poweroff(cfg, name, info):
                how = "powered off" if await fm.wait_stopped(name, cfg.fleet.stop_timeout_s) else "destroyed"
        await fm.stop(name, grace_s=0 if force or how == "powered off" else cfg.fleet.stop_timeout_s)
        state_path(name).unlink(missing_ok=True)
        known_hosts_path(name).unlink(missing_ok=True)
        from vexfs_cockpit.images.initramfs import default_image_root
        from vexfs_cockpit.images.disk import discard_vm_files

        discard_vm_files(default_image_root(cfg.fleet), name)  # a disk VM's overlay and seed
        return how
    finally:
        await fm.aclose()


async def _ssh_poweroff(cfg: CockpitConfig, name: str, info: Any) -> bool:
    """`sync; poweroff -f` inside the guest (busybox ignores ACPI); False if unreachable."""
    try:
        target = dev_target(cfg, name, info, reconnect_deadline_s=3.0)
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


def dev_target(cfg: CockpitConfig, name: str, info: Any, *, reconnect_deadline_s: float = 30.0, user: str = "root"):
    """An SshTarget for ``name`` from its state file, else its metadata port + the image
    (whose host key SshTarget then trusts on that port only)."""
    from vexfs_cockpit.transport.ssh import SshTarget

    st = read_state(name)
    known: Path | str
    if st is not None:
        port, key, known = st.ssh_port, st.client_key, Path(st.known_hosts)
    else:
        from vexfs_cockpit.images.initramfs import find_image

        img = find_image(cfg.fleet)
        port = info.owner.ssh_port if info is not None and info.owner is not None else None
        if img is None or not port:
            raise InfraError(f"VM {name} has no SSH details (no state file, no port in its metadata)")
        key, known = str(cfg.fleet.ssh_key_path or img.client_key), img.host_pubkey
    return SshTarget(name, "127.0.0.1", port, user, client_keys=key, known_hosts=known,
                     reconnect_deadline_s=reconnect_deadline_s, connect_timeout=min(20.0, reconnect_deadline_s))


# ----------------------------------------------------------------------------- vm reset
async def reset_vm(cfg: CockpitConfig, name: str, uri: str, say: Any = print) -> None:
    """Destroy + start ``name`` again (restore the golden snapshot it was restored from,
    when the config still makes that one) and wait for its console marker and SSH."""
    from vexfs_cockpit.fleet.console import ConsoleStream
    from vexfs_cockpit.images.initramfs import READY_MARKER
    from vexfs_cockpit.fleet.vmctl import GuestVm

    fm = await connect_fleet(uri, cfg.env)
    try:
        info = await fm.info(name)
        if info is None:
            raise InfraError(f"no VM named {name} at {uri} — start it with `vexfs-cockpit vm start {name}`")
        st = read_state(name)
        log_path = Path(st.console_log) if st else None
        console = ConsoleStream(lambda: fm.conn, name, lambda lines, ts: None, log_path=log_path,
                                log_max_bytes=cfg.store.console_log_max_mb * 1024 * 1024)
        target = dev_target(cfg, name, info, reconnect_deadline_s=min(60.0, cfg.fleet.template_boot_timeout_s))
        snap, xml = (await _same_snapshot(cfg, uri, fm, name, st.snapshot)) if st and st.snapshot else (None, "")
        vm = GuestVm(fm, fm.bus, name=name, xml=xml, ssh_port=target.port, target=target, console=console,
                     ready_marker=READY_MARKER, boot_timeout_s=cfg.fleet.template_boot_timeout_s, keep=True,
                     snapshot=snap)
        t0 = time.monotonic()
        try:
            await vm.reset("vm reset")
            fm.release(name)  # the new instance stays up
        finally:
            await target.close()
            await console.aclose()
        how = " (restored from its golden snapshot)" if vm.boot_kind == "restored" else ""
        say(f"{name} reset and ready in {time.monotonic() - t0:.1f}s{how}")
    finally:
        await fm.aclose()




async def _same_snapshot(cfg: CockpitConfig, uri: str, fm: Any, name: str, key: str) -> tuple[Any, str]:
    """(the golden snapshot dev VM ``name`` was restored from, its XML to boot cold if the
    restore fails), or (None, "") when the current config's snapshot is another one (the
    VM's shape would change under the developer): then the reset boots the VM's own XML."""
    from vexfs_cockpit.engine.bus import EventBus
    from vexfs_cockpit.config.paths import data_dir
    from vexfs_cockpit.fleet.provider import LibvirtProvider
    from vexfs_cockpit.fleet.snapshot import snapshot_key

    provider = LibvirtProvider(cfg, EventBus(), data_dir() / "runs", run_id="dev", uri=uri, sample_interval_s=3600)
    try:
        snap = await provider.golden_snapshot()
    finally:
        await provider.aclose()
    dom = await fm.lookup(name)
    if snap is None or snapshot_key(snap.inputs) != key or dom is None:
        return None, ""
    xml, _owner = await asyncio.to_thread(fm._inactive_xml, dom)
    return snap, xml
