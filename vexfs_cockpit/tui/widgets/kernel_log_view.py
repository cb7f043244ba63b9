"""The kernel-log lines themselves: a Line API view over the model's records.

It holds no rows of its own: ``rows`` is the model's bounded deque (or its filtered
deque) while following, a frozen copy while paused. A flood only changes the length
and repaints; each frame formats and styles just the rows on screen, reading the
severity from the model then, so a line already on screen takes its colour when its
report is classified later.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from typing import overload

from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.cache import LRUCache
from textual.geometry import Offset, Region, Size
from textual.message import Message
from textual.reactive import var
from textual.scroll_view import ScrollView
from textual.selection import Selection
from textual.strip import Strip

from vexfs_cockpit.klog.model import Severity
from vexfs_cockpit.tui.format import SEVERITY_STYLE
from vexfs_cockpit.tui.logmodel import LINE_NO, VM, LogModel, Marker, Row

_MARKER_STYLE: dict[Severity, str] = {
    Severity.INFO: "bold reverse cyan",
    Severity.WARNING: "bold reverse yellow",
    Severity.ERROR: "bold reverse red",
    Severity.CRITICAL: "bold white on red",
}
# Parsed once: rendering runs per visible row per frame.
_DIM = Style.parse("dim")
_LINE_STYLES = {sev: Style.parse(style) for sev, style in SEVERITY_STYLE.items()}
_MARKER_STYLES = {sev: Style.parse(style) for sev, style in _MARKER_STYLE.items()}
_CONTROL = re.compile("[\u0000-\u0014]").sub  # as Textual's Log: control codes would garble the row


class RowTexts(Sequence[str]):
    """The shown rows as text, formatted on access (for searches, selections, tests)."""

    def __init__(self, model: LogModel, records: Sequence[Row]):
        self._model = model
        self._records = records

    def __len__(self) -> int:
        return len(self._records)

    @overload
    def __getitem__(self, i: int) -> str: ...
    @overload
    def __getitem__(self, i: slice) -> list[str]: ...
    def __getitem__(self, i: int | slice) -> str | list[str]:
        if isinstance(i, slice):
            return [self._model.format(r) for r in list(self._records)[i]]
        return self._model.format(self._records[i])

    def __iter__(self) -> Iterator[str]:
        return map(self._model.format, self._records)


class KernelLogView(ScrollView, can_focus=True):
    ALLOW_SELECT = True
    DEFAULT_CSS = """
    KernelLogView {
        background: $surface;
        color: $text;
        overflow: scroll;
        height: 1fr;
        border: none;
        scrollbar-size-horizontal: 0;
        &:focus {
            background-tint: $foreground 5%;
        }
    }
    """

    auto_scroll: var[bool] = var(True)
    """Following: new rows keep the newest one on screen."""

    class ScrolledBack(Message):
        """The user scrolled towards older lines: the pane pauses so they stay put."""

    class EndRequested(Message):
        """The user asked for the newest line (end key): the pane follows again."""

    def __init__(self, model: LogModel, *, id: str | None = None):
        super().__init__(id=id)
        self.model = model
        self.rows: Sequence[Row] = model.shown
        self._width = 0  # widest row seen: rows are ASCII kernel text, len() is the width
        self._frame: tuple[Style, Offset, int, Selection | None] | None = None
        self._offset_styles: LRUCache[tuple[int, int], Style] = LRUCache(4096)

    @property
    def allow_select(self) -> bool:
        return True

    @property
    def lines(self) -> Sequence[str]:
        return RowTexts(self.model, self.rows)

    # -- fed by the pane ---------------------------------------------------------------
    def show(self, rows: Sequence[Row]) -> None:
        """Show ``rows`` (a live buffer, or a frozen copy while paused): whatever came
        in since, this is one repaint at the next frame."""
        self.rows = rows
        self._width = max(self._width, self.model.max_width)
        self.virtual_size = Size(self._width, len(self.rows))
        self.refresh()
        if self.auto_scroll:
            # Now, not after the next refresh: a flood would queue one callback per batch.
            # A pane that shrinks later (a VM row appeared) scrolls again in on_resize.
            self.scroll_end(animate=False, immediate=True, x_axis=False)

    # -- the Line API -------------------------------------------------------------------
    def render_lines(self, crop: Region) -> list[Strip]:
        # What every row of this frame shares, looked up once (rich_style walks the DOM).
        self._frame = (self.rich_style, self.scroll_offset, self.size.width, self.text_selection)
        try:
            return super().render_lines(crop)
        finally:
            self._frame = None

    def render_line(self, y: int) -> Strip:
        frame = self._frame
        rich_style, (scroll_x, scroll_y), width, selection = frame if frame is not None else (
            self.rich_style, self.scroll_offset, self.size.width, self.text_selection)
        index = scroll_y + y
        if index >= len(self.rows):
            return Strip.blank(width, rich_style)
        if selection is not None or scroll_x:
            strip = self.row_strip(index, rich_style, selection)
            return strip.crop_extend(scroll_x, scroll_x + width, rich_style).apply_offsets(scroll_x, index)
        # The common case, in one Strip: what row_strip + crop_extend + apply_offsets
        # make (each Strip brings seven caches; this runs per visible row per frame).
        line, cut, body = self._row(index, rich_style)
        line = line[:width]
        segments = []
        for start, end, style in ((0, cut, rich_style + _DIM), (cut, len(line), body), (len(line), width, rich_style)):
            if end > start:
                text = line[start:end] if start < len(line) else " " * (end - start)
                segments.append(Segment(text, style + self._offset_style(start, index)))
        return Strip(segments, width)

    def _offset_style(self, x: int, y: int) -> Style:
        # The meta text selection reads (as Strip.apply_offsets adds it), made once per cell.
        style = self._offset_styles.get((x, y))
        if style is None:
            style = self._offset_styles[(x, y)] = Style.from_meta({"offset": (x, y)})
        return style

    def _row(self, index: int, rich_style: Style) -> tuple[str, int, Style]:
        """Row ``index``: its text, where the prefix ends, and the text's style."""
        rec = self.rows[index]
        model = self.model
        prefix, body = model.split(rec)
        row = prefix + body
        line = _CONTROL("�", row.expandtabs()) if "\t" in row or not row.isprintable() else row
        severity = model.record_severity(rec)
        if severity is not None:
            rich_style = rich_style + (_MARKER_STYLES if type(rec) is Marker else _LINE_STYLES)[severity]
        return line, len(prefix), rich_style

    def row_strip(self, index: int, rich_style: Style | None = None, selection: Selection | None = None) -> Strip:
        """Row ``index`` as painted (uncropped), its severity read from the model now."""
        rich_style = self.rich_style if rich_style is None else rich_style
        line, cut, body = self._row(index, rich_style)
        if selection is None:
            segments = [Segment(line[:cut], rich_style + _DIM), Segment(line[cut:], body)]
            return Strip([seg for seg in segments if seg.text], len(line))
        text = Text(line, no_wrap=True)
        text.stylize(rich_style)
        text.stylize(_DIM, 0, cut)
        text.stylize(body, cut)
        if (span := selection.get_span(index)) is not None:
            start, end = span
            text.stylize(self.screen.get_component_rich_style("screen--selection"), start, len(text) if end == -1 else end)
        return Strip(text.render(self.app.console), len(line))

    def get_selection(self, selection: Selection) -> tuple[str, str] | None:
        return selection.extract("\n".join(self.lines)), "\n"

    def selection_updated(self, selection: Selection | None) -> None:
        self.refresh()

    def on_resize(self, event: events.Resize) -> None:
        # Following means the newest line stays visible when the pane is resized (the
        # new size is known here, so no need to wait for a refresh).
        if self.auto_scroll:
            self.scroll_end(animate=False, immediate=True, x_axis=False)

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

    # The public handler: Textual still calls Widget's own _on_mouse_scroll_up after it
    # (each class's handler in the MRO), so overriding that one and calling super()
    # scrolled twice per wheel step.
    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        self.post_message(self.ScrolledBack())

    # -- report markers -----------------------------------------------------------------
    def marker_rows(self) -> list[int]:
        """Row indexes of report markers currently in the view."""
        return [i for i, rec in enumerate(self.rows) if type(rec) is Marker]

    def block_start(self, marker_row: int) -> int:
        """Row of the first line of the report a marker belongs to (or the marker)."""
        rows = self.rows
        mark = rows[marker_row]
        # The block precedes its marker (the classifier reports once the block ends).
        for i in range(marker_row - 1, max(-1, marker_row - 400), -1):
            rec = rows[i]
            if rec[VM] == mark[VM] and type(rec) is not Marker:
                if rec[LINE_NO] == mark[LINE_NO]:
                    return i
                if rec[LINE_NO] < mark[LINE_NO]:
                    break
        return marker_row
