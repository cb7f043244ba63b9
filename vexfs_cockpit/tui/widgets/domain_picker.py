"""The start dialog's domain list: ``[x] name`` / ``[ ] name``, readable without colour.

SelectionList draws its check box as ``▐X▌`` whether an item is chosen or not (only the
colour differs), so the state is spelled out in the prompt instead. Space or enter
toggles the highlighted domain; the dialog shows the highlighted one's description.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from rich.text import Text
from textual.binding import Binding
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

CHECKED, UNCHECKED = "[x] ", "[ ] "


class DomainPicker(OptionList):
    BINDINGS = [Binding("space", "toggle", "Toggle", show=False)]

    class Changed(Message):
        """The set of chosen domains changed."""

        def __init__(self, picker: DomainPicker) -> None:
            super().__init__()
            self.picker = picker

    def __init__(self, domains: Sequence[str], chosen: Iterable[str], *, id: str | None = None):
        self.domains = tuple(domains)
        self.chosen: set[str] = set(chosen) & set(self.domains)
        super().__init__(*(Option(self._prompt(d), id=d) for d in self.domains), id=id)

    @property
    def selected(self) -> list[str]:
        """The chosen domains, in list order."""
        return [d for d in self.domains if d in self.chosen]

    def _prompt(self, domain: str) -> Text:
        # Text: "[x]" must not be read as markup.
        mark = CHECKED if domain in self.chosen else UNCHECKED
        return Text.assemble((mark, "bold" if domain in self.chosen else "dim"), domain)

    def _redraw(self) -> None:
        for i, domain in enumerate(self.domains):
            self.replace_option_prompt_at_index(i, self._prompt(domain))
        self.post_message(self.Changed(self))

    def toggle(self, domain: str) -> None:
        self.chosen ^= {domain}
        self._redraw()

    def select_all(self) -> None:
        self.chosen = set(self.domains)
        self._redraw()

    def deselect_all(self) -> None:
        self.chosen = set()
        self._redraw()

    def action_toggle(self) -> None:
        if self.highlighted is not None:
            self.toggle(self.domains[self.highlighted])

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        # enter or a click: toggles, as space does (the dialog starts on ctrl+s)
        event.stop()
        self.toggle(self.domains[event.option_index])
