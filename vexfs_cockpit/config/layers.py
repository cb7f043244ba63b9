"""Deep-merge config layers while remembering which layer set each key.

Mappings merge key by key; anything else (scalars, lists) is replaced whole. The
origin map lets an error name the file to edit, not just the key.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from vexfs_cockpit.errors import ConfigError


@dataclass(frozen=True, slots=True)
class Layer:
    label: str  # shown in messages: "configs/env/ci.yaml", "$VEXFS_COCKPIT_DB", "command line"
    data: Mapping[str, Any]


def merge_layers(layers: Iterable[Layer]) -> tuple[dict[str, Any], dict[str, str]]:
    """(merged data, dotted key -> label of the last layer that set it)."""
    merged: dict[str, Any] = {}
    origins: dict[str, str] = {}
    for layer in layers:
        _merge_into(merged, layer.data, (), layer.label, origins)
    return merged, origins


def _merge_into(
    dst: dict[str, Any], src: Mapping[str, Any], prefix: tuple[str, ...], label: str, origins: dict[str, str]
) -> None:
    for key, value in src.items():
        path = (*prefix, str(key))
        dotted = ".".join(path)
        origins[dotted] = label
        if isinstance(value, dict) and isinstance(dst.get(key), dict):
            _merge_into(dst[key], value, path, label, origins)
            continue
        for stale in [k for k in origins if k.startswith(dotted + ".")]:
            del origins[stale]  # the subtree below was replaced whole
        dst[key] = copy.deepcopy(value)
        _mark(value, path, label, origins)


def _mark(value: Any, path: tuple[str, ...], label: str, origins: dict[str, str]) -> None:
    if isinstance(value, dict):
        for key, sub in value.items():
            sub_path = (*path, str(key))
            origins[".".join(sub_path)] = label
            _mark(sub, sub_path, label, origins)


def origin_of(origins: Mapping[str, str], path: Iterable[str]) -> str | None:
    """Label of the layer that set ``path`` or, failing that, its nearest parent."""
    parts = list(path)
    while parts:
        label = origins.get(".".join(parts))
        if label is not None:
            return label
        parts.pop()
    return None


def nest_dotted(flat: Mapping[str, Any], label: str) -> dict[str, Any]:
    """{"execution.retry_count": 2} -> {"execution": {"retry_count": 2}}."""
    out: dict[str, Any] = {}
    for dotted, value in flat.items():
        parts = str(dotted).split(".")
        if not all(p.strip() for p in parts):
            raise ConfigError(f"{label}: {dotted!r}: expected a dotted key like execution.retry_count")
        nested: Any = value
        for part in reversed(parts):
            nested = {part.strip(): nested}
        _merge_into(out, nested, (), label, {})
    return out
