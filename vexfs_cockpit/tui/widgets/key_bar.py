"""The screen's key bindings on one line, drawn like Textual's Footer by one widget.

When they do not fit (80 columns), descriptions shrink to their first word; if that is
not enough, whole keys are left out, never the essential ones: Back, Help and Quit on
every screen, and every app key (start, abort, history, results) on a screen that puts
them first (``KEY_BAR_APP_FIRST``: the dashboard, whose own keys steer the log).
"""

from __future__ import annotations

from rich.style import Style
from rich.text import Text
from textual import events
from textual.binding import Binding
from textual.screen import Screen
from textual.widget import Widget


# Essential on every screen: how to learn the keys and how to leave.
_ALWAYS = frozenset({"help", "quit_cockpit"})


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

    def _shown(self) -> tuple[list[tuple[Binding, bool, bool]], tuple[Binding, bool] | None]:
        """As Footer: one key per action in binding order (with whether it is essential),
        and the palette key apart."""
        app = self.app
        by_action: dict[str, tuple[Binding, bool, bool]] = {}
        palette: tuple[Binding, bool] | None = None
        app_first = getattr(self.screen, "KEY_BAR_APP_FIRST", False)
        for key, (node, binding, enabled, _tooltip) in self.screen.active_bindings.items():
            if key == app.COMMAND_PALETTE_BINDING and app.ENABLE_COMMAND_PALETTE:
                palette = (binding, enabled)
            elif binding.show:
                essential = binding.action in _ALWAYS or binding.description == "Back" or (app_first and node is app)
                by_action.setdefault(binding.action, (binding, enabled, essential))
        keys = list(by_action.values())
        if app_first:
            keys.sort(key=lambda k: not k[2])  # stable: the essential (app) keys first
        return keys, palette

    def render(self) -> Text:
        key_style = self.get_component_rich_style("key-bar--key", partial=True)
        desc_style = self.get_component_rich_style("key-bar--description", partial=True)
        keys, palette = self._drawn = self._shown()
        width = self.size.width

        def palette_text(compact: bool) -> Text:
            right = Text()
            if palette is not None:
                binding, _ = palette
                right.append("▏", self.get_component_rich_style("key-bar--separator"))  # full: blends the 20%
                right.append(self.app.get_key_display(binding), key_style)
                right.append(" " if compact else f" {binding.description} ", desc_style)
            return right

        def item(binding: Binding, enabled: bool, short: bool) -> Text:
            dim = Style(dim=not enabled)
            display = self.app.get_key_display(binding)
            if not binding.description:
                return Text(display, style=key_style + dim)
            desc = shorts.get(binding.action, binding.description) if short else binding.description
            return Text.assemble((f" {display} ", key_style + dim), (f"{desc} ", desc_style + dim))

        shorts = _short_descriptions([b for b, _, _ in keys])
        # 1. as Footer would; 2. first words; 3. first words, leaving out whole keys that
        # would crowd out an essential one; 4. that, with the palette key bare.
        for short, compact, dropping in ((False, False, False), (True, False, False), (True, False, True), (True, True, True)):
            right = palette_text(compact)
            room = max(0, width - right.cell_len)
            items = [(item(b, e, short), b, e, ess) for b, e, ess in keys]
            needed = sum(t.cell_len for t, _, _, ess in items if ess or not dropping)
            if needed <= room or compact:
                break
        left = Text()
        spans: list[tuple[int, int, str, bool]] = []
        reserved = sum(t.cell_len for t, _, _, ess in items if ess)  # essentials still to place
        for text, binding, enabled, essential in items:
            if essential:
                reserved -= text.cell_len
            elif left.cell_len + text.cell_len + reserved > room:
                continue  # whole keys or none: a cut "h Hist" helps nobody
            if left.cell_len + text.cell_len > room:
                continue
            start = left.cell_len
            left.append_text(text)
            spans.append((start, left.cell_len, binding.key, enabled))
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


def _short_descriptions(bindings: list[Binding]) -> dict[str, str]:
    """Action -> its description's first word ("Pause/follow" -> "Pause"), unless two
    keys would then read the same (both Re-runs keep their whole descriptions)."""
    first = {b.action: b.description.replace("/", " ").split()[0] for b in bindings if b.description}
    counts: dict[str, int] = {}
    for word in first.values():
        counts[word] = counts.get(word, 0) + 1
    return {action: word for action, word in first.items() if counts[word] == 1}
