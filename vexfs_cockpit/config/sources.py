"""The module sources a run needs: refuse a run whose kbuild directory is not there.

A wrong ``build_path`` is a config error, found in a millisecond: without this check it
surfaced as an ERROR in ``module_build`` after a guest had booted (tens of seconds
under TCG), and as a skip reason in every other domain.
"""

from __future__ import annotations

from collections.abc import Sequence

from vexfs_cockpit.config.caps import blame
from vexfs_cockpit.config.models import CockpitConfig
from vexfs_cockpit.config.paths import build_dir
from vexfs_cockpit.config.show import display_path
from vexfs_cockpit.errors import ConfigError


def check_module_sources(cfg: CockpitConfig, selected_domains: Sequence[str]) -> None:
    """Raise ConfigError (one line naming the file and key to fix) if a selected
    domain's module has no kbuild directory. Domains testing a filesystem already in
    the guest kernel (``module_name: ""``) need none."""
    for domain in selected_domains:
        settings = cfg.domain(domain)
        if not settings.module_name:
            continue
        path = build_dir(cfg, settings)  # an unset source_env is already a ConfigError at load
        if path.is_dir():
            continue
        label, key = blame(cfg, [f"domains.{domain}.build_path", "module.build_path"])
        via = f" (in ${settings.source_env})" if settings.source_env else ""
        raise ConfigError(
            f"{label}: {key}: {display_path(path)}{via} is not a directory; "
            f"point {key} at the module's kbuild directory (the one holding its Kbuild or Makefile)"
        )
