"""Find domain plugins: modules in the ``domains`` package and the
``vexfs_cockpit.domains`` entry-point group. Dropping a file into domains/ is enough."""

from __future__ import annotations

import importlib
import inspect
import pkgutil
from importlib.metadata import entry_points
from types import ModuleType

from vexfs_cockpit.engine.plugin import DomainBase
from vexfs_cockpit.errors import ConfigError

ENTRY_POINT_GROUP = "vexfs_cockpit.domains"


def _domain_classes(module: ModuleType) -> list[type[DomainBase]]:
    return [
        obj
        for obj in vars(module).values()
        if inspect.isclass(obj)
        and issubclass(obj, DomainBase)
        and obj is not DomainBase
        and obj.__module__ == module.__name__
        and not inspect.isabstract(obj)
    ]


def discover_domains(package: str = "domains") -> dict[str, type[DomainBase]]:
    """Map domain name -> class. A broken plugin is a one-line ConfigError, not a traceback."""
    found: dict[str, type[DomainBase]] = {}

    def add(cls: type[DomainBase], origin: str) -> None:
        name = cls.domain_name()
        if name in found and found[name] is not cls:
            raise ConfigError(
                f"{origin}: domain '{name}' is defined twice "
                f"({found[name].__module__}.{found[name].__name__} and {cls.__module__}.{cls.__name__}); rename one"
            )
        found[name] = cls

    pkg = importlib.import_module(package)
    for info in sorted(pkgutil.iter_modules(pkg.__path__), key=lambda i: i.name):
        if info.name.startswith("_"):
            continue
        modname = f"{package}.{info.name}"
        try:
            module = importlib.import_module(modname)
        except Exception as err:  # a user's plugin: report which file and why
            raise ConfigError(f"{modname}: cannot import domain plugin: {type(err).__name__}: {err}") from err
        for cls in _domain_classes(module):
            add(cls, modname)

    for ep in entry_points(group=ENTRY_POINT_GROUP):
        try:
            obj = ep.load()
        except Exception as err:
            raise ConfigError(f"entry point {ep.name} ({ep.value}): cannot load: {err}") from err
        classes = _domain_classes(obj) if isinstance(obj, ModuleType) else [obj]
        for cls in classes:
            if not (inspect.isclass(cls) and issubclass(cls, DomainBase)):
                raise ConfigError(f"entry point {ep.name} ({ep.value}): not a DomainBase subclass")
            add(cls, f"entry point {ep.name}")
    return found
