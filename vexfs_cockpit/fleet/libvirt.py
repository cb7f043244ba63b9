"""The fleet manager: the cockpit's only door to libvirt.

It defines, starts, stops, resets and lists VMs, and publishes their lifecycle
(libvirt events, never polling) as ``VmStateChanged`` on the bus. It only ever
touches domains whose name starts with ``vexfs-``.

Ownership and reaping. Every domain it starts carries an ``<owner>`` element in
its libvirt metadata: host, boot id, pid and that pid's start time (so a reused
pid is not mistaken for the owner), run id, SSH port and ``keep`` (dev VMs from
``vm start`` that must outlive the command). On ``connect(reap=True)`` a
``vexfs-*`` domain is reaped (destroyed + undefined) when its owner is a process
on this host that no longer runs. Domains without our metadata, owned by a live
process, by another host, or marked ``keep`` are never touched automatically.

No orphans: names are recorded *before* ``createXML`` is called, so a Ctrl-C in
the middle still finds them; ``aclose()`` destroys what this manager started and
an ``atexit`` hook does the same if the loop died first. A SIGKILLed cockpit
leaves its VMs behind; the next cockpit reaps them (their owner pid is dead).
"""

from __future__ import annotations

import asyncio
import atexit
import logging
import os
import re
import socket
import threading
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import libvirt

from vexfs_cockpit.engine.bus import EventBus
from vexfs_cockpit.engine.events import InfraProblem, VmStateChanged
from vexfs_cockpit.errors import HostUnavailable, InfraError
from vexfs_cockpit.fleet.events_thread import ensure_event_loop

log = logging.getLogger(__name__)

VM_PREFIX = "vexfs-"
OWNER_NS = "https://vexfs-cockpit.dev/xmlns/owner/1"
OWNER_KEY = "vexfscockpit"
_NAME_OK = re.compile(r"^[A-Za-z0-9_.+-]+$")

# libvirt domain state -> the cockpit's vocabulary (events.VmStateChanged.state)
_STATE = {
    libvirt.VIR_DOMAIN_NOSTATE: "unknown",
    libvirt.VIR_DOMAIN_RUNNING: "running",
    libvirt.VIR_DOMAIN_BLOCKED: "running",
    libvirt.VIR_DOMAIN_PAUSED: "paused",
    libvirt.VIR_DOMAIN_SHUTDOWN: "running",  # shutting down, still alive
    libvirt.VIR_DOMAIN_SHUTOFF: "stopped",
    libvirt.VIR_DOMAIN_CRASHED: "crashed",
    libvirt.VIR_DOMAIN_PMSUSPENDED: "paused",
}

# lifecycle event -> (state, detail names)
_EVENT = {
    libvirt.VIR_DOMAIN_EVENT_DEFINED: ("defined", ("added", "updated", "renamed", "from snapshot")),
    libvirt.VIR_DOMAIN_EVENT_UNDEFINED: ("undefined", ("removed", "renamed")),
    libvirt.VIR_DOMAIN_EVENT_STARTED: ("booting", ("booted", "migrated", "restored", "from snapshot", "wakeup")),
    libvirt.VIR_DOMAIN_EVENT_SUSPENDED: ("paused", ("paused", "migrated", "I/O error", "watchdog", "restored", "from snapshot", "API error", "postcopy", "postcopy failed")),
    libvirt.VIR_DOMAIN_EVENT_RESUMED: ("running", ("unpaused", "migrated", "from snapshot", "postcopy")),
    libvirt.VIR_DOMAIN_EVENT_STOPPED: ("stopped", ("shutdown", "destroyed", "crashed", "migrated", "saved", "failed", "from snapshot")),
    libvirt.VIR_DOMAIN_EVENT_SHUTDOWN: ("running", ("shutdown finished", "guest asked to shut down", "host asked to shut down")),
    libvirt.VIR_DOMAIN_EVENT_PMSUSPENDED: ("paused", ("pm suspended to memory", "pm suspended to disk")),
    libvirt.VIR_DOMAIN_EVENT_CRASHED: ("crashed", ("panicked", "crashloaded")),
}


