"""The kernel-log lines themselves: Textual's ``Log`` (renders only visible rows) with a
highlighter that colours rows by the severity of the report covering them."""

from __future__ import annotations

from rich.highlighter import Highlighter
from rich.text import Text
from textual import events
from textual.message import Message
from textual.widgets import Log

from vexfs_cockpit.klog.model import Severity
from vexfs_cockpit.tui.format import SEVERITY_STYLE
from vexfs_cockpit.tui.logmodel import LogModel, parse_row

_MARKER_STYLE: dict[Severity, str] = {
    Severity.INFO: "bold reverse cyan",
    Severity.WARNING: "bold reverse yellow",
    Severity.ERROR: "bold reverse red",
    Severity.CRITICAL: "bold white on red",
}


class SeverityHighlighter(Highlighter):
    """Looks the row's (vm, line) up in the model at render time, so a line that is
    already on screen takes its colour when its report is classified later."""

    def __init__(self, model: LogModel):
        self.model = model

    def highlight(self, text: Text) -> None:
        row = text.plain
        parsed = parse_row(row)
        if parsed is None:
            return
        label, line_no, marker, prefix_end = parsed
        text.stylize("dim", 0, prefix_end)
        if marker:
            word = row[prefix_end:].split(" ", 1)[0]
            sev = Severity.__members__.get(word)
            if sev is not None:
                text.stylize(_MARKER_STYLE[sev], prefix_end)
            return
        vm = self.model.vm_of_label(label)
        sev = self.model.severity_of(vm, line_no) if vm is not None else None
        if sev is not None:
            text.stylize(SEVERITY_STYLE[sev], prefix_end)


class KernelLogView(Log):
    DEFAULT_CSS = """
    KernelLogView {
        height: 1fr;
        border: none;
        scrollbar-size-horizontal: 0;
    }
    """

    class ScrolledBack(Message):
        """The user scrolled towards older lines: the pane pauses so they stay put."""

    class EndRequested(Message):
        """The user asked for the newest line (end key): the pane follows again."""

    def __init__(self, model: LogModel, *, id: str | None = None):
        super().__init__(highlight=True, max_lines=model.retain, auto_scroll=True, id=id)
        self.model = model
        self.highlighter = SeverityHighlighter(model)

    def _update_size(self, updates: int, lines: list[str]) -> None:  # type: ignore[override]
        # Log measures new rows' cell widths in a thread per write; under a flood that
        # thread fights the UI for the GIL. Kernel logs are ASCII: len() is the width.
        if lines:
            self._update_maximum_width(updates, max(map(len, lines)))

    def on_resize(self, event: events.Resize) -> None:
        # Following means the newest line stays visible when the pane is resized.
        if self.auto_scroll:
            self.scroll_end(animate=False, x_axis=False)

    # User scrolling (keys and wheel) is told apart from layout shifts this way.
    def action_scroll_up(self) -> None:
        super().action_scroll_up()
        self.post_message(self.ScrolledBack())

    def action_page_up(self) -> None:
        super().action_page_up()
        self.post_message(self.ScrolledBack())

    def action_scroll_home(self) -> None:
        super().action_scroll_home()
        self.post_message(self.ScrolledBack())

    def action_scroll_end(self) -> None:
        super().action_scroll_end()
        self.post_message(self.EndRequested())

    def _on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        super()._on_mouse_scroll_up(event)
        self.post_message(self.ScrolledBack())

    def marker_rows(self) -> list[int]:
        """Row indexes of report markers currently in the view."""
        return [i for i, row in enumerate(self.lines) if (p := parse_row(row)) is not None and p.marker]

    def block_start(self, marker_row: int) -> int:
        """Row of the first line of the report a marker belongs to (or the marker)."""
        parsed = parse_row(self.lines[marker_row])
        if parsed is None:
            return marker_row
        label, line_no = parsed.label, parsed.line_no
        # The block precedes its marker (the classifier reports once the block ends).
        for i in range(marker_row - 1, max(-1, marker_row - 400), -1):
            p = parse_row(self.lines[i])
            if p is not None and p.label == label and not p.marker:
                if p.line_no == line_no:
                    return i
                if p.line_no < line_no:
                    break
        return marker_row
