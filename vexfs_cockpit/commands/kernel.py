"""`vexfs-cockpit kernel config [--check FILE|TREE|VERSION]`: the config fragment a test
kernel needs (merged onto tinyconfig it is one), or which of those options a kernel
config lacks."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vexfs_cockpit.errors import UsageError


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("kernel", help="what a test guest's kernel config needs")
    sub = p.add_subparsers(dest="kernel_command", metavar="ACTION")
    c = sub.add_parser("config", help="print the fragment to merge for a test kernel, or --check a config")
    c.add_argument("--check", metavar="FILE|TREE|VERSION",
                   help="a .config file, a kernel tree (its .config), or an installed kernel version (/boot/config-V)")
    c.set_defaults(handler=cmd_kernel_config)
    p.set_defaults(handler=lambda args: (p.print_help(sys.stderr), 2)[1])


def cmd_kernel_config(args: argparse.Namespace) -> int:
    from vexfs_cockpit.images.kconfig import config_path, fragment, missing, read_kconfig

    if not args.check:
        sys.stdout.write(fragment())
        return 0
    path = Path(args.check)
    if path.is_dir():
        path = path / ".config"  # a kernel tree
        if not path.is_file():
            raise UsageError(f"--check {args.check}: a directory without a .config: give a configured kernel tree "
                             "(`make defconfig` there, or `kernel config` merged in) or a config file")
    elif not path.exists() and "/" not in args.check:
        path = config_path(args.check)
    if not path.is_file():
        raise UsageError(f"--check {args.check}: no such config file (nor {config_path(args.check)}): give a .config path or an installed version")
    gaps = missing(read_kconfig(path))
    for need, have in gaps:
        print(f"{need.option} {have}: {need.why}")
    print(f"{path}: {'everything a test guest needs' if not gaps else f'{len(gaps)} option(s) missing'}")
    return 1 if gaps else 0
