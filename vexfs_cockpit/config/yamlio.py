"""Read one config YAML file into a mapping, or fail with one line naming file and line.

PyYAML silently keeps the last of two equal keys; in a config that hides a typo'd
override, so duplicate keys are an error here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from yaml.constructor import ConstructorError, SafeConstructor
from yaml.nodes import MappingNode

from vexfs_cockpit.config.show import show
from vexfs_cockpit.errors import ConfigError

_MERGE_TAG = "tag:yaml.org,2002:merge"


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate keys in a mapping (YAML merge keys ``<<`` allowed)."""


# The same rules over libyaml's parser: ~10x faster (every CLI command reads the
# profile and an overlay). Its error messages are vaguer ("found character that
# cannot start any token"), so a file it rejects is parsed again by _StrictLoader
# for the message the user sees.
class _FastStrictLoader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
    pass


def _construct_mapping(loader: _StrictLoader, node: MappingNode, deep: bool = False) -> dict[Any, Any]:
    first_line: dict[Any, int] = {}
    for key_node, _ in node.value:
        if key_node.tag == _MERGE_TAG:
            continue  # keys merged in by `<<: *anchor` may be overridden on purpose
        key = loader.construct_object(key_node, deep=True)
        try:
            if key in first_line:
                raise ConstructorError(
                    None,
                    None,
                    f"duplicate key {show(key)} (first on line {first_line[key]}); keep one",
                    key_node.start_mark,
                )
            first_line[key] = key_node.start_mark.line + 1
        except TypeError:  # unhashable key: construct_mapping reports it below
            pass
    return SafeConstructor.construct_mapping(loader, node, deep=deep)


_StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_FastStrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def _yaml_error_line(label: str, err: yaml.YAMLError) -> str:
    if isinstance(err, yaml.MarkedYAMLError):
        mark = err.problem_mark or err.context_mark
        problem = err.problem or err.context or "syntax error"
        where = f"{label}:{mark.line + 1}" if mark is not None else label
        extra = ""
        if err.context and err.problem and err.context_mark is not None:
            extra = f" ({err.context} on line {err.context_mark.line + 1})"
        hint = "; indent with spaces, not tabs" if "'\\t'" in problem else ""
        return f"{where}: invalid YAML: {problem}{extra}{hint}"
    return f"{label}: invalid YAML: {err}"


def read_mapping(path: Path, label: str) -> dict[str, Any]:
    """The file's top-level mapping; an empty file is an empty mapping."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{label}: no such file") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{label}: cannot read: not UTF-8 text (bad byte at offset {err.start})") from None
    except OSError as err:
        raise ConfigError(f"{label}: cannot read: {err.strerror or err}") from None
    try:
        data = yaml.load(text, Loader=_FastStrictLoader)  # noqa: S506 - a (C)SafeLoader subclass
    except yaml.YAMLError as fast_err:
        try:
            yaml.load(text, Loader=_StrictLoader)  # noqa: S506 - the pure-Python parser's precise message
        except yaml.YAMLError as err:
            raise ConfigError(_yaml_error_line(label, err)) from None
        raise ConfigError(_yaml_error_line(label, fast_err)) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"{label}: expected a mapping of sections at the top level (e.g. 'resources:'), found {show(data)}"
        )
    return data
