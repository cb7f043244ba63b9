"""vexfs-cockpit: drive real VMs, run VexFS test domains, keep the history.

The plugin API is re-exported here so a user's domain needs one import line:
``from vexfs_cockpit import DomainBase, TestResult, TestStatus``. It is loaded on
first use (PEP 562), so a command that needs none of it starts without the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["DomainBase", "TestResult", "TestStatus", "test_options", "__version__"]

_LAZY = {
    "DomainBase": "vexfs_cockpit.engine.plugin",
    "test_options": "vexfs_cockpit.engine.plugin",
    "TestResult": "vexfs_cockpit.engine.results",
    "TestStatus": "vexfs_cockpit.engine.results",
}

if TYPE_CHECKING:
    from vexfs_cockpit.engine.plugin import DomainBase, test_options
    from vexfs_cockpit.engine.results import TestResult, TestStatus


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'vexfs_cockpit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value
