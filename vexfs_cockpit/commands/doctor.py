"""`vexfs-cockpit doctor`: is this host ready to boot test VMs? One line per check.

Each check says ✓ (fine), ! (works, but degraded: e.g. TCG instead of KVM) or
✗ (a run would fail) with the fix. Exit status is non-zero when any check is ✗.
"""

from __future__ import annotations

import argparse
import shutil
import stat
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from vexfs_cockpit.config.models import FleetSettings
from vexfs_cockpit.errors import CockpitError, InfraError

Level = Literal["ok", "warn", "fail"]
_MARK = {"ok": "✓", "warn": "!", "fail": "✗"}
_START_DAEMONS = "start it with `virtlogd -d; libvirtd -d`"


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    level: Level
    message: str
    fix: str = ""

    def line(self) -> str:
        fix = f" — fix: {self.fix}" if self.fix and self.level != "ok" else ""
        return f"{_MARK[self.level]} {self.name}: {self.message}{fix}"


def _daemon_running(name: str) -> bool:
    for comm in Path("/proc").glob("[0-9]*/comm"):
        try:
            if comm.read_text().strip() == name:
                return True
        except OSError:
            continue
    return False


def _is_local_system(uri: str) -> bool:
    return uri.split("?", 1)[0].rstrip("/") in ("qemu:///system", "qemu+unix:///system")


def check_qemu() -> Check:
    from vexfs_cockpit.fleet.accel import QEMU, qemu_version

    try:
        return Check("qemu", "ok", f"{qemu_version()} ({shutil.which(QEMU)})")
    except InfraError:
        return Check("qemu", "fail", f"{QEMU} not found", "`apt-get install qemu-system-x86`")


def check_libvirt(uri: str) -> Check:
    try:
        import libvirt
    except ImportError:
        return Check("libvirt", "fail", "libvirt-python is not installed", "`pip install libvirt-python` (needs libvirt-dev)")
    # libvirt prints every error to stderr by default; we report it in one line instead.
    libvirt.registerErrorHandler(lambda _ctx, _err: None, None)
    try:
        conn = libvirt.open(uri)
    except libvirt.libvirtError as err:
        detail = (err.get_error_message() or str(err)).splitlines()[0]
        if _is_local_system(uri) and not _daemon_running("libvirtd"):
            return Check("libvirt", "fail", f"cannot reach {uri}: libvirtd is not running", _START_DAEMONS)
        return Check("libvirt", "fail", f"cannot reach {uri}: {detail}",
                     "check the URI (fleet.libvirt_uri / VEXFS_LIBVIRT_URI) and that its daemon runs")
    try:
        major, rest = divmod(conn.getLibVersion(), 1_000_000)
        version = f"{major}.{rest // 1000}.{rest % 1000}"
        return Check("libvirt", "ok", f"reachable at {uri} (libvirt {version})")
    finally:
        conn.close()


def check_virtlogd(uri: str) -> Check | None:
    if not _is_local_system(uri):
        return None
    if _daemon_running("virtlogd"):
        return Check("virtlogd", "ok", "running")
    return Check("virtlogd", "fail", "not running (domains fail to start without it)", "start it with `virtlogd -d`")


def check_accel(fleet: FleetSettings, probe: bool) -> Check:
    from vexfs_cockpit.fleet.accel import cached_accel, from_setting, kvm_device_usable, probe_accel

    forced = from_setting(fleet.accel)
    if forced is not None:
        return Check("accelerator", "ok", f"forced to {'KVM' if forced == 'kvm' else 'TCG'} by fleet.accel={fleet.accel}")
    if not kvm_device_usable():
        return Check("accelerator", "warn", "/dev/kvm missing or not accessible: VMs run under TCG (slower boots)",
                     "load kvm_intel/kvm_amd or grant access to /dev/kvm, if this host supports it")
    try:
        accel = probe_accel(fleet=fleet) if probe else cached_accel(fleet)
    except InfraError as err:
        return Check("accelerator", "warn", f"KVM probe failed ({err}): VMs run under TCG")
    if accel == "kvm":
        return Check("accelerator", "ok", "KVM works (a KVM guest booted)")
    if accel is None:
        return Check("accelerator", "warn", "KVM not probed yet (run doctor without --no-probe)")
    return Check("accelerator", "warn",
                 "/dev/kvm exists but a KVM guest prints nothing: using TCG (boots take ~10-15 s; fleet.accel=kvm forces KVM)")


def _unreachable_by_others(path: Path) -> Path | None:
    """The first existing ancestor of ``path`` that other users cannot traverse."""
    for p in [path, *path.parents]:
        try:
            mode = p.stat().st_mode
        except OSError:
            continue
        if stat.S_ISDIR(mode) and not mode & stat.S_IXOTH:
            return p
    return None


def check_image(fleet: FleetSettings, uri: str) -> list[Check]:
    from vexfs_cockpit.images.initramfs import default_image_root, find_image

    root = default_image_root(fleet)
    checks: list[Check] = []
    try:
        img = find_image(fleet)
    except InfraError as err:
        return [Check("guest image", "fail", f"cannot be built: {err}")]
    if img is None:
        checks.append(Check("guest image", "warn", f"not built yet for the current inputs (cache {root}); runs build it first",
                            "`vexfs-cockpit image build` (seconds)"))
    else:
        checks.append(Check("guest image", "ok", f"{img.dir} (kernel {img.kernel_version})"))
    blocker = _unreachable_by_others(root)
    if blocker is not None and _is_local_system(uri):
        checks.append(Check("image dir", "fail", f"{blocker} is not traversable by libvirt-qemu, so QEMU cannot open the kernel",
                            f"set fleet.image_dir outside it (default as root: /var/lib/vexfs-cockpit/images) or `chmod o+x {blocker}`"))
    return checks


