"""Per-test verdicts for the newest run of an environment.

Definitions (what ``analyze`` prints):

- *reference*: the env's baseline run if one is set (``baseline set``), else the run of
  that env just before the newest one.
- *regression*: bad (FAILED/TIMEOUT/ERROR) now, passed in the reference (or not run
  there: a new test that fails). *fixed*: passed now, bad in the reference.
  *still failing*: bad in both.
- *confirmed*: a regression or fix of the analysed run that the run itself rerun on a
  fresh VM (engine/confirm.py, stored as test_verdicts) is named by those reruns: one
  whose failure did not reproduce is *flaky*, never a regression.
- *known*: bad now and listed, unexpired, in the env's known-failures file; such a test
  is not a regression. An *expired* entry no longer hides its test (the verdict says
  so); an entry whose test passed now is reported "fixed, remove it".
- *flaky*: over the runs analysed (same env, oldest first, skips left out) the outcome
  flipped between pass and bad at least ``flaky_min_flips`` times; the flip rate is
  flips / (outcomes - 1). One flip is a regression or a fix, not flakiness. The runs
  compared run the same code: the same env, guest kernel release and module commit (or
  tree hash) as the run's provenance records them; a run without provenance (before
  schema v5) is grouped by env, and by guest kernel when its config named a release.
- *anomaly*: the newest run's duration or metric value x of a test, against the same
  test's values in the earlier runs (at least ``min_history`` of them): median m,
  MAD = median(|v - m|); x is an anomaly when |x - m| > k * max(MAD, 5% of |m|). The
  5% floor keeps a history of identical values (MAD 0) from flagging any jitter.
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from vexfs_cockpit.analysis.known import KnownFailure
from vexfs_cockpit.store.history import BAD, AnalysisRows, AnalysisRun
from vexfs_cockpit.store.report import VerdictRecord

PASSED = "PASSED"
MAD_FLOOR = 0.05  # of |median|: the spread a history of identical values is granted


@dataclass(frozen=True, slots=True)
class Settings:
    mad_k: float = 4.0
    min_history: int = 5
    flaky_min_flips: int = 2
    audit_runs: int = 3


@dataclass(frozen=True, slots=True)
class Verdict:
    domain: str
    test: str
    kind: str  # regression | flaky | fixed | still-failing | known | known-expired | known-fixed
    before: str | None  # status in the reference run
    after: str | None  # status in the analysed run
    note: str = ""


@dataclass(frozen=True, slots=True)
class Flaky:
    domain: str
    test: str
    flips: int
    outcomes: int
    flip_rate: float


@dataclass(frozen=True, slots=True)
class Anomaly:
    domain: str
    test: str
    what: str  # "duration_s" or a metric name
    value: float
    median: float
    mad: float
    score: float  # |value - median| / max(MAD, floor): compare with k
    history: int


@dataclass
class Analysis:
    env: str
    run_id: str | None  # the analysed (newest) run
    reference: str | None
    reference_kind: str  # baseline | previous run | none
    grouping: str  # how runs were grouped for flakiness and anomalies
    runs: int
    verdicts: list[Verdict] = field(default_factory=list)
    flaky: list[Flaky] = field(default_factory=list)
    anomalies: list[Anomaly] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def of(self, kind: str) -> list[Verdict]:
        return [v for v in self.verdicts if v.kind == kind]

    @property
    def clean(self) -> bool:
        return not (self.of("regression") or self.of("known-expired") or self.of("flaky") or self.flaky or self.anomalies)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _is_bad(status: str | None) -> bool:
    return status in BAD


def _flips(outcomes: Sequence[bool]) -> int:
    return sum(1 for x, y in zip(outcomes, outcomes[1:]) if x != y)


def robust(values: Sequence[float]) -> tuple[float, float]:
    """(median, MAD) of ``values``."""
    med = statistics.median(values)
    return med, statistics.median(abs(v - med) for v in values)


def outlier_score(value: float, history: Sequence[float]) -> tuple[float, float, float]:
    """(score, median, MAD): |value - median| over max(MAD, 5% of |median|)."""
    med, mad = robust(history)
    scale = max(mad, MAD_FLOOR * abs(med), 1e-12)
    return abs(value - med) / scale, med, mad


def _group(runs: list[AnalysisRun], current: AnalysisRun) -> tuple[list[AnalysisRun], str]:
    """The runs whose code is comparable to ``current``'s: its env, and its code identity
    (guest kernel release + module commit or tree hash, from the run's provenance) when
    it recorded one, else its guest kernel when the config named a concrete one."""
    same = [r for r in runs if r.env == current.env]
    if current.code:
        same = [r for r in same if r.code == current.code]
        dirty = " (uncommitted edits may differ between these runs)" if "+dirty" in current.code else ""
        return same, f"env {current.env!r}, same code: {current.code}{dirty}"
    kernel = current.guest_kernel
    if kernel and kernel not in ("auto", "host"):
        same = [r for r in same if r.guest_kernel == kernel]
        return same, (f"env {current.env!r}, guest kernel {kernel} (the run recorded no module source: "
                      "the module's code may differ between these runs)")
    return same, (f"env {current.env!r} (the run recorded no code identity: "
                  "runs grouped by env, so the code may differ between them)")


def analyze(
    rows: AnalysisRows,
    *,
    env: str,
    baseline: str | None = None,
    known: Iterable[KnownFailure] = (),
    settings: Settings = Settings(),
    today: dt.date | None = None,
    module_version: str | None = None,
    since: float | None = None,
) -> Analysis:
    """The verdicts for the newest run of ``env`` in ``rows`` (see the module doc);
    ``since``: the period's start (earlier runs in ``rows``, a baseline, are no history)."""
    today = today or dt.date.today()
    runs = [r for r in rows.runs if r.env == env]
    if not runs:
        return Analysis(env, None, None, "none", "", 0, notes=[f"no finished runs of env {env!r}"])
    # the baseline may have been read from before the period: it is no history then
    in_period = [r for r in runs if since is None or r.started_at >= since] or runs[-1:]
    current = in_period[-1]
    group, grouping = _group([r for r in in_period if r.started_at <= current.started_at], current)
    by_run: dict[str, dict[tuple[str, str], str]] = {}
    for res in rows.results:
        by_run.setdefault(res.run_id, {})[(res.domain, res.test)] = res.status

    if baseline and baseline != current.run_id and baseline in {r.run_id for r in runs}:
        ref, ref_kind = baseline, "baseline"
    else:
        earlier = [r for r in in_period if r.started_at < current.started_at or
                   (r.started_at == current.started_at and r.run_id < current.run_id)]
        ref, ref_kind = (earlier[-1].run_id, "previous run") if earlier else (None, "none")
    out = Analysis(env, current.run_id, ref, ref_kind, grouping, len(group))
    if baseline and ref_kind != "baseline":
        out.notes.append(f"baseline {baseline} is not a finished run of env {env!r} (or is the analysed run): "
                         "compared with the previous run")

    now, before = by_run.get(current.run_id, {}), by_run.get(ref, {}) if ref else {}
    known_by_key = {k.key: k for k in known}
    for key in sorted(now.keys() | before.keys() | known_by_key.keys()):
        sa, sb = before.get(key), now.get(key)
        entry = known_by_key.get(key)
        if entry is not None and sb is not None:
            applies, why = entry.applies(current.guest_kernel, module_version)
            if sb == PASSED:
                out.verdicts.append(Verdict(*key, "known-fixed", sa, sb,
                                            f"listed as a known failure (entry {entry.index}) but passes: fixed, remove it"))
                continue
            if _is_bad(sb) and applies:
                if entry.expired(today):
                    out.verdicts.append(Verdict(*key, "known-expired", sa, sb,
                                                f"known failure expired on {entry.expires}: counts again ({entry.reason})"))
                else:
                    note = "; ".join(filter(None, [entry.reason, why]))
                    out.verdicts.append(Verdict(*key, "known", sa, sb, note))
                continue
        if _is_bad(sb) and not _is_bad(sa):
            out.verdicts.append(Verdict(*key, "regression", sa, sb, "" if sa else "not run in the reference"))
        elif _is_bad(sa) and sb == PASSED:
            out.verdicts.append(Verdict(*key, "fixed", sa, sb))
        elif _is_bad(sa) and _is_bad(sb):
            out.verdicts.append(Verdict(*key, "still-failing", sa, sb))

    # flakiness over the group, oldest first
    outcomes: dict[tuple[str, str], list[bool]] = {}
    for run in group:
        for key, status in sorted(by_run.get(run.run_id, {}).items()):
            if status == PASSED or _is_bad(status):
                outcomes.setdefault(key, []).append(status == PASSED)
    for key, seq in sorted(outcomes.items()):
        flips = _flips(seq)
        if flips >= settings.flaky_min_flips:
            out.flaky.append(Flaky(*key, flips, len(seq), round(flips / (len(seq) - 1), 3)))

    # a regression of a flaky test is probably its flakiness: say so where it is read
    flaky_keys = {(f.domain, f.test): f for f in out.flaky}
    out.verdicts = [
        Verdict(v.domain, v.test, v.kind, v.before, v.after,
                "; ".join(filter(None, [v.note, f"flaky ({flaky_keys[(v.domain, v.test)].flip_rate:.0%} flip rate)"])))
        if v.kind == "regression" and (v.domain, v.test) in flaky_keys else v
        for v in out.verdicts
    ]

    # what the run's own reruns on a fresh VM showed overrides what the history suggests
    confirmed = {(d, t): v for (rid, d, t), v in rows.verdicts.items() if rid == current.run_id}
    out.verdicts = [_confirmed(v, confirmed.get((v.domain, v.test))) for v in out.verdicts]

    # anomalies: the current run's values against the earlier runs of the group
    earlier_ids = [r.run_id for r in group if r.run_id != current.run_id]
    values: dict[tuple[str, str, str], dict[str, float]] = {}
    for res in rows.results:
        if res.status == PASSED or _is_bad(res.status):
            values.setdefault((res.domain, res.test, "duration_s"), {})[res.run_id] = res.duration_s
    for m in rows.metrics:
        values.setdefault((m.domain, m.test, m.name), {})[m.run_id] = m.value
    for (domain, test, what), per_run in sorted(values.items()):
        if current.run_id not in per_run:
            continue
        history = [per_run[r] for r in earlier_ids if r in per_run]
        if len(history) < settings.min_history:
            continue
        value = per_run[current.run_id]
        score, med, mad = outlier_score(value, history)
        if score > settings.mad_k:
            out.anomalies.append(Anomaly(domain, test, what, value, med, mad, round(score, 1), len(history)))
    return out


def _confirmed(v: Verdict, c: VerdictRecord | None) -> Verdict:
    """``v`` as the run's confirmation reruns left it (``c``: their stored verdict)."""
    if c is None or v.kind not in ("regression", "fixed") or not c.reruns:
        return v
    if c.verdict == "flaky":
        note = f"did not hold up in its reruns ({c.note})" if v.kind == "fixed" else f"did not reproduce ({c.note})"
        return Verdict(v.domain, v.test, "flaky", v.before, v.after, "; ".join(filter(None, [note, v.note])))
    if c.verdict == v.kind:
        return Verdict(v.domain, v.test, v.kind, v.before, v.after,
                       "; ".join(filter(None, [f"confirmed: {c.note}" if c.note else "confirmed", v.note])))
    return v


@dataclass(frozen=True, slots=True)
class AuditLine:
    entry: KnownFailure
    verdict: str  # drop | keep
    why: str


def audit(
    rows: AnalysisRows,
    known: Iterable[KnownFailure],
    *,
    env: str,
    settings: Settings = Settings(),
    today: dt.date | None = None,
) -> list[AuditLine]:
    """Which known-failure entries to drop: expired, or passing in each of the env's
    last ``audit_runs`` runs that ran the test."""
    today = today or dt.date.today()
    order = [r.run_id for r in rows.runs if r.env == env]
    status: dict[tuple[str, str], dict[str, str]] = {}
    for res in rows.results:
        status.setdefault((res.domain, res.test), {})[res.run_id] = res.status
    out: list[AuditLine] = []
    for entry in known:
        if entry.expired(today):
            out.append(AuditLine(entry, "drop", f"expired on {entry.expires}"))
            continue
        seen = [status.get(entry.key, {}).get(r) for r in order]
        ran = [s for s in seen if s is not None and s != "SKIPPED"]
        last = ran[-settings.audit_runs:]
        if not ran:
            out.append(AuditLine(entry, "keep", f"not run in the {len(order)} run(s) looked at"))
        elif len(last) >= settings.audit_runs and all(s == PASSED for s in last):
            out.append(AuditLine(entry, "drop", f"passed in the last {len(last)} runs that ran it"))
        elif last[-1] == PASSED:
            out.append(AuditLine(entry, "keep", f"passed last time, but only {sum(s == PASSED for s in last)} "
                                                f"of the last {len(last)} runs: not yet"))
        else:
            out.append(AuditLine(entry, "keep", f"still {last[-1]} in the latest run that ran it"))
    return out
