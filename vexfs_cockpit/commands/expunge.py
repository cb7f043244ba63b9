"""`vexfs-cockpit expunge audit [--env E]`: which entries of the env's known-failures
file (configs/known-failures/<env>.yaml) to remove: expired ones, and ones whose test
passed in each of the last `analysis.audit_runs` runs that ran it. Exits 1 when an
entry should go."""

from __future__ import annotations

import argparse
import sys
from typing import Any, TextIO


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    from vexfs_cockpit.commands.analyze import common_args

    p = subparsers.add_parser("expunge", help="audit the known-failures (expunge) files", description=__doc__)
    sub = p.add_subparsers(dest="expunge_cmd", metavar="{audit}", required=True)
    a = sub.add_parser("audit", help="list known-failure entries to remove")
    common_args(a)
    a.add_argument("--period", help="only runs of the last PERIOD, e.g. 30d")
    p.set_defaults(handler=cmd_expunge)
    return p


def cmd_expunge(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from vexfs_cockpit.analysis.regressions import audit
    from vexfs_cockpit.analysis.render import audit_text
    from vexfs_cockpit.commands.analyze import context, known_for, pick_env
    from vexfs_cockpit.store.history import since_period

    out = out or sys.stdout
    ctx = context(args)
    env = pick_env(ctx, args.env)
    known, label, exists = known_for(ctx, env)
    if not exists:
        print(f"{label}: no such file: no known failures listed for env {env!r}", file=out)
        return 0
    rows = ctx.hist.analysis_rows(env=env, since=since_period(args.period))
    lines = audit(rows, known, env=env, settings=ctx.settings)
    out.write(audit_text(lines, label))
    return 1 if any(x.verdict == "drop" for x in lines) else 0
