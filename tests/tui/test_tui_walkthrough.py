"""Pilot tests of the findings of a newcomer's walkthrough (issue 20): what the
dashboard, its dialogs and the key bar tell someone who has not read the code.

Real engine events go onto the backend's real bus (and, for the progress totals, a
real Runner publishes them); commands the TUI sends are read back from the fake backend.
"""

from __future__ import annotations

import asyncio
import dataclasses
from pathlib import Path

from textual.widgets import DataTable

from vexfs_cockpit import DomainBase, TestResult, TestStatus
from vexfs_cockpit.config.models import CockpitConfig
from vexfs_cockpit.engine.events import DomainStarted, KernelEventRaised, RunStarted, TestFinished
from vexfs_cockpit.engine.runner import Runner
from vexfs_cockpit.klog.model import KernelReport, Severity
from vexfs_cockpit.engine.runner import RunRequest as EngineRunRequest
from vexfs_cockpit.tui.backend import VmInfo
from vexfs_cockpit.tui.widgets.kernel_log_pane import KernelLogPane
from vexfs_cockpit.tui.widgets.kernel_log_view import KernelLogView
from vexfs_cockpit.tui.widgets.run_summary import RunSummary

from tests.support.engine import LocalProvider
from tests.support.tui import cells, cockpit, feed, settle
from tests.support.tui import T0, VM_A, UiBackend, db, result, screen_text  # noqa: F401 (fixture)


def summary(app) -> str:
    return str(app.screen_stack[0].query_one(RunSummary).render())


# -- item 2: progress totals and the ETA -------------------------------------------------------

_GATE: asyncio.Event | None = None


class First(DomainBase):
    """Two tests; the second waits for the test to let it finish."""

    name = "first"

    async def test_a(self) -> TestResult:
        return TestResult(status=TestStatus.PASSED)

    async def test_b(self) -> TestResult:
        assert _GATE is not None
        await _GATE.wait()
        return TestResult(status=TestStatus.PASSED)


class Second(DomainBase):
    """Runs after First (one domain at a time)."""

    name = "second"

    async def test_c(self) -> TestResult:
        return TestResult(status=TestStatus.PASSED)

    async def test_d(self) -> TestResult:
        return TestResult(status=TestStatus.PASSED)


async def test_progress_counts_every_selected_test_from_the_start(tmp_path: Path):
    # A real Runner on the app's bus: the second domain has not started, yet its tests count.
    global _GATE
    _GATE = asyncio.Event()
    be = UiBackend()
    async with cockpit(be, size=(120, 40)) as (app, pilot, _):
        runner = Runner(be.bus, LocalProvider(tmp_path), {"first": First, "second": Second})
        req = EngineRunRequest(config=CockpitConfig(), domains=["first", "second"], run_id="run-x",
                               artifacts_dir=tmp_path, project_root=tmp_path)
        run = asyncio.create_task(runner.execute(req))
        for _ in range(200):
            await asyncio.sleep(0.02)
            app.pump_now()
            if app.state.domains.get("first") is not None and app.state.domains["first"].done == 1:
                break
        await pilot.pause()
        assert app.state.domains["second"].status == "pending"
        assert "1/4 done" in summary(app), summary(app)
        doms = app.screen.query_one("#domains", DataTable)
        assert cells(doms, doms.get_row_index("second"))[1].endswith("0/2")  # its 2 tests, before it starts
        _GATE.set()
        await run
        app.pump_now()
        await pilot.pause()
        assert app.state.run is not None and app.state.run.status == "passed"


def _started(planned: dict[str, tuple[str, ...]]) -> list:
    return [
        RunStarted(run_id="run-9", config_path="", profile="selftest", env="dev", domains=tuple(planned), planned=planned, ts=T0 - 5),
        DomainStarted(run_id="run-9", domain=next(iter(planned)), vm="vexfs-dev-kernel_module-0",
                      planned_tests=next(iter(planned.values())), ts=T0 - 5),
    ]