def check_headers(fleet: FleetSettings) -> Check:
    from vexfs_cockpit.images.initramfs import resolve_kernel_version

    try:
        version = resolve_kernel_version(fleet.guest_kernel)
    except InfraError as err:
        return Check("kernel headers", "fail", str(err))
    if fleet.kernel_tree is not None:  # modules build with make -C TREE M=...
        return Check("kernel headers", "ok", f"the kernel tree {fleet.kernel_tree} (guest kernel {version})")
    build = Path("/lib/modules") / version / "build"
    if (build / "Makefile").is_file():
        return Check("kernel headers", "ok", f"{build} (guest kernel {version})")
    return Check("kernel headers", "fail", f"no {build}: modules cannot be built for the guest kernel {version}",
                 f"`apt-get install linux-headers-{version}`")


def check_kernel_config(fleet: FleetSettings) -> list[Check]:
    """The guest kernel's config against what the cockpit relies on (images.kconfig)."""
    from vexfs_cockpit.images.initramfs import resolve_kernel_version
    from vexfs_cockpit.images.kconfig import config_path, missing, read_kconfig

    try:
        version = resolve_kernel_version(fleet.guest_kernel)
    except InfraError:
        return []  # check_headers already says why there is no guest kernel
    path = fleet.kernel_tree / ".config" if fleet.kernel_tree is not None else config_path(version)
    if not path.is_file():
        return [Check("kernel config", "warn", f"no {path}: cannot tell whether {version} has what a test guest needs")]
    gaps = missing(read_kconfig(path))
    if not gaps:
        return [Check("kernel config", "ok", f"{path} has what a test guest needs")]
    return [Check("kernel config", "fail", f"{need.option} {have} in {path}: {need.why}",
                  "rebuild with `vexfs-cockpit kernel config` merged (scripts/kconfig/merge_config.sh)")
            for need, have in gaps]


def check_disk_template(fleet: FleetSettings) -> list[Check]:
    if fleet.template != "disk":
        return []
    checks = []
    for tool, pkg in (("qemu-img", "qemu-utils"), ("genisoimage", "genisoimage")):
        checks.append(Check(tool, "ok", shutil.which(tool) or "") if shutil.which(tool)
                      else Check(tool, "fail", "not found (the disk template needs it)", f"`apt-get install {pkg}`"))
    base = fleet.base_image_path
    if base is None:
        from vexfs_cockpit.images.base import find_base_image

        try:
            built = find_base_image(fleet)
        except InfraError as err:
            checks.append(Check("base image", "fail", f"fleet.base_image_path is unset and none can be built: {err}"))
        else:
            checks.append(
                Check("base image", "ok", f"{built.path} (built; kernel {built.kernel_version})") if built is not None
                else Check("base image", "fail", "fleet.base_image_path is unset and none is built",
                           "`vexfs-cockpit image base` (minutes) or export VEXFS_BASE_IMAGE_PATH=/path/to/image.qcow2"))
    elif not Path(base).is_file():
        checks.append(Check("base image", "fail", f"fleet.base_image_path {base} does not exist",
                            "`vexfs-cockpit image base --out PATH` or export VEXFS_BASE_IMAGE_PATH=/path/to/image.qcow2"))
    else:
        checks.append(Check("base image", "ok", str(base)))
    return checks


def run_doctor(fleet: FleetSettings, *, uri: str | None = None, probe: bool = True) -> list[Check]:
    uri = uri or fleet.libvirt_uri
    checks: list[Check | None] = [
        check_qemu(),
        check_libvirt(uri),
        check_virtlogd(uri),
        check_accel(fleet, probe),
        *check_image(fleet, uri),
        check_headers(fleet),
        *check_kernel_config(fleet),
        *check_disk_template(fleet),
    ]
    return [c for c in checks if c is not None]


def _fleet_from_args(args: argparse.Namespace) -> FleetSettings:
    from vexfs_cockpit.config.load import fleet_from_args

    return fleet_from_args(args)


def add_parser(subparsers: Any) -> None:
    doctor = subparsers.add_parser("doctor", help="check that this host can boot test VMs (one line per check)")
    doctor.add_argument("--config", type=Path, default=None, help="config file (default: configs/default.yaml)")
    doctor.add_argument("--env", default=None, help="config environment overlay (dev, test, ci)")
    doctor.add_argument("--uri", default=None, help="libvirt URI to check (default: fleet.libvirt_uri)")
    doctor.add_argument("--no-probe", action="store_true", help="do not boot a KVM test guest (use the cached answer)")
    doctor.set_defaults(handler=cmd_doctor)


def cmd_doctor(args: argparse.Namespace, out: Callable[[str], None] = print) -> int:
    try:
        fleet = _fleet_from_args(args)
    except CockpitError as err:
        print(f"vexfs-cockpit: {err}", file=sys.stderr)
        return err.exit_code
    checks = run_doctor(fleet, uri=getattr(args, "uri", None), probe=not getattr(args, "no_probe", False))
    for check in checks:
        out(check.line())
    failed = [c for c in checks if c.level == "fail"]
    if failed:
        out(f"{len(failed)} problem(s): fix the ✗ lines above")
        return InfraError.exit_code
    return 0

