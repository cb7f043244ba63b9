"""`vexfs-cockpit metrics serve|export`: the history DB as Prometheus metrics, computed
when scraped (vexfs_cockpit/monitoring/exporter.py). ``serve`` answers /metrics on a
loopback address only; ``export`` writes node_exporter's textfile format atomically."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from vexfs_cockpit.store.location import StoreLocation


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("metrics", help="Prometheus metrics of the history DB (serve or export)",
                              description=__doc__)
    sub = p.add_subparsers(dest="metrics_command", metavar="ACTION", required=True)
    serve = sub.add_parser("serve", help="answer /metrics on 127.0.0.1 (loopback only)")
    serve.add_argument("--listen", metavar="HOST:PORT", default="127.0.0.1:9464",
                       help="loopback address to listen on (default 127.0.0.1:9464; port 0: any free port)")
    export = sub.add_parser("export", help="write the metrics to PATH for node_exporter's textfile collector")
    export.add_argument("path", metavar="PATH", help="the .prom file to write (atomically replaced)")
    for s in (serve, export):
        s.add_argument("--db", metavar="PATH|URL", help="history DB: an SQLite file or postgresql://[user@]host/db (default: $VEXFS_COCKPIT_DB, store.url or the data dir)")
        s.add_argument("--config", metavar="FILE", help="profile YAML or name (for store.url)")
        s.add_argument("--env", metavar="ENV", help="environment overlay: dev, test or ci")
        s.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], help="override a config key")
    serve.set_defaults(handler=cmd_serve)
    export.set_defaults(handler=cmd_export)


def history_db(args: argparse.Namespace) -> StoreLocation:
    """The DB a command names; it must exist (a typo'd --db would otherwise read as empty)."""
    from vexfs_cockpit.config.load import config_from_args
    from vexfs_cockpit.errors import UsageError
    from vexfs_cockpit.store.db import history_exists, resolve_location

    db = resolve_location(args.db, None if args.db else config_from_args(args, runs_domains=False).store.location)
    if not history_exists(db):
        raise UsageError(f"no history DB at {db}: give --db PATH or run some tests first")
    return db


def cmd_serve(args: argparse.Namespace) -> int:
    from vexfs_cockpit.monitoring.exporter import make_metrics_server, parse_listen

    host, port = parse_listen(args.listen)  # refused before anything is read
    db = history_db(args)
    server = make_metrics_server(db, host, port)
    shown = f"[{host}]" if ":" in host else host
    print(f"metrics: serving http://{shown}:{server.server_address[1]}/metrics from {db} (Ctrl-C stops)", flush=True)
    import signal
    import threading

    if threading.current_thread() is threading.main_thread():  # `kill PID` stops it as Ctrl-C does
        signal.signal(signal.SIGTERM, _interrupt)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    print("metrics: stopped", file=sys.stderr)
    return 0


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def cmd_export(args: argparse.Namespace) -> int:
    from vexfs_cockpit.monitoring.exporter import write_textfile

    target = Path(args.path)
    if target.is_dir():  # before the DB: the cheaper mistake to name first
        from vexfs_cockpit.errors import ReportError
        raise ReportError(f"{target} is a directory: give a file path, e.g. {target / 'vexfs_cockpit.prom'}")
    n = write_textfile(history_db(args), target)
    print(f"metrics: wrote {target} ({n} bytes)")
    return 0
