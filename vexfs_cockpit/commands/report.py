"""`vexfs-cockpit report` and `vexfs-cockpit compare`: results beyond the terminal.

    report RUN --format html|markdown|junit|json|ktap|kcidb [--output PATH|-]
    compare ENV ENV [ENV...] [--json] [--tolerance 0.2]

RUN is a run id, a unique prefix of one, `latest` or `prev`. `--output -` (the default)
writes to stdout; a file is written atomically. The HTML report is one self-contained
file with the run's evidence and SVG trend charts from the history. kcidb takes the
module source's commit from --git-commit, else $GITHUB_SHA or $CI_COMMIT_SHA.

compare puts the latest run of each environment side by side, per domain and test
(status, duration, metrics), and marks with `*` the rows that differ.

Bad input (no such run or env, an unknown format, an output path that cannot be
written) is one line on stderr and exit 2. Both take --db PATH or --db
postgresql://... (else $VEXFS_COCKPIT_DB, else the config's store.url, else the platform
data dir).
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TextIO

from vexfs_cockpit.errors import UsageError
from vexfs_cockpit.store.db import history_exists
from vexfs_cockpit.store.history import History
from vexfs_cockpit.store.report import RunReport

FORMATS = ("html", "markdown", "junit", "json", "ktap", "kcidb")
ALIASES = {"md": "markdown", "xml": "junit", "tap": "ktap"}


def add_parser(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    fmt = argparse.RawDescriptionHelpFormatter
    p = sub.add_parser("report", help="write a stored run as HTML, Markdown, JUnit, JSON, KTAP or KCIDB",
                       description=__doc__, formatter_class=fmt)
    p.add_argument("run", help="run id, a unique prefix, latest or prev")
    # Checked by the handler, not by argparse choices: a wrong value is one line, exit 2.
    p.add_argument("--format", "-f", default="html", metavar="FORMAT", help=f"{'|'.join(FORMATS)} (default html)")
    p.add_argument("--output", "-o", default="-", metavar="PATH", help="file to write, or - for stdout (default)")
    p.add_argument("--git-commit", metavar="SHA", help="kcidb: the module source's commit (40 hex digits)")
    p.add_argument("--db", metavar="PATH|URL", help="history DB: an SQLite file or postgresql://[user@]host/db (default: $VEXFS_COCKPIT_DB, store.url or the data dir)")
    p.set_defaults(handler=cmd_report)

    c = sub.add_parser("compare", help="the latest run of each environment, side by side",
                       description=__doc__, formatter_class=fmt)
    c.add_argument("envs", nargs="+", metavar="ENV", help="two or more environments, e.g. dev ci")
    c.add_argument("--json", action="store_true", help="print the comparison as JSON")
    c.add_argument("--tolerance", type=float, default=0.2,
                   help="relative change in a duration or metric that counts as a difference (default 0.2)")
    c.add_argument("--db", metavar="PATH|URL", help="history DB: an SQLite file or postgresql://[user@]host/db (default: $VEXFS_COCKPIT_DB, store.url or the data dir)")
    c.set_defaults(handler=cmd_compare)


def _history(args: argparse.Namespace) -> History:
    from vexfs_cockpit.commands.history import history_location

    path = history_location(args)
    if not history_exists(path):
        raise UsageError(f"no history DB at {path}: run something first, or give --db PATH")
    return History(path)


def _format(text: str) -> str:
    name = ALIASES.get(text.lower(), text.lower())
    if name not in FORMATS:
        raise UsageError(f"report: unknown format {text!r}: choose one of {', '.join(FORMATS)}")
    return name


def _commit(args: argparse.Namespace) -> str | None:
    from vexfs_cockpit.reports.kcidb import COMMIT_RE

    given = getattr(args, "git_commit", None)
    if given:
        if not COMMIT_RE.match(given):
            raise UsageError(f"report: --git-commit {given!r} is not a full commit hash (40 lowercase hex digits)")
        return given
    for var in ("GITHUB_SHA", "CI_COMMIT_SHA"):
        if COMMIT_RE.match(os.environ.get(var, "")):
            return os.environ[var]
    return None


def render(fmt: str, report: RunReport, history: History, args: argparse.Namespace) -> str:
    """The report's text. The writers are imported here: each command loads only its own."""
    match fmt:
        case "html":
            from vexfs_cockpit.reports.html import collect_trends, html_text

            return html_text(report, collect_trends(history, report))
        case "markdown":
            from vexfs_cockpit.reports.markdown import markdown_text

            return markdown_text(report)
        case "junit":
            from vexfs_cockpit.reports.junit import junit_xml

            return junit_xml(report) + "\n"
        case "json":
            from vexfs_cockpit.reports.json_report import report_json

            return report_json(report)
        case "ktap":
            from vexfs_cockpit.reports.ktap import ktap_text

            return ktap_text(report)
        case _:
            from vexfs_cockpit.reports.kcidb import kcidb_json

            return kcidb_json(report, _commit(args))


def cmd_report(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from vexfs_cockpit.reports.output import check_report_path, write_atomic

    fmt = _format(args.format)
    to_stdout = args.output == "-"
    if not to_stdout:
        check_report_path(args.output, "--output")  # before any work: one line, exit 2
    if fmt == "kcidb":
        _commit(args)  # a bad --git-commit fails before the run is read
    history = _history(args)
    run_id = history.resolve_run_id(args.run)
    report = history.run_detail(run_id) if run_id else None
    if report is None:
        raise UsageError(f"report: no run {args.run!r} in {history.path}: see `vexfs-cockpit history` for run ids")
    text = render(fmt, report, history, args)
    if to_stdout:
        (out or sys.stdout).write(text)
    else:
        path = write_atomic(args.output, text, f"{fmt} report")
        print(f"wrote {path}", file=sys.stderr if out is None else out)
    return 0


def cmd_compare(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from vexfs_cockpit.reports.compare import compare_envs, comparison_json, comparison_text

    if not 0 <= args.tolerance < 100:
        raise UsageError(f"compare: --tolerance {args.tolerance} must be a fraction such as 0.2")
    comp = compare_envs(_history(args), args.envs, args.tolerance)
    (out or sys.stdout).write(comparison_json(comp) if args.json else comparison_text(comp))
    return 0
