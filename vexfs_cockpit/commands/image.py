"""`image build|show|base`: the guest images (the self-test initramfs and the disk
template's Debian base image)."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from vexfs_cockpit.config.load import fleet_from_args
from vexfs_cockpit.images.base import build_base_image, export_image
from vexfs_cockpit.images.initramfs import BuildRequest, build_image, find_image


def add_parser(subparsers: Any) -> None:
    image = subparsers.add_parser("image", help="build or inspect the self-test guest image")
    sub = image.add_subparsers(dest="image_command", metavar="ACTION")
    build = sub.add_parser("build", help="build the guest kernel+initramfs (cached; seconds)")
    build.add_argument("--force", action="store_true", help="rebuild even if the cached image is current")
    build.add_argument("--config", type=Path, default=None, help="config file (default: configs/default.yaml)")
    build.add_argument("--env", default=None, help="config environment overlay (dev, test, ci)")
    build.add_argument("--kernel", default=None, help="guest kernel: a version or a built kernel tree (default: fleet.guest_kernel)")
    build.add_argument(
        "--extra-tool", action="append", type=Path, default=[], metavar="PATH",
        help="also copy this host binary (with its libraries) into the guest's /usr/local/bin",
    )
    build.set_defaults(handler=cmd_image_build)
    show = sub.add_parser("show", help="print the current image's manifest (exit 1 if not built)")
    show.add_argument("--config", type=Path, default=None)
    show.add_argument("--env", default=None)
    show.set_defaults(handler=cmd_image_show)
    add_base_parser(sub)


def cmd_image_build(args: argparse.Namespace) -> int:
    fleet = fleet_from_args(args)
    req = BuildRequest.from_fleet(fleet, extra_tools=tuple(args.extra_tool))
    if args.kernel:
        req = BuildRequest(args.kernel, req.root, req.extra_tools)
    img = build_image(fleet, force=args.force, req=req, progress=print)
    size_mb = img.initrd.stat().st_size / 1e6
    print(f"guest image ready: {img.dir} (kernel {img.kernel_version}, initrd {size_mb:.1f} MB)")
    return 0


def cmd_image_show(args: argparse.Namespace) -> int:
    img = find_image(fleet_from_args(args))
    if img is None:
        print("no current guest image: run `vexfs-cockpit image build`")
        return 1
    print(json.dumps(img.to_manifest() | {"dir": str(img.dir)}, indent=2))
    return 0


def add_base_parser(sub: Any) -> None:
    base = sub.add_parser("base", help="build the disk template's Debian base image (cached; minutes)")
    base.add_argument("--out", type=Path, default=None, metavar="PATH", help="also put the qcow2 at PATH")
    base.add_argument("--force", action="store_true", help="rebuild even if the cached image is current")
    base.add_argument("--config", type=Path, default=None, help="config file (default: configs/default.yaml)")
    base.add_argument("--env", default=None, help="config environment overlay (dev, test, ci)")
    base.add_argument("--kernel", default=None, help="guest kernel version (default: fleet.guest_kernel)")
    base.set_defaults(handler=cmd_image_base)


def cmd_image_base(args: argparse.Namespace) -> int:
    fleet = fleet_from_args(args)
    started = time.monotonic()
    img = build_base_image(fleet, force=args.force, kernel_version=args.kernel, progress=print)
    path = export_image(img, args.out) if args.out else img.path
    size_mb = img.path.stat().st_size / 1e6
    print(f"base image ready: {path} (kernel {img.kernel_version}, {size_mb:.0f} MB, {time.monotonic() - started:.0f} s)")
    print(f"use it: export VEXFS_BASE_IMAGE_PATH={path}  (with --set fleet.template=disk)")
    return 0