async def test_eta_from_the_history_of_the_same_tests(db):
    # Seeded history (dev): module_build 1.0 s twice, module_load 2.0 and 2.6 s, mount 0.5 s.
    be = UiBackend(db_path=db)
    async with cockpit(be, size=(120, 40)) as (app, pilot, _):
        await feed(app, pilot, _started({"kernel_module": ("module_build", "module_load"), "filesystem_operations": ("mount",)}))
        await settle(app, pilot)
        # kernel_module started 5 s ago, nothing running yet: 1.0 + 2.3, then mount 0.5
        assert "0/3 done · ETA 3.8s" in summary(app), summary(app)
        doms = app.screen.query_one("#domains", DataTable)
        assert cells(doms, doms.get_row_index("filesystem_operations"))[5] == "0.5s"


async def test_eta_says_why_there_is_none(db):
    be = UiBackend(db_path=db)
    async with cockpit(be, size=(120, 40)) as (app, pilot, _):
        await feed(app, pilot, _started({"kernel_module": ("brand_new", "another_new")}))
        await settle(app, pilot)
        assert "ETA: no earlier runs of these tests" in summary(app), summary(app)
        await feed(app, pilot, [RunStarted(run_id="run-10", config_path="", profile="selftest", env="dev",
                                           domains=("kernel_module",), planned={"kernel_module": ("module_build", "brand_new")}, ts=T0)])
        await settle(app, pilot)
        assert "ETA ≥1.0s (1 test never ran)" in summary(app), summary(app)


# -- item 4: one name per VM ---------------------------------------------------------------------


async def test_a_vm_has_one_name_everywhere_and_its_libvirt_name_in_the_menu():
    from textual.widgets import Label

    from vexfs_cockpit.engine.events import InfraProblem, KernelLogLine
    from vexfs_cockpit.tui.commands import CockpitCommands
    from vexfs_cockpit.tui.screens.vm_menu import VmMenuScreen

    # The same domain's VM in two environments (a dev run, then a ci run): the case that
    # gave one VM four names (kmod-0, dev-kernel_module-0, vexfs-dev-kernel…, the full one).
    ci_vm = "vexfs-ci-kernel_module-0"
    be = UiBackend(vms=[VmInfo(VM_A, "running"), VmInfo(ci_vm, "running")])
    async with cockpit(be, size=(120, 40)) as (app, pilot, notes):
        await feed(app, pilot, [KernelLogLine(vm=VM_A, line_no=1, text="Linux version 6.1.0", ts=T0),
                                KernelLogLine(vm=ci_vm, line_no=1, text="Linux version 6.1.0", ts=T0),
                                InfraProblem(message="SSH dropped", vm=VM_A, ts=T0)])
        vms = app.screen.query_one("#vm-table", DataTable)
        assert cells(vms, vms.get_row_index(VM_A))[0] == "dev/kmod-0"
        assert cells(vms, vms.get_row_index(ci_vm))[0] == "ci/kmod-0"
        log = app.screen.query_one(KernelLogView)
        assert [row.split()[0] for row in log.lines] == ["dev/kmod-0", "ci/kmod-0"]
        assert ("dev/kmod-0: SSH dropped", "error") in notes
        await pilot.press("v")  # the log's VM filter names it the same way
        assert "vm=dev/kmod-0" in screen_text(app)
        titles = {t for t, _, _ in CockpitCommands(app.screen)._entries()}
        assert "Reset VM dev/kmod-0" in titles and not any(VM_A in t for t in titles)
        vms.focus()
        vms.move_cursor(row=vms.get_row_index(VM_A))
        await pilot.press("m")
        assert isinstance(app.screen, VmMenuScreen)
        text = screen_text(app)
        assert "dev/kmod-0 (running)" in text and f"libvirt name: {VM_A}" in text
        assert app.screen.query_one("#vm-libvirt-name", Label)


# -- item 5: kernel reports said once, info reports explained ---------------------------------------

TAINT = KernelReport(kind="taint", title="taint: out-of-tree module vexfs_selftest", severity=Severity.INFO,
                     line=7, module="vexfs_selftest", text="vexfs_selftest: loading out-of-tree module taints kernel.", vm=VM_A)


