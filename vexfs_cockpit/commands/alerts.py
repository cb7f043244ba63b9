"""`vexfs-cockpit alerts rules|check|test`: the ``monitoring.alerts`` config as a
Prometheus rules file, checked against a stored run, or a sample sent to the webhook
(vexfs_cockpit/monitoring/alerts.py, webhook.py)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("alerts", help="alert rules: Prometheus rules file, check a run, test the webhook",
                              description=__doc__)
    sub = p.add_subparsers(dest="alerts_command", metavar="ACTION", required=True)
    rules = sub.add_parser("rules", help="write monitoring.alerts as a Prometheus rules file")
    rules.add_argument("--output", "-o", metavar="FILE", help="rules file to write (default: stdout)")
    check = sub.add_parser("check", help="evaluate the alerts against a stored run; exit 1 if any fires")
    check.add_argument("run", metavar="RUN", nargs="?", default="latest", help="run id, unique prefix, latest or prev")
    check.add_argument("--notify", action="store_true", help="also POST firing alerts to the webhook")
    test = sub.add_parser("test", help="POST a sample alert to the webhook ($VEXFS_COCKPIT_WEBHOOK_URL)")
    for s in (rules, check, test):
        s.add_argument("--config", metavar="FILE", help="profile YAML or name (default: configs/default.yaml)")
        s.add_argument("--env", metavar="ENV", help="environment overlay: dev, test or ci")
        s.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], help="override a config key")
    check.add_argument("--db", metavar="PATH|URL", help="history DB: an SQLite file or postgresql://[user@]host/db (default: $VEXFS_COCKPIT_DB, store.url or the data dir)")
    rules.set_defaults(handler=cmd_rules)
    check.set_defaults(handler=cmd_check)
    test.set_defaults(handler=cmd_test)


def cmd_rules(args: argparse.Namespace) -> int:
    from vexfs_cockpit.config.load import config_from_args
    from vexfs_cockpit.errors import ReportError
    from vexfs_cockpit.monitoring.alerts import rules_yaml

    text = rules_yaml(config_from_args(args, runs_domains=False).monitoring.alerts)
    if not args.output:
        print(text, end="")
        return 0
    out = Path(args.output)
    try:
        out.write_text(text)
    except OSError as exc:
        raise ReportError(f"cannot write {out}: {exc.strerror}") from None
    print(f"alerts: wrote {out}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from vexfs_cockpit.config.load import config_from_args
    from vexfs_cockpit.monitoring.alerts import check_run, resolve_run
    from vexfs_cockpit.store.db import resolve_location

    cfg = config_from_args(args, runs_domains=False)
    db = resolve_location(args.db, cfg.store.location)
    report = resolve_run(db, args.run)
    firing = check_run(db, report, cfg.monitoring.alerts)
    for f in firing:
        print(f.line())
    print(f"alerts: run {report.run.run_id}: {len(firing)} alert(s) firing from {len(cfg.monitoring.alerts)} rule(s)")
    if firing and args.notify:
        import asyncio

        from vexfs_cockpit.monitoring.webhook import WebhookError, message, post, record_dead_letter, webhook_url

        m = cfg.monitoring
        run_id = report.run.run_id
        try:
            n = post(webhook_url(m.webhook_url_env), message(firing, run_id, m.webhook_format),
                     timeout_s=m.webhook_timeout_s, retries=m.webhook_retries)
        except WebhookError as err:  # the dead letter: kept with the run, then the error
            asyncio.run(record_dead_letter(db, run_id, f"{len(firing)} alert(s) not delivered: {err}"))
            raise
        print(f"alerts: webhook took it (attempt {n})")
    return 1 if firing else 0


def cmd_test(args: argparse.Namespace) -> int:
    from vexfs_cockpit.config.load import config_from_args
    from vexfs_cockpit.monitoring.alerts import Firing
    from vexfs_cockpit.monitoring.webhook import message, post, webhook_url

    m = config_from_args(args, runs_domains=False).monitoring
    url = webhook_url(m.webhook_url_env)
    sample = [Firing("SampleAlert", "info", "a test message from `vexfs-cockpit alerts test`; nothing is wrong")]
    n = post(url, message(sample, "sample", m.webhook_format), timeout_s=m.webhook_timeout_s, retries=m.webhook_retries)
    print(f"alerts: sample sent to ${m.webhook_url_env} (attempt {n})")
    return 0
