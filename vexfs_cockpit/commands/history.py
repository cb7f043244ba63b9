"""`vexfs-cockpit history`: past runs, a domain's trend, crash signatures, one run.

    history [--env E] [--status S] [--period 7d] [--search TEXT] [--limit N]
    history --domain D [--period 7d]          pass rate and duration per run
    history crashes [--period 30d]            crash signatures, newest first
    history show RUN [--evidence all|bad|none]
    history compare OLD NEW                   new failures / fixed / still failing / flaky
    history report RUN [--junit F] [--json F] re-write a run's reports from the store
    history log RUN [--test DOMAIN/TEST]      the run's kernel log, or one test's window (in a pager)
    history import SOURCE                     merge another history (SQLite file, postgresql:// URL) or a JSON run report (idempotent)

RUN is a run id, a unique prefix of one, `latest` or `prev`. All take --db PATH or
--db postgresql://... (else $VEXFS_COCKPIT_DB, else the config's store.url, else the
platform data dir).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TextIO

from vexfs_cockpit.engine.confirm import badge
from vexfs_cockpit.errors import StoreUnwritable, UsageError
from vexfs_cockpit.store.db import DB_ENV_VAR, history_exists, resolve_location
from vexfs_cockpit.store.history import BAD, History, RunComparison, since_period
from vexfs_cockpit.store.location import StoreLocation
from vexfs_cockpit.store.recorder import HistoryStore
from vexfs_cockpit.store.render import (
    evidence_text,
    fmt_duration,
    fmt_time,
    kernel_report_text,
    provenance_line,
    vms_text,
)
from vexfs_cockpit.store.report import RunReport


def add_parser(subparsers: argparse._SubParsersAction) -> argparse.ArgumentParser:  # type: ignore[type-arg]
    p = subparsers.add_parser("history", help="past runs, trends, crash signatures", description=__doc__,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    _db_arg(p, argparse.SUPPRESS)
    p.add_argument("--env", help="only runs of this env")
    p.add_argument("--status", choices=["running", "passed", "failed", "errored", "aborted"])
    p.add_argument("--domain", help="show this domain's pass rate and duration per run")
    p.add_argument("--period", help="only the last PERIOD, e.g. 12h, 7d, 2w")
    p.add_argument("--search", help="text in run id, profile, reason, test names/messages, kernel titles")
    p.add_argument("--limit", type=int, default=30, help="at most N runs (default 30)")
    p.set_defaults(handler=cmd_history, func=cmd_history, history_cmd="runs")  # cli.py calls handler
    sub = p.add_subparsers(dest="history_cmd", metavar="{crashes,show,compare,report,log,import}")

    c = sub.add_parser("crashes", help="crash signatures, newest first")
    _db_arg(c, argparse.SUPPRESS)
    c.add_argument("--period", default=argparse.SUPPRESS, help="only signatures seen in the last PERIOD")
    c.add_argument("--limit", type=int, default=argparse.SUPPRESS)
    c.add_argument("--runs", action="store_true", help="list where each signature occurred")

    s = sub.add_parser("show", help="one run: domains, tests, evidence")
    _db_arg(s, argparse.SUPPRESS)
    s.add_argument("run", help="run id, a unique prefix, latest or prev")
    s.add_argument("--evidence", choices=["bad", "all", "none"], default="bad",
                   help="print evidence for bad tests (default), all tests, or none")

    m = sub.add_parser("compare", help="compare two runs")
    _db_arg(m, argparse.SUPPRESS)
    m.add_argument("old", help="baseline run: id, prefix, latest or prev")
    m.add_argument("new", help="newer run: id, prefix, latest or prev")
    m.add_argument("--window", type=int, default=5, help="runs looked at for flakiness (default 5)")

    r = sub.add_parser("report", help="write a stored run's JUnit XML / JSON report")
    _db_arg(r, argparse.SUPPRESS)
    r.add_argument("run", help="run id, a unique prefix, latest or prev")
    r.add_argument("--junit", type=Path, help="JUnit XML output path")
    r.add_argument("--json", type=Path, help="JSON report output path")

    lg = sub.add_parser("log", help="a run's kernel log (its VMs' consoles), or one test's window of it")
    _db_arg(lg, argparse.SUPPRESS)
    lg.add_argument("run", help="run id, a unique prefix, latest or prev")
    lg.add_argument("--test", metavar="DOMAIN/TEST", help="only this test's window (stored with its result)")
    lg.add_argument("--no-pager", action="store_true", help="print, even on a terminal")

    im = sub.add_parser("import", help="merge another history DB or a JSON run report into this one (idempotent)")
    _db_arg(im, argparse.SUPPRESS)
    im.add_argument("file", metavar="SOURCE", help="another history (an SQLite DB of any older schema or a postgresql:// URL) "
                    "or a `run --json` report")
    return p


def _db_arg(p: argparse.ArgumentParser, default: object) -> None:
    # SUPPRESS everywhere: a subparser's default must not overwrite a --db given
    # before the subcommand name.
    # A string, not a Path: Path would make postgresql://host/db postgresql:/host/db.
    p.add_argument("--db", default=default, metavar="PATH|URL",
                   help="history DB: an SQLite file or postgresql://[user@]host/db "
                        "(default: $VEXFS_COCKPIT_DB, store.url or the data dir)")


def history_location(args: argparse.Namespace) -> StoreLocation:
    """--db, else $VEXFS_COCKPIT_DB, else the default config's store.url (history's
    --env filters runs: it is not a config overlay), else the data dir."""
    cli = getattr(args, "db", None)
    if cli or os.environ.get(DB_ENV_VAR):
        return resolve_location(cli, None, os.environ)
    from vexfs_cockpit.config.load import load_config, resolve_profile_path
    from vexfs_cockpit.errors import ConfigError

    try:
        profile: Path | None = resolve_profile_path(None)
    except ConfigError:  # not in a checkout: no default config to read
        profile = None
    if profile is None or not profile.exists():
        return resolve_location(None, None, os.environ)
    return resolve_location(None, load_config(profile, runs_domains=False).store.location, os.environ)


def cmd_history(args: argparse.Namespace, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    path = history_location(args)
    if getattr(args, "history_cmd", None) == "import":  # creates the DB if there is none yet
        from vexfs_cockpit.store.location import parse_location
        from vexfs_cockpit.store.merge import import_history

        print(import_history(path, parse_location(args.file, "history import SOURCE")).line(), file=out)
        return 0
    if not history_exists(path):
        print(f"no runs yet (history DB {path} does not exist)", file=out)
        return 0
    # Opening for write marks runs of dead processes aborted in the file. A DB this
    # process cannot write (read-only, disk full...) is still read: the readers show
    # those runs aborted all the same (store/history.py). On PostgreSQL they do so from
    # the runs' advisory locks, and a team member may hold only SELECT: read only.
    if isinstance(path, Path):
        try:
            HistoryStore.open(path, deep_check=False).close()
        except StoreUnwritable:
            pass
    hist = History(path)
    match getattr(args, "history_cmd", None) or "runs":
        case "crashes":
            return _crashes(hist, args, out)
        case "show":
            return _show(hist, args, out)
        case "compare":
            return _compare(hist, args, out)
        case "report":
            return _report(hist, args, out)
        case "log":
            return _log(hist, args, out)
        case _:
            return _domain_trend(hist, args, out) if getattr(args, "domain", None) else _runs(hist, args, out)


def _log(hist: History, args: argparse.Namespace, out: TextIO) -> int:
    """A run's console logs (kept under the data dir until `gc`), or one test's window."""
    rep = _load(hist, args.run)
    if args.test:
        domain, _, test = args.test.partition("/")
        found = [t for t in rep.tests() if t.domain == domain and t.name == test]
        if not found:
            raise UsageError(f"--test {args.test}: run {rep.run.run_id} has no such test (see `history show {rep.run.run_id}`)")
        lines = found[0].evidence.kernel_log
        text = "\n".join(lines) + "\n" if lines else f"(no kernel log lines in {args.test}'s window)\n"
    else:
        from vexfs_cockpit.store.artifacts import console_dir, console_text

        found = console_text(rep.run.run_id)
        if found is None:
            raise UsageError(f"no console logs for run {rep.run.run_id} in {console_dir(rep.run.run_id)} (removed by `gc`,"
                             " or run elsewhere); a test's window is kept with its result: --test DOMAIN/TEST")
        text = found
    if out is sys.stdout and sys.stdout.isatty() and not args.no_pager:
        import pydoc

        pydoc.pager(text)  # $PAGER, else less
    else:
        out.write(text)
    return 0


def _table(rows: Sequence[Sequence[str]], out: TextIO) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip(), file=out)


def _runs(hist: History, args: argparse.Namespace, out: TextIO) -> int:
    runs = hist.list_runs(
        env=getattr(args, "env", None),
        status=getattr(args, "status", None),
        since=since_period(getattr(args, "period", None)),
        text=getattr(args, "search", None),
        limit=getattr(args, "limit", 30),
    )
    if not runs:
        filtered = any(getattr(args, k, None) for k in ("env", "status", "period", "search"))
        print("no runs match these filters" if filtered else f"no runs yet in {hist.path}", file=out)
        return 0
    rows = [["RUN", "STARTED", "ENV", "PROFILE", "STATUS", "PASS", "FAIL", "SKIP", "DURATION"]]
    for r in runs:
        rows.append([
            r.run_id, fmt_time(r.started_at), r.env or "-", r.profile or "-", r.status,
            str(r.counts.get("PASSED", 0)), str(r.bad), str(r.counts.get("SKIPPED", 0)), fmt_duration(r.duration_s),
        ])
    _table(rows, out)
    return 0


def _domain_trend(hist: History, args: argparse.Namespace, out: TextIO) -> int:
    period = getattr(args, "period", None)
    points = hist.domain_trend(args.domain, since=since_period(period), env=getattr(args, "env", None))
    if not points:
        print(f"no runs of domain {args.domain}" + (f" in the last {period}" if period else ""), file=out)
        return 0
    rows = [["RUN", "STARTED", "ENV", "STATUS", "PASSED", "PASS RATE", "DURATION"]]
    for p in points:
        rate = "-" if p.pass_rate is None else f"{100 * p.pass_rate:.0f}%"
        rows.append([p.run_id, fmt_time(p.started_at), p.env or "-", p.status,
                     f"{p.passed}/{p.passed + p.bad}", rate, fmt_duration(p.duration_s)])
    _table(rows, out)
    rates = [p.pass_rate for p in points if p.pass_rate is not None]
    if rates:
        print(f"{len(points)} runs, mean pass rate {100 * sum(rates) / len(rates):.0f}%", file=out)
    return 0


def _crashes(hist: History, args: argparse.Namespace, out: TextIO) -> int:
    sigs = hist.crash_signatures(limit=getattr(args, "limit", 100), since=since_period(getattr(args, "period", None)))
    if not sigs:
        print("no crash signatures recorded", file=out)
        return 0
    rows = [["LAST SEEN", "FIRST SEEN", "COUNT", "SEVERITY", "SIGNATURE", "LAST RUN"]]
    for s in sigs:
        rows.append([fmt_time(s.last_seen), fmt_time(s.first_seen), str(s.count), s.severity.name.lower(),
                     s.signature, s.last_run_id or "-"])
    _table(rows, out)
    if getattr(args, "runs", False):
        for s in sigs:
            print(f"\n{s.signature}:", file=out)
            for o in hist.crash_occurrences(s.signature, limit=20):
                where = ".".join(x for x in (o.domain, o.test) if x) or "-"
                print(f"  {fmt_time(o.ts)}  {o.run_id or '-'}  {where}  {o.vm}", file=out)
    return 0


def _load(hist: History, ref: str) -> RunReport:
    run_id = hist.resolve_run_id(ref)
    report = hist.run_detail(run_id) if run_id else None
    if report is None:
        raise UsageError(f"no run {ref!r} in {hist.path}: see `vexfs-cockpit history` for run ids")
    return report


def _show(hist: History, args: argparse.Namespace, out: TextIO) -> int:
    rep = _load(hist, args.run)
    run = rep.run
    print(f"run {run.run_id}  {run.status}  env={run.env or '-'} profile={run.profile or '-'}  "
          f"{fmt_time(run.started_at)}  {fmt_duration(run.duration_s)}", file=out)
    if run.reason:
        print(f"  reason: {run.reason}", file=out)
    if run.provenance:
        print(f"  from: {provenance_line(run.provenance)}", file=out)
    for d in rep.domains:
        tally = " ".join(f"{k.lower()}={v}" for k, v in sorted(d.tally().items()))
        print(f"\n{d.name}  {d.status}  vm={vms_text(d.vm, rep.vm_ready)}  {fmt_duration(d.duration_s)}  {tally}",
              file=out)
        if d.reason:
            print(f"  reason: {d.reason}", file=out)
        for t in d.tests:
            print(f"  {t.status:<8} {t.name:<32} {fmt_duration(t.duration_s):>8}  {t.message}".rstrip(), file=out)
            if (v := rep.verdicts.get((d.name, t.name))) is not None:  # after its confirmation reruns
                was = f"{v.before} in {v.reference}" if v.before else "not run before in this env"
                print(f"  {'':<8} [{badge(v.verdict)}] {was}{' — ' + v.note if v.note else ''}", file=out)
        for name in d.missing_tests():
            print(f"  {'NO RESULT':<8} {name}", file=out)
    if rep.kernel_events:
        print("\nkernel events:", file=out)
        for k in rep.kernel_events:
            where = ".".join(x for x in (k.domain, k.test) if x) or "-"
            print(f"  {fmt_time(k.ts)} {where}: {kernel_report_text(k.report, k.expected).splitlines()[0]}", file=out)
    for p in rep.infra_problems:
        print(f"infra: {p.message}", file=out)
    if args.evidence != "none":
        for t in rep.tests():
            if args.evidence == "all" or str(t.status) in BAD:
                extra = [k for k in rep.kernel_events if k.domain == t.domain and k.test == t.name]
                print("\n" + evidence_text(t, extra), end="", file=out)
    return 0


def _compare(hist: History, args: argparse.Namespace, out: TextIO) -> int:
    a = hist.resolve_run_id(args.old)
    b = hist.resolve_run_id(args.new)
    for ref, rid in ((args.old, a), (args.new, b)):
        if rid is None:
            raise UsageError(f"no run {ref!r} in {hist.path}: see `vexfs-cockpit history` for run ids")
    comp: RunComparison = hist.compare_runs(a, b, window=args.window)  # type: ignore[arg-type]
    print(f"{comp.a} -> {comp.b}", file=out)
    for title, items in (("new failures", comp.new_failures), ("fixed", comp.fixed),
                         ("still failing", comp.still_failing), ("flaky", comp.flaky),
                         (f"only in {comp.a}", comp.only_before), (f"only in {comp.b}", comp.only_after),
                         ("changed (duration or metrics)", comp.changed)):
        print(f"{title}: {len(items)}", file=out)
        for d in items:
            print(f"  {d.domain}.{d.test}: {d.before or 'not run'} -> {d.after or 'not run'}"
                  + (f"  ({d.message})" if d.message else ""), file=out)
    return 0


def _report(hist: History, args: argparse.Namespace, out: TextIO) -> int:
    from vexfs_cockpit.reports.json_report import write_json_report
    from vexfs_cockpit.reports.junit import write_junit

    if not args.junit and not args.json:
        raise UsageError("history report: give --junit PATH and/or --json PATH")
    rep = _load(hist, args.run)
    if args.junit:
        print(f"wrote {write_junit(rep, args.junit)}", file=out)
    if args.json:
        print(f"wrote {write_json_report(rep, args.json)}", file=out)
    return 0
