"""`vexfs-cockpit klog parse FILE [--json]`: classify a saved kernel log, one report per line."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import IO, Any

from vexfs_cockpit.errors import ConfigError
from vexfs_cockpit.klog.model import KernelReport


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("klog", help="kernel-log tools (classify saved console logs)")
    sub = p.add_subparsers(dest="klog_command", metavar="ACTION")
    parse = sub.add_parser(
        "parse",
        help="list the kernel reports (WARN, oops, BUG, hung task, panic, ...) found in a log file",
        description="Classify a saved serial-console or dmesg log. Prints one report per line: "
        "`<line>: <severity> <kind>: <title> [module]`; nothing if the log is clean.",
    )
    parse.add_argument("file", help="console/dmesg log file ('-' reads stdin)")
    parse.add_argument("--json", action="store_true", help="one JSON object per line instead of text")
    parse.set_defaults(handler=cmd_klog)


def report_dict(rep: KernelReport) -> dict[str, object]:
    return {
        "kind": rep.kind,
        "title": rep.title,
        "severity": rep.severity.name.lower(),
        "line": rep.line,
        "module": rep.module,
        "vm": rep.vm,
        "text": rep.text,
    }


def format_report(rep: KernelReport) -> str:
    mod = f" [{rep.module}]" if rep.module else ""
    return f"{rep.line}: {rep.severity.name.lower()} {rep.kind}: {rep.title}{mod}"


def _read_lines(name: str) -> Iterable[str]:
    # Here, not at the top: the parser module is imported by every start (the TUI's too),
    # and the classifier's pattern table costs ~50 ms to compile.
    from vexfs_cockpit.klog.classify import split_lines

    if name == "-":
        return split_lines(sys.stdin.read())
    path = Path(name)
    try:
        return split_lines(path.read_text(encoding="utf-8", errors="replace"))
    except FileNotFoundError:
        raise ConfigError(f"klog parse: {path}: no such file; pass a saved console or dmesg log") from None
    except IsADirectoryError:
        raise ConfigError(f"klog parse: {path} is a directory; pass a log file") from None
    except PermissionError:
        raise ConfigError(f"klog parse: {path}: permission denied; check the file's mode") from None


def cmd_klog(args: argparse.Namespace, out: IO[str] | None = None) -> int:
    """Print the reports in ``args.file``; 0 whether or not any were found."""
    from vexfs_cockpit.klog.classify import classify_lines

    stream = out or sys.stdout
    reports = classify_lines(_read_lines(args.file))
    for rep in reports:
        stream.write((json.dumps(report_dict(rep)) if args.json else format_report(rep)) + "\n")
    return 0
