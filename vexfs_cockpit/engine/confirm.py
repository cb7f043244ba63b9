"""Confirming what changed (issue 16 item 2): at the end of a run, each test whose
outcome differs from its reference is rerun K times on a fresh VM, and named by what
the reruns show. The runner owns the reruns; which tests changed needs the history,
which the engine cannot read, so the wiring layer hands the runner a ``Triage``.

Verdicts:

- *regression*: passed in the reference (or never ran there), bad now and in every rerun.
- *flaky*: the reruns disagree with this run's outcome (or with each other). A failure
  that does not reproduce is flaky, never a regression; a fix that does not hold too.
- *fixed*: bad in the reference, passed now and in every rerun.
- *still-failing*: bad in the reference and now (not rerun).
- *known*: bad now and listed, unexpired, in the env's known-failures file: reported,
  but it does not fail the run. *known-fixed*: listed, but passed: remove the entry.
- *unconfirmed*: changed, but the reruns could not tell (no VM, setup or a dependency
  failed on the fresh VM, a rerun was skipped, the run was aborted, or reruns are 0).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING

from vexfs_cockpit.engine.results import TestResult, TestStatus

if TYPE_CHECKING:
    from vexfs_cockpit.engine.runner import RunRequest


class Verdict(StrEnum):
    REGRESSION = "regression"
    FLAKY = "flaky"
    FIXED = "fixed"
    STILL_FAILING = "still-failing"
    KNOWN = "known"
    KNOWN_FIXED = "known-fixed"
    UNCONFIRMED = "unconfirmed"


# The badge front ends print next to the test (batch lines, TUI results, history show).
BADGES: dict[str, str] = {
    Verdict.REGRESSION: "NEW REGRESSION",
    Verdict.FLAKY: "FLAKY",
    Verdict.FIXED: "FIXED",
    Verdict.STILL_FAILING: "STILL FAILING",
    Verdict.KNOWN: "KNOWN FAILURE",
    Verdict.KNOWN_FIXED: "KNOWN, PASSES: REMOVE IT",
    Verdict.UNCONFIRMED: "UNCONFIRMED",
}


def badge(verdict: str) -> str:
    return BADGES.get(verdict, verdict.upper())


@dataclass(frozen=True, slots=True)
class Suspect:
    """A test of this run whose outcome needs a verdict, as the triage sees it."""

    domain: str
    test: str
    now: str  # its TestStatus value in this run
    before: str = ""  # its status in the reference; "" = not run there
    reference: str = ""  # where ``before`` comes from: "baseline RUN", "run RUN"; "" = none
    # Given without reruns (still-failing, known, known-fixed); None: rerun to confirm.
    verdict: Verdict | None = None
    note: str = ""

    @property
    def key(self) -> tuple[str, str]:
        return (self.domain, self.test)


# Given the run request and its final results, the tests that need a verdict. Built by
# the wiring layer (app.session) over the history and the known-failures file.
Triage = Callable[["RunRequest", Sequence[TestResult]], Awaitable[Sequence[Suspect]]]


def decide(now: TestStatus, reruns: Sequence[TestStatus]) -> tuple[Verdict, str]:
    """The verdict on a rerun test from this run's outcome and its reruns', with why."""
    if not reruns:
        return Verdict.UNCONFIRMED, "no rerun ran"
    if any(s is TestStatus.SKIPPED for s in reruns):
        return Verdict.UNCONFIRMED, "a rerun was skipped"
    bad = sum(s.bad for s in reruns)
    tally = f"{bad}/{len(reruns)} reruns failed"
    if now.bad:
        return (Verdict.REGRESSION if bad == len(reruns) else Verdict.FLAKY), tally
    return (Verdict.FIXED if bad == 0 else Verdict.FLAKY), tally
