"""`kbuild`, `kload NAME`, `kunload NAME`, `ktest NAME`: the kernel developer's warm loop
on a dev VM from `vm start` that stays up (the operations live in ``app.kdev``).

Exit codes: 0 ok, 1 build/load/unload/test failure or kernel report, 2 usage/config,
3 infrastructure (no such VM, VM not running, kernel headers missing).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Coroutine, Iterable
from typing import TYPE_CHECKING, Any

from vexfs_cockpit.app.kdev import expand_tests, kbuild_cmd, kload, kunload, preflight

if TYPE_CHECKING:
    from vexfs_cockpit.config.models import CockpitConfig
    from vexfs_cockpit.transport.pool import TargetPool


async def ktest(args: argparse.Namespace) -> int:
    from vexfs_cockpit.commands.run import run_batch
    from vexfs_cockpit.engine.discovery import discover_domains
    from vexfs_cockpit.fleet.attach import AttachProvider
    from vexfs_cockpit.fleet.devvm import full_name

    registry = discover_domains()
    cfg = _config(args, known_domains=registry)  # plugin domains' sections are valid here, as in `run`
    name = full_name(args.name, cfg.env)
    if args.tests:
        items, added = expand_tests(args.tests, registry)
        if added:
            print(f"also running {', '.join(added)} (dependencies of --tests)")
        args.tests = ",".join(items)
        if not args.domains:
            args.domains = ",".join(dict.fromkeys(i.split("/", 1)[0] for i in items))
    booted_tree = await preflight(cfg, name, args.uri)
    # The warm loop just ran kbuild: module_build may take that build of identical sources.
    args.set = [*(getattr(args, "set", None) or []), "domains.kernel_module.options.reuse_identical_build=true"]
    if booted_tree and str(cfg.fleet.kernel_tree) != booted_tree:
        # the VM booted a kernel tree (vm start --kernel TREE): module_build builds against it
        args.set.append(f"fleet.guest_kernel={booted_tree}")

    def provider(c: CockpitConfig, bus: Any) -> AttachProvider:
        return AttachProvider(c, bus, name, uri=args.uri, targets=_targets(args))

    return await run_batch(args, provider)


# ----------------------------------------------------------------------------- CLI
def _config(args: argparse.Namespace, known_domains: Iterable[str] | None = None) -> CockpitConfig:
    from vexfs_cockpit.config.load import config_from_args

    return config_from_args(args, known_domains=known_domains)


def _vm_name(args: argparse.Namespace, cfg: CockpitConfig) -> str:
    from vexfs_cockpit.fleet.devvm import full_name

    return full_name(args.name, cfg.env)


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", metavar="FILE", help="profile YAML or name (default: configs/default.yaml)")
    p.add_argument("--env", metavar="ENV", help="environment overlay: dev, test or ci (default: dev)")
    p.add_argument("--set", metavar="KEY=VALUE", action="append", default=[], help="override a config key")
    p.add_argument("--uri", default=None, help="libvirt URI (default: fleet.libvirt_uri)")


_NAME_HELP = "dev VM: short name (-> vexfs-<env>-NAME-0) or a full vexfs-* name, as given to `vm start`"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("kbuild", help="build the module under test on the host against the guest kernel")
    _common(p)
    p.add_argument("--vm", metavar="NAME", help="build for this running dev VM's kernel (default: the image's)")
    p.add_argument("--kernel", metavar="V|TREE", help="guest kernel: auto, host, an installed version or a built kernel tree (= --set fleet.guest_kernel=V)")
    p.set_defaults(handler=cmd_kbuild)

    p = subparsers.add_parser("kload", help="push the last built module into a dev VM and insmod it")
    _common(p)
    p.add_argument("name", help=_NAME_HELP)
    p.add_argument("--params", metavar='"K=V ..."', default=None, help="insmod parameters (default: module.module_params)")
    p.set_defaults(handler=cmd_kload)

    p = subparsers.add_parser("kunload", help="rmmod the module under test in a dev VM (unmounting it first)")
    _common(p)
    p.add_argument("name", help=_NAME_HELP)
    p.set_defaults(handler=cmd_kunload)

    from vexfs_cockpit.commands.run import add_run_options, add_selection_options

    p = subparsers.add_parser("ktest", help="run domain tests on a running dev VM (results go to the history)")
    add_run_options(p)
    p.add_argument("--uri", default=None, help="libvirt URI (default: fleet.libvirt_uri)")
    p.add_argument("name", help=_NAME_HELP)
    add_selection_options(p, domains_default="those of --tests, else all enabled",
                          tests_help="run only these tests (and what they depend on)")
    p.set_defaults(handler=cmd_ktest)


def _arun(args: argparse.Namespace, coro: Coroutine[Any, Any, int]) -> int:
    """Run a command's coroutine: on the kdev agent's loop when it serves the command
    (its SSH connections persist there), else on a loop of its own."""
    session = getattr(args, "kdev_session", None)
    return session.run(coro) if session is not None else asyncio.run(coro)


def _targets(args: argparse.Namespace) -> TargetPool | None:
    session = getattr(args, "kdev_session", None)
    return session.targets if session is not None else None


def cmd_kbuild(args: argparse.Namespace) -> int:
    cfg = _config(args)
    vm = _vm_name(argparse.Namespace(name=args.vm), cfg) if args.vm else None
    return _arun(args, kbuild_cmd(cfg, vm, uri=args.uri))


def cmd_kload(args: argparse.Namespace) -> int:
    cfg = _config(args)
    return _arun(args, kload(cfg, _vm_name(args, cfg), params=args.params, uri=args.uri, targets=_targets(args)))


def cmd_kunload(args: argparse.Namespace) -> int:
    cfg = _config(args)
    return _arun(args, kunload(cfg, _vm_name(args, cfg), uri=args.uri, targets=_targets(args)))


def cmd_ktest(args: argparse.Namespace) -> int:
    return _arun(args, ktest(args))

