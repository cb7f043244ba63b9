"""`vexfs-cockpit gc [--dry-run]`: apply the retention policy (``store.keep_runs_days``,
``store.keep_build_cache_days``) to run artifacts, kbuild caches and dead dev VMs'
console logs. The history DB itself is kept."""

from __future__ import annotations

import argparse
from typing import Any


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("gc", help="remove old run artifacts, kbuild caches and dead dev VMs' console logs",
                              description=__doc__)
    p.add_argument("--config", metavar="FILE", help="profile YAML or name (default: configs/default.yaml)")
    p.add_argument("--env", metavar="ENV", help="environment overlay: dev, test or ci (default: dev)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], help="override a config key, e.g. store.keep_runs_days=7")
    p.add_argument("--db", metavar="PATH|URL", help="history DB: an SQLite file or postgresql://[user@]host/db (default: $VEXFS_COCKPIT_DB, store.url or the data dir)")
    p.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    p.set_defaults(handler=cmd_gc)


def _mb(n: int) -> str:
    return f"{n / 1e6:.1f} MB"


def cmd_gc(args: argparse.Namespace) -> int:
    from vexfs_cockpit.app.gc import apply_gc, plan_gc
    from vexfs_cockpit.builds.kbuild import default_cache_dir
    from vexfs_cockpit.config.load import config_from_args
    from vexfs_cockpit.config.paths import data_dir
    from vexfs_cockpit.store.db import history_exists, resolve_location, store_size
    from vexfs_cockpit.store.history import History

    cfg = config_from_args(args, runs_domains=False)
    db = resolve_location(args.db, cfg.store.location)
    # Runs still running (here, or on another cockpit of a shared PostgreSQL history)
    # keep their artifacts.
    exists = history_exists(db)
    running = [r.run_id for r in History(db).list_runs(status="running", limit=1000)] if exists else []
    items = plan_gc(cfg, data=data_dir(), build_cache=default_cache_dir(), running=running)
    for item in items:
        print(f"{'would remove' if args.dry_run else 'removed'} {item.path} ({_mb(item.bytes)}: {item.why})")
    total = sum(i.bytes for i in items) if args.dry_run else apply_gc(items)
    verb = "would free" if args.dry_run else "freed"
    # The history is the record: kept whole. Its size is the file's (with its WAL) or,
    # on PostgreSQL, the database's on the server.
    kept = f"; history DB {db} kept ({_mb(store_size(db))})" if exists else ""
    print(f"gc: {len(items)} item(s), {verb} {_mb(total)}; runs kept {cfg.store.keep_runs_days} days,"
          f" build caches {cfg.store.keep_build_cache_days} days{kept}")
    return 0
