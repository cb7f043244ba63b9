"""Actions on one VM, for keyboard users who do not remember the single keys."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, OptionList
from textual.widgets.option_list import Option

from vexfs_cockpit.tui.commands import VM_ACTIONS
from vexfs_cockpit.tui.format import vm_display_name
from vexfs_cockpit.tui.state import ALIVE_STATES

KEYS = {"start": "u", "stop": "x", "reset": "t", "console": "o", "ssh": "i", "kload": "l", "kunload": "L"}


class VmMenuScreen(ModalScreen[str | None]):
    BINDINGS = [Binding("escape", "cancel", "Cancel")]

    def __init__(self, vm: str, state: str):
        super().__init__()
        self.vm = vm
        self.vm_state = state

    def compose(self) -> ComposeResult:
        alive = self.vm_state in ALIVE_STATES
        needs_alive = {"console", "ssh", "kload", "kunload"}
        options = [
            Option(
                Text.assemble(label, ("  " + KEYS[action], "dim")),  # Text: "[u]" would be markup
                id=action,
                disabled=(action == "start" and alive) or (action in needs_alive and not alive),
            )
            for action, label in VM_ACTIONS
        ]
        with Vertical(classes="dialog"):
            yield Label(f"{vm_display_name(self.vm)} ({self.vm_state})", classes="dialog-title")
            yield Label(f"libvirt name: {self.vm}", id="vm-libvirt-name", classes="dialog-detail")
            yield OptionList(*options, id="vm-actions")

    def on_mount(self) -> None:
        self.query_one(OptionList).focus()

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.dismiss(event.option.id)

    def action_cancel(self) -> None:
        self.dismiss(None)
