"""Key reference, generated from the bindings of the screen it was opened on."""

from __future__ import annotations

from typing import Any

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.widgets import Label, Static

# What the words on the screens mean, for someone who has not read the README.
CONCEPTS: tuple[tuple[str, str], ...] = (
    ("run", "one go over the chosen domains' tests (s starts one); it gets an id like 20251124-101010-ab12"),
    ("domain", "a group of tests with one VM of its own (kernel_module, filesystem_operations, …)"),
    ("test", "one check inside a domain: PASSED, FAILED, ERROR (infrastructure), TIMEOUT or SKIPPED"),
    ("dev VM", "a VM started with `vm start` (u on a stopped one) that stays up after a run; only these have SSH"),
    ("environment", "dev, test or ci: VM size, how many domains at once, timeouts and retries (shown in the start dialog)"),
    ("history", "every run is stored in a SQLite DB (path on the dashboard's first line); h lists runs, g draws trends"),
)

NOTES = (
    "ctrl+p opens the command palette: every action below, plus per-VM actions.",
    "tab / shift+tab move between tables; arrows move the cursor; enter opens the row.",
    "The kernel log shows <vm> <line>│ text; ▶ rows are classified reports (panic, oops, WARN…).",
    "Errors appear as notifications in the corner; nothing here needs a mouse.",
)


class HelpScreen(ModalScreen[None]):
    BINDINGS = [Binding("escape,q,question_mark", "close", "Close")]

    def __init__(self, on_screen: Screen[Any]):
        super().__init__()
        self.on_screen = on_screen

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog wide"):
            yield Label(f"Keys — {type(self.on_screen).__name__.removesuffix('Screen')}  (esc: close)", classes="dialog-title")
            with VerticalScroll():
                yield Static(self._concepts(), id="help-concepts")
                yield Static(self._table(), id="help-keys")
                yield Static(Text("\n".join(f"• {n}" for n in NOTES), style="dim"), id="help-notes")

    @staticmethod
    def _concepts() -> Table:
        table = Table(box=None, show_header=False, padding=(0, 1), expand=True)
        table.add_column(style="bold", no_wrap=True)
        table.add_column()
        table.add_row(Text("Concepts", style="bold underline"), "")
        for word, meaning in CONCEPTS:
            table.add_row(Text(word), Text(meaning))  # Text: "[" in a meaning is not markup
        table.add_row("", "")
        return table

    def _table(self) -> Table:
        table = Table(box=None, show_header=False, padding=(0, 1), expand=True)
        table.add_column(style="bold cyan", no_wrap=True)
        table.add_column()
        sections: dict[str, list[tuple[str, str]]] = {"This screen": [], "Everywhere": [], "Focused widget": [], "Navigation": []}
        ours = {b.action for b in (*type(self.on_screen).BINDINGS, *type(self.app).BINDINGS) if isinstance(b, Binding)}
        seen: set[str] = set()
        for active in self.on_screen.active_bindings.values():
            b = active.binding
            if not b.description or b.action in seen:
                continue
            seen.add(b.action)
            if b.action not in ours and active.node in (self.on_screen, self.app):
                section = "Navigation"  # Textual's own: focus, copy, palette, quit
            elif active.node is self.on_screen:
                section = "This screen"
            elif active.node is self.app:
                section = "Everywhere"
            else:
                section = "Focused widget"
            sections[section].append((self.app.get_key_display(b), b.description))
        for title, rows in sections.items():
            if not rows:
                continue
            table.add_row(Text(title, style="bold underline"), "")
            for key, desc in rows:
                table.add_row(Text(key), Text(desc))  # Text: "[" in a key is not markup
            table.add_row("", "")
        return table

    def on_mount(self) -> None:
        self.query_one(VerticalScroll).focus()  # arrows / pgdn scroll the list at 80x24

    def action_close(self) -> None:
        self.dismiss(None)