async def test_info_reports_say_what_they_are_and_taint_is_said_once(tmp_path: Path):
    from vexfs_cockpit.engine.bus import EventBus
    from vexfs_cockpit.store.recorder import HistoryStore, Recorder
    from vexfs_cockpit.tui.screens.results import ResultsScreen
    from vexfs_cockpit.tui.screens.run_detail import RunDetailScreen
    from vexfs_cockpit.tui.widgets.evidence_view import EvidenceView

    from tests.support.tui import rendered
    from tests.support.tui import _run_events

    taint = KernelEventRaised(vm=VM_A, report=TAINT, run_id="run-t", domain="kernel_module", test="module_load", ts=T0)
    events = _run_events("run-t", "dev", T0 - 60, {("kernel_module", "module_load"): (TestStatus.PASSED, 1.0)}, kernel=[taint])
    path = tmp_path / "taint.db"
    store = HistoryStore.open(path)
    bus = EventBus()
    recorder = Recorder(store, bus)
    recorder.start()
    for ev in events:
        bus.publish(ev)
    await recorder.flush()
    await recorder.aclose()
    store.close()

    be = UiBackend(db_path=path)
    async with cockpit(be, size=(120, 40)) as (app, pilot, _):
        assert isinstance(events[3], KernelEventRaised)  # RunStarted, DomainStarted, TestStarted, the taint
        await feed(app, pilot, [*events[:4], dataclasses.replace(taint, report=dataclasses.replace(TAINT, line=8, title="taint: unsigned module vexfs_selftest"))])
        assert "2 info reports (not failures: taint; n shows them)" in summary(app), summary(app)
        await feed(app, pilot, events[4:5])  # module_load's result
        await pilot.press("r")
        assert isinstance(app.screen, ResultsScreen)
        body = rendered(app.screen.query_one(EvidenceView).query_one("#evidence").content)
        assert "INFO taint: out-of-tree module vexfs_selftest [" not in body  # module named in the title
        assert "INFO taint: out-of-tree module vexfs_selftest  (line 7, dev/kmod-0)" in body and "taint: taint" not in body
        await pilot.press("escape")
        app.push_screen(RunDetailScreen("run-t"))
        await settle(app, pilot)
        table = app.screen.query_one("#detail-events", DataTable)
        assert cells(table, 0)[1:] == ["INFO", "taint: out-of-tree module vexfs_selftest", "kernel_module.module_load", "dev/kmod-0"]
        text = screen_text(app)
        assert "taint: taint" not in text


# -- item 6: the VM menu offers what the VM's state allows ------------------------------------------


def menu_ids(app) -> list[str]:
    from textual.widgets import OptionList

    options = app.screen.query_one(OptionList)
    return [options.get_option_at_index(i).id for i in range(options.option_count)]


async def test_vm_menu_offers_only_what_the_state_allows_and_says_why():
    from vexfs_cockpit.tui.screens.confirm import ConfirmScreen
    from vexfs_cockpit.tui.screens.vm_menu import VmMenuScreen

    run_vm, dev_vm = VM_A, "vexfs-dev-manual-0"
    be = UiBackend(vms=[VmInfo(dev_vm, "stopped", dev_vm=True), VmInfo(run_vm, "running")])
    async with cockpit(be, size=(120, 40)) as (app, pilot, notes):
        vms = app.screen.query_one("#vm-table", DataTable)
        vms.focus()
        vms.move_cursor(row=vms.get_row_index(dev_vm))
        await pilot.press("m")
        assert isinstance(app.screen, VmMenuScreen)
        assert menu_ids(app) == ["start"]  # a stopped dev VM: Start, nothing to stop or talk to
        assert "dev/manual-0 is stopped: start it first (u)" in screen_text(app)
        await pilot.press("escape")
        await pilot.press("x")  # the single key asks no question about a stopped VM
        assert not isinstance(app.screen, ConfirmScreen)
        assert ("dev/manual-0 is stopped: start it first (u)", "warning") in notes

        vms.move_cursor(row=vms.get_row_index(run_vm))
        await pilot.press("m")
        assert menu_ids(app) == ["stop", "reset", "console", "kload", "kunload"]  # a run's VM: no SSH details
        note = str(app.screen.query_one("#vm-not-offered").render())
        assert note.startswith("not offered — SSH shell: no SSH for dev/kmod-0: only dev VMs from `vm start`"), note
        await pilot.press("escape")
        await pilot.press("i")
        await settle(app, pilot)
        assert any(m.startswith("no SSH for dev/kmod-0: only dev VMs from `vm start`") and s == "warning" for m, s in notes)
        assert not any("exited with" in m for m, _ in notes)


