"""Known failures: a per-environment YAML file (kdevops' expunge lists, with a reason,
an optional version range and an optional expiry date).

``configs/known-failures/<env>.yaml``::

    known_failures:
      - test: kernel_module/load twice       # DOMAIN/TEST
        reason: "double insmod oopses on 6.1; fixed upstream in 6.8"
        kernel: ">=6.1, <6.8"                 # optional: guest kernel releases it applies to
        module: "<0.4"                        # optional: module versions it applies to
        expires: 2026-12-31                   # optional: counts as a failure again after this day

A version range is comma-separated comparisons (``>= > <= < ==``) of dotted numbers;
a release such as ``6.1.0-57-amd64`` compares by its leading numbers (6, 1, 0).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from vexfs_cockpit.errors import ConfigError

_KEYS = {"test", "reason", "kernel", "module", "expires"}
_CMP = re.compile(r"^\s*(>=|<=|==|>|<)\s*(\d+(?:\.\d+)*)\s*$")


def version_key(text: str) -> tuple[int, ...] | None:
    """The leading dotted numbers of a version or release; None without any."""
    m = re.match(r"\s*v?(\d+(?:\.\d+)*)", text or "")
    return tuple(int(x) for x in m.group(1).split(".")) if m else None


def _pad(a: tuple[int, ...], n: int) -> tuple[int, ...]:
    return a + (0,) * (n - len(a))


@dataclass(frozen=True, slots=True)
class VersionRange:
    text: str
    parts: tuple[tuple[str, tuple[int, ...]], ...]

    @classmethod
    def parse(cls, text: str) -> VersionRange | None:
        parts = []
        for piece in str(text).split(","):
            m = _CMP.match(piece)
            if not m:
                return None
            parts.append((m.group(1), tuple(int(x) for x in m.group(2).split("."))))
        return cls(str(text), tuple(parts))

    def contains(self, version: tuple[int, ...]) -> bool:
        for op, bound in self.parts:
            n = max(len(version), len(bound))
            v, b = _pad(version, n), _pad(bound, n)
            ok = {">=": v >= b, ">": v > b, "<=": v <= b, "<": v < b, "==": v == b}[op]
            if not ok:
                return False
        return True


@dataclass(frozen=True, slots=True)
class KnownFailure:
    domain: str
    test: str
    reason: str
    kernel: VersionRange | None = None
    module: VersionRange | None = None
    expires: dt.date | None = None
    index: int = 0  # 1-based position in its file, for messages

    @property
    def key(self) -> tuple[str, str]:
        return (self.domain, self.test)

    def expired(self, today: dt.date) -> bool:
        return self.expires is not None and today > self.expires

    def applies(self, kernel: str | None, module: str | None) -> tuple[bool, str]:
        """Whether the entry covers a run of that kernel release and module version
        (None: unknown), and a note when a range could not be checked."""
        notes = []
        for name, rng, have in (("kernel", self.kernel, kernel), ("module", self.module, module)):
            if rng is None:
                continue
            key = version_key(have or "")
            if key is None:
                notes.append(f"{name} range {rng.text!r} not checked: the run records no {name} version")
            elif not rng.contains(key):
                return False, f"{name} {have} outside {rng.text!r}"
        return True, "; ".join(notes)


def known_failures_path(directory: Path, env: str) -> Path:
    return directory / f"{env}.yaml"


def load_known_failures(path: Path, label: str | None = None) -> list[KnownFailure]:
    """The entries of ``path`` ([] when it does not exist). A malformed file is one
    ConfigError line naming the file, the entry and the fix (exit 2)."""
    label = label or str(path)
    if not path.is_file():
        return []
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{label}:{where}: not valid YAML ({getattr(err, 'problem', None) or err}); "
                          "fix the syntax (a list under `known_failures:`)") from None
    except OSError as err:
        raise ConfigError(f"{label}: cannot read ({err.strerror}); check its permissions") from None
    if data is None:
        return []
    if not isinstance(data, dict) or set(data) != {"known_failures"}:
        raise ConfigError(f"{label}: expected one top-level key `known_failures:` holding a list of entries")
    entries = data["known_failures"] or []
    if not isinstance(entries, list):
        raise ConfigError(f"{label}: known_failures: expected a list of entries (`- test: DOMAIN/TEST`)")
    out: list[KnownFailure] = []
    for i, entry in enumerate(entries, 1):
        out.append(_entry(entry, i, label))
    return out


def _entry(entry: Any, i: int, label: str) -> KnownFailure:
    where = f"{label}: known_failures[{i}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{where}: expected a mapping with `test:` and `reason:`")
    unknown = sorted(set(map(str, entry)) - _KEYS)
    if unknown:
        raise ConfigError(f"{where}: unknown key `{unknown[0]}` (known: {', '.join(sorted(_KEYS))})")
    test = entry.get("test")
    if not isinstance(test, str) or test.count("/") < 1 or not all(test.split("/", 1)):
        raise ConfigError(f"{where}.test: {test!r} is not DOMAIN/TEST; write e.g. test: kernel_module/load twice")
    reason = entry.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        raise ConfigError(f"{where}.reason: missing; say why it fails, e.g. reason: \"oops on 6.1, fixed in 6.8\"")
    ranges = {}
    for key in ("kernel", "module"):
        raw = entry.get(key)
        if raw is None:
            ranges[key] = None
            continue
        rng = VersionRange.parse(str(raw))
        if rng is None:
            raise ConfigError(f"{where}.{key}: {raw!r} is not a version range; write e.g. {key}: \">=6.1, <6.8\"")
        ranges[key] = rng
    expires = entry.get("expires")
    if isinstance(expires, dt.datetime):
        expires = expires.date()
    elif isinstance(expires, str):
        try:
            expires = dt.date.fromisoformat(expires)
        except ValueError:
            expires = False
    if expires is not None and not isinstance(expires, dt.date):
        raise ConfigError(f"{where}.expires: {entry.get('expires')!r} is not a date; write e.g. expires: 2026-12-31")
    domain, name = test.split("/", 1)
    return KnownFailure(domain, name, reason.strip(), ranges["kernel"], ranges["module"], expires, i)
