"""Alert rules (config ``monitoring.alerts``) two ways: as a Prometheus rules file over
the exporter's metrics (``rules_document``), and checked directly against one stored
run (``check_run``). Both read the same thing:

- failure_rate: a domain's bad / (passed + bad) in the run is above ``threshold``
  (a ratio; Prometheus: ``vexfs_cockpit_domain_failure_ratio``, the newest run of each
  env/domain);
- test_timeout: a test of the run timed out (``vexfs_cockpit_domain_last_run_tests``
  with status timeout);
- kernel_crash: the run raised an unexpected kernel report of a crash kind
  (panic, oops, BUG, GPF, KASAN, KFENCE; Prometheus: an increase of
  ``vexfs_cockpit_kernel_reports_total{expected="false"}`` of those kinds);
- metric_regression: a stored metric (higher is worse: times, sizes) grew by more than
  ``threshold`` percent over its value in the run before
  (``vexfs_cockpit_domain_metric_value`` vs ``..._baseline_value``);
- new_regression: a test of the run is a new regression, its change confirmed by
  reruns on a fresh VM (engine/confirm.py; ``vexfs_cockpit_domain_last_run_verdicts``
  with verdict regression).

``domain`` narrows a rule to one domain.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from vexfs_cockpit.config.models import AlertRule
from vexfs_cockpit.engine.confirm import Verdict
from vexfs_cockpit.errors import ConfigError, UsageError
from vexfs_cockpit.monitoring import exporter as x
from vexfs_cockpit.monitoring.queries import metric_baseline, run_metrics
from vexfs_cockpit.store.db import history_exists
from vexfs_cockpit.store.history import History
from vexfs_cockpit.store.location import StoreLocation
from vexfs_cockpit.store.report import CRASH_KINDS, RunReport

GROUP = "vexfs-cockpit"
REGRESSION = Verdict.REGRESSION.value
# How far back a rule over a counter looks for an increase: longer than a scrape
# interval and short enough that an alert clears on its own.
CRASH_WINDOW = "15m"


@dataclass(frozen=True, slots=True)
class Firing:
    rule: str
    severity: str
    summary: str  # one line: what fired and where
    labels: dict[str, str] = field(default_factory=dict)

    def line(self) -> str:
        return f"FIRING {self.rule} [{self.severity}] {self.summary}"


def validate(rules: Sequence[AlertRule]) -> None:
    names = [r.name for r in rules]
    dups = sorted({n for n in names if names.count(n) > 1})
    if dups:
        raise ConfigError(f"monitoring.alerts: names must be unique, {', '.join(dups)} repeats")
    for r in rules:
        if r.kind == "failure_rate" and not 0 <= r.threshold < 1:
            raise ConfigError(f"monitoring.alerts {r.name}: failure_rate threshold is a ratio in [0, 1), e.g. 0.2")
        if r.kind == "metric_regression" and (not r.metric or r.threshold <= 0):
            raise ConfigError(f"monitoring.alerts {r.name}: metric_regression needs metric and threshold (percent > 0)")


def _sel(**labels: str) -> str:
    inner = ",".join(f'{k}="{v}"' for k, v in labels.items() if v)
    return "{" + inner + "}" if inner else ""


def expr(rule: AlertRule) -> str:
    """The PromQL of a rule, over the exporter's metric names."""
    dom = {"domain": rule.domain}
    if rule.kind == "failure_rate":
        return f"{x.DOMAIN_FAILURE_RATIO}{_sel(**dom)} > {rule.threshold:g}"
    if rule.kind == "test_timeout":
        return f"{x.DOMAIN_LAST_RUN_TESTS}{_sel(**dom, status='timeout')} > 0"
    if rule.kind == "kernel_crash":
        kinds = "|".join(sorted(CRASH_KINDS))
        return (f'sum by (kind) (increase({x.KERNEL_REPORTS_TOTAL}{{kind=~"{kinds}",expected="false"}}'
                f"[{CRASH_WINDOW}])) > 0")
    if rule.kind == "new_regression":
        return f"{x.DOMAIN_LAST_RUN_VERDICTS}{_sel(**dom, verdict=REGRESSION)} > 0"
    if rule.kind == "metric_regression":
        s = _sel(**dom, metric=rule.metric)
        now, base = f"{x.METRIC_VALUE}{s}", f"{x.METRIC_BASELINE}{s}"
        return f"(({now} - {base}) / {base} * 100 > {rule.threshold:g}) and {base} > 0"
    raise ConfigError(f"monitoring.alerts {rule.name}: unknown kind {rule.kind}")


