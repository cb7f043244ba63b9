"""Strings a guest hands the host, checked before the host uses them.

A guest runs the code under test as root: its answers may be garbage (a broken
kernel) or hostile. Whatever the host puts into a path, a file name or a command
from a guest's answer is checked here first, where it is read; the users of such
a value (``builds.kbuild``) check their derived paths again.
"""

from __future__ import annotations

import re

from vexfs_cockpit.errors import InfraError

# A kernel release as `uname -r` prints it (6.1.0-57-amd64, 6.12.9+bpo-cloud-amd64,
# 5.10.0~rc1): one path component, nothing a shell or a path would read differently.
KERNEL_RELEASE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+~-]{0,127}")
_SHOWN = 80  # characters of a bad answer quoted in the error


def shown(value: str) -> str:
    """``value`` quoted for a one-line message: escapes visible, long answers cut."""
    cut = value if len(value) <= _SHOWN else value[:_SHOWN] + "…"
    return repr(cut)


def is_kernel_release(value: str) -> bool:
    return bool(KERNEL_RELEASE.fullmatch(value)) and ".." not in value


def kernel_release(answer: str, vm: str) -> str:
    """The kernel release in a guest's `uname -r` output, or a one-line InfraError
    naming the VM and the bad answer (nothing is built or removed for it)."""
    value = answer.strip()
    if not is_kernel_release(value):
        raise InfraError(
            f"VM {vm}: `uname -r` answered {shown(value)}, not a kernel release "
            "(letters, digits and . _ + ~ -, no '..' or '/'): the guest kernel is broken or hostile; "
            "nothing was built or removed for it"
        )
    return value
