"""docs/grafana/cockpit.json is data: every query in it names only series the exporter
emits (and does emit for a generated history). The real Prometheus test
(test_monitoring_prometheus.py) evaluates each query too."""

from __future__ import annotations

import json
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from tests.support.monitoring import DASHBOARD, ROOT, as_promql, dashboard_exprs, make_history  # noqa: F401
from vexfs_cockpit.engine.events import VmReady
from vexfs_cockpit.monitoring import exporter as x
from vexfs_cockpit.monitoring import live

NAME = re.compile(r"\bvexfs_cockpit_[a-z0-9_]+")
# Grafana's own variables, as the Prometheus test stands them in


def test_every_query_names_an_exported_series(tmp_path: Path) -> None:
    exprs = dashboard_exprs()
    assert len(exprs) >= 12
    emitted = {s.name for fam in text_string_to_metric_families(x.exposition(make_history(tmp_path / "h.db")).decode())
               for s in fam.samples}
    # A session's live series (monitoring.listen), after a VM came up.
    metrics = live.LiveMetrics(live.CollectorRegistry())
    metrics.feed(VmReady(vm="vm-0", mode="restore", seconds=0.4))
    emitted |= {s.name for fam in metrics.ready.collect() + metrics.in_progress.collect() for s in fam.samples}
    known = x.ALL_SERIES | live.ALL_SERIES
    for expr in exprs:
        names = set(NAME.findall(expr))
        assert names, f"no cockpit metric in {expr!r}"
        assert names <= known, f"{expr!r} names {names - known}"
        assert names <= emitted, f"{expr!r}: {names - emitted} not in the exposition of a generated history"


def test_the_dashboard_shows_every_family() -> None:
    used = {n for e in dashboard_exprs() for n in NAME.findall(e)}
    for family, series in x.SERIES_NAMES.items():
        if family == x.VM_SAMPLE_TS:  # freshness only, not charted
            continue
        assert used & set(series), f"{family} is on no panel"


def test_panels_are_well_formed() -> None:
    dash = json.loads(DASHBOARD.read_text())
    ids = [p["id"] for p in dash["panels"]]
    assert len(ids) == len(set(ids))
    assert dash["uid"] == "vexfs-cockpit"
    for p in dash["panels"]:
        assert p["datasource"]["type"] == "prometheus" and p["targets"] and set(p["gridPos"]) == {"x", "y", "w", "h"}
        assert [t["refId"] for t in p["targets"]] == [chr(65 + i) for i in range(len(p["targets"]))]
