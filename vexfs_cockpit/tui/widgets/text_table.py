"""A DataTable whose one-line Text cells are drawn without Rich's generic layout.

DataTable draws every cell through Styled(Padding(cell)) and Console.render_lines: a
measure, three generator layers and a split/crop pass per cell, ~0.2 ms each on this
host, ~40-80 ms for a screenful of the history's runs (8 columns). A one-line Text
that fits its column comes out as pad + the Text's segments + fill + pad, each with
the row's style before and the cursor's after: built here directly, segment for
segment the same (tests/test_tui_internals.py checks it against DataTable's own path).
Anything else (headers, labels, fixed cells, taller rows, cells that would be cropped
or wrapped, non-Text cells) goes through DataTable as before.

_render_cell is a private hook of DataTable: DataTable's internals it needs come from
tui.internals (HOOKS there, checked by tests/test_tui_internals.py).
"""

from __future__ import annotations

from rich.console import Console
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual.widgets import DataTable

from vexfs_cockpit.tui.internals import SegmentLines, cell_cache_key, cell_render_cache, cell_renderable, cell_styles


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
        # DataTable's own cache and key: both paths fill and invalidate it alike.
        key = cell_cache_key(self, row_index, column_index, base_style, cursor, hover)
        cache = cell_render_cache(self)
        cached = cache.get(key)
        if cached is not None:
            return cached
        row = self.rows[key[0]]
        lines: SegmentLines | None = None
        if row.height == 1 and not row.auto_height:
            cell = cell_renderable(self, row_index, column_index)
            component_style, post_style = cell_styles(self, cursor, hover)
            pre_style = base_style + Style.from_meta({"row": row_index, "column": column_index}) + component_style
            lines = _one_line(self.app.console, cell, width, self.cell_padding, pre_style, post_style)
        if lines is None:
            return super()._render_cell(row_index, column_index, base_style, width, cursor, hover)
        cache[key] = lines
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
