"""`vexfs-cockpit analyze [--env E] [--domain D] [--period 7d] [--json] [--check]`:
the newest finished run of an env against its baseline (`baseline set`) or else the
run before it: regressions, fixed, still failing, known failures
(configs/known-failures/<env>.yaml), flaky tests and duration/metric anomalies
(k * MAD from the test's own history; `analysis:` in the config).
Definitions: vexfs_cockpit/analysis/regressions.py.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from vexfs_cockpit.errors import UsageError

if TYPE_CHECKING:
    from vexfs_cockpit.store.location import StoreLocation


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("analyze", help="regressions, flaky tests and anomalies of the newest run",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    common_args(p)
    p.add_argument("--domain", help="only this domain's tests")
    p.add_argument("--period", help="only runs of the last PERIOD, e.g. 7d (the baseline is always read)")
    p.add_argument("--json", action="store_true", help="print the analysis as JSON")
    p.add_argument("--module-version", help="the module version under test, checked against known-failure ranges")
    p.add_argument("--check", action="store_true",
                   help="exit 1 when there is a regression, an expired known failure, a flaky test or an anomaly")
    p.set_defaults(handler=cmd_analyze)
    return p


def common_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--env", help="the environment whose runs to look at (default: the newest run's)")
    p.add_argument("--db", metavar="PATH|URL", help="history DB: an SQLite file or postgresql://[user@]host/db (default: $VEXFS_COCKPIT_DB, store.url or the data dir)")
    p.add_argument("--config", metavar="FILE", help="profile YAML or name (default: configs/default.yaml)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[],
                   help="override a config key, e.g. analysis.mad_k=5")
    p.add_argument("--known-failures", type=Path, metavar="DIR",
                   help="directory of <env>.yaml known-failure files (default: analysis.known_failures_dir)")


@dataclass
class Context:
    db: StoreLocation
    hist: Any  # store.history.History
    settings: Any  # analysis.regressions.Settings
    known_dir: Path


def context(args: argparse.Namespace) -> Context:
    from vexfs_cockpit.analysis.regressions import Settings
    from vexfs_cockpit.config.load import load_config, parse_override
    from vexfs_cockpit.config.paths import known_failures_dir
    from vexfs_cockpit.store.db import history_exists, resolve_location
    from vexfs_cockpit.store.history import History

    overrides = dict(parse_override(s) for s in (args.set or []))
    cfg = load_config(args.config, None, overrides, runs_domains=False)  # --env: history runs, not an overlay
    db = resolve_location(args.db, cfg.store.location, os.environ)
    if not history_exists(db):
        raise UsageError(f"{db}: no history DB there; record runs with `vexfs-cockpit run --batch` or pass --db PATH")
    a = cfg.analysis
    if args.known_failures is not None:  # a command-line path is the shell's: relative to the cwd
        known_dir = args.known_failures.absolute()
    else:  # a config path resolves against the project root, as every config path does
        known_dir = known_failures_dir(cfg)
    return Context(db, History(db), Settings(a.mad_k, a.min_history, a.flaky_min_flips, a.audit_runs), known_dir)


def pick_env(ctx: Context, env: str | None) -> str:
    envs = ctx.hist.envs()
    if not envs:
        raise UsageError(f"{ctx.db}: no runs recorded yet; run `vexfs-cockpit run --batch` first")
    if env is None:
        rows = ctx.hist.analysis_rows(limit=1)
        if not rows.runs:
            raise UsageError(f"{ctx.db}: no finished run yet; wait for a run to finish or pass --env")
        return str(rows.runs[-1].env)
    if env not in envs:
        raise UsageError(f"--env {env}: no runs of that env in {ctx.db}; envs there: {', '.join(envs)}")
    return env


def known_for(ctx: Context, env: str) -> tuple[list[Any], str, bool]:
    from vexfs_cockpit.analysis.known import known_failures_path, load_known_failures

    path = known_failures_path(ctx.known_dir, env)
    try:
        label = str(path.relative_to(Path.cwd()))
    except ValueError:
        label = str(path)
    return load_known_failures(path, label), label, path.is_file()


def cmd_analyze(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from vexfs_cockpit.analysis.regressions import analyze
    from vexfs_cockpit.analysis.render import analysis_text
    from vexfs_cockpit.store.history import since_period

    out = out or sys.stdout
    ctx = context(args)
    env = pick_env(ctx, args.env)
    since = since_period(args.period)
    known, _, _ = known_for(ctx, env)
    baseline = ctx.hist.baselines().get(env, (None, 0.0))[0]
    rows = ctx.hist.analysis_rows(env=env, domain=args.domain, since=since, include=(baseline,) if baseline else ())
    if args.domain and not any(r.domain == args.domain for r in rows.results):
        raise UsageError(f"--domain {args.domain}: no results of that domain in env {env!r}"
                         f"{' in the last ' + args.period if args.period else ''}; see `vexfs-cockpit history`")
    if args.domain:
        known = [k for k in known if k.domain == args.domain]
    result = analyze(rows, env=env, baseline=baseline, known=known, settings=ctx.settings,
                     module_version=args.module_version, since=since)
    if args.json:
        json.dump(result.as_dict(), out, indent=2)
        out.write("\n")
    else:
        out.write(analysis_text(result))
    return 1 if args.check and not result.clean else 0
