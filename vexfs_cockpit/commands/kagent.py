"""`vexfs-cockpit kagent status|stop`: look at or stop the kdev agent."""

from __future__ import annotations

import argparse
import datetime as dt
import sys
from typing import Any

from vexfs_cockpit.agent import client
from vexfs_cockpit.agent.protocol import ENV_SWITCH, agent_dir, socket_path


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser(
        "kagent",
        help="the kdev agent that keeps kbuild/kload/kunload/ktest warm (status, stop)",
        description=f"kbuild/kload/kunload/ktest run in a warm background interpreter started on first use; "
        f"it exits when idle or when the cockpit's code changes. {ENV_SWITCH}=0 turns it off.",
    )
    p.add_argument("action", choices=("status", "stop"))
    p.set_defaults(handler=cmd_kagent)


def cmd_kagent(args: argparse.Namespace) -> int:
    try:
        status = client.control(args.action)
    except client.Refused as err:
        print(f"vexfs-cockpit: kdev agent not used: {err}", file=sys.stderr)
        return 3
    if status is None:
        print(f"no kdev agent running (socket {socket_path(agent_dir())})")
        return 0
    started = dt.datetime.fromtimestamp(status["started"]).strftime("%H:%M:%S")
    verb = "stopping" if status.get("stopping") else "running"
    print(f"kdev agent pid {status['pid']} {verb}: since {started}, {status['requests']} commands, "
          f"exits after {status['idle_s']:.0f}s idle")
    return 0
