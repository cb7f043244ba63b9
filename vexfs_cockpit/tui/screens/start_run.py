"""Start-run picker: which domains, which environment, and what each means.

Domains read ``[x]``/``[ ]`` (not only a colour); the highlighted domain's description is
shown whole below the list; the chosen environment's settings (VMs, memory, how many
domains at once, timeouts, retries) are said under its picker.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, OptionList, Select, Static

from vexfs_cockpit.tui.backend import RunChoices, RunRequest
from vexfs_cockpit.tui.widgets.domain_picker import DomainPicker


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
        with Vertical(classes="dialog", id="start-dialog"):
            yield Label("Start a run — space: toggle, ctrl+a: all/none, ctrl+s: start", classes="dialog-title")
            yield DomainPicker(c.domains, c.default_domains or c.domains, id="domains")
            yield Static(id="domain-description")
            with Horizontal(classes="dialog-row"):
                yield Label("env ", classes="dialog-label")
                yield Select(((e, e) for e in c.envs), value=c.default_env, allow_blank=False, id="env")
            yield Static(id="env-summary")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Start (ctrl+s)", variant="success", id="start")
                yield Button("Cancel (esc)", id="cancel")

    def on_mount(self) -> None:
        self.query_one(DomainPicker).focus()
        self._describe_domain(self.choices.domains[0] if self.choices.domains else None)
        self._describe_env(self.choices.default_env)

    # -- what the highlighted domain and the chosen environment are -------------------------
    def on_option_list_option_highlighted(self, event: OptionList.OptionHighlighted) -> None:
        if isinstance(event.option_list, DomainPicker):
            self._describe_domain(event.option.id)

    def on_select_changed(self, event: Select.Changed) -> None:
        if event.select.id == "env":
            self._describe_env(str(event.value))

    def _describe_domain(self, domain: str | None) -> None:
        text = Text()
        if domain is not None:
            text.append(f"{domain}: ", style="bold")
            text.append(self.choices.descriptions.get(domain, "") or "no description")
        self.query_one("#domain-description", Static).update(text)

    def _describe_env(self, env: str) -> None:
        summary = self.choices.env_summaries.get(env, "")
        text = Text.assemble((f"{env}: ", "bold"), summary or ("settings not known here" if self.choices.env_summaries else ""))
        self.query_one("#env-summary", Static).update(text)

    # -- buttons and keys ---------------------------------------------------------------------
    def on_button_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        if event.button.id == "start":
            self.action_start()
        else:
            self.action_cancel()

    def action_toggle_all(self) -> None:
        picker = self.query_one(DomainPicker)
        if len(picker.selected) == len(self.choices.domains):
            picker.deselect_all()
        else:
            picker.select_all()

    def action_start(self) -> None:
        domains = tuple(self.query_one(DomainPicker).selected)
        if not domains:
            self.notify("pick at least one domain (space toggles)", severity="warning")
            return
        env = self.query_one("#env", Select).value
        self.dismiss(RunRequest(env=str(env), domains=domains))

    def action_cancel(self) -> None:
        self.dismiss(None)