def _summary_template(rule: AlertRule) -> str:
    if rule.kind == "failure_rate":
        return f"{{{{ $labels.domain }}}} ({{{{ $labels.env }}}}) failure rate {{{{ $value }}}} > {rule.threshold:g}"
    if rule.kind == "test_timeout":
        return "{{ $value }} {{ $labels.domain }} test(s) timed out ({{ $labels.env }})"
    if rule.kind == "kernel_crash":
        return "kernel {{ $labels.kind }} report(s) in the last " + CRASH_WINDOW
    if rule.kind == "new_regression":
        return "{{ $value }} new regression(s) in {{ $labels.domain }} ({{ $labels.env }}), confirmed on a fresh VM"
    return (f"{rule.metric} of {{{{ $labels.domain }}}}/{{{{ $labels.test }}}} ({{{{ $labels.env }}}}) "
            f"up {{{{ $value }}}}% (> {rule.threshold:g}%)")


def rules_document(rules: Sequence[AlertRule]) -> dict[str, Any]:
    validate(rules)
    return {"groups": [{
        "name": GROUP,
        "rules": [{
            "alert": r.name,
            "expr": expr(r),
            "labels": {"severity": r.severity, "alert_kind": r.kind},
            "annotations": {"summary": _summary_template(r)},
        } for r in rules],
    }]}


def rules_yaml(rules: Sequence[AlertRule]) -> str:
    return "# Generated by `vexfs-cockpit alerts rules` from monitoring.alerts; do not edit.\n" + yaml.safe_dump(
        rules_document(rules), sort_keys=False, width=200)


# -- checking a stored run -------------------------------------------------------------
def resolve_run(db: StoreLocation, ref: str) -> RunReport:
    if not history_exists(db):
        raise UsageError(f"no history DB at {db}: run some tests first, or give --db")
    hist = History(db)
    run_id = hist.resolve_run_id(ref)
    report = hist.run_detail(run_id) if run_id else None
    if report is None:
        raise UsageError(f"no run {ref!r} in {db}" + (" (it is empty)" if ref == "latest" else ""))
    return report


def check_run(db: StoreLocation, report: RunReport, rules: Sequence[AlertRule]) -> list[Firing]:
    validate(rules)
    out: list[Firing] = []
    env = report.run.env
    for rule in rules:
        doms = [d for d in report.domains if not rule.domain or d.name == rule.domain]
        if rule.kind == "failure_rate":
            for d in doms:
                t = d.tally()
                passed, bad = t.get("PASSED", 0), sum(t.get(s, 0) for s in ("FAILED", "TIMEOUT", "ERROR"))
                if passed + bad and bad / (passed + bad) > rule.threshold:
                    out.append(Firing(rule.name, rule.severity,
                                      f"{d.name} failure rate {bad}/{passed + bad} = {bad / (passed + bad):.2f}"
                                      f" > {rule.threshold:g} (env {env})", {"domain": d.name, "env": env}))
        elif rule.kind == "test_timeout":
            for d in doms:
                names = [t.name for t in d.tests if str(t.status) == "TIMEOUT"]
                if names:
                    out.append(Firing(rule.name, rule.severity, f"{d.name}: {len(names)} test(s) timed out: "
                                      + ", ".join(names[:5]) + (" ..." if len(names) > 5 else ""),
                                      {"domain": d.name, "env": env}))
        elif rule.kind == "kernel_crash":
            for k in report.kernel_events:
                if k.expected or k.report.kind not in CRASH_KINDS or (rule.domain and k.domain != rule.domain):
                    continue
                where = f"{k.domain}/{k.test}" if k.test else (k.domain or k.vm or "the run")
                out.append(Firing(rule.name, rule.severity, f"kernel {k.report.kind} in {where}: {k.report.title}",
                                  {"kind": k.report.kind, "domain": k.domain, "env": env}))
        elif rule.kind == "new_regression":
            for (domain, test), v in sorted(report.verdicts.items()):
                if v.verdict == REGRESSION and (not rule.domain or domain == rule.domain):
                    out.append(Firing(rule.name, rule.severity, f"{domain}/{test}: new regression "
                                      f"({v.now} now{', ' + v.note if v.note else ''})",
                                      {"domain": domain, "test": test, "env": env}))
        elif rule.kind == "metric_regression":
            for m_env, domain, test, name, value, ts in run_metrics(db, report.run.run_id):
                if name != rule.metric or (rule.domain and domain != rule.domain):
                    continue
                base = metric_baseline(db, m_env, domain, test, name, ts)
                if base is None or base <= 0:
                    continue
                pct = (value - base) / base * 100
                if pct > rule.threshold:
                    where = f"{domain}/{test}" if test else domain
                    out.append(Firing(rule.name, rule.severity,
                                      f"{name} of {where} {value:g} vs {base:g} before: +{pct:.0f}% > {rule.threshold:g}%",
                                      {"domain": domain, "test": test, "metric": name, "env": m_env}))
    return out
