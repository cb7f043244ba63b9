"""`vexfs-cockpit expunge audit [--env E]`: which entries of the env's known-failures
file (configs/known-failures/<env>.yaml) to remove: expired ones, and ones whose test
passed in each of the last `analysis.audit_runs` runs that ran it. Exits 1 when an
entry should go.

With --rerun it first reruns the unexpired entries' tests in fresh VMs (a `run --batch`
of the env, stored like any run, its failures confirmed as in every run), so the audit
judges them on the code as it is now rather than on whenever they last ran."""

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
    a.add_argument("--rerun", action="store_true",
                   help="first rerun the listed tests in fresh VMs (a stored run of the env), then audit")
    p.set_defaults(handler=cmd_expunge)
    return p


def cmd_expunge(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from vexfs_cockpit.analysis.regressions import audit
    from vexfs_cockpit.analysis.render import audit_text
    from vexfs_cockpit.commands.analyze import context, known_for, pick_env
    from vexfs_cockpit.store.history import since_period

    out = out or sys.stdout
    ctx = context(args)
    env = args.env if args.rerun and args.env else pick_env(ctx, args.env)  # a rerun may be the env's first run
    known, label, exists = known_for(ctx, env)
    if not exists:
        print(f"{label}: no such file: no known failures listed for env {env!r}", file=out)
        return 0
    if args.rerun:
        _rerun(args, env, known, ctx.known_dir, out)
    rows = ctx.hist.analysis_rows(env=env, since=since_period(args.period))
    lines = audit(rows, known, env=env, settings=ctx.settings)
    out.write(audit_text(lines, label))
    return 1 if any(x.verdict == "drop" for x in lines) else 0


def _rerun(args: argparse.Namespace, env: str, known: list[Any], known_dir: Any, out: TextIO) -> None:
    """A `run --batch` of the env over the unexpired entries' tests (its progress on
    stdout); a run that could not finish is one line and exit 3 (InfraError)."""
    import datetime as dt

    from vexfs_cockpit.commands.run import cmd_run
    from vexfs_cockpit.engine.discovery import discover_domains
    from vexfs_cockpit.errors import InfraError

    registry = discover_domains()
    today = dt.date.today()
    live = [k for k in known if not k.expired(today)]
    for k in live:
        if k.domain not in registry:
            print(f"entry {k.index}: domain {k.domain!r} is not installed here: not rerun", file=out)
    live = [k for k in live if k.domain in registry]
    if not live:
        print("nothing to rerun: every entry expired or names a domain not installed", file=out)
        return
    print(f"rerunning {len(live)} known failure(s) of env {env!r} in fresh VMs", file=out, flush=True)
    run_args = argparse.Namespace(
        config=args.config, env=env, db=args.db, kernel=None, batch=True, ktap=False, shard=None,
        # the run reads the same known-failures file as this audit
        set=[*(args.set or []), f"analysis.known_failures_dir={known_dir}"],
        domains=",".join(sorted({k.domain for k in live})), tests=",".join(f"{k.domain}/{k.test}" for k in live),
        timeout=None, retries=None, junit=None, json=None, show_klog=False,
    )
    code = cmd_run(run_args)
    if code not in (0, 1):  # 1: tests failed, which is what a known failure does
        raise InfraError(f"expunge audit --rerun: the rerun of env {env!r} exited {code} (see above): not audited")
