"""`vexfs-cockpit run`: the headless front end (``--batch``); without it the CLI opens
the TUI with this command line.

Exit codes: 0 all passed, 1 test failures, 2 config/usage error (a --junit/--json path
that cannot be written included: checked before anything starts), 3 infrastructure
error (the history DB failing to store results included), 130 interrupted (SIGINT or
SIGTERM; the reports of what finished are still written).

With --ktap, stdout carries only a KTAP v1 document, written as tests finish; the
progress lines go to stderr.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys

from vexfs_cockpit.app.session import ProviderFactory, Session, open_session, parse_only_tests
from vexfs_cockpit.errors import ReportError
from vexfs_cockpit.store.report import ReportBuilder


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Options shared by `run` and the kernel-developer commands."""
    p.add_argument("--config", metavar="FILE", help="profile YAML or name (default: configs/default.yaml)")
    p.add_argument("--env", metavar="ENV", help="environment overlay: dev, test or ci (default: dev)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], help="override a config key, e.g. execution.retry_count=2")
    p.add_argument("--db", metavar="PATH|URL", help="history DB: an SQLite file or postgresql://[user@]host/db "
                   "(default: $VEXFS_COCKPIT_DB, store.url or the data dir)")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("run", help="run test domains in fresh VMs", description=__doc__)
    add_run_options(p)
    p.add_argument("--batch", action="store_true", help="headless: plain progress lines, for CI")
    p.add_argument("--kernel", metavar="V|TREE", help="guest kernel: auto, host, an installed version or a built kernel tree (= --set fleet.guest_kernel=V)")
    add_selection_options(p, domains_default="all enabled", tests_help="run only these tests")
    p.add_argument("--ktap", action="store_true",
                   help="stream KTAP v1 on stdout as tests finish (implies --batch); progress lines go to stderr")
    p.add_argument("--shard", metavar="I/N",
                   help="CI matrix: run only part I of N of the selection, balanced by the durations in "
                        "history (every job must see the same history); implies --batch")
    # Without --batch the CLI opens the TUI on this command line (cli.py decides).
    p.set_defaults(handler=cmd_run, wants_tui=lambda args: not (args.batch or args.ktap or args.shard))


def add_selection_options(p: argparse.ArgumentParser, *, domains_default: str, tests_help: str) -> None:
    """What to run and what to write: shared by `run` and `ktest`."""
    p.add_argument("--domains", metavar="A,B", help=f"comma-separated domains (default: {domains_default})")
    p.add_argument("--tests", metavar="DOMAIN/TEST,...", help=tests_help)
    p.add_argument("--timeout", type=positive_seconds, metavar="SECONDS", help="default per-test timeout")
    p.add_argument("--retries", type=retry_count, metavar="N", help="retries per failing test")
    p.add_argument("--junit", metavar="PATH", help="write JUnit XML here")
    p.add_argument("--json", metavar="PATH", help="write the JSON result here")
    p.add_argument("--show-klog", action="store_true", help="print every kernel log line (batch)")


def positive_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, found {text!r}")
    return value


def retry_count(text: str) -> int:
    if not text.isdigit() or not 0 <= int(text) <= 10:
        raise argparse.ArgumentTypeError(f"expected 0..10, found {text!r}")
    return int(text)


def cmd_run(args: argparse.Namespace) -> int:
    return asyncio.run(run_batch(args))


async def run_batch(args: argparse.Namespace, provider_factory: ProviderFactory | None = None) -> int:
    """The headless run. Exit code: the run's (0/1/3); 2 for a usage error found before
    anything starts (a report path that cannot be written included); 3 if the history
    DB could not store every result; 130 when interrupted (SIGINT or SIGTERM), after the
    VMs are destroyed and the reports of what finished are written."""
    # Imported here: this module is loaded by every start (the TUI's too), and these
    # only serve --batch.
    from vexfs_cockpit.commands.progress import ProgressPrinter
    from vexfs_cockpit.reports.json_report import write_json_report
    from vexfs_cockpit.reports.junit import write_junit
    from vexfs_cockpit.reports.output import check_report_path

    shard = None
    if getattr(args, "shard", None) is not None:  # a bad I/N is one line, before anything starts
        from vexfs_cockpit.engine.shard import parse_shard

        shard = parse_shard(args.shard)
    reports = [(check_report_path(path, f"--{opt}"), write)  # before any VM boots: exit 2
               for opt, write in (("junit", write_junit), ("json", write_json_report))
               if (path := getattr(args, opt, None))]
    main = asyncio.current_task()
    loop = asyncio.get_running_loop()
    assert main is not None
    loop.add_signal_handler(signal.SIGTERM, main.cancel)
    try:
        try:
            session: Session = await open_session(args, provider_factory)
        except asyncio.CancelledError:
            main.uncancel()
            print("vexfs-cockpit: interrupted before the run started", file=sys.stderr)
            return 130
        # --ktap: stdout carries the KTAP document alone; the progress lines go to stderr.
        ktap = getattr(args, "ktap", False)
        printer = ProgressPrinter(sys.stderr if ktap else sys.stdout, show_klog=args.show_klog)
        sub = session.bus.subscribe()
        report = ReportBuilder()
        session.bus.listen(report.feed)
        if ktap:
            from vexfs_cockpit.reports.ktap import KtapStream

            session.bus.listen(KtapStream(sys.stdout).feed)
        printing = asyncio.create_task(printer.consume(sub))
        summary = None
        empty_shard = False
        try:
            domains = session.select(args.domains)
            if placed := getattr(session.provider, "placement_line", lambda: "")():  # hosts: where each domain runs
                print(placed, file=printer.out, flush=True)
            only_tests = parse_only_tests(args.tests, domains)
            extra: dict[str, str] = {}
            if shard is not None:
                from vexfs_cockpit.app.shard import shard_selection

                part = await asyncio.to_thread(shard_selection, session.registry, domains, only_tests,
                                               shard, session.history)
                print(part.line, file=printer.out, flush=True)
                domains, only_tests, extra = part.domains, part.only_tests, part.provenance
            if domains:  # an empty shard (more jobs than test groups) runs nothing and passes
                summary = await session.run(
                    domains,
                    timeout_s=args.timeout,
                    retries=args.retries,
                    only_tests=only_tests,
                    provenance_extra=extra,
                )
            else:
                empty_shard = True
        except asyncio.CancelledError:
            main.uncancel()  # interrupted: clean up, then report what finished
        finally:
            await session.aclose()  # destroys VMs, flushes the store
            sub.close()
            await printing
    finally:
        loop.remove_signal_handler(signal.SIGTERM)  # the kdev agent's loop outlives this run
    if empty_shard:
        return 0
    problems: list[str] = []
    rep = report.report
    if rep is not None:
        for path, write in reports:
            try:
                write(rep, path)
            except ReportError as err:  # after the run: say so, keep the run's exit code
                problems.append(str(err))
    code = 130 if summary is None else summary.exit_code
    if summary is not None and summary.infra_errors:
        problems.append(summary.infra_errors[0])
    if loss := session.store_loss():  # results the history DB could not keep: infra, exit 3
        problems.append(loss)
        if summary is not None:
            code = 3
    if summary is None:
        problems.append("interrupted: VMs destroyed, finished results kept")
    for line in problems:
        print(f"vexfs-cockpit: {line}", file=sys.stderr)
    return code


__all__ = ["add_parser", "add_run_options", "cmd_run", "run_batch"]
