"""Helpers for the report tests (no tests here): a strict KTAP v1 parser and histories.

tap.py (PyPI ``tap.py``) reads TAP 13/14: it sees ``KTAP version 1`` and every indented
(nested) line as unknown lines, and knows the SKIP and TODO directives only, not KTAP's
TIMEOUT and ERROR. So it checks here what KTAP promises plain TAP consumers (the top
level is valid TAP), and ``parse_ktap`` below checks the rest. It ports the essential
checks of the kernel's tools/testing/kunit/kunit_parser.py:

- a test (the document, or a subtest) starts with ``KTAP version 1`` at its level,
  optionally followed by ``# Subtest: NAME``, then at once a ``1..N`` plan;
- nesting is four spaces per level; a subtest's result line follows it one level up and
  names it (as kunit_parser, which warns otherwise: here it is an error);
- result lines are ``ok|not ok NUMBER [- ]NAME [# DIRECTIVE [REASON]]``, numbered
  1, 2, ... with as many as the plan says;
- ``#`` lines are diagnostics; nothing else may appear.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from tests.support.store import DAY, FS, KM, T0, E, F, P, RunSpec, S, T, kreport, record_sync
from vexfs_cockpit.klog.model import Severity
from vexfs_cockpit.store.location import StoreLocation

RESULT = re.compile(r"^(ok|not ok) ([0-9]+)(?: - | )?([^#]*?)\s*(?:# (.*))?$")
PLAN = re.compile(r"^1\.\.([0-9]+)$")
DIRECTIVES = ("SKIP", "TODO", "XFAIL", "TIMEOUT", "ERROR")


class KtapError(AssertionError):
    pass


@dataclass
class KtapTest:
    name: str = ""
    ok: bool | None = None
    number: int = 0
    directive: str = ""  # SKIP, TIMEOUT, ERROR, ... or ""
    reason: str = ""
    plan: int | None = None
    subtests: list[KtapTest] = field(default_factory=list)
    diagnostics: list[str] = field(default_factory=list)

    def leaves(self) -> list[KtapTest]:
        return [t for s in self.subtests for t in (s.leaves() if s.subtests or s.plan is not None else [s])]


def _split_directive(tail: str | None) -> tuple[str, str]:
    if not tail:
        return "", ""
    word, _, rest = tail.partition(" ")
    return (word, rest.strip()) if word in DIRECTIVES else ("", tail.strip())


def parse_ktap(text: str) -> KtapTest:
    lines = text.splitlines()
    pos = 0

    def at(level: int) -> str | None:
        """The line at ``pos`` with ``level``'s indentation stripped, or None if it is not at that level."""
        if pos >= len(lines):
            return None
        line = lines[pos]
        prefix = "    " * level
        if not line.startswith(prefix) or line[len(prefix):].startswith(" "):
            return None
        return line[len(prefix):]

    def test(level: int) -> KtapTest:
        nonlocal pos
        t = KtapTest()
        if at(level) != "KTAP version 1":
            raise KtapError(f"line {pos + 1}: expected 'KTAP version 1' at level {level}, found {lines[pos:pos + 1]}")
        pos += 1
        head = at(level)
        if head is not None and head.startswith("# Subtest: "):
            t.name = head.removeprefix("# Subtest: ").strip()
            pos += 1
        plan = PLAN.match(at(level) or "")  # right after the header, as kunit_parser wants it
        if not plan:
            raise KtapError(f"line {pos + 1}: expected a plan '1..N', found {lines[pos:pos + 1]}")
        t.plan = int(plan.group(1))
        pos += 1
        while pos < len(lines):
            line = at(level)
            if line is None:
                if at(level + 1) == "KTAP version 1":
                    sub = test(level + 1)
                    res = at(level)
                    m = RESULT.match(res or "")
                    if not m:
                        raise KtapError(f"line {pos + 1}: subtest {sub.name!r} has no result line")
                    _result(sub, m)
                    if sub.name and sub.name != m.group(3):
                        raise KtapError(f"line {pos + 1}: subtest {sub.name!r} ends as {m.group(3)!r}")
                    t.subtests.append(sub)
                    pos += 1
                    continue
                if level > 0:  # back to the parent
                    break
                raise KtapError(f"line {pos + 1}: bad indentation: {lines[pos]!r}")
            if line.startswith("#"):
                t.diagnostics.append(line)
                pos += 1
            elif m := RESULT.match(line):
                leaf = KtapTest()
                _result(leaf, m)
                t.subtests.append(leaf)
                pos += 1
            elif line == "":
                pos += 1
            else:
                raise KtapError(f"line {pos + 1}: not a KTAP line: {line!r}")
        numbers = [s.number for s in t.subtests]
        if numbers != list(range(1, len(numbers) + 1)):
            raise KtapError(f"test {t.name!r}: results numbered {numbers}")
        if len(numbers) != t.plan:
            raise KtapError(f"test {t.name!r}: plan 1..{t.plan}, {len(numbers)} results")
        return t

    def _result(t: KtapTest, m: re.Match[str]) -> None:
        t.ok = m.group(1) == "ok"
        t.number = int(m.group(2))
        t.name = t.name or m.group(3)
        t.directive, t.reason = _split_directive(m.group(4))
        if t.directive in ("TIMEOUT", "ERROR") and t.ok:
            raise KtapError(f"{t.name}: ok with {t.directive} (the spec says not ok)")

    root = test(0)
    if pos != len(lines):
        raise KtapError(f"line {pos + 1}: trailing lines {lines[pos:pos + 3]}")
    return root


