"""Pick the accelerator for test VMs: KVM only when a KVM guest really runs here.

/dev/kvm existing proves little: on nested hosts a KVM guest can spin in the host
kernel and never print a byte. So the probe boots the guest kernel under
``-accel kvm`` and demands its first console line within a deadline. The answer
is cached per host boot (boot_id) and QEMU version, so later runs pay nothing.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import time
from pathlib import Path
from typing import Literal

from vexfs_cockpit.config.models import FleetSettings
from vexfs_cockpit.errors import InfraError

Accel = Literal["kvm", "qemu"]  # libvirt domain types; "qemu" is TCG
QEMU = "qemu-system-x86_64"
_MARK = b"Linux version"  # the kernel's first console line (earlyprintk)


def from_setting(setting: str) -> Accel | None:
    """cfg.fleet.accel → forced domain type, or None for "auto"."""
    return {"kvm": "kvm", "tcg": "qemu", "qemu": "qemu"}.get(setting)  # type: ignore[return-value]


def qemu_version(qemu: str = QEMU) -> str:
    try:
        out = subprocess.run([qemu, "--version"], capture_output=True, text=True, check=False, timeout=10).stdout
    except FileNotFoundError as err:
        raise InfraError(f"{qemu} not found: `apt-get install qemu-system-x86`") from err
    return out.splitlines()[0].strip() if out else "unknown"


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def kvm_device_usable(dev: Path = Path("/dev/kvm")) -> bool:
    return dev.exists() and os.access(dev, os.R_OK | os.W_OK)


def kvm_boots(kernel: Path, timeout: float = 5.0, qemu: str = QEMU) -> bool:
    """True if ``kernel`` under -accel kvm prints its first line within ``timeout`` seconds."""
    return guest_prints(kernel, "kvm", timeout, qemu)


def guest_prints(kernel: Path, accel: str, timeout: float, qemu: str = QEMU) -> bool:
    """Boot ``kernel`` (no initrd) under ``accel``; True once it prints "Linux version"."""
    argv = [
        qemu, "-accel", accel, "-machine", "pc", "-m", "256", "-nodefaults", "-display", "none",
        "-monitor", "none", "-serial", "stdio", "-no-reboot", "-kernel", str(kernel),
        "-append", "console=ttyS0 earlyprintk=ttyS0 panic=-1",
    ]
    try:
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.DEVNULL, start_new_session=True)
    except FileNotFoundError as err:
        raise InfraError(f"{qemu} not found: `apt-get install qemu-system-x86`") from err
    assert proc.stdout is not None
    seen = b""
    deadline = time.monotonic() + timeout
    try:
        with selectors.DefaultSelector() as sel:
            sel.register(proc.stdout, selectors.EVENT_READ)
            while (left := deadline - time.monotonic()) > 0:
                if not sel.select(left):
                    break  # deadline: not one line from the guest
                chunk = os.read(proc.stdout.fileno(), 4096)
                if not chunk:
                    break  # qemu exited (e.g. KVM refused)
                seen = (seen + chunk)[-4096:]
                if _MARK in seen:
                    return True
        return False
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout=30)  # a vCPU stuck in KVM_RUN can take seconds to die
        except subprocess.TimeoutExpired:
            pass
        proc.stdout.close()


def _cache_path(fleet: FleetSettings | None) -> Path:
    from vexfs_cockpit.images.initramfs import default_image_root

    return default_image_root(fleet).parent / "accel.json"


def probe_accel(
    timeout: float = 5.0,
    *,
    fleet: FleetSettings | None = None,
    kernel: Path | None = None,
    cache: Path | None = None,
    use_cache: bool = True,
) -> Accel:
    """"kvm" if forced or proven to work, else "qemu" (TCG). Cached per boot_id + QEMU version."""
    forced = from_setting(fleet.accel) if fleet is not None else None
    if forced is not None:
        return forced
    if not kvm_device_usable():
        return "qemu"
    key = f"{_boot_id()}|{qemu_version()}"
    cache = cache or _cache_path(fleet)
    if use_cache:
        try:
            cached = json.loads(cache.read_text())
            if cached.get("key") == key and cached.get("accel") in ("kvm", "qemu"):
                return cached["accel"]  # type: ignore[no-any-return]
        except (OSError, ValueError, AttributeError):
            pass
    if kernel is None:
        from vexfs_cockpit.images.initramfs import guest_vmlinuz

        kernel = guest_vmlinuz(fleet.guest_kernel if fleet else None)
    result: Accel = "kvm" if kvm_boots(kernel, timeout) else "qemu"
    try:
        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(".tmp")
        tmp.write_text(json.dumps({"key": key, "accel": result, "probed_at": time.time()}))
        tmp.replace(cache)
    except OSError:
        pass  # an uncacheable answer is still an answer
    return result


def cached_accel(fleet: FleetSettings | None = None, cache: Path | None = None) -> Accel | None:
    """The cached probe answer for this boot and QEMU, without probing (for `doctor`)."""
    try:
        cached = json.loads((cache or _cache_path(fleet)).read_text())
        if cached.get("key") == f"{_boot_id()}|{qemu_version()}":
            return cached.get("accel")  # type: ignore[no-any-return]
    except (OSError, ValueError, AttributeError, InfraError):
        pass
    return None