# -- item 3: this run's VMs and log, apart from everything else ------------------------------------


async def test_this_runs_vms_come_first_and_others_say_not_this_run():
    from vexfs_cockpit.engine.events import VmStateChanged

    earlier, other_cockpit, dev = VM_A, "vexfs-ci-filesystem_operations-0", "vexfs-dev-manual-0"
    ours = "vexfs-dev-kernel_module-1"  # -0 was taken by an earlier run's VM
    be = UiBackend(vms=[VmInfo(earlier, "running", "kernel_module"), VmInfo(other_cockpit, "running", "filesystem_operations"),
                        VmInfo(dev, "running", "manual", dev_vm=True)])
    async with cockpit(be, size=(120, 40)) as (app, pilot, _):
        vms = app.screen.query_one("#vm-table", DataTable)
        assert not any("not this run" in cells(vms, i)[6] for i in range(vms.row_count))  # no run yet: no "this run"
        await feed(app, pilot, [
            RunStarted(run_id="run-1", config_path="", profile="selftest", env="dev", domains=("kernel_module",),
                       planned={"kernel_module": ("module_build",)}, ts=T0),
            VmStateChanged(vm=ours, state="booting", ts=T0 + 1),
        ])
        assert cells(vms, 0)[0] == "dev/kmod-1" and "not this run" not in cells(vms, 0)[6]  # booting for this run
        await feed(app, pilot, [DomainStarted(run_id="run-1", domain="kernel_module", vm=ours, planned_tests=("module_build",), ts=T0 + 9)])
        rows = [cells(vms, i) for i in range(vms.row_count)]
        assert [r[0] for r in rows] == ["dev/kmod-1", "ci/fsops-0", "dev/kmod-0", "dev/manual-0"]
        assert rows[0][6] == "kernel_module"
        assert [r[6] for r in rows[1:]] == ["filesystem_operations · not this run", "kernel_module · not this run", "manual · not this run"]
        assert all(c.style == "dim" for c in vms.get_row_at(1)[:6])


async def test_each_run_starts_a_fresh_followed_log_with_earlier_lines_one_key_away():
    from vexfs_cockpit.engine.events import KernelLogLine

    from tests.support.tui import boot_lines, warn_event

    def started(run_id: str, t: float) -> RunStarted:
        return RunStarted(run_id=run_id, config_path="", profile="selftest", env="dev", domains=("kernel_module",),
                          planned={"kernel_module": ("module_load",)}, ts=t)

    async with cockpit(size=(120, 40)) as (app, pilot, _):
        pane = app.screen.query_one(KernelLogPane)
        view = pane.view
        lines, report = warn_event(VM_A, 31, T0)
        # One batch: lines before the run, the run's start, the run's own lines and a report.
        await feed(app, pilot, [*boot_lines(VM_A, 1, 30, T0), started("run-1", T0), *lines, report])
        assert len(view.lines) == 6 and "cut here" in view.lines[0]  # only this run's lines
        assert "run run-1 · b: earlier lines" in screen_text(app)
        await pilot.press("n")  # jump to the report: the log pauses there
        assert pane.paused
        await pilot.press("b")  # the lines before this run, apart
        assert pane.showing_earlier and len(view.lines) == 30
        assert "EARLIER" in screen_text(app) and "before run run-1 · b: back to run run-1" in screen_text(app)
        await pilot.press("b")
        assert not pane.showing_earlier and len(view.lines) == 6
        await pilot.press("n")
        assert pane.paused
        await feed(app, pilot, [started("run-2", T0 + 60), KernelLogLine(vm=VM_A, line_no=1, text="Linux version 6.1", ts=T0 + 61)])
        assert not pane.paused  # a new run follows again
        assert [row.split("│", 1)[1].strip() for row in view.lines] == ["Linux version 6.1"]
        assert view.is_vertical_scroll_end
        await pilot.press("b")  # run-1's lines, the report among them
        assert len(view.lines) == 6 and "run run-1 · b: back to run run-2" in screen_text(app)


# -- item 7: a re-run asks first and keeps the last run's results in reach -----------------------------


