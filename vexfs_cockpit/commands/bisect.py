"""`vexfs-cockpit bisect GOOD BAD --test DOMAIN/TEST NAME`: the first commit of the
module's git history at which a test fails, found on one running dev VM.

Each step checks the commit out in a private worktree, builds it for the VM's kernel,
reloads it and runs the test (the warm loop's cycle). A commit that does not build is
skipped, as git bisect's exit 125. Both ends are checked first: GOOD must pass and BAD
must fail. The answer names the first bad commit and the history run holding its
evidence (`vexfs-cockpit history show RUN`). Exit 0 found, 1 not found (ends wrong or
only skipped commits left), 2 usage, 3 infrastructure.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vexfs_cockpit.commands.run import add_run_options
from vexfs_cockpit.errors import InfraError, UsageError

_REV = r"^[A-Za-z0-9][A-Za-z0-9._/~^@{}-]{0,200}$"


def add_parser(subparsers: Any) -> None:
    p = subparsers.add_parser("bisect", help="find the first commit of the module at which a test fails",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_run_options(p)
    p.add_argument("--uri", default=None, help="libvirt URI (default: fleet.libvirt_uri)")
    p.add_argument("--test", required=True, metavar="DOMAIN/TEST", help="the test that tells good from bad")
    p.add_argument("good", help="a commit where the test passes")
    p.add_argument("bad", help="a later commit where it fails")
    p.add_argument("name", help="dev VM from `vm start`: short name or a full vexfs-* name")
    p.set_defaults(handler=cmd_bisect)


def cmd_bisect(args: argparse.Namespace) -> int:
    return asyncio.run(bisect(args))


def _git(repo: Path, *argv: str) -> str:
    proc = subprocess.run(["git", "-C", str(repo), *argv], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise UsageError(f"git {' '.join(argv)}: {proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f'exit {proc.returncode}'}")
    return proc.stdout.strip()


@dataclass(frozen=True, slots=True)
class Step:
    commit: str
    outcome: str  # good | bad | skip
    line: str
    run_id: str


def first_bad(commits: list[str], verdict: dict[str, str]) -> tuple[str | None, list[str]]:
    """Given verdicts for some of ``commits`` (oldest first; the first is good, the last
    bad), the first bad commit when the verdicts pin it down, else None and the commits
    still in question (skips included). Pure: the search below decides what to test."""
    lo = max((i for i, c in enumerate(commits) if verdict.get(c) == "good"), default=0)
    hi = min((i for i, c in enumerate(commits) if verdict.get(c) == "bad" and i > lo), default=len(commits) - 1)
    between = commits[lo + 1:hi]
    if all(verdict.get(c) == "skip" for c in between):
        return (commits[hi] if not between else None), between
    return None, [c for c in between if c not in verdict]


def next_to_test(commits: list[str], verdict: dict[str, str]) -> str | None:
    """The untested commit nearest the middle of the range still in question."""
    open_ = [c for c in first_bad(commits, verdict)[1] if c not in verdict]  # skipped ones stay skipped
    if not open_:
        return None
    lo = max((i for i, c in enumerate(commits) if verdict.get(c) == "good"), default=0)
    hi = min((i for i, c in enumerate(commits) if verdict.get(c) == "bad" and i > lo), default=len(commits) - 1)
    mid = (lo + hi) / 2
    return min(open_, key=lambda c: abs(commits.index(c) - mid))


async def bisect(args: argparse.Namespace) -> int:
    import re

    from vexfs_cockpit.app.kdev import module_of, preflight
    from vexfs_cockpit.commands.cycle import Cycle
    from vexfs_cockpit.config.load import config_from_args
    from vexfs_cockpit.fleet.devvm import full_name
    from vexfs_cockpit.transport.pool import TargetPool

    if "/" not in args.test:
        raise UsageError(f"--test: expected DOMAIN/TEST, found {args.test!r}")
    for rev in (args.good, args.bad):
        if not re.match(_REV, rev):
            raise UsageError(f"{rev!r} is not a git revision")
    cfg = config_from_args(args)
    src = module_of(cfg).src
    if not src.is_dir():
        raise UsageError(f"module.build_path: {src} is not a directory")
    repo = Path(_git(src, "rev-parse", "--show-toplevel"))
    rel = src.resolve().relative_to(repo.resolve())
    good, bad = _git(repo, "rev-parse", "--verify", f"{args.good}^{{commit}}"), _git(repo, "rev-parse", "--verify", f"{args.bad}^{{commit}}")
    path_ = _git(repo, "rev-list", "--first-parent", "--reverse", f"{good}..{bad}").split()
    if not path_ or path_[-1] != bad:
        raise UsageError(f"{args.bad} does not descend from {args.good} along first parents")
    commits = [good, *path_]
    vm = full_name(args.name, cfg.env)
    await preflight(cfg, vm, args.uri)

    targets = TargetPool()
    verdict: dict[str, str] = {}
    steps: dict[str, Step] = {}
    with tempfile.TemporaryDirectory(prefix="vexfs-bisect-") as tmp:
        wt = Path(tmp) / "wt"
        _git(repo, "worktree", "add", "--detach", str(wt), good)
        try:
            sets = [*args.set, f"module.build_path={wt / rel}"]
            step_args = argparse.Namespace(**{**vars(args), "set": sets, "tests": args.test})
            cycle = Cycle(step_args, targets, Path(tmp) / "report.json")
            step_cfg = config_from_args(step_args)

            async def test(commit: str) -> Step:
                _git(wt, "checkout", "--quiet", "--detach", commit)
                line = await cycle.run(step_cfg, vm)
                if cycle.outcome == "error":
                    raise InfraError(f"bisect stopped at {commit[:12]}: {line}")
                step = Step(commit, cycle.outcome, line, cycle.run_id)
                print(f"{commit[:12]} {step.outcome:<4} {_git(repo, 'log', '-1', '--format=%s', commit)[:60]} — {line}", flush=True)
                return step

            print(f"bisecting {len(commits) - 1} commits of {rel} for {args.test} on {vm}", flush=True)
            for end, want in ((bad, "bad"), (good, "good")):
                step = steps[end] = await test(end)
                if step.outcome != want:
                    print(f"{args.good if want == 'good' else args.bad} is {step.outcome}, not {want}: nothing to bisect")
                    return 1
                verdict[end] = want
            while (commit := next_to_test(commits, verdict)) is not None:
                step = steps[commit] = await test(commit)
                verdict[commit] = step.outcome
        finally:
            await targets.aclose()
            _git(repo, "worktree", "remove", "--force", str(wt))
    found, left = first_bad(commits, verdict)
    if found is None:
        print(f"only skipped commits left between the last good and first bad: {', '.join(c[:12] for c in left)}")
        return 1
    step = steps[found]
    print(f"first bad commit: {found} {_git(repo, 'log', '-1', '--format=%s', found)}")
    print(f"its run: {step.run_id or '(no test run: the module did not load)'} — `vexfs-cockpit history show {step.run_id}`"
          if step.run_id else f"its result: {step.line}")
    return 0
