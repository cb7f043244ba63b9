"""`vexfs-cockpit baseline set RUN|latest [--env E]`, `baseline show`, `baseline clear [--env E]`:
the run `analyze` compares an env's newest run with (instead of the run before it).
Kept in the history DB (table ``baselines``, schema v4), one per env."""

from __future__ import annotations

import argparse
import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

from vexfs_cockpit.errors import UsageError

if TYPE_CHECKING:
    from vexfs_cockpit.store.location import StoreLocation


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    p = subparsers.add_parser("baseline", help="set, show or clear the run analyze compares with",
                              description=__doc__)
    sub = p.add_subparsers(dest="baseline_cmd", metavar="{set,show,clear}", required=True)
    for name, help_ in (("set", "make RUN the baseline of its env"), ("show", "list the baselines"),
                        ("clear", "remove the baseline of --env (or all)")):
        s = sub.add_parser(name, help=help_)
        if name == "set":
            s.add_argument("run", help="run id, a unique prefix, or latest (the newest finished run of --env)")
        s.add_argument("--env", help="the env (set: must be RUN's; clear: default all)")
        s.add_argument("--db", metavar="PATH|URL", help="history DB: an SQLite file or postgresql://[user@]host/db (default: $VEXFS_COCKPIT_DB, store.url or the data dir)")
    p.set_defaults(handler=cmd_baseline)
    return p


def _db(args: argparse.Namespace) -> StoreLocation:
    from vexfs_cockpit.commands.history import history_location
    from vexfs_cockpit.store.db import history_exists

    db = history_location(args)
    if not history_exists(db):
        raise UsageError(f"{db}: no history DB there; record runs with `vexfs-cockpit run --batch` or pass --db PATH")
    return db


def cmd_baseline(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from vexfs_cockpit.store.history import History
    from vexfs_cockpit.store.render import fmt_time

    out = out or sys.stdout
    db = _db(args)
    hist = History(db)
    if args.baseline_cmd == "show":
        bases = hist.baselines()
        if not bases:
            print("no baselines set: analyze compares each run with the run before it", file=out)
        for env, (run, at) in sorted(bases.items()):
            print(f"{env}: {run} (set {fmt_time(at)})", file=out)
        return 0
    envs = hist.envs()
    if args.env is not None and args.env not in envs:
        raise UsageError(f"--env {args.env}: no runs of that env in {db}; envs there: {', '.join(envs) or 'none'}")
    if args.baseline_cmd == "clear":
        n = _write(db, "DELETE FROM baselines WHERE ? IS NULL OR env = ?", (args.env, args.env))
        print(f"cleared {n} baseline(s)", file=out)
        return 0
    if args.run == "latest":
        rows = hist.analysis_rows(env=args.env, limit=1)
        if not rows.runs:
            raise UsageError(f"baseline set latest: no finished run{' of env ' + args.env if args.env else ''} in {db}")
        run = rows.runs[-1].run_id
    else:
        run = hist.resolve_run_id(args.run)
        if run is None:
            raise UsageError(f"baseline set {args.run}: no such run in {db}; see `vexfs-cockpit history`")
    env = hist.run_env(run) or ""
    if args.env is not None and env != args.env:
        raise UsageError(f"baseline set {args.run}: run {run} is of env {env!r}, not {args.env!r}; drop --env or pick a run of it")
    _write(db, "INSERT INTO baselines(env, run_id, set_at) VALUES (?, ?, ?) "
           "ON CONFLICT (env) DO UPDATE SET run_id = excluded.run_id, set_at = excluded.set_at", (env, run, time.time()))
    print(f"baseline of env {env!r}: {run}", file=out)
    return 0


def _write(db: StoreLocation, sql: str, params: tuple[Any, ...]) -> int:
    from vexfs_cockpit.store.db import open_writer
    from vexfs_cockpit.store.dialect import write_tx

    conn = open_writer(db, deep_check=False)  # migrates to v4 (the baselines table) if needed
    try:
        with write_tx(conn):
            return int(conn.execute(sql, params).rowcount)
    finally:
        conn.close()
