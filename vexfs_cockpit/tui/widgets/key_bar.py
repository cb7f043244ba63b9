"""The screen's key bindings on one line, drawn like Textual's Footer by one widget."""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget


class KeyBar(Widget, can_focus=False):
    """Footer's look (theme variables, keys clipped before the command-palette key on
    the right, a click presses the key) as one widget that re-renders when the
    bindings change. Footer mounts and restyles a widget per key and rebuilds them all
    on every bindings signal (each focus change, each mount): measured on a 10-run DB
    (bench/history_screen.py) ~50 ms of CPU per history open and ~190 ms per trends
    open, of a 300 ms budget."""

    ALLOW_SELECT = False
    COMPONENT_CLASSES = {"key-bar--key", "key-bar--description", "key-bar--separator"}
    DEFAULT_CSS = """
    KeyBar {
        dock: bottom;
        height: 1;
        color: $footer-foreground;
        background: $footer-background;
    }
    KeyBar > .key-bar--key {
        color: $footer-key-foreground;
        background: $footer-key-background;
        text-style: bold;
    }
    KeyBar > .key-bar--description {
        color: $footer-description-foreground;
        background: $footer-description-background;
    }
    KeyBar > .key-bar--separator {
        color: $foreground 20%;
    }
    """

    def __init__(self) -> None:
        super().__init__()
        self._spans: list[tuple[int, int, str, bool]] = []  # cells [start, end) -> key, enabled
        self._drawn: object = None  # what the last render showed (see _shown)

    def on_mount(self) -> None:
        self.screen.bindings_updated_signal.subscribe(self, self._bindings_changed)

    def on_unmount(self) -> None:
        self.screen.bindings_updated_signal.unsubscribe(self)

    def _bindings_changed(self, _screen: Screen[object]) -> None:
        if self._shown() != self._drawn:  # most signals (a focus move, a mount) change no key
            self.refresh()

    def _shown(self) -> tuple[list[tuple[Binding, bool]], tuple[Binding, bool] | None]:
        """As Footer: one key per action in binding order, and the palette key apart."""
        app = self.app
        by_action: dict[str, tuple[Binding, bool]] = {}
        palette: tuple[Binding, bool] | None = None
        for key, (_, binding, enabled, _tooltip) in self.screen.active_bindings.items():
            if key == app.COMMAND_PALETTE_BINDING and app.ENABLE_COMMAND_PALETTE:
                palette = (binding, enabled)
            elif binding.show:
                by_action.setdefault(binding.action, (binding, enabled))
        return list(by_action.values()), palette

    def render(self) -> Text:
        key_style = self.get_component_rich_style("key-bar--key", partial=True)
        desc_style = self.get_component_rich_style("key-bar--description", partial=True)
        keys, palette = self._drawn = self._shown()
        right = Text()
        if palette is not None:
            binding, enabled = palette
            right.append("▏", self.get_component_rich_style("key-bar--separator"))  # full: blends the 20%
            right.append(self.app.get_key_display(binding), key_style)
            right.append(f" {binding.description}", desc_style)
            right.append(" ")
        left = Text()
        spans: list[tuple[int, int, str, bool]] = []
        for binding, enabled in keys:
            start = left.cell_len
            dim = Style(dim=not enabled)
            display = self.app.get_key_display(binding)
            if binding.description:
                left.append(f" {display} ", key_style + dim)
                left.append(f"{binding.description} ", desc_style + dim)
            else:
                left.append(display, key_style + dim)
            spans.append((start, left.cell_len, binding.key, enabled))
        room = max(0, self.size.width - right.cell_len)
        left.truncate(room, pad=True)
        if palette is not None:
            spans.append((room, room + right.cell_len, palette[0].key, palette[1]))
        self._spans = spans
        return Text.assemble(left, right, no_wrap=True, end="")

    def on_click(self, event: events.Click) -> None:
        for start, end, key, enabled in self._spans:
            if start <= event.x < end:
                if enabled:
                    self.app.simulate_key(key)
                else:
                    self.app.bell()
                return
