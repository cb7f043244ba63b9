"""The dashboard's watch line: while `w` watches the module source for a dev VM, what
the last save gave (PASS/FAIL with the failing tests, or where the build broke).

Hidden when no watch runs, so the dashboard keeps its rows for everything else.
"""

from __future__ import annotations

import re

from rich.text import Text
from textual.widgets import Static

from vexfs_cockpit.tui.format import vm_display_name

# `watch` prints "HH:MM:SS save N: RESULT" per save; anything else is its own status
# ("watching ...", a cancelled save, the one line it failed with).
SAVE_LINE = re.compile(r"^(?P<at>\d\d:\d\d:\d\d) save (?P<n>\d+): (?P<result>.*)$")


def style_of(result: str) -> str:
    if result.startswith("PASS"):
        return "green"
    if result.startswith("cancelled"):
        return "dim"
    return "bold red"


class WatchLine(Static):
    DEFAULT_CSS = """
    WatchLine {
        height: 1;
        background: $boost;
        text-overflow: ellipsis;
        display: none;
    }
    """

    def __init__(self, **kw: object) -> None:
        super().__init__(**kw)  # type: ignore[arg-type]
        self.vm = ""
        self.last = ""  # the line shown, as `watch` printed it

    def start(self, vm: str) -> None:
        self.vm, self.last = vm, ""
        self.display = True
        self.update(Text.assemble(("watch ", "bold"), vm_display_name(vm), ": starting (w stops)"))

    def feed(self, line: str) -> None:
        """One line of the watch's output."""
        self.last = line
        m = SAVE_LINE.match(line)
        text = Text.assemble(("watch ", "bold"), vm_display_name(self.vm), ": ")
        if line.startswith("watching "):  # "watching SRC for VM: ..." (the VM is named already)
            text.append(f"watching {line.removeprefix('watching ').split(' for ', 1)[0]}")
            text.append(" — a save rebuilds, reloads and reruns (w stops)", style="dim")
        elif m is None:
            text.append(line, style="bold red")
        else:
            text.append(f"save {m['n']} at {m['at']}: ")
            text.append(m["result"], style=style_of(m["result"]))
        self.update(text)

    def ended(self) -> None:
        """The watch stopped by itself (the VM went away, a bad config): its last line stays."""
        self.vm = ""
        self.update(Text.assemble(("watch ended: ", "bold red"), self.last or "no output", (" (w starts again)", "dim")))

    def stop(self) -> None:
        self.display = False
        self.vm = ""
