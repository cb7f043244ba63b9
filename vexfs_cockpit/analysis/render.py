"""Plain-text tables of an Analysis and of an expunge audit (the --json form is
``Analysis.as_dict``)."""

from __future__ import annotations

from collections.abc import Sequence

from vexfs_cockpit.analysis.regressions import Analysis, AuditLine

_ORDER = ("regression", "flaky", "known-expired", "still-failing", "known", "known-fixed", "fixed")


def table(rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]


def _num(x: float) -> str:
    return f"{x:.4g}"


def analysis_text(a: Analysis) -> str:
    lines: list[str] = []
    if a.run_id is None:
        return "\n".join([f"analyze env {a.env!r}: nothing to analyse", *a.notes]) + "\n"
    ref = f"{a.reference_kind} {a.reference}" if a.reference else "nothing (first run of the env)"
    lines.append(f"analyze env {a.env!r}: run {a.run_id} against {ref}")
    lines.append(f"history: {a.runs} run(s) of {a.grouping}")
    lines += [f"note: {n}" for n in a.notes]
    verdicts = sorted(a.verdicts, key=lambda v: (_ORDER.index(v.kind), v.domain, v.test))
    if verdicts:
        lines.append("")
        lines += table([("verdict", "test", "before", "now", "note"),
                        *[(v.kind, f"{v.domain}/{v.test}", v.before or "-", v.after or "-", v.note)
                          for v in verdicts]])
    if a.flaky:
        lines.append("")
        lines += table([("flaky", "flips", "rate"),
                        *[(f"{f.domain}/{f.test}", f"{f.flips}/{f.outcomes - 1}", f"{f.flip_rate:.0%}")
                          for f in a.flaky]])
    if a.anomalies:
        lines.append("")
        lines += table([("anomaly", "value", "median", "MAD", "score", "runs"),
                        *[(f"{x.domain}/{x.test} {x.what}", _num(x.value), _num(x.median), _num(x.mad),
                           f"{x.score:g}", str(x.history)) for x in a.anomalies]])
    counts = {k: len(a.of(k)) for k in _ORDER}
    lines.append("")
    lines.append(
        f"{counts['regression']} regression(s), {counts['fixed']} fixed, {counts['still-failing']} still failing, "
        f"{counts['known']} known ({counts['known-expired']} expired, {counts['known-fixed']} fixed: remove), "
        f"{len({(f.domain, f.test) for f in a.flaky} | {(v.domain, v.test) for v in a.of('flaky')})} flaky, "
        f"{len(a.anomalies)} anomal{'y' if len(a.anomalies) == 1 else 'ies'}"
    )
    if a.clean:
        lines.append("nothing new: no regressions, flaky tests or anomalies")
    return "\n".join(lines) + "\n"


def audit_text(lines_: Sequence[AuditLine], path_label: str) -> str:
    if not lines_:
        return f"{path_label}: no known failures listed\n"
    rows = [("entry", "test", "verdict", "why"),
            *[(str(x.entry.index), f"{x.entry.domain}/{x.entry.test}", x.verdict, x.why) for x in lines_]]
    drop = sum(x.verdict == "drop" for x in lines_)
    return "\n".join([f"{path_label}:", *table(rows), "", f"{drop} of {len(lines_)} entr"
                      f"{'y' if len(lines_) == 1 else 'ies'} to remove"]) + "\n"
