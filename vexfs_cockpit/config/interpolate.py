"""``${NAME}`` in config strings: expanded from the environment when the config loads.

``${NAME}`` needs NAME set and non-empty; ``${NAME:-fallback}`` uses the fallback
instead; ``$${`` is a literal ``${``. A lone ``$`` (as in a shell snippet) is untouched.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

_TOKEN = re.compile(r"(?P<escape>\$\$\{)|\$\{(?P<name>[A-Za-z_][A-Za-z0-9_]*)(?::-(?P<default>[^}]*))?\}|(?P<bad>\$\{)")


class InterpolationError(Exception):
    def __init__(self, path: tuple[str, ...], variable: str | None, message: str):
        super().__init__(message)
        self.path = path
        self.variable = variable  # the unset variable, or None for a malformed reference
        self.message = message


def expand_string(text: str, environ: Mapping[str, str], path: tuple[str, ...] = ()) -> str:
    def sub(m: re.Match[str]) -> str:
        if m["escape"]:
            return "${"
        if m["bad"]:
            snippet = text[m.start() : m.start() + 20]
            raise InterpolationError(
                path, None, f"bad reference {snippet!r}: expected ${{NAME}} or ${{NAME:-fallback}} (write $${{ for a literal ${{)"
            )
        value = environ.get(m["name"], "")
        if value:
            return value
        if m["default"] is not None:
            return m["default"]
        raise InterpolationError(path, m["name"], f"${{{m['name']}}} is used here but {m['name']} is not set")

    return _TOKEN.sub(sub, text) if "${" in text else text


def expand(data: Any, environ: Mapping[str, str], path: tuple[str, ...] = ()) -> Any:
    """A copy of ``data`` with every string value expanded (keys stay as written)."""
    if isinstance(data, str):
        return expand_string(data, environ, path)
    if isinstance(data, dict):
        return {k: expand(v, environ, (*path, str(k))) for k, v in data.items()}
    if isinstance(data, list):
        return [expand(v, environ, (*path, str(i))) for i, v in enumerate(data)]
    return data
