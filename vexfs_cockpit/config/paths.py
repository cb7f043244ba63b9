"""Where relative paths in a config point.

Rules (the same for every front end):
- ``~`` is expanded; absolute paths are used as written.
- A relative path in a config FILE resolves against the project root: the directory
  holding ``configs/`` when the profile lives in ``<root>/configs/``, else the
  profile's own directory. (Paths given by ``$VEXFS_*`` or ``--set`` are made absolute
  against the working directory when the config loads.)
- In a module/domain section with ``source_env: VEXFS_SOURCE``, ``build_path``
  resolves against that checkout (``$VEXFS_SOURCE``, captured at load time) instead.
- ``module_path`` (the .ko) is relative to ``build_path``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from vexfs_cockpit.config.models import CockpitConfig, ModuleSettings
from vexfs_cockpit.errors import ConfigError

APP_NAME = "vexfs-cockpit"


def data_dir() -> Path:
    """The user's data dir for the cockpit (history DB, images, runs, dev VM state, builds)."""
    from platformdirs import user_data_path  # here: `import paths` stays cheap

    return user_data_path(APP_NAME, appauthor=False, ensure_exists=True)


_PACKAGE_ROOT = Path(__file__).resolve().parents[2]  # the checkout holding vexfs_cockpit/


def find_project_root(cwd: Path | None = None) -> Path:
    """The directory with ``configs/default.yaml``: the working directory first (an
    installed cockpit run from a project), else the source tree next to the package."""
    cwd = Path.cwd() if cwd is None else cwd
    for root in (cwd, _PACKAGE_ROOT):
        if (root / "configs" / "default.yaml").is_file():
            return root.absolute()
    raise ConfigError(
        f"{cwd}: no configs/default.yaml here or in {_PACKAGE_ROOT}; run from the project root or pass a config file"
    )


def project_root(cfg: CockpitConfig) -> Path:
    """Relative config paths resolve here (see the module doc)."""
    if cfg.source_path is None:
        return find_project_root()
    profile = Path(os.path.abspath(cfg.source_path))
    return profile.parent.parent if profile.parent.name == "configs" else profile.parent


def _get(section: ModuleSettings | Mapping[str, Any] | None, key: str) -> Any:
    if section is None:
        return None
    if isinstance(section, Mapping):
        return section.get(key)
    return getattr(section, key, None)


def checkout_dir(cfg: CockpitConfig, env_name: str, environ: Mapping[str, str] = os.environ) -> Path:
    """The out-of-tree checkout a ``source_env`` names (as captured by load_config)."""
    got = cfg._checkouts.get(env_name)
    if got is not None:
        return got
    value = environ.get(env_name, "")
    if not value:
        where = cfg._origins.get("module.source_env") or (str(cfg.source_path) if cfg.source_path else "config")
        raise ConfigError(f"{where}: source_env: ${env_name} is not set; export {env_name}=<path to the checkout>")
    return Path(os.path.abspath(os.path.expanduser(value)))


def resolve_path(
    cfg: CockpitConfig,
    value: str | os.PathLike[str],
    section: ModuleSettings | Mapping[str, Any] | None = None,
) -> Path:
    """Absolute path for a config value. Pass the module/domain ``section`` the value
    came from when it may be relative to a ``source_env`` checkout (``build_path``)."""
    path = Path(os.path.expanduser(os.fspath(value)))
    if path.is_absolute():
        return path
    source_env = _get(section, "source_env")
    base = checkout_dir(cfg, source_env) if source_env else project_root(cfg)
    return Path(os.path.normpath(base / path))


def build_dir(cfg: CockpitConfig, section: ModuleSettings | Mapping[str, Any]) -> Path:
    """The kbuild directory (``M=``) of a module/domain section."""
    return resolve_path(cfg, _get(section, "build_path"), section)


def module_file(cfg: CockpitConfig, section: ModuleSettings | Mapping[str, Any]) -> Path:
    """The built ``.ko``: ``module_path`` relative to the build directory."""
    ko = Path(os.path.expanduser(str(_get(section, "module_path"))))
    return ko if ko.is_absolute() else build_dir(cfg, section) / ko


def known_failures_dir(cfg: CockpitConfig) -> Path:
    """``analysis.known_failures_dir``, resolved against the project root as every config path is."""
    d = cfg.analysis.known_failures_dir
    return d if d.is_absolute() else project_root(cfg) / d
