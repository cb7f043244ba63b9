"""The public plugin API: everything a test domain needs, from one module.

    from vexfs_cockpit.plugin import DomainBase, TestResult, TestStatus, test_options, q, verdict

The same names are re-exported by ``vexfs_cockpit`` itself (loaded on first use), so
``from vexfs_cockpit import DomainBase, TestResult, TestStatus, test_options`` works too.
A domain imports nothing else from vexfs_cockpit: import-linter holds the built-in
domains to that ("Domains import only the public plugin API" in pyproject.toml), and a
third-party domain written against these names does not break when internals move.

- writing tests: ``DomainBase``, ``DomainContext``, ``test_options``, ``TestResult``,
  ``TestStatus``, and ``passed``/``failed``/``verdict``/``errno_problem``/``percentile``/
  ``option``;
- acting on the guest: ``Target``, ``CommandResult``, ``CommandFailed``,
  ``TargetUnavailable``; ``q`` quotes a value into shell text (``target.run`` with a
  list of words needs no quoting);
- the module under test: ``ModuleSpec`` (``ctx.module()``) and the guest command
  builders that act on it, ``GUEST_DIR``, ``LOSETUP``;
- the host build of the module against the guest kernel (through ``ctx.host``):
  ``kbuild``, ``KbuildResult``, ``KernelHeadersMissing``, ``default_cache_dir``;
- the kernel log (``ctx.klog``): ``KernelReport``, ``Severity``; other domains:
  ``discover_domains``; errors: ``InfraError``, ``ConfigError``.

Not a layer of its own: a facade over the engine (and ``builds.kbuild``), imported by
domains only.
"""

from __future__ import annotations

from vexfs_cockpit.builds.kbuild import KbuildResult, KernelHeadersMissing, default_cache_dir, kbuild
from vexfs_cockpit.engine.discovery import discover_domains
from vexfs_cockpit.engine.module import (
    GUEST_DIR,
    LOSETUP,
    LoopImage,
    ModuleSpec,
    cleanup_cmd,
    detach_cmd,
    image_cmd,
    insmod_argv,
    is_loaded_cmd,
    mount_argv,
    push_probe_cmd,
    q,
    registered_cmd,
    split_module_params,
    sysfs_dir,
    sysfs_params_cmd,
    sysfs_state_cmd,
    unload_cmd,
    write_cmd,
)
from vexfs_cockpit.engine.plugin import (
    DomainBase,
    DomainContext,
    HistoryView,
    KernelLog,
    TestOptions,
    VmControl,
    errno_problem,
    failed,
    option,
    passed,
    percentile,
    test_options,
    verdict,
)
from vexfs_cockpit.engine.results import TestResult, TestStatus
from vexfs_cockpit.engine.target import Command, CommandFailed, CommandResult, Target, TargetUnavailable
from vexfs_cockpit.errors import ConfigError, InfraError
from vexfs_cockpit.klog.model import KernelReport, Severity

__all__ = [
    # writing a domain and its tests
    "DomainBase", "DomainContext", "TestOptions", "test_options", "TestResult", "TestStatus",
    "passed", "failed", "verdict", "errno_problem", "percentile", "option",
    "KernelLog", "VmControl", "HistoryView", "discover_domains",
    # the guest
    "Target", "Command", "CommandResult", "CommandFailed", "TargetUnavailable", "q",
    # the module under test
    "ModuleSpec", "LoopImage", "GUEST_DIR", "LOSETUP", "split_module_params",
    "insmod_argv", "is_loaded_cmd", "registered_cmd", "unload_cmd", "cleanup_cmd", "push_probe_cmd",
    "mount_argv", "image_cmd", "detach_cmd", "write_cmd", "sysfs_dir", "sysfs_state_cmd", "sysfs_params_cmd",
    # the host build
    "kbuild", "KbuildResult", "KernelHeadersMissing", "default_cache_dir",
    # kernel log and errors
    "KernelReport", "Severity", "InfraError", "ConfigError",
]
