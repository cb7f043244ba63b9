"""How config values and file paths appear in one-line error messages."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

_MAX = 60


def show(value: Any) -> str:
    """A value the way the user wrote it in YAML: 'text', 12, true, null, a mapping."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list | tuple):
        return "a list"
    text = repr(str(value)) if isinstance(value, str | Path) else repr(value)
    return text if len(text) <= _MAX else text[: _MAX - 4] + "...'"


def display_path(path: Path) -> str:
    """Relative to the working directory when inside it (short, clickable), else absolute."""
    path = Path(os.path.abspath(path))
    try:
        return str(path.relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def num(x: float) -> str:
    """2.0 -> '2', 0.5 -> '0.5'."""
    return f"{x:g}"
