"""Is a kernel fit to be a test guest? Its config (``/boot/config-V`` or a tree's
``.config``) read against what the cockpit relies on, one line per missing option with
why it matters; and the fragment to merge for a fast-booting test kernel
(``scripts/kconfig/merge_config.sh .config fragment``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Need:
    option: str
    modular_ok: bool  # "m" is enough (the initramfs loads it)
    why: str


NEEDS: tuple[Need, ...] = (
    Need("CONFIG_BLK_DEV_INITRD", False, "the guest boots from an initramfs"),
    Need("CONFIG_DEVTMPFS", False, "/dev is a devtmpfs in the guest"),
    Need("CONFIG_SERIAL_8250_CONSOLE", False, "the kernel log streams over the serial console"),
    Need("CONFIG_PRINTK", False, "the kernel log"),
    Need("CONFIG_MODULES", False, "the module under test is loaded with insmod"),
    Need("CONFIG_INET", False, "SSH into the guest"),
    Need("CONFIG_UNIX", False, "dropbear and busybox need Unix sockets"),
    Need("CONFIG_E1000", True, "the guest's NIC (user-mode networking, SSH port forwarded)"),
    Need("CONFIG_BLK_DEV_LOOP", True, "block-backed filesystems mount from a loop device"),
    Need("CONFIG_EXT4_FS", True, "the domains' scratch filesystems"),
    Need("CONFIG_MAGIC_SYSRQ", False, "the hang watchdog dumps blocked tasks (sysrq w/t) and crash tests panic (sysrq c)"),
    Need("CONFIG_DETECT_HUNG_TASK", False, "hung-task reports end a hanging test"),
    Need("CONFIG_SOFTLOCKUP_DETECTOR", False, "soft-lockup reports end a spinning test"),
)


def read_kconfig(path: Path) -> dict[str, str]:
    """``CONFIG_X`` -> its value (``y``, ``m``, a string); unset options are absent."""
    out: dict[str, str] = {}
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            key, _, value = line.partition("=")
            out[key] = value
    return out


def missing(config: dict[str, str]) -> list[tuple[Need, str]]:
    """What is missing: each need with what the config has (``not set`` or ``m``)."""
    out = []
    for need in NEEDS:
        value = config.get(need.option)
        if value == "y" or (value == "m" and need.modular_ok):
            continue
        out.append((need, "not set" if value is None else f"={value}"))
    return out


def config_path(kernel: str) -> Path:
    """Where an installed kernel's config is."""
    return Path("/boot") / f"config-{kernel}"


# What the guest's userland (busybox, dash, glibc tools, dropbear, udhcpc) and the VM
# template (x86_64 'pc', e1000, virtio-rng) need beyond NEEDS: a distro or defconfig
# kernel has all of these, ``make tinyconfig`` none, so the fragment carries them and
# tinyconfig + fragment is a bootable test kernel (the smallest build: see README).
BOOT_BASE: tuple[tuple[str, str], ...] = (
    ("64-bit x86 guest with several vCPUs", "CONFIG_64BIT CONFIG_SMP"),
    # without them the LAPIC timer is calibrated against a TSC that TCG on a loaded host
    # skews: jiffies crawl, the NIC link comes up a minute late and DHCP gives up (seen here)
    ("ACPI's PM timer and the HPET: a clock that holds under TCG on a busy host",
     "CONFIG_ACPI CONFIG_X86_PM_TIMER CONFIG_HPET_TIMER"),
    ("readable kernel logs: timestamps, symbolised traces, BUG()",
     "CONFIG_PRINTK_TIME CONFIG_KALLSYMS CONFIG_BUG CONFIG_STACKTRACE CONFIG_DEBUG_KERNEL"),
    ("glibc and busybox userland: uids, futexes, timers, epoll, shared memory, flock",
     "CONFIG_MULTIUSER CONFIG_POSIX_TIMERS CONFIG_FUTEX CONFIG_EPOLL CONFIG_SIGNALFD CONFIG_TIMERFD"
     " CONFIG_EVENTFD CONFIG_SHMEM CONFIG_AIO CONFIG_FILE_LOCKING CONFIG_ADVISE_SYSCALLS CONFIG_FHANDLE CONFIG_SYSVIPC"),
    ("the gzip initramfs and its ELF binaries and scripts", "CONFIG_RD_GZIP CONFIG_BINFMT_ELF CONFIG_BINFMT_SCRIPT"),
    ("serial console and SSH ptys", "CONFIG_TTY CONFIG_SERIAL_8250 CONFIG_UNIX98_PTYS"),
    ("the filesystems /init mounts and /proc/sys knobs",
     "CONFIG_PROC_FS CONFIG_PROC_SYSCTL CONFIG_SYSCTL CONFIG_SYSFS CONFIG_TMPFS CONFIG_DEBUG_FS"),
    ("the NIC on PCI and udhcpc's raw socket", "CONFIG_PCI CONFIG_NET CONFIG_PACKET CONFIG_NETDEVICES CONFIG_ETHERNET CONFIG_NET_VENDOR_INTEL"),
    ("virtio-rng seeds the guest's entropy (dropbear starts at once)",
     "CONFIG_VIRTIO_MENU CONFIG_VIRTIO_PCI CONFIG_HW_RANDOM CONFIG_HW_RANDOM_VIRTIO"),
    ("loop devices and ext4", "CONFIG_BLOCK CONFIG_BLK_DEV"),
    ("rmmod of the module under test", "CONFIG_MODULE_UNLOAD"),
)


def fragment() -> str:
    """A config fragment for a fast-booting test kernel with everything above built in:
    merged onto ``make tinyconfig`` (or defconfig, or a distro config) it boots a guest."""
    lines = [
        "# vexfs-cockpit test guest: make tinyconfig (or defconfig);",
        "# scripts/kconfig/merge_config.sh -m .config THIS; make olddefconfig",
    ]
    for need in NEEDS:
        lines.append(f"# {need.why}")
        lines.append(f"{need.option}=y")
    for why, options in BOOT_BASE:
        lines.append(f"# {why}")
        lines += [f"{option}=y" for option in options.split()]
    return "\n".join(lines) + "\n"
