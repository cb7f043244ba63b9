"""Actions on one VM, for keyboard users who do not remember the single keys.

Only what the VM's state allows is offered (a stopped VM: Start; a running one: Stop,
Reset, the console, SSH on a dev VM, the module), and a note says why the rest is not.
"""

from __future__ import annotations

import re

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList, Static
from textual.widgets.option_list import Option

from vexfs_cockpit.tui.format import vm_display_name
from vexfs_cockpit.tui.state import VmView
from vexfs_cockpit.tui.vm_actions import KEYS, VM_ACTIONS, offered, why_not


_SUFFIX = re.compile(r" (?:on |of )?VM$").sub  # "SSH shell on VM" -> "SSH shell"


class VmMenuScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, vm: VmView):
        super().__init__()
        self.vm = vm

    def compose(self) -> ComposeResult:
        vm = self.vm
        options = [
            Option(Text.assemble(label, ("  " + KEYS[action], "dim")), id=action)  # Text: "[u]" would be markup
            for action, label in offered(vm)
        ]
        with Vertical(classes="dialog"):
            yield Label(f"{vm_display_name(vm.name)} ({vm.state})", classes="dialog-title")
            yield Label(f"libvirt name: {vm.name}", id="vm-libvirt-name", classes="dialog-detail")
            yield OptionList(*options, id="vm-actions")
            yield Static(_not_offered(vm), id="vm-not-offered", classes="dialog-detail")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)


def _not_offered(vm: VmView) -> Text:
    """The actions left out, grouped by why (``Start VM`` on a running VM goes unsaid)."""
    by_reason: dict[str, list[str]] = {}
    for action, label in VM_ACTIONS:
        reason = why_not(action, vm)
        if reason is not None and not (action == "start" and reason.endswith(f"already {vm.state}")):
            by_reason.setdefault(reason, []).append(_SUFFIX("", label))
    return Text("\n".join(f"not offered — {', '.join(labels)}: {reason}" for reason, labels in by_reason.items()))
