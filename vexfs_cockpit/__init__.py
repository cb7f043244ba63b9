"""vexfs-cockpit: drive real VMs, run VexFS test domains, keep the history.

The public plugin API (``vexfs_cockpit.plugin``) is re-exported here so a user's domain
needs one import line: ``from vexfs_cockpit import DomainBase, TestResult, TestStatus``.
It is loaded on first use (PEP 562), so a command that needs none of it starts without
the engine.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# == vexfs_cockpit.plugin.__all__ (tests/test_plugin_api.py holds them equal); listed
# here so that naming one does not import the engine.
_API = (
    "DomainBase", "DomainContext", "TestOptions", "test_options", "TestResult", "TestStatus",
    "passed", "failed", "verdict", "errno_problem", "percentile", "option",
    "KernelLog", "VmControl", "HistoryView", "discover_domains",
    "Target", "Command", "CommandResult", "CommandFailed", "TargetUnavailable", "q",
    "ModuleSpec", "LoopImage", "GUEST_DIR", "LOSETUP", "split_module_params",
    "insmod_argv", "is_loaded_cmd", "registered_cmd", "unload_cmd", "cleanup_cmd", "push_probe_cmd",
    "mount_argv", "image_cmd", "detach_cmd", "write_cmd", "sysfs_dir", "sysfs_state_cmd", "sysfs_params_cmd",
    "kbuild", "KbuildResult", "KernelHeadersMissing", "default_cache_dir",
    "KernelReport", "Severity", "InfraError", "ConfigError",
)

__all__ = [*_API, "__version__"]

if TYPE_CHECKING:
    from vexfs_cockpit.plugin import *  # noqa: F403  # type checkers see the names lazily served below


def __getattr__(name: str) -> Any:
    if name not in _API:
        raise AttributeError(f"module 'vexfs_cockpit' has no attribute {name!r}")
    import importlib

    value = getattr(importlib.import_module("vexfs_cockpit.plugin"), name)
    globals()[name] = value
    return value
