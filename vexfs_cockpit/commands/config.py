"""`vexfs-cockpit config check [FILE] [--env ENV] [--set KEY=VALUE]`: validate a config
(including the fleet's resource caps) and print the effective merged config."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from vexfs_cockpit.config.caps import check_resource_caps, enabled_domains
from vexfs_cockpit.config.sources import check_module_sources
from vexfs_cockpit.config.load import load_config, parse_override
from vexfs_cockpit.config.models import DOMAIN_NAMES
from vexfs_cockpit.config.render import render_effective
from vexfs_cockpit.errors import CockpitError, UsageError


def _plugin_domains() -> set[str]:
    """Domain names the installed plugins add (imported lazily: only this command needs
    it). A plugin that fails to import is the run's problem, not the config's: warn and
    check against the built-in names."""
    from vexfs_cockpit.engine.discovery import discover_domains

    try:
        return set(discover_domains())
    except CockpitError as err:
        print(f"vexfs-cockpit: warning: {err}; checking against the built-in domains only", file=sys.stderr)
        return set()


def add_parser(subparsers: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    config = subparsers.add_parser("config", help="validate and show configuration")
    sub = config.add_subparsers(dest="config_command", metavar="SUBCOMMAND")
    check = sub.add_parser(
        "check",
        help="validate a config and print the effective merged result",
        description="Merge profile <- configs/env/ENV.yaml <- $VEXFS_* <- --set, validate it "
        "(keys, types, ranges, domains, resource caps) and print the result as YAML. Exit 2 on a bad config.",
    )
    check.add_argument("file", nargs="?", type=Path, help="profile YAML or name (default: configs/default.yaml)")
    # --config as `run` and every other command take it.
    check.add_argument("--config", dest="config_file", type=Path, metavar="FILE", help="the same as FILE")
    check.add_argument("--env", default=None, help="overlay from configs/env (default: dev)")
    check.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a key, e.g. --set execution.retry_count=2 (repeatable)",
    )
    check.set_defaults(handler=cmd_config_check)


def cmd_config_check(args: argparse.Namespace) -> int:
    try:
        overrides = dict(parse_override(item) for item in getattr(args, "overrides", None) or [])
        known = set(DOMAIN_NAMES) | _plugin_domains()
        file, flag = getattr(args, "file", None), getattr(args, "config_file", None)
        if file is not None and flag is not None and file != flag:
            raise UsageError(f"config check: FILE {file} and --config {flag} disagree: give one")
        cfg = load_config(file or flag, getattr(args, "env", None), overrides, known_domains=known)
        if cfg.store.url:  # printed below: a password in it is refused, and not echoed
            from vexfs_cockpit.config.load import config_origin
            from vexfs_cockpit.store.location import parse_location

            parse_location(cfg.store.url, f"{config_origin(cfg, 'store.url')}: store.url")
        selected = enabled_domains(cfg, [*DOMAIN_NAMES, *sorted(known - set(DOMAIN_NAMES))])
        check_resource_caps(cfg, selected)
        check_module_sources(cfg, selected)
    except CockpitError as err:
        print(f"vexfs-cockpit: {err}", file=sys.stderr)
        return err.exit_code
    sys.stdout.write(render_effective(cfg, selected))
    return 0
