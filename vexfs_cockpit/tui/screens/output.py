"""Full output of a failed kernel-dev action (compiler errors, insmod messages)."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Label, Log


class OutputScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q", "dismiss", "Close")]

    def __init__(self, title: str, output: str):
        super().__init__()
        self.title_text = title
        self.output = output

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(self.title_text + "  (esc: close)", classes="dialog-title")
            yield Log(id="output-log")

    def on_mount(self) -> None:
        log = self.query_one(Log)
        log.write_lines(self.output.splitlines())
        log.scroll_home(animate=False)
        log.focus()

    async def action_dismiss(self, result: None = None) -> None:
        self.dismiss(None)
