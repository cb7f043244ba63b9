"""Argument parsing only: each subcommand hands off to one engine function.

This module must never import the TUI (import-linter holds that): with no
subcommand, the TUI is loaded by name at run time, so `run --batch` cannot load it.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from vexfs_cockpit import __version__
from vexfs_cockpit.errors import CockpitError

if TYPE_CHECKING:
    import argparse

    from vexfs_cockpit.agent.session import KdevSession

# Which module contributes each subcommand through ``add_parser(subparsers)``.
# Only the named command's module is imported (the engine's imports cost ~1 s);
# each stays importable without Textual, libvirt or asyncssh loaded at import time.
COMMANDS: dict[str, str] = {
    "run": "vexfs_cockpit.commands.run",
    "history": "vexfs_cockpit.commands.history",
    "report": "vexfs_cockpit.commands.report",
    "compare": "vexfs_cockpit.commands.report",
    "config": "vexfs_cockpit.commands.config",
    "doctor": "vexfs_cockpit.commands.doctor",
    "image": "vexfs_cockpit.commands.image",
    "vm": "vexfs_cockpit.commands.vm",
    "ssh": "vexfs_cockpit.commands.vm",
    "klog": "vexfs_cockpit.commands.klog",
    "gc": "vexfs_cockpit.commands.gc",
    "kernel": "vexfs_cockpit.commands.kernel",
    "watch": "vexfs_cockpit.commands.watch",
    "bisect": "vexfs_cockpit.commands.bisect",
    "kbuild": "vexfs_cockpit.commands.kdev",
    "kload": "vexfs_cockpit.commands.kdev",
    "kunload": "vexfs_cockpit.commands.kdev",
    "ktest": "vexfs_cockpit.commands.kdev",
    "kagent": "vexfs_cockpit.commands.kagent",
    "metrics": "vexfs_cockpit.commands.metrics",
    "alerts": "vexfs_cockpit.commands.alerts",
    "analyze": "vexfs_cockpit.commands.analyze",
    "baseline": "vexfs_cockpit.commands.baseline",
    "expunge": "vexfs_cockpit.commands.expunge",
    "plan": "vexfs_cockpit.commands.plan",
}
COMMAND_MODULES: tuple[str, ...] = tuple(dict.fromkeys(COMMANDS.values()))


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand ``argv`` names (its first word), if it is one of ours."""
    return argv[0] if argv and argv[0] in COMMANDS else None


def build_parser(command: str | None = None, *, subcommands: bool = True) -> argparse.ArgumentParser:
    """The parser with every subcommand, or only ``command``'s module's when it is named
    (``subcommands=False``: none, for an empty command line, i.e. the TUI)."""
    import argparse  # here, not at the top: a forwarded kdev command never needs it
    parser = argparse.ArgumentParser(
        prog="vexfs-cockpit",
        description="Boot test VMs, run the VexFS test domains in them, watch the kernel log, keep the history.",
        epilog="With no subcommand the cockpit TUI opens.",
    )
    parser.add_argument("--version", action="version", version=f"vexfs-cockpit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in (COMMANDS[command],) if command else COMMAND_MODULES if subcommands else ():
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as err:
            if err.name == name:  # that piece is not built yet
                continue
            raise
        module.add_parser(sub)
    return parser


def _open_tui(args: argparse.Namespace) -> int:
    # Loaded by name so that no engine/batch import path reaches Textual.
    tui = importlib.import_module("vexfs_cockpit.tui.app")
    return int(tui.run_tui(args))


def main(argv: Sequence[str] | None = None, *, kdev_session: KdevSession | None = None) -> int:
    """The console script (``argv`` None: this process's arguments) and in-process callers
    (the kdev agent passes its ``agent.session.KdevSession``: one loop, kept connections)."""
    if argv is None:
        argv = sys.argv[1:]
        # A real command line: the warm-loop commands run in the warm kdev agent.
        from vexfs_cockpit.agent.client import forward

        rc = forward(argv)
        if rc is not None:
            return rc
    import logging  # after forwarding: the kdev client must start in tens of ms

    # Warnings from the engine (e.g. a transport retry) are one plain line on stderr.
    logging.basicConfig(level=logging.WARNING, format="vexfs-cockpit: %(name)s: %(message)s")
    # An empty command line opens the TUI: it needs no subcommand's module (importing
    # them all cost ~0.3 s of the TUI's cold start that the engine does not need).
    parser = build_parser(_command_of(argv), subcommands=bool(argv))
    args = parser.parse_args(argv)
    args.kdev_session = kdev_session
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    try:
        wants_tui = getattr(args, "wants_tui", None)
        if args.command is None or (wants_tui is not None and wants_tui(args)):
            return _open_tui(args)
        if handler is None:
            parser.parse_args([args.command, "--help"])
            return 2
        return int(handler(args))
    except CockpitError as err:
        print(f"vexfs-cockpit: {err}", file=sys.stderr)
        return err.exit_code
    except KeyboardInterrupt:
        print("vexfs-cockpit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `... | head`: the reader left; not an error worth a traceback
        sys.stderr.close()
        return 0
