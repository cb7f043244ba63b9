"""Argument parsing only: each subcommand hands off to one engine function.

This module must never import the TUI (import-linter holds that): with no
subcommand, the TUI is loaded by name at run time, so `run --batch` cannot load it.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Callable, Sequence

from vexfs_cockpit import __version__
from vexfs_cockpit.errors import CockpitError

# Modules contributing subcommands through ``add_parser(subparsers)``. Each stays
# importable without Textual, libvirt or asyncssh being loaded at import time.
COMMAND_MODULES: tuple[str, ...] = (
    "vexfs_cockpit.batch.run_command",
    "vexfs_cockpit.store.cli",
    "vexfs_cockpit.config.check",
    "vexfs_cockpit.fleet.doctor",
    "vexfs_cockpit.fleet.image",
    "vexfs_cockpit.fleet.commands",
    "vexfs_cockpit.klog.cli",
    "vexfs_cockpit.batch.kdev",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vexfs-cockpit",
        description="Boot test VMs, run the VexFS test domains in them, watch the kernel log, keep the history.",
        epilog="With no subcommand the cockpit TUI opens.",
    )
    parser.add_argument("--version", action="version", version=f"vexfs-cockpit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
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


def main(argv: Sequence[str] | None = None) -> int:
    # Warnings from the engine (e.g. a transport retry) are one plain line on stderr.
    logging.basicConfig(level=logging.WARNING, format="vexfs-cockpit: %(name)s: %(message)s")
    parser = build_parser()
    args = parser.parse_args(argv)
    handler: Callable[[argparse.Namespace], int] | None = getattr(args, "handler", None)
    try:
        if handler is None:
            if args.command is None:
                return _open_tui(args)
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
