"""Which tests of a finishing run changed, for the runner's confirmation reruns
(engine/confirm.py has the verdicts; app/session.py wires this in as the Triage).

A test's *reference* is its status in the env's baseline run (``baseline set``) when
the baseline ran it, else its newest status in the env's earlier finished runs (runs
of another guest kernel left out when the config names one, as ``analyze`` groups).
SKIPPED never counts as a status. Then, for each test of this run:

- bad now, passed in the reference or never ran there: rerun (regression or flaky),
  unless the env has no earlier run at all (a first run changes nothing: no verdict);
- bad now and in the reference: still failing (no rerun);
- passed now, bad in the reference: rerun (fixed or flaky);
- listed in the known-failures file (and in its kernel/module range): bad now is
  *known* (no rerun, does not fail the run) unless the entry expired, which counts
  again and says so; passed now is *known-fixed* ("fixed, remove it").
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

from vexfs_cockpit.analysis.known import KnownFailure
from vexfs_cockpit.engine.confirm import Suspect, Verdict
from vexfs_cockpit.engine.results import TestResult, TestStatus
from vexfs_cockpit.store.history import BAD, AnalysisRows

PASSED = TestStatus.PASSED.value


def references(
    rows: AnalysisRows, *, env: str, run_id: str, baseline: str | None = None, guest_kernel: str = ""
) -> dict[tuple[str, str], tuple[str, str]]:
    """(domain, test) -> (its reference status, "baseline RUN" | "run RUN")."""
    runs = [r for r in rows.runs if r.env == env and r.run_id != run_id]  # oldest first
    if guest_kernel and guest_kernel not in ("auto", "host"):
        runs = [r for r in runs if r.guest_kernel == guest_kernel or r.run_id == baseline]
    order = {r.run_id: i for i, r in enumerate(runs)}
    out: dict[tuple[str, str], tuple[str, str]] = {}
    newest: dict[tuple[str, str], int] = {}
    for res in rows.results:
        i = order.get(res.run_id)
        if i is None or res.status == TestStatus.SKIPPED.value:
            continue
        key = (res.domain, res.test)
        if res.run_id == baseline:
            out[key] = (res.status, f"baseline {baseline}")
            newest[key] = len(order)  # the baseline wins over any later run
        elif newest.get(key, -1) < i:
            out[key] = (res.status, f"run {res.run_id}")
            newest[key] = i
    return out


def triage(
    results: Sequence[TestResult],
    refs: dict[tuple[str, str], tuple[str, str]],
    *,
    known: Iterable[KnownFailure] = (),
    known_label: str = "the known-failures file",
    kernel: str | None = None,
    module_version: str | None = None,
    today: dt.date | None = None,
    first_run: bool = False,
) -> list[Suspect]:
    """The tests of ``results`` that need a verdict (see the module doc)."""
    today = today or dt.date.today()
    listed = {k.key: k for k in known}
    out: list[Suspect] = []
    for r in results:
        now = r.status.value
        if not (r.status.bad or r.status is TestStatus.PASSED):
            continue
        before, ref = refs.get((r.domain, r.name), ("", ""))
        base = Suspect(r.domain, r.name, now, before, ref)
        note = ""
        entry = listed.get((r.domain, r.name))
        if entry is not None:
            applies, why = entry.applies(kernel, module_version)
            if applies and now == PASSED:
                out.append(_with(base, Verdict.KNOWN_FIXED,
                                 f"listed in {known_label} (entry {entry.index}) but passes: fixed, remove it"))
                continue
            if applies and r.status.bad:
                if not entry.expired(today):
                    out.append(_with(base, Verdict.KNOWN, "; ".join(filter(None, [entry.reason, why]))))
                    continue
                note = f"known failure expired on {entry.expires}: counts again ({entry.reason})"
        if r.status.bad and before in BAD:
            out.append(_with(base, Verdict.STILL_FAILING, note))
        elif r.status.bad and (before or not first_run or note):
            out.append(_with(base, None, note))
        elif before in BAD:
            out.append(_with(base, None, note))
    return out


def _with(s: Suspect, verdict: Verdict | None, note: str) -> Suspect:
    return Suspect(s.domain, s.test, s.now, s.before, s.reference, verdict, note)
