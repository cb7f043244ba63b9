"""One warm-loop cycle on a running dev VM: build for its kernel, unload the old module,
run tests there, load the new module; one line for it. `watch` runs one per save,
`bisect` one per commit.

The unload does not depend on the build, so it runs in the guest while the host
compiles. The tests come before the load: their domain starts by unloading the module
and loads it itself, so a load before them would be undone at once (an insmod and an
rmmod for nothing, ~0.1 s under TCG); loaded after them, the new module stays in the
dev VM for the developer, which the tests' own teardown would otherwise prevent.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from vexfs_cockpit.app.kdev import build_for, kload, kunload, module_of, report_build
from vexfs_cockpit.commands.kdev import ktest
from vexfs_cockpit.errors import CockpitError


class Cycle:
    """One save's build → reload → tests, summarised in one line."""

    def __init__(self, args: argparse.Namespace, targets: Any, report: Path):
        self.args = args
        self.targets = targets
        self.report = report
        self.failing: list[str] = []  # DOMAIN/TEST that failed on the last completed cycle
        # The last cycle: good (all passed), bad (load or a test failed), skip (it did not
        # build: git bisect's 125) or error (the VM, not the code: unload or no results).
        self.outcome = ""
        self.run_id = ""  # its test run in the history

    def _tests(self) -> str | None:
        return self.args.tests or (",".join(self.failing) if self.failing else None)

    async def run(self, cfg: Any, vm: str) -> str:
        started = time.monotonic()
        quiet = io.StringIO()
        steps: list[tuple[str, float]] = []  # (step, its end): where a slow save went
        side_by_side = ""  # the build and the unload, each with its own time

        def mark(step: str) -> None:
            steps.append((step, time.monotonic()))

        def took() -> str:
            parts, last = [side_by_side] if side_by_side else [], started_rest
            for step, end in steps:
                parts.append(f"{step} {end - last:.1f}")
                last = end
            return f"{time.monotonic() - started:.1f}s" + (f": {' · '.join(parts)}" if parts else "")

        self.outcome, self.run_id = "skip", ""
        started_rest = started
        build_out, unload_out = io.StringIO(), io.StringIO()

        async def timed(coro: Any) -> tuple[Any, float]:
            t0 = time.monotonic()
            return await coro, time.monotonic() - t0

        # Both run to their end (no half-killed rmmod, no make left behind); a newer save
        # cancels both.
        built, unloaded = await asyncio.gather(
            timed(build_for(cfg, vm, uri=self.args.uri)),
            timed(kunload(cfg, vm, uri=self.args.uri, out=unload_out, targets=self.targets)),
            return_exceptions=True,
        )
        for outcome in (built, unloaded):  # the build's failure first, as when they ran in turn
            if isinstance(outcome, BaseException):
                raise outcome
        res, build_s = built
        unload_rc, unload_s = unloaded
        side_by_side = f"build {build_s:.1f} {res.how}, unload {unload_s:.1f} alongside"
        started_rest = time.monotonic()
        if not report_build(res, module_of(cfg), build_out):
            return f"build FAILED ({took()}): {_first(build_out.getvalue(), ('error', 'Error')) or 'see kbuild'}"
        self.outcome = "error"
        if unload_rc != 0:
            return f"unload FAILED ({took()}): {_last(unload_out.getvalue())}"
        tests = self._tests()
        ns = argparse.Namespace(
            config=self.args.config, env=self.args.env, set=list(self.args.set), db=self.args.db, uri=self.args.uri,
            name=self.args.name, domains=None if tests else "kernel_module", tests=tests, timeout=None, retries=None,
            junit=None, json=str(self.report), show_klog=False, ktap=False,
            kdev_session=SimpleNamespace(targets=self.targets),  # ktest lends SSH from this pool
        )
        self.report.unlink(missing_ok=True)
        with contextlib.redirect_stdout(quiet):
            rc = await ktest(ns)
        mark("tests")
        load_failed, load_out = "", io.StringIO()
        try:
            if await kload(cfg, vm, uri=self.args.uri, out=load_out, targets=self.targets) != 0:
                load_failed = f"load FAILED: {_last(load_out.getvalue())}; "
        except CockpitError as err:  # the VM went away during the tests: their verdict still stands
            load_failed = f"load ERROR: {err}; "
        mark("load")
        report = _read(self.report)
        self.run_id = str(report.get("run", {}).get("run_id", ""))
        results = [(t["domain"], t["name"], t["status"]) for d in report.get("domains", []) for t in d.get("tests", [])]
        if not results:
            if load_failed.startswith("load FAILED"):
                self.outcome = "bad"
            return f"{load_failed}tests ERROR ({took()}), exit {rc}: {_last(quiet.getvalue())}"
        bad = [f"{d}/{n}" for d, n, s in results if s not in ("PASSED", "SKIPPED")]
        self.failing = bad
        self.outcome = "bad" if bad or load_failed.startswith("load FAILED") else "good" if not load_failed else "error"
        passed = sum(s == "PASSED" for _, _, s in results)
        verdict = "PASS" if not bad else "FAIL"
        tail = f": {', '.join(bad[:3])}{' …' if len(bad) > 3 else ''}" if bad else ""
        return f"{load_failed}{verdict} {passed}/{len(results)} ({took()}){tail}"


def _read(report: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(report.read_text()))
    except (OSError, ValueError):
        return {}


def _first(text: str, words: tuple[str, ...]) -> str:
    return next((ln.strip() for ln in text.splitlines() if any(w in ln for w in words)), "")


def _last(text: str) -> str:
    return next((ln.strip() for ln in reversed(text.splitlines()) if ln.strip()), "")
