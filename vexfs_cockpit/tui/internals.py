"""The one door to Textual's, textual-plotext's and plotext's internals.

Checked against textual 8.2.8, rich 15.0.0, plotext 5.3.2 and textual-plotext 1.0.1
(pinned in pyproject.toml; ``CHECKED_AGAINST``). The rest of the TUI imports only their
public API and this module: an upgrade breaks this file, not code all over the TUI, and
tests/test_tui_internals.py goes red until each name below is checked again and the
versions here are bumped.

Each function stands in for a private access that has no public equivalent at the same
speed: the hot paths these serve are measured by bench/history_screen.py (the cockpit's
history and trends screens) and bench/log_pane_flood.py.

Overrides of private hooks cannot live here; they are named in ``HOOKS`` and checked by
``check_hooks()``:
- ``DataTable._render_cell``, in widgets/text_table.py (TextTable): one-line Text cells
  drawn without Rich's generic layout, filed in DataTable's own cell cache under its
  own key (``cell_cache_key``).

Internals with public names on plotext's private classes (the figure's ``monitor``, its
``matrix``) are listed in ``PRIVATE`` too: trend_chart reads the built figure's cells
from them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from textual._types import SegmentLines as SegmentLines  # DataTable._render_cell's return type

if TYPE_CHECKING:
    from rich.console import RenderableType
    from rich.style import Style
    from textual.app import App
    from textual.cache import LRUCache
    from textual.geometry import Size
    from textual.screen import Screen
    from textual.strip import Strip
    from textual.widget import AwaitMount
    from textual.widgets import DataTable
    from textual_plotext import PlotextPlot

CHECKED_AGAINST = {"textual": "8.2.8", "rich": "15.0.0", "plotext": "5.3.2", "textual-plotext": "1.0.1"}


# -- Textual: app and screens ------------------------------------------------------------


def css_update_count(app: App[Any]) -> int:
    """How many times the app's CSS changed (a theme switch, a reload): Textual restyles
    a screen on resume when its count differs."""
    return app._css_update_count


def mount_screen(app: App[Any], screen: Screen[Any]) -> AwaitMount:
    """Mount ``screen``'s widgets off the screen stack (push_screen does it on the push,
    and install_screen not at all): awaited, the screen is built, ready to push."""
    return app._get_screen(screen)[1]


def lay_out(screen: Screen[Any], size: Size | None = None) -> None:
    """Lay ``screen`` out now, at ``size`` (default: its own), even off the stack."""
    screen._refresh_layout(size)


def clear_layout_caches(screen: Screen[Any]) -> None:
    """Drop what a screen off the stack keeps of widgets removed from it (arrangements,
    query_one results, child lists): it is not laid out again until shown, and those
    caches hold the widgets alive until then. Then lays it out."""
    screen._arrangement_cache.clear()
    screen._query_one_cache.clear()
    nodes = screen._nodes
    _ = nodes.displayed, nodes.displayed_and_visible  # recomputed, without the removed
    screen._refresh_layout()


def screen_strips(screen: Screen[Any]) -> list[Strip]:
    """The screen as its compositor last drew it, line by line (for tests)."""
    return screen._compositor.render_strips()


# -- Textual: DataTable ------------------------------------------------------------------


def cell_cache_key(
    table: DataTable[Any], row_index: int, column_index: int, base_style: Style, cursor: bool, hover: bool
) -> tuple[Any, ...]:
    """The key DataTable._render_cell files a body cell's lines under; [0] is the row key."""
    return (
        table._row_locations.get_key(row_index),
        table._column_locations.get_key(column_index),
        base_style,
        cursor,
        hover,
        table._show_hover_cursor,
        table._update_count,
        table._pseudo_class_state,
    )


def cell_render_cache(table: DataTable[Any]) -> LRUCache[tuple[Any, ...], SegmentLines]:
    """DataTable's own cache of rendered cells (an LRUCache by ``cell_cache_key``)."""
    return table._cell_render_cache


def cell_renderable(table: DataTable[Any], row_index: int, column_index: int) -> RenderableType:
    """A body cell as DataTable renders it (its value through the cell formatter)."""
    return table._get_row_renderables(row_index)[1][column_index]


def cell_styles(table: DataTable[Any], cursor: bool, hover: bool) -> tuple[Style, Style]:
    """A body cell's component style and post style, as DataTable._render_cell takes them."""
    return table._get_styles_to_render_cell(
        False, False, False, hover, cursor, table.show_cursor, table._show_hover_cursor,
        table.cursor_foreground_priority == "css", table.cursor_background_priority == "css",
    )


def table_settling(table: DataTable[Any]) -> bool:
    """The table still has to re-measure its columns (done when its queue goes idle)."""
    return bool(table._require_update_dimensions or table._updated_cells)


# -- textual-plotext and plotext ---------------------------------------------------------
# Imported on use: the dashboard imports this module, plotext is loaded in a thread later.


def plotext_theme_name(plot: PlotextPlot, app_theme: str) -> str:
    """The plotext theme ``plot`` draws in under the app theme ``app_theme``."""
    return plot._get_plotext_theme_name(app_theme)


