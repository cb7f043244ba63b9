"""Which VM actions a VM's state allows, and why the others are not offered.

Pure (no Textual): the VM menu, the dashboard's single keys and the command palette all
ask here, so none of them offers to stop a stopped VM or opens an SSH session that can
only end in an exit code.
"""

from __future__ import annotations

from vexfs_cockpit.tui.format import vm_display_name
from vexfs_cockpit.tui.state import VmView

VM_ACTIONS: tuple[tuple[str, str], ...] = (
    ("start", "Start VM"),
    ("stop", "Stop VM"),
    ("reset", "Reset VM"),
    ("console", "Serial console of VM"),
    ("ssh", "SSH shell on VM"),
    ("kload", "Load module on VM"),
    ("kunload", "Unload module on VM"),
)
KEYS = {"start": "u", "stop": "x", "reset": "t", "console": "o", "ssh": "i", "kload": "l", "kunload": "L"}

# Not running: nothing to stop, nothing to talk to; `vm start` boots it (as a dev VM).
STOPPED_STATES = frozenset({"stopped", "defined", "undefined"})

NO_SSH = (
    "only dev VMs from `vm start` (u on a stopped VM) record SSH details; "
    "the serial console (o) works on any running VM"
)


def why_not(action: str, vm: VmView) -> str | None:
    """None when ``vm``'s state allows ``action``; else one line saying why not."""
    name, state = vm_display_name(vm.name), vm.state
    if action == "start":
        if state in STOPPED_STATES:
            return None
        return f"{name} crashed: reset it (t) or stop it (x)" if state == "crashed" else f"{name} is already {state}"
    if state in STOPPED_STATES:
        return f"{name} is {state}: start it first (u)"
    if state == "crashed" and action not in ("stop", "reset"):
        return f"{name} crashed: reset it first (t)"
    if action == "ssh" and not vm.dev_vm:
        return f"no SSH for {name}: {NO_SSH}"
    return None


def offered(vm: VmView) -> list[tuple[str, str]]:
    """The (action, label) pairs ``vm``'s state allows, in menu order."""
    return [(action, label) for action, label in VM_ACTIONS if why_not(action, vm) is None]
