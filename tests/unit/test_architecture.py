"""The layout holds: no import cycle anywhere (the layers are import-linter's, in
pyproject.toml), and every package says its one job."""

from __future__ import annotations

import importlib
import pkgutil

import grimp

import vexfs_cockpit


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(modules):
        if root in index:
            continue
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root) & modules)))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.find_modules_directly_imported_by(child) & modules))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                comp = []
                while True:
                    m = stack.pop()
                    on_stack.discard(m)
                    comp.append(m)
                    if m == node:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def _graph() -> tuple[grimp.ImportGraph, set[str]]:
    graph = grimp.build_graph("vexfs_cockpit", "domains", exclude_type_checking_imports=True)
    ours = {m for m in graph.modules if m.split(".")[0] in ("vexfs_cockpit", "domains")}
    return graph, ours


def test_no_import_cycle_between_modules() -> None:
    graph, ours = _graph()
    # A package's __init__ importing its children is not a cycle of jobs: leave those out.
    modules = {m for m in ours if not any(o.startswith(m + ".") for o in ours)}
    assert _cycles(graph, modules) == []


def test_no_import_cycle_between_packages() -> None:
    graph, ours = _graph()
    pkg = {m: ".".join(m.split(".")[:2]) for m in ours}
    packages = set(pkg.values())
    squashed = grimp.ImportGraph()
    for p in packages:
        squashed.add_module(p)
    for m in ours:
        for dep in graph.find_modules_directly_imported_by(m) & ours:
            if pkg[m] != pkg[dep]:
                squashed.add_import(importer=pkg[m], imported=pkg[dep])
    assert _cycles(squashed, packages) == []


def test_the_cycle_finder_sees_a_cycle() -> None:
    g = grimp.ImportGraph()
    for m in ("a", "b", "c"):
        g.add_module(m)
    g.add_import(importer="a", imported="b")
    g.add_import(importer="b", imported="c")
    g.add_import(importer="c", imported="a")
    assert _cycles(g, {"a", "b", "c"}) == [["a", "b", "c"]]


def test_every_package_says_its_one_job() -> None:
    for info in pkgutil.iter_modules(vexfs_cockpit.__path__):
        if info.ispkg:
            mod = importlib.import_module(f"vexfs_cockpit.{info.name}")
            assert (mod.__doc__ or "").strip(), f"vexfs_cockpit/{info.name}/__init__.py has no docstring"
