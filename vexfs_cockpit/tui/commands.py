"""Command-palette entries for every action.

Entries are generated from the active screen's key bindings (so a new binding is in
the palette without anyone remembering to add it) plus one entry per VM action per
known VM that its state allows, which have no single key.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from functools import partial
from typing import TYPE_CHECKING, Any

from textual.command import DiscoveryHit, Hit, Hits, Provider

from vexfs_cockpit.tui.format import vm_display_name
from vexfs_cockpit.tui.vm_actions import offered

if TYPE_CHECKING:
    from vexfs_cockpit.tui.app import CockpitApp

# Textual's own navigation bindings: reachable by key, not worth palette entries.
_SKIP_ACTIONS = frozenset({"command_palette", "focus_next", "focus_previous"})


class CockpitCommands(Provider):
    def _entries(self) -> Iterator[tuple[str, str, Callable[[], Any]]]:
        app: CockpitApp = self.app  # type: ignore[assignment]
        seen: set[str] = set()
        for key, active in self.screen.active_bindings.items():
            binding = active.binding
            if active.node is not self.screen and active.node is not app:
                continue  # a focused widget's cursor keys are not commands
            if not binding.description or binding.action in _SKIP_ACTIONS or binding.action in seen:
                continue
            seen.add(binding.action)
            title = binding.description
            yield title, f"key: {binding.key_display or key}", partial(app.run_action, binding.action, active.node)
        vms = getattr(app, "state").vms
        for vm in sorted(vms):
            shown = vm_display_name(vm)
            for action, label in offered(vms[vm]):  # only what its state allows
                yield f"{label} {shown}", f"{action} {vm}", partial(app.vm_action, action, vm)

    async def discover(self) -> Hits:
        for title, help_text, callback in self._entries():
            yield DiscoveryHit(title, callback, help=help_text)

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for title, help_text, callback in self._entries():
            score = matcher.match(title)
            if score > 0:
                yield Hit(score, matcher.highlight(title), callback, help=help_text)
