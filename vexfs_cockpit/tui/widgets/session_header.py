"""The dashboard's first line: what this cockpit is pointed at.

Profile, environment, the module under test, the guest kernel (from the first boot's
``Linux version`` line; until then, what the config asks for) and where the history is
kept: a newcomer's first questions, answered before anything runs.
"""

from __future__ import annotations

import os

from rich.text import Text
from textual.widgets import Static

from vexfs_cockpit.tui.backend import RunChoices
from vexfs_cockpit.tui.state import LiveState


class SessionHeader(Static):
    def show(self, state: LiveState, info: RunChoices | None) -> None:
        text = header_text(state, info)
        rows = 1 if text.cell_len <= self.size.width else 2  # two rows at 80 columns
        self.update(text, layout=rows != self.size.height)


def header_text(state: LiveState, info: RunChoices | None) -> Text:
    env = state.run.env if state.run is not None and state.run.env else (info.default_env if info else "")
    profile = (state.run.profile if state.run is not None and state.run.profile else "") or (info.profile if info else "")
    parts: list[tuple[str, str]] = []
    if profile:
        parts.append(("profile ", profile))
    if env:
        parts.append(("env ", env))
    if info is not None and info.module:
        parts.append(("module ", info.module))
    if state.kernel is not None:
        parts.append(("kernel ", state.kernel))
    elif info is not None and info.guest_kernel and info.guest_kernel != "auto":
        parts.append(("kernel ", f"{info.guest_kernel} (configured; not booted yet)"))
    else:
        parts.append(("kernel ", "? (known at the first boot)"))
    if info is not None and info.db_path:
        parts.append(("history ", _home(info.db_path)))
    out = Text(" ")
    for i, (label, value) in enumerate(parts):
        if i:
            out.append(" · ", style="dim")
        out.append(label, style="dim")
        out.append(value, style="bold")
    return out


def _home(path: str) -> str:
    home = os.path.expanduser("~")
    return "~" + path[len(home):] if home not in ("", "/") and path.startswith(home + os.sep) else path
