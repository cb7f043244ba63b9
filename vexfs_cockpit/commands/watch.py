"""`vexfs-cockpit watch NAME [--tests D/T,...]`: the warm loop on every save.

Watches the module source (``module.build_path``). Each save rebuilds incrementally for
the dev VM's kernel (kbuild's records replayed when they cover the save, else make)
while the old module is unloaded in the running dev VM NAME, reruns the tests named
with ``--tests``, else the ones that failed on the last save (else the kernel_module
domain), and loads the new module, printing one result line per save (see
``commands.cycle``). A save during a cycle cancels it and starts again. Results land
in the history like `ktest`'s.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from vexfs_cockpit.app.kdev import module_of, preflight
from vexfs_cockpit.commands.cycle import Cycle
from vexfs_cockpit.commands.run import add_run_options
from vexfs_cockpit.engine.module import is_source_file
from vexfs_cockpit.errors import CockpitError


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("watch", help="on every save of the module source: rebuild, reload in a dev VM, rerun tests",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(p)
    p.add_argument("--uri", default=None, help="libvirt URI (default: fleet.libvirt_uri)")
    p.add_argument("name", help="dev VM from `vm start`: short name or a full vexfs-* name")
    p.add_argument("--tests", metavar="DOMAIN/TEST,...", help="rerun these on every save (default: what failed last)")
    p.add_argument("--debounce-ms", type=int, default=300, metavar="MS", help="wait for saves to settle (default 300)")
    # For tests and scripts: stop after N completed cycles.
    p.add_argument("--max-cycles", type=int, default=0, help=argparse.SUPPRESS)
    p.set_defaults(handler=cmd_watch)


def cmd_watch(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(watch(args))
    except KeyboardInterrupt:
        return 0  # Ctrl-C is how a watch ends


def _source_change(_change: Any, path: str) -> bool:
    return is_source_file(Path(path).name)


async def watch(args: argparse.Namespace) -> int:
    from watchfiles import awatch

    from vexfs_cockpit.config.load import config_from_args
    from vexfs_cockpit.fleet.devvm import full_name
    from vexfs_cockpit.transport.pool import TargetPool

    cfg = config_from_args(args)
    mod = module_of(cfg)
    vm = full_name(args.name, cfg.env)
    await preflight(cfg, vm, args.uri)  # one line and exit 3 when the VM is not there
    targets = TargetPool()
    stop = asyncio.Event()
    done = 0
    with tempfile.TemporaryDirectory(prefix="vexfs-watch-") as tmp:
        cycle = Cycle(args, targets, Path(tmp) / "report.json")
        running: asyncio.Task[str] | None = None

        async def one(n: int) -> str:
            nonlocal done
            try:
                line = await cycle.run(cfg, vm)
            except CockpitError as err:  # a dead VM, a dropped link: this save's line says so
                line = f"ERROR: {err}"
            print(f"{time.strftime('%H:%M:%S')} save {n}: {line}", flush=True)
            done += 1
            if args.max_cycles and done >= args.max_cycles:
                stop.set()
            return line

        what = args.tests or "what failed last (else kernel_module)"
        saves = 0
        watching = False
        try:
            # yield_on_timeout: the first (empty) answer means the watcher is in place, so
            # "watching" is said only once a save would be seen.
            async for changes in awatch(mod.src, watch_filter=_source_change, debounce=args.debounce_ms,
                                        step=20, stop_event=stop, rust_timeout=200, yield_on_timeout=True):
                if not watching:
                    print(f"watching {mod.src} for {vm}: a save rebuilds, reloads and reruns {what}; Ctrl-C stops",
                          flush=True)
                    watching = True
                if not changes:
                    continue
                saves += 1
                if running is not None and not running.done():
                    running.cancel()
                    await asyncio.gather(running, return_exceptions=True)
                    print(f"{time.strftime('%H:%M:%S')} save {saves - 1}: cancelled by a newer save", flush=True)
                running = asyncio.create_task(one(saves))
            if running is not None:
                await asyncio.gather(running, return_exceptions=True)
        finally:
            await targets.aclose()
    return 0
