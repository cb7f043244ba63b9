"""Load the effective config: profile YAML <- env overlay <- $VEXFS_* <- CLI overrides.

Every problem is a ConfigError whose text is one line naming the file (or variable,
or "command line") that set the bad key, the key, what was expected and what was found.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from vexfs_cockpit.config.describe import describe_validation_error
from vexfs_cockpit.config.interpolate import InterpolationError, expand
from vexfs_cockpit.config.layers import Layer, merge_layers, nest_dotted, origin_of
from vexfs_cockpit.config.models import DOMAIN_NAMES, CockpitConfig, FleetSettings
from vexfs_cockpit.config.paths import find_project_root
from vexfs_cockpit.config.show import display_path, show
from vexfs_cockpit.config.yamlio import read_mapping
from vexfs_cockpit.errors import ConfigError

DEFAULT_ENV = "dev"
CLI_LABEL = "command line"

# Environment variable -> dotted key it sets.
ENV_VARS: dict[str, str] = {
    "VEXFS_SSH_KEY_PATH": "fleet.ssh_key_path",
    "VEXFS_BASE_IMAGE_PATH": "fleet.base_image_path",
    "VEXFS_STORAGE_POOL": "fleet.storage_pool",
    "VEXFS_LIBVIRT_URI": "fleet.libvirt_uri",
    "VEXFS_COCKPIT_DB": "store.url",
}
# Path keys given on the command line or in the environment are relative to the
# working directory (what a shell user means), not to the project root.
_CWD_RELATIVE = frozenset({"ssh_key_path", "base_image_path", "image_dir", "db_path", "build_path", "url"})
# Set by the loader, never by a file.
_RESERVED = {"env": "set it with --env", "source_path": "it is the file's own path"}
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def _did_you_mean(word: str, choices: Iterable[str]) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f"did you mean '{close[0]}'?" if close else ""


def resolve_profile_path(path: Path | str | None) -> Path:
    """The profile file: the default, a path (from the CWD, then from the project root),
    or a bare profile name such as ``vexfs`` for ``configs/vexfs.yaml``."""
    if path is None:
        return find_project_root() / "configs" / "default.yaml"
    path = Path(os.path.expanduser(os.fspath(path)))
    if path.is_file() or path.is_absolute():
        return Path(os.path.abspath(path))
    # Not a file here: `vexfs` may well be the VexFS checkout directory beside you.
    try:
        root = find_project_root()
    except ConfigError:
        root = None
    if root is not None:
        candidates = [root / path]
        if len(path.parts) == 1 and not path.suffix:
            candidates.append(root / "configs" / f"{path}.yaml")
        for cand in candidates:
            if cand.is_file():
                return cand
    return Path(os.path.abspath(path))


def _profiles_hint(root: Path | None) -> str:
    if root is None or not (root / "configs").is_dir():
        return ""
    names = sorted(p.name for p in (root / "configs").glob("*.yaml"))
    return f" (profiles in {display_path(root / 'configs')}: {', '.join(names)})" if names else ""


def env_overlay_dir(profile: Path) -> Path:
    """``env/`` beside the profile if there is one, else the project's configs/env."""
    beside = profile.parent / "env"
    if beside.is_dir():
        return beside
    return find_project_root() / "configs" / "env"


def available_envs(overlay_dir: Path) -> list[str]:
    return sorted(p.stem for p in overlay_dir.glob("*.yaml")) if overlay_dir.is_dir() else []


def parse_override(text: str) -> tuple[str, Any]:
    """``execution.retry_count=2`` -> ("execution.retry_count", 2). The value is read
    as a YAML scalar, so ``true``, ``2`` and ``[1, 2]`` get their types."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {text!r}: expected KEY=VALUE, e.g. --set execution.retry_count=2")
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw  # not YAML: take it as the string it is
    return key.strip(), value


def _is_url(value: str) -> bool:
    """store.url may be a postgresql:// URL: not a path to make absolute."""
    return "://" in value


