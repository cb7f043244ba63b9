"""``sqlite_utils.Database``, imported without numpy and pandas.

sqlite-utils imports both when they are installed, only to map their scalar types
to columns. The store writes plain JSON-able values, and numpy (a domain's
dependency) cost ~0.2 s of the TUI's cold start. A module set to None in
``sys.modules`` makes its import raise ImportError, which sqlite-utils expects.
"""

from __future__ import annotations

import sys

_hidden = [m for m in ("numpy", "pandas") if m not in sys.modules]
for _m in _hidden:
    sys.modules[_m] = None  # type: ignore[assignment]
try:
    from sqlite_utils import Database
finally:
    for _m in _hidden:
        if _m in sys.modules and sys.modules[_m] is None:
            del sys.modules[_m]

__all__ = ["Database"]
