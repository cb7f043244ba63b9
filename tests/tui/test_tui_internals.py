"""The door to Textual's and plotext's internals (vexfs_cockpit/tui/internals.py) still
fits the installed packages, and nothing else in the TUI goes around it.

Red after an upgrade means: recheck every name in internals.PRIVATE and HOOKS against
the new version, then bump internals.CHECKED_AGAINST and the pins in pyproject.toml.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import inspect
import pkgutil
import re
import tomllib
from pathlib import Path

import pytest
from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import App, ComposeResult
from textual.scroll_view import ScrollView
from textual.widgets import DataTable
from textual_plotext import PlotextPlot
from textual_plotext.plot import Plot

import vexfs_cockpit.tui as tui
from vexfs_cockpit.engine.events import KernelLogLine
from vexfs_cockpit.tui import internals
from vexfs_cockpit.tui.internals import (
    CHECKED_AGAINST,
    HOOKS,
    PRIVATE,
    Private,
    auto_theme_name,
    cell_render_cache,
    plotext_build_matrix,
    plotext_monitor,
    plotext_set_size,
    plotext_theme_name,
    resolve,
)
from vexfs_cockpit.tui.logmodel import LogModel
from vexfs_cockpit.tui.widgets.kernel_log_view import KernelLogView
from vexfs_cockpit.tui.widgets.text_table import TextTable

ROOT = Path(__file__).resolve().parents[2]
TUI = Path(tui.__file__).parent
DOOR = Path(internals.__file__)
THIRD_PARTY = ("textual", "rich", "plotext", "textual_plotext")


# -- versions --------------------------------------------------------------------------


@pytest.mark.parametrize("package", sorted(CHECKED_AGAINST))
def test_installed_versions_are_the_ones_the_door_was_checked_against(package: str) -> None:
    checked = CHECKED_AGAINST[package]
    assert importlib.metadata.version(package) == checked, (
        f"{package} is not the {checked} tui/internals.py was checked against: recheck its names, then bump it"
    )
    assert f"{package} {checked}" in (internals.__doc__ or ""), "the docstring names the versions checked"
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    assert f"{package}=={checked}" in deps, "pyproject.toml pins the version the door was checked against"


# -- every private name, with its kind ---------------------------------------------------


def _built_plot() -> Plot:
    plt = Plot()
    plt.plot([1, 2, 3], [1.0, 3.0, 2.0], marker="braille")
    plotext_set_size(plt, 40, 10)
    plotext_build_matrix(plt)
    return plt


def _instance(owner: str) -> object:
    """An instance of ``owner`` holding the instance attributes the door reads."""
    if owner == "plotext._figure._figure_class":
        return _built_plot()
    if owner == "plotext._monitor.monitor_class":
        return plotext_monitor(_built_plot())
    if owner == "plotext._matrix.matrix_class":
        return plotext_monitor(_built_plot()).matrix
    return resolve(owner)()


@pytest.mark.parametrize("private", PRIVATE, ids=lambda p: f"{p.owner}.{p.name}")
def test_each_private_name_exists_with_its_kind(private: Private) -> None:
    owner = resolve(private.owner)
    if private.kind == "value":
        assert hasattr(owner, private.name), f"{private.owner} has no {private.name}"
    elif private.kind == "method":
        assert callable(getattr(owner, private.name, None)), f"{private.owner}.{private.name} is not a method"
    elif private.kind == "property":
        assert isinstance(inspect.getattr_static(owner, private.name, None), property), (
            f"{private.owner}.{private.name} is not a property"
        )
    else:
        obj = _instance(private.owner)
        assert hasattr(obj, private.name), f"a {private.owner} has no attribute {private.name}"
        assert not inspect.ismethod(getattr(obj, private.name)), f"{private.owner}.{private.name} is a method now"


def _private_uses(path: Path) -> tuple[set[str], set[tuple[str, str]]]:
    """``._name`` attributes read in ``path``, and (module, name) imported from a
    third-party module with a private part."""
    attrs: set[str] = set()
    imports: set[tuple[str, str]] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Attribute) and node.attr.startswith("_") and not node.attr.startswith("__"):
            attrs.add(node.attr)
        elif isinstance(node, ast.ImportFrom) and node.module and _private_module(node.module):
            imports.update((node.module, a.name) for a in node.names)
        elif isinstance(node, ast.Import):
            imports.update((a.name, "") for a in node.names if _private_module(a.name))
    return attrs, imports


def _private_module(module: str) -> bool:
    parts = module.split(".")
    return parts[0] in THIRD_PARTY and any(p.startswith("_") for p in parts[1:])


def test_every_private_name_the_door_uses_is_listed() -> None:
    attrs, imports = _private_uses(DOOR)
    listed = {p.name for p in PRIVATE}
    assert attrs <= listed, f"unlisted in internals.PRIVATE: {sorted(attrs - listed)}"
    values = {(p.owner, p.name) for p in PRIVATE if p.kind == "value"}
    assert imports <= values, f"unlisted in internals.PRIVATE: {sorted(imports - values)}"


def test_overridden_hooks_still_exist_with_the_same_parameters() -> None:
    internals.check_hooks()
    for owner, name, params, where in HOOKS:
        assert (ROOT / where).is_file()
        assert re.search(rf"def {name}\(", (ROOT / where).read_text()), f"{where} no longer overrides {name}"
    override = inspect.signature(TextTable._render_cell).parameters
    assert tuple(override) == HOOKS[0][2]


# -- nothing goes around the door ---------------------------------------------------------


def _tui_files() -> list[Path]:
    return sorted(p for p in TUI.rglob("*.py") if p != DOOR)


def _own_names(files: list[Path]) -> set[str]:
    """Private names the TUI's own code defines: methods, functions, attributes it sets,
    class attributes."""
    names: set[str] = set()
    for path in files:
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                for target in node.targets if isinstance(node, ast.Assign) else [node.target]:
                    for t in ast.walk(target):
                        if isinstance(t, ast.Attribute):
                            names.add(t.attr)
                        elif isinstance(t, ast.Name):
                            names.add(t.id)
    return names


def test_the_tui_reaches_third_party_internals_only_through_the_door() -> None:
    files = _tui_files()
    own = _own_names(files)
    for path in files:
        attrs, imports = _private_uses(path)
        where = path.relative_to(ROOT)
        assert not imports, f"{where} imports {sorted(imports)}: go through tui/internals.py"
        # A private name our code does not define is a third-party one (the hooks'
        # super() calls aside: the override defines the name).
        assert attrs <= own, f"{where} reads {sorted(attrs - own)}: go through tui/internals.py"


def _tui_modules() -> list[str]:
    return [m.name for m in pkgutil.walk_packages(tui.__path__, "vexfs_cockpit.tui.") if m.name != internals.__name__]


def test_no_tui_class_overrides_a_third_party_private_name_by_accident() -> None:
    """A private method or class attribute of ours named as one of its Textual base's
    replaces it (CockpitApp._attach once replaced MessagePump._attach): only HOOKS may."""
    hooks = {(resolve(owner), name) for owner, name, _, _ in HOOKS}
    found = []
    for modname in _tui_modules():
        module = importlib.import_module(modname)
        for cls in vars(module).values():
            if not inspect.isclass(cls) or cls.__module__ != modname:
                continue
            bases = [b for b in cls.__mro__[1:] if b.__module__.split(".")[0] in THIRD_PARTY]
            tree = ast.parse(inspect.getsource(cls)).body[0]
            assert isinstance(tree, ast.ClassDef)
            defined = {n.name for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))}
            defined |= {t.id for n in tree.body if isinstance(n, ast.Assign) for t in n.targets if isinstance(t, ast.Name)}
            defined |= {n.target.id for n in tree.body if isinstance(n, ast.AnnAssign) and isinstance(n.target, ast.Name)}
            for name in sorted(n for n in defined if n.startswith("_") and not n.startswith("__")):
                owners = [b for b in bases if name in vars(b)]
                if owners and not any((b, name) in hooks for b in owners):
                    found.append(f"{modname}.{cls.__qualname__}.{name} (of {owners[0].__qualname__})")
    assert not found, f"private names of a Textual base overridden, not listed in internals.HOOKS: {found}"


# -- what the door's functions stand for -------------------------------------------------


def test_auto_theme_name_is_textual_plotexts() -> None:
    plot = PlotextPlot()
    assert plot.theme == "auto"
    assert plotext_theme_name(plot, "nord") == auto_theme_name("nord")


class _Tables(App[None]):
    def compose(self) -> ComposeResult:
        yield TextTable(id="t")


CELLS = [
    Text("plain"),
    Text("styled", style="bold red"),
    Text.assemble(("a", "green"), " b ", ("c", "italic")),
    Text(""),
    Text("longer than its column", style="blue"),  # cropped: DataTable's own path
    Text("two\nlines"),
    Text("right", justify="right"),
    "a str",
]


async def test_text_table_draws_cells_as_data_table_does() -> None:
    """TextTable's fast path (DataTable's internals through the door) gives DataTable's
    own _render_cell output, segment for segment, under cursor and hover."""
    app = _Tables()
    async with app.run_test(size=(100, 20)) as pilot:
        table = app.query_one(TextTable)
        table.add_column("a", width=10)
        table.add_column("b", width=30)
        for i, cell in enumerate(CELLS):
            table.add_row(cell, Text(f"row {i}", style="dim"), key=str(i))
        await pilot.pause()
        compared = 0
        for row in range(len(CELLS)):
            for col in range(2):
                for cursor, hover in ((False, False), (True, False), (False, True), (True, True)):
                    base = Style(bgcolor="black")
                    cell_render_cache(table).clear()
                    ours = table._render_cell(row, col, base, 10 if col == 0 else 30, cursor, hover)
                    cell_render_cache(table).clear()
                    theirs = DataTable._render_cell(table, row, col, base, 10 if col == 0 else 30, cursor, hover)
                    assert ours == theirs, (row, col, cursor, hover)
                    compared += 1
        assert compared == len(CELLS) * 2 * 4


class _Log(App[None]):
    def __init__(self, view: ScrollView) -> None:
        super().__init__()
        self.view = view
        self.scrolled_back = 0

    def compose(self) -> ComposeResult:
        yield self.view

    def on_kernel_log_view_scrolled_back(self, _: KernelLogView.ScrolledBack) -> None:
        self.scrolled_back += 1


async def _wheel_up(view: ScrollView) -> float:
    """How far one wheel step up scrolls ``view`` from the middle of 500 rows."""
    app = _Log(view)
    async with app.run_test(size=(60, 12)) as pilot:
        if isinstance(view, KernelLogView):
            view.model.add([KernelLogLine(vm="vm", line_no=i, text=f"line {i}") for i in range(500)])
            view.auto_scroll = False
            view.show(view.model.shown)
        else:
            from textual.geometry import Size

            view.virtual_size = Size(60, 500)
        await pilot.pause()
        view.scroll_to(y=250, animate=False, immediate=True)
        await pilot.pause()
        view.post_message(events.MouseScrollUp(view, 1, 1, 0, -1, 0, False, False, False))
        await pilot.pause()
        if isinstance(view, KernelLogView):
            assert app.scrolled_back == 1
        return 250 - view.scroll_y


async def test_the_kernel_log_scrolls_back_as_far_as_any_scroll_view() -> None:
    """The log's wheel handler is the public one: Textual's own scroll runs once (an
    override of the private _on_mouse_scroll_up calling super() ran it twice)."""

    class Plain(ScrollView):
        pass

    ours = await _wheel_up(KernelLogView(LogModel()))
    plain = await _wheel_up(Plain())
    assert ours == plain > 0

