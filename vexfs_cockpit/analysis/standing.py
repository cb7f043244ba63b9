"""Where each domain stands before the next run: its last result, its pass-rate trend
and its open regressions (the dashboard's view while no run is on).

A pure function over ``store.history.AnalysisRows`` of one environment, like the
rest of ``analysis``: the open regressions are ``regressions.analyze``'s verdicts of
the env's newest run against its baseline (or the run before it), so the dashboard
and ``vexfs-cockpit analyze`` never disagree.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from vexfs_cockpit.analysis.known import KnownFailure
from vexfs_cockpit.analysis.regressions import PASSED, Settings, analyze
from vexfs_cockpit.store.history import BAD, AnalysisRows

TREND_RUNS = 12  # the newest runs of a domain that its sparkline shows


@dataclass(frozen=True, slots=True)
class DomainStanding:
    domain: str
    runs: int  # runs of this env in the rows that ran a test of this domain
    last_run_id: str | None = None
    last_at: float | None = None  # wall clock of that run's start
    last_passed: int = 0
    last_bad: int = 0  # FAILED / TIMEOUT / ERROR in that run
    pass_rates: tuple[float, ...] = ()  # oldest first, the newest TREND_RUNS runs
    regressions: tuple[str, ...] = ()  # tests bad now that passed in the reference
    known: int = 0  # bad tests the env's known-failures file expects
    reference: str = ""  # what the regressions are against: "baseline run-x" | "previous run run-y" | ""

    @property
    def last_status(self) -> str | None:
        """passed | failed, None when the domain never ran in this env."""
        if self.last_run_id is None:
            return None
        return "failed" if self.last_bad else "passed"


def domain_standing(
    rows: AnalysisRows,
    *,
    env: str,
    domains: Sequence[str],
    baseline: str | None = None,
    known: Iterable[KnownFailure] = (),
    settings: Settings = Settings(),
) -> list[DomainStanding]:
    """One ``DomainStanding`` per name in ``domains``, in that order."""
    runs = [r for r in rows.runs if r.env == env]
    order = {r.run_id: i for i, r in enumerate(runs)}
    # per domain, per run (oldest first): passed and bad counts of its tests' last results
    counts: dict[str, dict[str, list[int]]] = {}
    for res in rows.results:
        if res.run_id not in order:
            continue
        per_run = counts.setdefault(res.domain, {}).setdefault(res.run_id, [0, 0])
        if res.status == PASSED:
            per_run[0] += 1
        elif res.status in BAD:
            per_run[1] += 1
    verdicts = analyze(rows, env=env, baseline=baseline, known=known, settings=settings) if runs else None
    reference = ""
    if verdicts is not None and verdicts.reference:
        reference = f"{verdicts.reference_kind} {verdicts.reference}"

    out: list[DomainStanding] = []
    for domain in domains:
        ran = sorted(((rid, c) for rid, c in counts.get(domain, {}).items() if sum(c)), key=lambda kv: order[kv[0]])
        if not ran:
            out.append(DomainStanding(domain, 0))
            continue
        assert verdicts is not None  # the domain ran in a run of env
        last_id, (passed, bad) = ran[-1]
        # only the newest run's verdicts are open: a domain that did not run in it has none
        mine = [v for v in verdicts.verdicts if v.domain == domain] if last_id == verdicts.run_id else []
        out.append(DomainStanding(
            domain,
            runs=len(ran),
            last_run_id=last_id,
            last_at=runs[order[last_id]].started_at,
            last_passed=passed,
            last_bad=bad,
            pass_rates=tuple(p / (p + b) for _, (p, b) in ran[-TREND_RUNS:]),
            regressions=tuple(v.test for v in mine if v.kind == "regression"),
            known=sum(1 for v in mine if v.kind == "known"),
            reference=reference,
        ))
    return out