def auto_theme_name(app_theme: str) -> str:
    """textual-plotext's name for a theme "auto" plot's theme under ``app_theme``
    (its _get_plotext_theme_name, without a widget)."""
    return f"textual-auto-{app_theme}"


def plotext_themes() -> dict[str, Any]:
    """plotext's theme table (textual-plotext registers the "auto" themes in it)."""
    from plotext._dict import themes

    return themes


def plotext_braille_codes() -> dict[tuple[int, ...], str]:
    """plotext's braille characters by their 8 dots' bits."""
    from plotext._dict import braille_codes

    return braille_codes


def plotext_set_size(plt: Any, width: int, height: int) -> None:
    """Size the figure as PlotextPlot.render does (plotsize alone does not)."""
    plt._set_size(width, height)


def plotext_build_matrix(plt: Any) -> None:
    """Plot.build() without its last step, the cells written out as an ANSI string."""
    plt._set_sizes()
    plt._build_matrix()


def plotext_monitor(plt: Any) -> Any:
    """The figure's monitor: its signals' colours, styles and markers, and (built) its
    ``matrix`` of cells."""
    return plt.monitor


def plotext_lim(data: list[int] | list[float]) -> list[float]:
    """The axis limits plotext takes from ``data``."""
    from plotext._utility import get_lim

    return get_lim(data)


def plotext_matrix_data(data: list[int] | list[float], lim: list[float], bins: int) -> list[int]:
    """``data`` as plotext places it on a canvas of ``bins`` cells between ``lim``."""
    from plotext._utility import get_matrix_data

    return get_matrix_data(data, lim, bins)


def plotext_colors_to_ansi(fg: object, style: object, bg: object) -> str:
    """The ANSI prefix plotext writes for a cell of these colours."""
    from plotext._utility import colors_to_ansi

    return colors_to_ansi(fg, style, bg)


# -- what this module relies on ----------------------------------------------------------


Kind = Literal["method", "attribute", "property", "value"]


@dataclass(frozen=True, slots=True)
class Private:
    """A name used here (or overridden, or read through what this module hands out):
    ``owner`` is a module or class by dotted path; ``kind``: method (a callable on the
    class), attribute (on an instance), property (on the class), value (of the module)."""

    owner: str
    name: str
    kind: Kind


def _names(owner: str, kind: Kind, *names: str) -> list[Private]:
    return [Private(owner, n, kind) for n in names]


PRIVATE: tuple[Private, ...] = (
    *_names("textual._types", "value", "SegmentLines"),
    *_names("textual.app.App", "attribute", "_css_update_count"),
    *_names("textual.app.App", "method", "_get_screen"),
    *_names("textual.screen.Screen", "method", "_refresh_layout"),
    *_names("textual.screen.Screen", "attribute", "_compositor", "_arrangement_cache", "_query_one_cache", "_nodes"),
    *_names("textual._node_list.NodeList", "property", "displayed", "displayed_and_visible"),
    *_names("textual._compositor.Compositor", "method", "render_strips"),
    *_names("textual.widgets.DataTable", "method", "_render_cell", "_get_row_renderables", "_get_styles_to_render_cell"),
    *_names("textual.widgets.DataTable", "attribute", "_row_locations", "_column_locations", "_show_hover_cursor",
            "_update_count", "_pseudo_class_state", "_cell_render_cache", "_require_update_dimensions",
            "_updated_cells"),
    *_names("textual._two_way_dict.TwoWayDict", "method", "get_key"),
    *_names("textual_plotext.PlotextPlot", "method", "_get_plotext_theme_name"),
    *_names("plotext._dict", "value", "themes", "braille_codes"),
    *_names("plotext._utility", "value", "get_lim", "get_matrix_data", "colors_to_ansi"),
    *_names("plotext._figure._figure_class", "method", "_set_size", "_set_sizes", "_build_matrix"),
    *_names("plotext._figure._figure_class", "attribute", "monitor"),
    *_names("plotext._monitor.monitor_class", "attribute", "matrix", "color", "style", "marker"),
    *_names("plotext._matrix.matrix_class", "attribute", "Rows", "cols", "marker", "fullground", "style",
            "background", "Cols_canvas", "Rows_canvas"),
    *_names("plotext._matrix.matrix_class", "method", "insert_element"),
)

# Private hooks overridden outside this module: (class, hook, its parameters, where).
HOOKS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("textual.widgets.DataTable", "_render_cell",
     ("self", "row_index", "column_index", "base_style", "width", "cursor", "hover"),
     "vexfs_cockpit/tui/widgets/text_table.py"),
)


def resolve(dotted: str) -> Any:
    """The module or class at ``dotted`` (a module path, then attributes)."""
    import importlib

    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:i]))
        except ModuleNotFoundError:
            continue
        for attr in parts[i:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def check_hooks() -> None:
    """Each overridden hook is still a method of its class, with the parameters the
    override takes: else the override is silently never called, or called wrongly."""
    import inspect

    for owner, name, params, where in HOOKS:
        hook = getattr(resolve(owner), name, None)
        assert callable(hook), f"{owner}.{name} is gone: {where} overrides it"
        got = tuple(inspect.signature(hook).parameters)
        assert got == params, f"{owner}.{name} now takes {got}, {where} takes {params}"