async def test_rerun_asks_first_and_both_runs_results_stay_reachable():
    from textual.widgets import DataTable as Table

    from vexfs_cockpit.engine.events import RunFinished
    from vexfs_cockpit.tui.screens.confirm import ConfirmScreen
    from vexfs_cockpit.tui.screens.results import ResultsScreen

    from tests.support.tui import mid_run_events

    be = UiBackend()
    async with cockpit(be, size=(120, 40)) as (app, pilot, _):
        await feed(app, pilot, [*mid_run_events(), RunFinished(run_id="run-1", status="failed", counts={}, ts=T0)])
        await pilot.press("r")
        assert isinstance(app.screen, ResultsScreen)
        table = app.screen.query_one("#results", Table)
        assert table.row_count == 3
        await pilot.press("down", "t")
        assert isinstance(app.screen, ConfirmScreen)  # not started without asking
        assert be.called("start_run") == []
        await pilot.press("n")
        assert be.called("start_run") == [] and isinstance(app.screen, ResultsScreen)
        await pilot.press("t", "y")
        await settle(app, pilot)
        assert len(be.called("start_run")) == 1
        # The engine starts the re-run: the screen shows it, the last run is one key away.
        await feed(app, pilot, [RunStarted(run_id="run-2", config_path="", profile="selftest", env="dev", domains=("kernel_module",),
                                           planned={"kernel_module": ("module_build", "module_load")}, ts=T0 + 10)])
        assert table.row_count == 0
        assert "run-2" in screen_text(app) and "b: 1 earlier run of this session" in screen_text(app)
        await pilot.press("b")
        assert table.row_count == 3 and "results of run run-1" in screen_text(app) and "earlier run 1 of 1" in screen_text(app)
        await feed(app, pilot, [TestFinished(run_id="run-2", result=result("kernel_module", "module_build", TestStatus.PASSED, 1.0, T0 + 11), ts=T0 + 12)])
        assert table.row_count == 3  # still run-1 while it is asked for
        await pilot.press("b")
        assert table.row_count == 1 and "results of run run-2" in screen_text(app)


# -- item 9: the start dialog reads without colour and explains itself -----------------------------------


def _session_backend():
    import argparse

    from vexfs_cockpit.app.session import Session
    from vexfs_cockpit.config.paths import find_project_root
    from vexfs_cockpit.engine.bus import EventBus
    from vexfs_cockpit.engine.discovery import discover_domains
    from vexfs_cockpit.tui.session_backend import SessionBackend

    from vexfs_cockpit.config.load import config_from_args

    args = argparse.Namespace(config=None, env=None, set=[])
    registry = discover_domains()
    session = Session(config=config_from_args(args, known_domains=set(registry)), bus=EventBus(), registry=registry,
                      provider=None, args=args, project_root=find_project_root())  # type: ignore[arg-type]
    return SessionBackend(session)


async def test_start_dialog_says_checked_in_words_whole_descriptions_and_what_each_env_means():
    from textual.widgets import Select

    from vexfs_cockpit.tui.screens.start_run import StartRunScreen
    from vexfs_cockpit.tui.widgets.domain_picker import DomainPicker

    real = _session_backend().run_choices()  # the session's own domains, docstrings and env files
    assert "up to 2 domains at once" in real.env_summaries["dev"] and "test timeout 5 min" in real.env_summaries["ci"]

    class Backend(UiBackend):
        def run_choices(self):
            return real

    be = Backend()
    async with cockpit(be, size=(80, 24)) as (app, pilot, _):
        await pilot.press("s")
        assert isinstance(app.screen, StartRunScreen)
        picker = app.screen.query_one(DomainPicker)
        first = real.domains[0]
        assert f"[x] {first}" in screen_text(app)  # chosen, in words
        await pilot.press("space")
        assert f"[ ] {first}" in screen_text(app) and f"[x] {real.domains[1]}" in screen_text(app)
        assert first not in picker.selected
        # the highlighted domain's description is shown whole (wrapped), not cut off
        await pilot.press("down")
        description = str(app.screen.query_one("#domain-description").render())
        assert description == f"{real.domains[1]}: {real.descriptions[real.domains[1]]}"
        assert " ".join(real.descriptions[real.domains[1]].split()[-2:]) in screen_text(app).replace("\n", " ")
        summary = str(app.screen.query_one("#env-summary").render())
        assert summary == f"{real.default_env}: {real.env_summaries[real.default_env]}"
        app.screen.query_one("#env", Select).value = "ci"
        await pilot.pause()
        assert str(app.screen.query_one("#env-summary").render()) == f"ci: {real.env_summaries['ci']}"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        request = be.called("start_run")[0][0]
        assert request.env == "ci" and first not in request.domains and len(request.domains) == len(real.domains) - 1


