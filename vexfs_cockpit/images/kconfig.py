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


def fragment() -> str:
    """A config fragment for a fast-booting test kernel with everything above built in."""
    lines = ["# vexfs-cockpit test guest: merge with scripts/kconfig/merge_config.sh .config THIS"]
    for need in NEEDS:
        lines.append(f"# {need.why}")
        lines.append(f"{need.option}=y")
    return "\n".join(lines) + "\n"
