"""Start-run picker: which domains, which environment."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Select, SelectionList
from textual.widgets.selection_list import Selection

from vexfs_cockpit.tui.backend import RunChoices, RunRequest


class StartRunScreen(ModalScreen[RunRequest | None]):
    BINDINGS = [
        Binding("escape", "cancel", "Cancel"),
        Binding("ctrl+s", "start", "Start"),
        Binding("ctrl+a", "toggle_all", "All/none"),
    ]

    def __init__(self, choices: RunChoices):
        super().__init__()
        self.choices = choices

    def compose(self) -> ComposeResult:
        c = self.choices
        chosen = set(c.default_domains or c.domains)
        with Vertical(classes="dialog"):
            yield Label("Start a run — space: toggle domain, ctrl+a: all/none, ctrl+s: start", classes="dialog-title")
            yield SelectionList[str](
                *(Selection(_domain_label(d, c.descriptions.get(d, "")), d, d in chosen) for d in c.domains),
                id="domains",
            )
            with Horizontal(classes="dialog-row"):
                yield Label("env ", classes="dialog-label")
                yield Select(((e, e) for e in c.envs), value=c.default_env, allow_blank=False, id="env")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Start (ctrl+s)", variant="success", id="start")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one(SelectionList).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "start":
            self.action_start()
        else:
            self.action_cancel()

    def action_toggle_all(self) -> None:
        sl: SelectionList[str] = self.query_one(SelectionList)
        if len(sl.selected) == len(self.choices.domains):
            sl.deselect_all()
        else:
            sl.select_all()

    def action_start(self) -> None:
        selected = set(self.query_one(SelectionList).selected)
        domains = tuple(d for d in self.choices.domains if d in selected)
        if not domains:
            self.notify("pick at least one domain (space toggles)", severity="warning")
            return
        env = self.query_one("#env", Select).value
        self.dismiss(RunRequest(env=str(env), domains=domains))

    def action_cancel(self) -> None:
        self.dismiss(None)


def _domain_label(name: str, description: str) -> Text:
    # Text, not str: a docstring's "[...]" must not be read as markup.
    return Text.assemble(name, (f" — {description}", "dim") if description else "")