def _one_store_location(data: dict[str, Any], origins: dict[str, str], layer_labels: list[str]) -> None:
    """store.url and its older spelling store.db_path: a later layer (an env var, the
    command line) setting one replaces the other; both in one layer is an error."""
    store = data.get("store")
    if not isinstance(store, dict) or store.get("url") is None or store.get("db_path") is None:
        return
    url_from, path_from = origins.get("store.url", ""), origins.get("store.db_path", "")
    rank = {label: i for i, label in enumerate(layer_labels)}
    if url_from == path_from or rank.get(url_from) == rank.get(path_from):
        # Neither value is shown: store.url may hold a password (refused when opened).
        raise ConfigError(f"{url_from}: store.url and store.db_path are both set (db_path is the older "
                          "spelling of url): keep store.url only")
    older = "db_path" if rank.get(path_from, -1) < rank.get(url_from, -1) else "url"
    del store[older]
    origins.pop(f"store.{older}", None)


def _env_layers(environ: Mapping[str, str]) -> list[Layer]:
    layers = []
    for var, dotted in ENV_VARS.items():
        value = environ.get(var, "")
        if not value:
            continue  # unset and empty both mean "not overridden"
        if dotted.rsplit(".", 1)[-1] in _CWD_RELATIVE and not _is_url(value):
            value = os.path.abspath(os.path.expanduser(value))
        layers.append(Layer(f"${var}", nest_dotted({dotted: value}, f"${var}")))
    return layers


def _cli_layer(overrides: Mapping[str, Any]) -> Layer:
    fixed: dict[str, Any] = {}
    for dotted, value in overrides.items():
        if (str(dotted).rsplit(".", 1)[-1] in _CWD_RELATIVE and isinstance(value, str | os.PathLike)
                and not _is_url(os.fspath(value))):
            value = os.path.abspath(os.path.expanduser(os.fspath(value)))
        fixed[dotted] = value
    return Layer(CLI_LABEL, nest_dotted(fixed, CLI_LABEL))


def _check_structure(data: dict[str, Any], origins: Mapping[str, str], known: set[str] | None) -> None:
    """What pydantic cannot say well: reserved keys and unknown domain names (``known``
    None: any name)."""
    for key, why in _RESERVED.items():
        if key in data:
            raise ConfigError(f"{origins.get(key)}: {key}: not a config key ({why})")
    domains = data.get("domains")
    if domains is None:
        data["domains"] = {}
        return
    if not isinstance(domains, dict):
        return  # pydantic says "expected a mapping"
    for name, section in domains.items():
        if known is not None and str(name) not in known:
            hint = _did_you_mean(str(name), known) or f"known: {', '.join(sorted(known))}"
            raise ConfigError(
                f"{origin_of(origins, ('domains', str(name)))}: domains.{name}: unknown domain '{name}' ({hint})"
            )
        if section is None:
            domains[name] = {}  # `kernel_module:` alone = that domain with defaults


def _capture_checkouts(
    data: dict[str, Any], origins: Mapping[str, str], environ: Mapping[str, str]
) -> dict[str, Path]:
    """Every ``source_env`` must name a set variable pointing at a directory."""
    sections: list[tuple[tuple[str, ...], Any]] = [(("module",), data.get("module"))]
    if isinstance(data.get("domains"), dict):
        sections += [(("domains", str(n)), s) for n, s in data["domains"].items()]
    checkouts: dict[str, Path] = {}
    for prefix, section in sections:
        if not isinstance(section, dict) or section.get("source_env") in (None, ""):
            continue
        key = (*prefix, "source_env")
        dotted = ".".join(key)
        name = section["source_env"]
        label = origin_of(origins, key)
        if not isinstance(name, str) or not _ENV_NAME.match(name):
            raise ConfigError(f"{label}: {dotted}: expected an environment variable name, found {show(name)}")
        value = environ.get(name, "")
        if not value:
            raise ConfigError(f"{label}: {dotted}: ${name} is not set; export {name}=<path to the checkout>")
        checkout = Path(os.path.abspath(os.path.expanduser(value)))
        if not checkout.is_dir():
            raise ConfigError(f"${name}: {dotted}: expected a directory (the checkout), found {show(value)}")
        checkouts[name] = checkout
    return checkouts


def _interpolate(
    data: dict[str, Any], origins: Mapping[str, str], environ: Mapping[str, str], checkouts: Mapping[str, Path]
) -> dict[str, Any]:
    try:
        return expand(data, environ)
    except InterpolationError as err:
        where = f"{origin_of(origins, err.path)}: {'.'.join(err.path)}"
        if err.variable is None:
            raise ConfigError(f"{where}: {err.message}") from None
        what = "<path to the checkout>" if err.variable in checkouts or "SOURCE" in err.variable else "<value>"
        raise ConfigError(
            f"{where}: {err.message}; export {err.variable}={what} or write ${{{err.variable}:-fallback}}"
        ) from None


