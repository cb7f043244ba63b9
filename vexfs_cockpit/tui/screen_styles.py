"""A screen's styles restyled on resume only when the app's CSS changed.

Textual restyles every node of a screen each time it is pushed (ScreenResume with
refresh_styles): 20-50 ms for the history or trends screen on this host, on the path
from key press to data. A node is styled as it mounts and again on each change of its
classes or pseudo-classes, so what that pass can catch is a change of the CSS itself
(a theme switch, a CSS reload), which Textual counts (internals.css_update_count) and
applies to the screens in the stack only. A screen pushed right after it composed, or
kept aside (installed) while the CSS stayed as it was, has current styles.
"""

from __future__ import annotations

from textual import events
from textual.app import App

from vexfs_cockpit.tui.internals import css_update_count


class ResumeStyles:
    def __init__(self) -> None:
        self._css_at: int | None = None  # the app's CSS count when the nodes were last styled

    def styled(self, app: App[object]) -> None:
        """The screen's nodes are styled with the app's current CSS (call in compose:
        they are styled as they mount)."""
        self._css_at = css_update_count(app)

    def resume(self, app: App[object], event: events.ScreenResume) -> None:
        """Call first in the screen's on_screen_resume (it runs before Screen's own
        handler, which reads ``refresh_styles``)."""
        count = css_update_count(app)
        if self._css_at == count:
            event.refresh_styles = False
        self._css_at = count
