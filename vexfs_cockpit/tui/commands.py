"""Command-palette entries for every action.

Entries are generated from the key bindings (so a new binding is in the palette without
anyone remembering to add it): the cockpit's own first (the app's commands, then the
screen's), then one entry per VM action its state allows per known VM (which have no
single key), then Textual's own commands (theme, keys, screenshot). Textual's
navigation bindings (focus next/previous, copy) are reachable by key and left out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider

from vexfs_cockpit.tui.format import vm_display_name
from vexfs_cockpit.tui.vm_actions import offered

if TYPE_CHECKING:
    from vexfs_cockpit.tui.app import CockpitApp

# Textual's own commands we do not repeat: q asks before quitting a run, Textual's Quit would not.
_SKIP_SYSTEM = frozenset({"Quit"})


class CockpitCommands(Provider):
    def _entries(self) -> Iterator[tuple[str, str, Callable[[], Any]]]:
        app: CockpitApp = self.app  # type: ignore[assignment]
        screen = self.screen
        seen: set[str] = set()
        # The cockpit's bindings (the app's, then this screen's): declared by us, not Textual.
        for node, declared in ((app, type(app).BINDINGS), (screen, type(screen).BINDINGS)):
            ours = {b.action for b in declared if isinstance(b, Binding)}
            for key, active in screen.active_bindings.items():
                binding = active.binding
                if active.node is not node or binding.action not in ours or not binding.description:
                    continue
                if binding.action in seen:
                    continue
                seen.add(binding.action)
                yield binding.description, f"key: {app.get_key_display(binding)}", partial(app.run_action, binding.action, node)
        vms = getattr(app, "state").vms
        for vm in sorted(vms):
            shown = vm_display_name(vm)
            for action, label in offered(vms[vm]):  # only what its state allows
                yield f"{label} {shown}", f"{action} {vm}", partial(app.vm_action, action, vm)
        for title, help_text, callback, *_ in app.get_system_commands(screen):
            if title not in _SKIP_SYSTEM:
                yield title, help_text, callback

    async def discover(self) -> Hits:
        for title, help_text, callback in self._entries():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