# -- histories ----------------------------------------------------------------------------
OOPS = kreport("oops", "BUG: unable to handle page fault in vexfs_read", Severity.CRITICAL)
HUNG = kreport("hung_task", "INFO: task mount blocked for more than 5 seconds", Severity.ERROR)

# kernel_module: PASSED, FAILED (oops), TIMEOUT, SKIPPED; filesystem_operations: ERROR (hang), PASSED
SPEC = RunSpec(
    "run-1", T0, env="ci",
    outcomes={(KM, "module_build"): P, (KM, "load"): F, (KM, "unload"): T, (KM, "leak"): S,
              (FS, "mount"): E, (FS, "rw"): P},
    metrics={(KM, "load"): {"load_time_ms": 12.0}},
    kernel=[(KM, "load", OOPS, False), (FS, "mount", HUNG, False)],
)


def history(path: StoreLocation) -> StoreLocation:
    """Four earlier passing ci runs (load_time_ms 8..11), then SPEC, then two dev runs,
    the newest of which has a planted difference against ci: rw's throughput halves."""
    earlier = [
        RunSpec(f"ci-{i}", T0 - (4 - i) * DAY, env="ci",
                outcomes={(KM, "module_build"): P, (KM, "load"): P, (FS, "rw"): P},
                metrics={(KM, "load"): {"load_time_ms": 8.0 + i}, (FS, "rw"): {"write_mb_s": 100.0}})
        for i in range(4)
    ]
    spec = RunSpec(SPEC.run_id, SPEC.start, env="ci", outcomes=dict(SPEC.outcomes),
                   metrics={**SPEC.metrics, (FS, "rw"): {"write_mb_s": 100.0}}, kernel=list(SPEC.kernel))
    dev = [
        RunSpec("dev-1", T0 + DAY, env="dev", outcomes={(KM, "module_build"): P, (KM, "load"): P, (FS, "rw"): P},
                metrics={(FS, "rw"): {"write_mb_s": 100.0}}),
        RunSpec("dev-2", T0 + 2 * DAY, env="dev",
                outcomes={(KM, "module_build"): P, (KM, "load"): F, (KM, "unload"): T, (KM, "leak"): S,
                          (FS, "mount"): E, (FS, "rw"): P},
                metrics={(KM, "load"): {"load_time_ms": 12.5}, (FS, "rw"): {"write_mb_s": 50.0}}),
    ]
    record_sync(path, [*earlier, spec, *dev])
    return path