# -- item 10: orientation: header, concepts, palette, keys at 80 columns ----------------------------------


async def test_header_says_profile_env_module_kernel_and_where_history_is():
    from vexfs_cockpit.engine.events import KernelLogLine

    real = _session_backend().run_choices()
    assert real.profile == "selftest" and real.module == "vexfs_selftest" and real.guest_kernel == "auto"
    async with cockpit(UiBackend(), size=(120, 40)) as (app, pilot, _):
        header = str(app.screen.query_one("#session-header").render())
        for part in ("profile selftest", "env dev", "module vexfs_selftest", "kernel ? (known at the first boot)",
                     "history /nonexistent/vexfs-cockpit-test/history.db"):
            assert part in header, header
        await feed(app, pilot, [KernelLogLine(vm=VM_A, line_no=1, text="[    0.000000] Linux version 6.1.0-56-amd64 (debian-kernel@lists.debian.org)", ts=T0)])
        assert "kernel 6.1.0-56-amd64" in str(app.screen.query_one("#session-header").render())


async def test_help_explains_the_concepts():
    from vexfs_cockpit.tui.screens.help import HelpScreen

    async with cockpit(size=(120, 40)) as (app, pilot, _):
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        text = screen_text(app)
        assert "Concepts" in text
        for word in ("run ", "domain ", "test ", "dev VM ", "environment ", "history "):
            assert f"\n {word}" in text or f" {word}" in text
        assert "only these have SSH" in text and "SQLite DB" in text


async def test_palette_puts_the_cockpits_commands_first_and_has_trends():
    from vexfs_cockpit.tui.commands import CockpitCommands
    from vexfs_cockpit.tui.screens.trends import TrendsScreen

    be = UiBackend(vms=[VmInfo(VM_A, "stopped")])
    async with cockpit(be, size=(120, 40)) as (app, pilot, _):
        titles = [t for t, _, _ in CockpitCommands(app.screen)._entries()]
        assert titles[:5] == ["Start run", "Abort", "History", "Results", "Trends"]
        assert "Focus Next" not in titles and "Copy selected text" not in titles
        assert titles.count("Quit") == 1  # ours (asks mid-run), not Textual's too
        await pilot.press("ctrl+p")
        await settle(app, pilot)
        await asyncio.sleep(0.3)  # the palette shows discovery hits in batches
        await pilot.pause()
        lines = [ln.strip() for ln in screen_text(app).splitlines() if ln.strip()]
        search = next(i for i, ln in enumerate(lines) if ln.startswith("🔎"))
        assert lines[search + 1] == "Start run", lines[search:search + 4]  # the first entry, not "Focus Next"
        await pilot.press(*"trend")
        await asyncio.sleep(0.3)
        await settle(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        assert isinstance(app.screen, TrendsScreen)


async def test_key_bar_keeps_the_essential_keys_at_80_columns():
    from vexfs_cockpit.tui.screens.results import ResultsScreen
    from vexfs_cockpit.tui.widgets.key_bar import KeyBar

    async with cockpit(size=(80, 24)) as (app, pilot, _):
        bar = str(app.screen.query_one(KeyBar).render())
        for key in ("s Start", "a Abort", "h History", "r Results", "? Help", "q Quit", "m VM"):
            assert key in bar, bar
        await pilot.press("r")
        assert isinstance(app.screen, ResultsScreen)
        bar = str(app.screen.query_one(KeyBar).render())
        for key in ("esc Back", "? Help", "q Quit"):  # elsewhere the screen's own keys come first
            assert key in bar, bar
    async with cockpit(size=(160, 40)) as (app, pilot, _):  # room enough: as before, whole descriptions
        bar = str(app.screen.query_one(KeyBar).render())
        assert "p Pause/follow" in bar and "q Quit" in bar, bar