class NameTaken(InfraError):
    """Another VM holds the name (another cockpit on this libvirt chose it at the same
    moment): the caller picks another name; it must never touch that VM."""


def _name_taken(err: libvirt.libvirtError) -> bool:
    return err.get_error_code() == libvirt.VIR_ERR_DOM_EXIST or "already exists" in (err.get_error_message() or "")


def vm_name(env: str, domain: str, index: int) -> str:
    """The namespaced VM name: ``vexfs-<env>-<domain>-<n>``."""
    name = f"{VM_PREFIX}{env}-{domain}-{index}"
    if not _NAME_OK.match(name):
        raise InfraError(f"bad VM name {name!r}: env and domain may only use letters, digits, '_', '.', '-'")
    return name


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _pid_start(pid: int) -> int | None:
    """Start time (clock ticks since boot) of ``pid``, or None if it is not running."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # comm (field 2) may contain spaces and parens: split after the last ')'
    rest = stat[stat.rfind(")") + 2:].split()
    try:
        return int(rest[19])  # field 22 overall
    except (IndexError, ValueError):
        return None


@dataclass(frozen=True, slots=True)
class Owner:
    pid: int
    pid_start: int
    host: str
    boot_id: str
    run_id: str = ""
    keep: bool = False
    ssh_port: int | None = None

    @classmethod
    def current(cls, *, run_id: str = "", keep: bool = False, ssh_port: int | None = None) -> Owner:
        pid = os.getpid()
        return cls(pid, _pid_start(pid) or 0, socket.gethostname(), _boot_id(), run_id, keep, ssh_port)

    def to_xml(self) -> str:
        port = "" if self.ssh_port is None else f' ssh_port="{self.ssh_port}"'
        run = _xml_attr(self.run_id)
        return (
            f'<{OWNER_KEY}:owner xmlns:{OWNER_KEY}="{OWNER_NS}" pid="{self.pid}" '
            f'pid_start="{self.pid_start}" host="{_xml_attr(self.host)}" boot_id="{self.boot_id}" '
            f'run_id="{run}" keep="{int(self.keep)}"{port}/>'
        )

    @classmethod
    def from_xml(cls, text: str) -> Owner | None:
        try:
            el = ET.fromstring(text)
            port = el.get("ssh_port")
            return cls(
                pid=int(el.get("pid", "0")),
                pid_start=int(el.get("pid_start", "0")),
                host=el.get("host", ""),
                boot_id=el.get("boot_id", ""),
                run_id=el.get("run_id", ""),
                keep=el.get("keep") == "1",
                ssh_port=int(port) if port else None,
            )
        except (ET.ParseError, ValueError):
            return None

    def alive(self) -> bool:
        """True unless we can tell the owner is gone (another host counts as alive)."""
        if self.host != socket.gethostname():
            return True
        if self.boot_id and self.boot_id != _boot_id():
            return False
        start = _pid_start(self.pid)
        return start is not None and (self.pid_start == 0 or start == self.pid_start)

    def is_stale(self) -> bool:
        return not self.keep and not self.alive()


def _xml_attr(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


_OWNER_EL = re.compile(r"<[^<>]*" + re.escape(OWNER_NS) + r'"[^<>]*/>\s*')


def inject_owner(xml: str, owner: Owner) -> str:
    """Put ``owner`` into the domain XML's <metadata>, replacing an older one.

    Text surgery rather than ElementTree: a round trip through ElementTree renames
    namespace prefixes (qemu:commandline), which is legal XML but noisy to read.
    """
    xml = _OWNER_EL.sub("", xml)
    el = owner.to_xml()
    if m := re.search(r"<metadata\s*/>", xml):
        return xml[: m.start()] + f"<metadata>{el}</metadata>" + xml[m.end():]
    if m := re.search(r"<metadata\s*>", xml):
        return xml[: m.end()] + el + xml[m.end():]
    m = re.search(r"<domain\b[^>]*>", xml)
    if m is None:
        raise InfraError("domain XML has no <domain> element: the VM template is broken")
    return xml[: m.end()] + f"\n  <metadata>{el}</metadata>" + xml[m.end():]


def domain_name_of(xml: str) -> str:
    try:
        name = ET.fromstring(xml).findtext("name")
    except ET.ParseError as err:
        raise InfraError(f"domain XML does not parse ({err}): the VM template is broken") from None
    if not name:
        raise InfraError("domain XML has no <name>: the VM template is broken")
    return name.strip()


def libvirt_message(err: libvirt.libvirtError) -> str:
    """One line from a libvirtError, with the fix for the failures we know."""
    msg = (err.get_error_message() or str(err)).strip().splitlines()[0]
    if "virtlogd-sock" in msg:
        return f"{msg} — virtlogd is not running: start it with `virtlogd -d`"
    return msg


def _connect_error(uri: str, err: libvirt.libvirtError) -> InfraError:
    msg = libvirt_message(err)
    low = msg.lower()
    if any(s in low for s in ("libvirt-sock", "failed to connect socket", "no such file", "connection refused")):
        return HostUnavailable(
            f"cannot reach libvirt at {uri}: libvirtd is not running or the socket is wrong ({msg}) — "
            "start it with `virtlogd -d; libvirtd -d`, or fix fleet.libvirt_uri / $VEXFS_LIBVIRT_URI"
        )
    return HostUnavailable(f"cannot reach libvirt at {uri}: {msg} — check fleet.libvirt_uri or $VEXFS_LIBVIRT_URI")


@dataclass(frozen=True, slots=True)
class VmInfo:
    name: str
    state: str
    persistent: bool
    owner: Owner | None
    instance: int = -1  # libvirt's domain ID: new on every start (a reset too); -1 when not running

    @property
    def stale(self) -> bool:
        return self.owner is not None and self.owner.is_stale()


@dataclass(slots=True)
class _Started:
    xml: str  # as given, without owner metadata
    keep: bool
    persistent: bool
    ssh_port: int | None
    run_id: str = ""


@dataclass(slots=True)
class _Waiters:
    stopped: dict[str, list[asyncio.Future[str]]] = field(default_factory=dict)


class FleetManager:
    """Owns one libvirt connection. Use ``async with FleetManager(...)`` or connect/aclose."""

    def __init__(
        self, uri: str, bus: EventBus, env: str, *, stop_timeout_s: float = 10.0, run_id: str = "", watch_all: bool = False
    ):
        self.uri = uri
        # A run reports only its own VMs; a cockpit UI watches every vexfs-* VM (dev VMs too).
        self.watch_all = watch_all
        self.bus = bus
        self.env = env
        self.run_id = run_id
        self.stop_timeout_s = stop_timeout_s
        self._conn: libvirt.virConnect | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._cb_id: int | None = None
        self._started: dict[str, _Started] = {}
        self._ever_started: set[str] = set()  # outlives _started: the final "stopped" event comes later
        # The UUIDs of the domains we brought up: after we stop a VM, a VM of the same name
        # another cockpit starts is not ours, and its events are not our bus's.
        self._uuids: set[str] = set()
        self._started_lock = threading.Lock()  # read by the atexit hook, off the loop
        self._waiters = _Waiters()
        self._closed = False
        # Why the connection was lost, once it is: set on the loop by libvirt's close
        # callback, so whoever depends on this host (a test on one of its VMs) learns it
        # at once, not from a timeout (``wait_lost``).
        self.lost_reason = ""
        self._lost = asyncio.Event()

    # -- connection ------------------------------------------------------------------
    @property
    def conn(self) -> libvirt.virConnect:
        if self._conn is None:
            raise InfraError(f"libvirt connection to {self.uri} is not open (FleetManager.connect() not called)")
        return self._conn

    async def connect(self, *, reap: bool = True) -> list[str]:
        """Open the connection, subscribe to lifecycle events, reap stale VMs (returned)."""
        ensure_event_loop()  # before libvirt.open: the connection only gets events if it exists
        self._loop = asyncio.get_running_loop()
        self.bus.bind_loop(self._loop)
        try:
            self._conn = await asyncio.to_thread(libvirt.open, self.uri)
        except libvirt.libvirtError as err:
            raise _connect_error(self.uri, err) from None
        conn = self._conn
        self._cb_id = conn.domainEventRegisterAny(
            None, libvirt.VIR_DOMAIN_EVENT_ID_LIFECYCLE, self._lifecycle_cb, None
        )
        try:  # notice a dead libvirtd (remote drivers only; test:// has none)
            conn.setKeepAlive(5, 3)
            conn.registerCloseCallback(self._close_cb, None)
        except libvirt.libvirtError:
            pass
        atexit.register(self._atexit_cleanup)
        return await self.reap_stale() if reap else []

    def is_alive(self) -> bool:
        """False once the connection was opened and then lost (libvirtd, or the SSH to its
        host, gone); True before it is opened (connect() will say what is wrong)."""
        conn = self._conn
        if conn is None:
            return True
        try:
            return bool(conn.isAlive())
        except libvirt.libvirtError:
            return False

    async def __aenter__(self) -> FleetManager:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        """Destroy every VM this manager started (except released/keep ones), then disconnect."""
        if self._closed:
            return
        self._closed = True
        await self.destroy_started()
        atexit.unregister(self._atexit_cleanup)
        conn, self._conn = self._conn, None
        if conn is not None:
            await asyncio.to_thread(self._close_conn, conn)

    async def destroy_started(self) -> None:
        """Destroy (and undefine) every VM started here and not ``release``d."""
        for name in self.started_names():
            try:
                await self.stop(name, grace_s=0)
            except InfraError as err:
                # A lost connection was said when it went (InfraProblem, and the hosts'
                # "VM ... is left there"): not again on stderr after the run's summary.
                log.log(logging.INFO if self.lost_reason else logging.WARNING, "%s", err)

    def _close_conn(self, conn: libvirt.virConnect) -> None:
        try:
            if self._cb_id is not None:
                conn.domainEventDeregisterAny(self._cb_id)
            try:
                conn.unregisterCloseCallback()
            except libvirt.libvirtError:
                pass
            conn.close()
        except libvirt.libvirtError as err:
            log.debug("closing %s: %s", self.uri, err)

    def _atexit_cleanup(self) -> None:
        """Last resort when the loop is gone (Ctrl-C mid-createXML, crash in a test)."""
        with self._started_lock:
            names = list(self._started)
        conn = self._conn
        if conn is None or not names:
            return
        for name in names:
            try:
                dom = conn.lookupByName(name)
            except libvirt.libvirtError:
                continue
            for op in (dom.destroy, dom.undefine):
                try:
                    op()
                except libvirt.libvirtError:
                    pass

    # -- events (libvirt thread -> loop) ---------------------------------------------
    def _lifecycle_cb(self, _conn: object, dom: libvirt.virDomain, event: int, detail: int, _opaque: object) -> None:
        name = dom.name()
        if not name.startswith(VM_PREFIX) or self._loop is None:
            return
        state, details = _EVENT.get(event, ("unknown", ()))
        reason = details[detail] if 0 <= detail < len(details) else str(detail)
        try:
            self._loop.call_soon_threadsafe(self._on_lifecycle, name, dom.UUIDString(), state, reason)
        except RuntimeError:  # loop closed: nobody is listening any more
            pass

    def _on_lifecycle(self, name: str, uuid: str, state: str, reason: str) -> None:
        # While we hold the name its events are ours (they may come before we know its
        # UUID); after that, only those of a domain we brought up.
        ours = name in self._ever_started and (name in self._started or uuid in self._uuids)
        if self.watch_all or ours:
            self.bus.publish(VmStateChanged(vm=name, state=state, reason=reason))
        if state in ("stopped", "undefined", "crashed"):
            for fut in self._waiters.stopped.pop(name, []):
                if not fut.done():
                    fut.set_result(reason)

    def _close_cb(self, _conn: object, reason: int, _opaque: object) -> None:
        if self._loop is None or self._closed:
            return
        why = {0: "error", 1: "end of file", 2: "keepalive timeout", 3: "client closed"}.get(reason, str(reason))
        msg = f"lost the libvirt connection to {self.uri} ({why}) — is libvirtd still running? `libvirtd -d`"
        try:
            self._loop.call_soon_threadsafe(self._on_lost, f"lost the libvirt connection to {self.uri} ({why})")
            self._loop.call_soon_threadsafe(self.bus.publish, InfraProblem(message=msg, run_id=self.run_id))
        except RuntimeError:
            pass

    def _on_lost(self, reason: str) -> None:
        self.lost_reason = reason
        self._lost.set()

    async def wait_lost(self) -> str:
        """Wait until the libvirt connection is lost; why."""
        await self._lost.wait()
        return self.lost_reason

    # -- queries ---------------------------------------------------------------------
    def started_names(self) -> list[str]:
        with self._started_lock:
            return [n for n, s in self._started.items()]

    def _lookup(self, name: str) -> libvirt.virDomain | None:
        try:
            return self.conn.lookupByName(name)
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return None
            raise InfraError(f"libvirt lookup of VM {name} failed: {libvirt_message(err)}") from None

    async def lookup(self, name: str) -> libvirt.virDomain | None:
        return await asyncio.to_thread(self._lookup, name)

    @staticmethod
    def _owner_of(dom: libvirt.virDomain) -> Owner | None:
        try:
            return Owner.from_xml(dom.metadata(libvirt.VIR_DOMAIN_METADATA_ELEMENT, OWNER_NS))
        except libvirt.libvirtError:
            return None

    @staticmethod
    def _state_of(dom: libvirt.virDomain) -> str:
        try:
            st = dom.state()[0]
        except libvirt.libvirtError as err:
            if err.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
                return "undefined"
            raise
        return _STATE.get(st, "unknown")

    def _list(self) -> list[VmInfo]:
        try:
            doms = self.conn.listAllDomains(0)
        except libvirt.libvirtError as err:
            raise InfraError(f"cannot list VMs at {self.uri}: {libvirt_message(err)}") from None
        out: list[VmInfo] = []
        for dom in doms:
            try:
                name = dom.name()
                if not name.startswith(VM_PREFIX):
                    continue  # never even look at other people's domains
                out.append(VmInfo(name, self._state_of(dom), bool(dom.isPersistent()), self._owner_of(dom), dom.ID()))
            except libvirt.libvirtError:
                continue  # vanished while listing (a transient domain stopped)
        return sorted(out, key=lambda v: v.name)

    async def list_vms(self) -> list[VmInfo]:
        """All ``vexfs-*`` domains on this connection, whoever owns them."""
        return await asyncio.to_thread(self._list)

    async def state(self, name: str) -> str:
        def q() -> str:
            dom = self._lookup(name)
            return "undefined" if dom is None else self._state_of(dom)

        return await asyncio.to_thread(q)

    async def info(self, name: str) -> VmInfo | None:
        return next((v for v in await self.list_vms() if v.name == name), None)

    # -- operations ------------------------------------------------------------------
    @staticmethod
    def _check_ours(name: str) -> None:
        if not name.startswith(VM_PREFIX):
            raise InfraError(f"refusing to touch VM {name!r}: the cockpit only manages VMs named {VM_PREFIX}*")

    async def start(
        self,
        xml: str,
        *,
        keep: bool = False,
        paused: bool = False,
        persistent: bool = False,
        ssh_port: int | None = None,
    ) -> str:
        """Start a VM from domain XML; returns its name.

        Transient (``createXML``) by default, so destroying it leaves nothing
        defined; ``persistent`` uses defineXML + create. ``paused`` starts it with
        its CPUs stopped, so a console can attach before the first byte (``resume``).
        """
        name = domain_name_of(xml)
        self._check_ours(name)
        existing = await asyncio.to_thread(self._lookup, name)
        if existing is not None:
            owner = await asyncio.to_thread(self._owner_of, existing)
            if owner is not None and owner.is_stale():
                await self._reap(name)
            else:
                who = "no cockpit metadata" if owner is None else f"owned by pid {owner.pid} on {owner.host}"
                raise NameTaken(
                    f"VM {name} already exists ({who}) — stop it with `vexfs-cockpit vm stop {name}`"
                )
        full = inject_owner(xml, Owner.current(run_id=self.run_id, keep=keep, ssh_port=ssh_port))
        with self._started_lock:  # before the call: a Ctrl-C inside it still finds the VM
            self._started[name] = _Started(xml, keep, persistent, ssh_port, self.run_id)
            self._ever_started.add(name)
        flags = libvirt.VIR_DOMAIN_START_PAUSED if paused else 0

        def create() -> None:
            try:
                if persistent:
                    self.conn.defineXML(full).createWithFlags(flags)
                else:
                    self.conn.createXML(full, flags)
            except libvirt.libvirtError as err:
                # Drivers without START_PAUSED (the test driver): start, then pause.
                if not (flags and "unsupported flags" in (err.get_error_message() or "")):
                    raise
                dom = self.conn.lookupByName(name) if persistent else self.conn.createXML(full, 0)
                if persistent:
                    dom.create()
                dom.suspend()

        try:
            await self._shielded(name, create)
        except libvirt.libvirtError as err:
            with self._started_lock:
                self._started.pop(name, None)
            if _name_taken(err):  # created by someone else since the lookup: not ours to undefine
                raise NameTaken(f"VM {name} already exists — stop it with `vexfs-cockpit vm stop {name}`") from None
            if persistent:
                await self._undefine_quiet(name)
            raise InfraError(f"cannot start VM {name} at {self.uri}: {libvirt_message(err)}") from None
        return name

    async def restore(
        self,
        save_file: Path,
        name: str,
        *,
        ssh_port: int,
        cold_xml: str,
        keep: bool = False,
        paused: bool = False,
    ) -> str:
        """Start VM ``name`` from a golden snapshot (``fleet.snapshot``) instead of booting it.

        The copy restored is the saved image with its XML retargeted (name, UUID,
        generation ID, SSH port) and our owner metadata. ``cold_xml`` is recorded as
        the VM's XML, so ``reset`` (and ``vm reset``) boots it cold.
        SnapshotUnusable when the image is broken, InfraError for the rest.
        """
        from vexfs_cockpit.fleet.snapshot import SnapshotUnusable, retarget_xml, write_copy

        self._check_ours(name)
        existing = await asyncio.to_thread(self._lookup, name)
        if existing is not None:
            raise NameTaken(f"VM {name} already exists — stop it with `vexfs-cockpit vm stop {name}`")
        owner = Owner.current(run_id=self.run_id, keep=keep, ssh_port=ssh_port)
        with self._started_lock:
            self._started[name] = _Started(cold_xml, keep, False, ssh_port, self.run_id)
            self._ever_started.add(name)
        flags = libvirt.VIR_DOMAIN_SAVE_PAUSED if paused else 0

        def go() -> None:
            copy = write_copy(save_file, lambda xml: inject_owner(retarget_xml(xml, name, ssh_port), owner))
            try:
                self.conn.restoreFlags(str(copy), None, flags)
            finally:
                copy.unlink(missing_ok=True)

        try:
            await self._shielded(name, go)
        except (libvirt.libvirtError, SnapshotUnusable, OSError) as err:
            with self._started_lock:
                self._started.pop(name, None)
            if isinstance(err, SnapshotUnusable):
                raise
            if isinstance(err, libvirt.libvirtError) and _name_taken(err):  # not the snapshot's fault
                raise NameTaken(f"VM {name} already exists — stop it with `vexfs-cockpit vm stop {name}`") from None
            msg = libvirt_message(err) if isinstance(err, libvirt.libvirtError) else str(err)
            if isinstance(err, libvirt.libvirtError) and not any(s in msg for s in ("hostfwd", "host forwarding")):
                raise SnapshotUnusable(f"cannot restore VM {name} from {save_file}: {msg}") from None
            raise InfraError(f"cannot restore VM {name} from {save_file}: {msg}") from None
        return name

    def _bring_up(self, name: str, call: Callable[[], None]) -> None:
        call()
        try:
            self._uuids.add(self.conn.lookupByName(name).UUIDString())
        except libvirt.libvirtError:
            pass  # already gone again: its events came while the name was ours

    async def _shielded(self, name: str, call: Callable[[], None]) -> None:
        """Run ``call``, the blocking libvirt call that brings VM ``name`` up (createXML,
        restore), in a thread. It cannot be interrupted: if we are cancelled meanwhile
        (Ctrl-C mid-boot), let it finish, then destroy what it started (nothing, if it
        failed: the name may be another cockpit's VM), then re-raise. Its own errors
        reach the caller."""
        fut = asyncio.ensure_future(asyncio.to_thread(self._bring_up, name, call))
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            (res,) = await asyncio.gather(fut, return_exceptions=True)
            if not isinstance(res, BaseException):
                await self.stop(name, grace_s=0)
            else:
                with self._started_lock:
                    self._started.pop(name, None)
            raise

    async def save(self, name: str, path: Path) -> None:
        """Save the running VM's memory to ``path`` (virDomainSave); the VM stops."""
        self._check_ours(name)
        dom = await asyncio.to_thread(self._lookup, name)
        if dom is None:
            raise InfraError(f"cannot save VM {name}: it does not exist")
        try:
            await asyncio.to_thread(dom.save, str(path))
        except libvirt.libvirtError as err:
            raise InfraError(f"cannot save VM {name} to {path}: {libvirt_message(err)}") from None
        with self._started_lock:
            self._started.pop(name, None)

    async def resume(self, name: str) -> None:
        def go() -> None:
            dom = self._lookup(name)
            if dom is None:
                raise InfraError(f"VM {name} vanished before it could be resumed (see its console log)")
            dom.resume()

        try:
            await asyncio.to_thread(go)
        except libvirt.libvirtError as err:
            raise InfraError(f"cannot resume VM {name}: {libvirt_message(err)}") from None

    async def stop(self, name: str, *, grace_s: float | None = None, undefine: bool = True) -> None:
        """Ask the guest to shut down, destroy it after ``grace_s`` (default stop_timeout_s).

        Idempotent: a VM that is already gone is fine. A busybox guest with no acpid
        ignores the ACPI request; then the destroy is what stops it.
        """
        self._check_ours(name)
        grace = self.stop_timeout_s if grace_s is None else grace_s
        dom = await asyncio.to_thread(self._lookup, name)
        if dom is not None:
            active = await asyncio.to_thread(self._active, dom)
            if active and grace > 0:
                fut = self._arm_stopped(name)
                try:
                    await asyncio.to_thread(dom.shutdown)
                    async with asyncio.timeout(grace):
                        await fut
                except libvirt.libvirtError:
                    pass  # already stopping / stopped, or no ACPI: destroy below
                except TimeoutError:
                    log.info("%s ignored shutdown for %.0fs: destroying it", name, grace)
                finally:
                    self._disarm(name, fut)
            await asyncio.to_thread(self._destroy_quiet, dom)
            if undefine:
                await self._undefine_quiet(name)
        with self._started_lock:
            self._started.pop(name, None)

    async def destroy(self, name: str) -> None:
        """Hard stop, keep the definition (if persistent) and our record of the VM."""
        self._check_ours(name)
        dom = await asyncio.to_thread(self._lookup, name)
        if dom is not None:
            await asyncio.to_thread(self._destroy_quiet, dom)

    async def reset(self, name: str, *, paused: bool = False) -> None:
        """Hard reset: destroy and start again from the same XML (same port, same name).

        Not ``virDomainReset``: our guests run with ``<on_reboot>destroy</on_reboot>``
        (QEMU -no-reboot) so that a panic stops them visibly, and with -no-reboot a
        QEMU system_reset also powers the guest off. Destroy + create is what works.
        """
        self._check_ours(name)
        with self._started_lock:
            rec = self._started.get(name)
        dom = await asyncio.to_thread(self._lookup, name)
        if rec is None:
            if dom is None:
                raise InfraError(f"cannot reset VM {name}: it does not exist — start it with `vexfs-cockpit vm start {name}`")
            xml, owner = await asyncio.to_thread(self._inactive_xml, dom)
            keep = owner.keep if owner else True
            port = owner.ssh_port if owner else None
            persistent = bool(await asyncio.to_thread(dom.isPersistent))
        else:
            xml, keep, port, persistent = rec.xml, rec.keep, rec.ssh_port, rec.persistent
        if dom is not None:
            await asyncio.to_thread(self._destroy_quiet, dom)
            if persistent:
                await self._undefine_quiet(name)
        with self._started_lock:
            self._started.pop(name, None)
        await self.start(xml, keep=keep, persistent=persistent, ssh_port=port, paused=paused)

    async def undefine(self, name: str) -> None:
        self._check_ours(name)
        await self._undefine_quiet(name)

    def release(self, name: str) -> None:
        """Forget ``name``: it will outlive this manager (``vm start`` dev VMs)."""
        with self._started_lock:
            self._started.pop(name, None)

    async def reap_stale(self) -> list[str]:
        """Destroy + undefine vexfs-* VMs whose owning cockpit process is dead."""
        reaped = []
        for vm in await self.list_vms():
            if vm.stale:
                await self._reap(vm.name)
                reaped.append(vm.name)
        if reaped:
            log.info("reaped stale VMs: %s", ", ".join(reaped))
        return reaped

    async def _reap(self, name: str) -> None:
        dom = await asyncio.to_thread(self._lookup, name)
        if dom is not None:
            await asyncio.to_thread(self._destroy_quiet, dom)
            await self._undefine_quiet(name)

    # -- helpers ---------------------------------------------------------------------
    def _arm_stopped(self, name: str) -> asyncio.Future[str]:
        fut: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._waiters.stopped.setdefault(name, []).append(fut)
        return fut

    def _disarm(self, name: str, fut: asyncio.Future[str]) -> None:
        lst = self._waiters.stopped.get(name)
        if lst and fut in lst:
            lst.remove(fut)
        if not fut.done():
            fut.cancel()

    async def wait_stopped(self, name: str, timeout: float) -> bool:
        """True when the VM stops within ``timeout`` (event-driven)."""
        fut = self._arm_stopped(name)
        try:
            if await self.state(name) in ("stopped", "undefined", "crashed"):
                return True
            async with asyncio.timeout(timeout):
                await fut
            return True
        except TimeoutError:
            return False
        finally:
            self._disarm(name, fut)

    @staticmethod
    def _active(dom: libvirt.virDomain) -> bool:
        try:
            return bool(dom.isActive())
        except libvirt.libvirtError:
            return False

    @staticmethod
    def _destroy_quiet(dom: libvirt.virDomain) -> None:
        try:
            dom.destroy()
        except libvirt.libvirtError as err:
            if err.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
                raise InfraError(f"cannot destroy VM {dom.name()}: {libvirt_message(err)}") from None

    async def _undefine_quiet(self, name: str) -> None:
        def go() -> None:
            dom = self._lookup(name)
            if dom is None:
                return
            try:
                if dom.isPersistent():
                    dom.undefine()
            except libvirt.libvirtError as err:
                if err.get_error_code() not in (libvirt.VIR_ERR_NO_DOMAIN, libvirt.VIR_ERR_OPERATION_INVALID):
                    raise InfraError(f"cannot undefine VM {name}: {libvirt_message(err)}") from None

        await asyncio.to_thread(go)

    def _inactive_xml(self, dom: libvirt.virDomain) -> tuple[str, Owner | None]:
        owner = self._owner_of(dom)
        flags = libvirt.VIR_DOMAIN_XML_INACTIVE | libvirt.VIR_DOMAIN_XML_SECURE
        try:
            xml = dom.XMLDesc(flags)
        except libvirt.libvirtError:
            xml = dom.XMLDesc(0)
        return _OWNER_EL.sub("", xml), owner