def config_from_args(args: Any, *, env: str | None = None, known_domains: Iterable[str] | None = None,
                     runs_domains: bool = True) -> CockpitConfig:
    """The config a command line names: ``--config``, the env overlay (``env``, else
    ``--env``), then every ``--set KEY=VALUE`` and ``--kernel``. One rule for run, the TUI (also when its
    start-run dialog switches environment), vm/ssh and the kdev commands."""
    overrides = dict(parse_override(s) for s in (getattr(args, "set", None) or []))
    if getattr(args, "kernel", None):  # --kernel V is --set fleet.guest_kernel=V
        overrides["fleet.guest_kernel"] = args.kernel
    return load_config(getattr(args, "config", None), env if env is not None else getattr(args, "env", None),
                       overrides, known_domains=known_domains, runs_domains=runs_domains)


def load_config(
    path: Path | str | None = None,
    env: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] = os.environ,
    *,
    known_domains: Iterable[str] | None = None,
    runs_domains: bool = True,
) -> CockpitConfig:
    """The effective config. ``path``: a profile file (default configs/default.yaml, or a
    bare profile name like ``vexfs``); ``env``: an overlay in configs/env (default dev);
    ``overrides``: dotted keys from the command line; ``known_domains``: domain names
    beyond the six built-in ones (user plugins). ``runs_domains=False``: a command that
    runs no domain (analyze, gc, alerts, ...) does not judge the names under ``domains``,
    so a plugin domain's section needs no plugin discovery there."""
    profile = resolve_profile_path(path)
    profile_label = display_path(profile)
    if not profile.exists():
        try:
            root: Path | None = find_project_root()
        except ConfigError:
            root = None
        raise ConfigError(f"{profile_label}: no such config file{_profiles_hint(root)}")

    env = env or DEFAULT_ENV
    overlay_dir = env_overlay_dir(profile)
    envs = available_envs(overlay_dir)
    if env not in envs:
        hint = " ".join(filter(None, [_did_you_mean(env, envs), f"valid: {', '.join(envs)}" if envs else "no overlays there"]))
        raise ConfigError(f"--env {env}: no {display_path(overlay_dir / (env + '.yaml'))} ({hint})")
    overlay = overlay_dir / f"{env}.yaml"

    layers = [
        Layer(profile_label, read_mapping(profile, profile_label)),
        Layer(display_path(overlay), read_mapping(overlay, display_path(overlay))),
        *_env_layers(environ),
    ]
    if overrides:
        layers.append(_cli_layer(overrides))
    data, origins = merge_layers(layers)
    _one_store_location(data, origins, [layer.label for layer in layers])

    known = set(DOMAIN_NAMES) | {str(d) for d in (known_domains or ())}
    _check_structure(data, origins, known if runs_domains else None)
    checkouts = _capture_checkouts(data, origins, environ)
    data = _interpolate(data, origins, environ, checkouts)

    def label_for(keys: tuple[str, ...]) -> str:
        return origin_of(origins, keys) or profile_label

    try:
        cfg = CockpitConfig.model_validate(data)
    except ValidationError as err:
        raise ConfigError(describe_validation_error(err, CockpitConfig, label_for)) from None
    cfg.source_path = profile
    cfg.env = env
    cfg._origins = dict(origins)
    cfg._layers = [layer.label for layer in layers]
    cfg._checkouts = checkouts
    return cfg


def config_origin(cfg: CockpitConfig, dotted_key: str) -> str | None:
    """Which layer set a key ("configs/env/ci.yaml", "$VEXFS_COCKPIT_DB", "command line"),
    or None for a built-in default."""
    return cfg._origins.get(dotted_key)


def fleet_from_args(args: Any) -> FleetSettings:
    """The fleet section of the config named by ``--config/--env`` (shared by image and doctor).

    With no --config and no default profile to be found (e.g. an installed copy run
    outside the repo), the built-in defaults apply; a named file must exist.
    """
    path = getattr(args, "config", None)
    try:
        return load_config(path, getattr(args, "env", None)).fleet
    except ConfigError:
        if path is None and getattr(args, "env", None) is None:
            try:
                if not resolve_profile_path(None).exists():
                    return FleetSettings()
            except ConfigError:
                return FleetSettings()
        raise
