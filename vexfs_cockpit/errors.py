"""Errors the front ends turn into one line and an exit code (never a traceback)."""

from __future__ import annotations


class CockpitError(Exception):
    """Base: ``str(err)`` is the one line shown to the user, naming what and the fix."""

    exit_code = 1


class ConfigError(CockpitError):
    """Bad config file, key, value, CLI argument or resource caps. Exit 2."""

    exit_code = 2


class UsageError(ConfigError):
    """Bad command-line usage. Exit 2."""


class InfraError(CockpitError):
    """libvirt, VM, image or SSH problem: not the code under test's fault. Exit 3."""

    exit_code = 3


class HostUnavailable(InfraError):
    """This host cannot start any VM (libvirt unreachable): the run stops leasing at once
    instead of reporting the same failure for every domain."""


class StoreError(CockpitError):
    """The history DB is corrupt, foreign or unwritable. Never overwritten. Exit 3."""

    exit_code = 3


class StoreUnwritable(StoreError):
    """The history DB is sound but cannot be written here and now: the file or its
    filesystem is read-only, its directory is not writable or is gone, the disk is
    full. Readers still read it. Exit 3."""


class ReportError(CockpitError):
    """A report file (--junit, --json) cannot be written where it was asked for. Exit 2."""

    exit_code = 2
