"""A DataTable whose one-line Text cells are drawn without Rich's generic layout.

DataTable draws every cell through Styled(Padding(cell)) and Console.render_lines: a
measure, three generator layers and a split/crop pass per cell, ~0.2 ms each on this
host, ~40-80 ms for a screenful of the history's runs (8 columns). A one-line Text
that fits its column comes out as pad + the Text's segments + fill + pad, each with
the row's style before and the cursor's after: built here directly, segment for
segment the same (checked against DataTable's own path on the bench's tables).
Anything else (headers, labels, fixed cells, taller rows, cells that would be cropped
or wrapped, non-Text cells) goes through DataTable as before.
"""

from __future__ import annotations

from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual._types import SegmentLines
from textual.widgets import DataTable


class TextTable(DataTable[Text]):
    def _render_cell(
        self,
        row_index: int,
        column_index: int,
        base_style: Style,
        width: int,
        cursor: bool = False,
        hover: bool = False,
    ) -> SegmentLines:
        if row_index < self.fixed_rows or column_index < self.fixed_columns or row_index < 0 or column_index < 0:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        row_key = self._row_locations.get_key(row_index)
        column_key = self._column_locations.get_key(column_index)
        # DataTable's own cache and key: both paths fill and invalidate it alike.
        key = (row_key, column_key, base_style, cursor, hover, self._show_hover_cursor, self._update_count,
               self._pseudo_class_state)
        cached = self._cell_render_cache.get(key)
        if cached is not None:
            return cached
        row = self.rows[row_key]
        lines: SegmentLines | None = None
        if row.height == 1 and not row.auto_height:
            cell = self._get_row_renderables(row_index)[1][column_index]
            component_style, post_style = self._get_styles_to_render_cell(
                False, False, False, hover, cursor, self.show_cursor, self._show_hover_cursor,
                self.cursor_foreground_priority == "css", self.cursor_background_priority == "css",
            )
            pre_style = base_style + Style.from_meta({"row": row_index, "column": column_index}) + component_style
            lines = _one_line(self.app.console, cell, width, self.cell_padding, pre_style, post_style)
        if lines is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        self._cell_render_cache[key] = lines
        return lines


def _one_line(console: Console, cell: object, width: int, pad: int, pre: Style, post: Style) -> SegmentLines | None:
    """What render_lines(Styled(Padding(cell, (0, pad)), pre, post)) gives for a Text
    that fits on one line of ``width``, or None for any other cell."""
    inner = width - 2 * pad
    if (not isinstance(cell, Text) or inner < 0 or cell.cell_len > inner or cell.justify not in (None, "default")
            or cell.overflow is not None or cell.no_wrap is not None or "\n" in cell.plain or "\t" in cell.plain):
        return None
    blank = console.get_style("none")
    if cell.spans:
        segments = [s for s in cell.render(console) if s.text]
    elif cell.style:  # Text.render ignores a span-less Text's own style; its wrap() keeps it
        segments = [Segment(cell.plain, console.get_style(cell.style, default=Style.null()))]
    else:
        segments = [Segment(cell.plain)]
    line: list[Segment] = []
    if pad:
        line.append(Segment(" " * pad, blank))
    line.extend(segments)
    if inner > cell.cell_len:
        line.append(Segment(" " * (inner - cell.cell_len), blank))
    if pad:
        line.append(Segment(" " * pad, blank))
    out: list[Segment] = []
    for text, style, control in line:  # as Segment.apply_style(pre, post)
        if pre:
            style = pre + style
        if post:
            style = style + post if style else post
        out.append(Segment(text, style, control))
    return [out]
