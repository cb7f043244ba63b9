"""The effective config as YAML, each key commented with the layer that set it.

Scalars are written as JSON, which is valid YAML, so the output loads back with
``yaml.safe_load`` to ``cfg.model_dump(mode="json")``, except that each domain section
is shown as it runs (``cfg.domain(name)``: module keys it does not set are inherited).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from vexfs_cockpit.config.caps import fleet_need
from vexfs_cockpit.config.models import CockpitConfig
from vexfs_cockpit.config.paths import project_root
from vexfs_cockpit.config.show import display_path, num

_PLAIN_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
_COMMENT_COLUMN = 48


def _key(k: str) -> str:
    return k if _PLAIN_KEY.match(k) and k not in ("true", "false", "null", "yes", "no", "on", "off") else json.dumps(k)


def _line(text: str, origin: str | None) -> str:
    if origin is None:
        return text
    return f"{text.ljust(_COMMENT_COLUMN - 1)} # {origin}"


def _emit(data: dict[str, Any], prefix: tuple[str, ...], origins: dict[str, str], indent: int, out: list[str]) -> None:
    pad = "  " * indent
    for k, v in data.items():
        path = (*prefix, str(k))
        origin = origins.get(".".join(path))
        if isinstance(v, dict) and v:
            out.append(_line(f"{pad}{_key(str(k))}:", origin))
            _emit(v, path, origins, indent + 1, out)
        else:
            out.append(_line(f"{pad}{_key(str(k))}: {json.dumps(v)}", origin))


def render_effective(cfg: CockpitConfig, selected_domains: Sequence[str]) -> str:
    need = fleet_need(cfg, selected_domains)
    r = cfg.resources
    layers = " <- ".join(cfg._layers) if cfg._layers else "built-in defaults"
    header = [
        "# vexfs-cockpit effective config",
        f"# layers (later wins): {layers}",
        f"# relative paths resolve against: {project_root(cfg)}",
        *(f"# ${name} checkout: {path}" for name, path in cfg._checkouts.items()),
        f"# domains: {', '.join(selected_domains) or 'none'}",
        f"# at most {need.vms} VM(s) at once: {num(need.memory_gb)}/{num(r.max_total_memory_gb)} GB RAM,"
        f" {need.cpus}/{r.max_total_cpus} CPUs, {num(need.disk_gb)}/{num(r.max_total_disk_gb)} GB disk",
        "# keys without a comment are built-in defaults",
    ]
    if cfg.source_path is not None:
        header.insert(1, f"# profile: {display_path(cfg.source_path)}  env: {cfg.env}")
    data = cfg.model_dump(mode="json")
    origins = dict(cfg._origins)
    # Show each domain as it runs: module keys it does not set are inherited.
    data["domains"] = {n: cfg.domain(n).model_dump(mode="json") for n in cfg.domains}
    module_origins = {k.removeprefix("module."): v for k, v in origins.items() if k.startswith("module.")}
    for name in cfg.domains:
        for key, label in module_origins.items():
            top = key.split(".", 1)[0]
            if f"domains.{name}.{top}" not in origins:
                origins[f"domains.{name}.{key}"] = f"{label} (module)"
    body: list[str] = []
    _emit(data, (), origins, 0, body)
    return "\n".join([*header, *body]) + "\n"
