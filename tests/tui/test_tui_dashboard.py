"""Pilot tests of the live side: dashboard, log pane, run and VM control, results, palette.

Real event objects go onto the backend's real EventBus; the app drains it as in
production. Commands the TUI sends are read back from the backend's call log.
"""

from __future__ import annotations

import asyncio

from textual.widgets import DataTable

from tests.support.tui import T0, VM_A, VM_B, UiBackend, boot_lines, cells, cockpit, db, feed, mid_run_events, rendered, screen_text, settle, warn_event  # noqa: F401
from vexfs_cockpit.engine.events import InfraProblem, KernelLogLine, RunFinished, VmStateChanged
from vexfs_cockpit.errors import InfraError
from vexfs_cockpit.klog.model import Severity
from vexfs_cockpit.tui.app import PUMP_SLICE, CockpitApp
from vexfs_cockpit.tui.backend import ActionResult, RunRequest, TestRef, VmInfo
from vexfs_cockpit.tui.screens.confirm import ConfirmScreen
from vexfs_cockpit.tui.screens.dashboard import DashboardScreen
from vexfs_cockpit.tui.screens.help import HelpScreen
from vexfs_cockpit.tui.screens.output import OutputScreen
from vexfs_cockpit.tui.screens.results import ResultsScreen
from vexfs_cockpit.tui.screens.start_run import StartRunScreen
from vexfs_cockpit.tui.screens.vm_menu import VmMenuScreen
from vexfs_cockpit.tui.widgets.evidence_view import EvidenceView
from vexfs_cockpit.tui.widgets.kernel_log_pane import KernelLogPane
from vexfs_cockpit.tui.widgets.kernel_log_view import KernelLogView


def pane(app: CockpitApp) -> KernelLogPane:
    return app.screen_stack[0].query_one(KernelLogPane)


# -- what the dashboard shows ------------------------------------------------------------


async def test_dashboard_renders_the_event_stream():
    async with cockpit() as (app, pilot, _):
        await feed(app, pilot, mid_run_events())
        dash = app.screen
        assert isinstance(dash, DashboardScreen)
        vms = dash.query_one("#vm-table", DataTable)
        assert vms.row_count == 2
        row = cells(vms, vms.get_row_index(VM_A))
        assert row[0] == "dev/kmod-0" and row[1] == "ready" and row[2] == "30s" and row[6] == "kernel_module"
        assert row[3].strip() == "13.0" and row[4] == "182M" and len(row[5]) == 12 and row[5].strip()
        doms = dash.query_one("#domains", DataTable)
        km = cells(doms, doms.get_row_index("kernel_module"))
        assert km[1].endswith("2/4") and km[2] == "1 1 0" and km[3] == "module_unload" and km[4] == "20s"
        text = screen_text(app)
        assert "RUNNING" in text and "run-1" in text and "2✓ 1✗" in text and "kernel event" in text
        log = dash.query_one(KernelLogView)
        assert len(log.lines) == 30 + 20 + 5 + 1 + 4
        assert log.is_vertical_scroll_end  # following: the newest line is on screen
        assert "dev/kmod-0      39│" in text


async def test_run_summary_and_eta_from_history():
    be = UiBackend()
    be.expected_durations = lambda env, domain, tests: {t: 5.0 for t in tests}  # type: ignore[method-assign]
    async with cockpit(be) as (app, pilot, notes):
        await feed(app, pilot, mid_run_events())
        await settle(app, pilot)
        doms = app.screen.query_one("#domains", DataTable)
        # kernel_module: module_unload began 15 s ago (typical 5 s: overdue) + taint_check 5 s
        assert cells(doms, doms.get_row_index("kernel_module"))[5] == "5.0s"
        await feed(app, pilot, [RunFinished(run_id="run-1", status="failed", counts={"PASSED": 2, "FAILED": 1}, ts=T0 + 5)])
        assert "FAILED" in screen_text(app)
        assert ("run run-1 failed", "warning") in notes


async def test_empty_states_name_the_next_step():
    async with cockpit() as (app, pilot, _):
        text = screen_text(app)
        assert "no VMs yet — press s to start a run" in text
        assert "no run yet — press s to start a run" in text
    be = UiBackend(vm_error="cannot reach libvirt at qemu:///system: start it with `virtlogd -d; libvirtd -d`")
    async with cockpit(be) as (app, pilot, _):
        assert "libvirt unreachable: cannot reach libvirt at qemu:///system" in screen_text(app)


async def test_listing_seeds_vms_with_uptime():
    be = UiBackend(vms=[VmInfo("vexfs-dev-manual-0", "running", started_at=T0 - 125)])
    async with cockpit(be) as (app, pilot, _):
        vms = app.screen.query_one("#vm-table", DataTable)
        assert cells(vms, 0)[:3] == ["dev/manual-0", "running", "2m05s"]


async def test_infra_problem_is_a_notification():
    async with cockpit() as (app, pilot, notes):
        await feed(app, pilot, [InfraProblem(message="SSH to the guest dropped and did not come back", vm=VM_A)])
        assert ("dev/kmod-0: SSH to the guest dropped and did not come back", "error") in notes
        assert "1 infra problem" in screen_text(app)


# -- the kernel-log pane ----------------------------------------------------------------------


async def test_log_pause_freezes_view_and_follow_catches_up():
    async with cockpit() as (app, pilot, _):
        await feed(app, pilot, boot_lines(VM_A, 1, 100, T0))
        view = pane(app).view
        assert len(view.lines) == 100
        await pilot.press("p")
        assert pane(app).paused and "PAUSED" in screen_text(app)
        await feed(app, pilot, boot_lines(VM_A, 101, 50, T0))
        assert len(view.lines) == 100  # frozen while paused
        assert "+50 new" in screen_text(app)
        await pilot.press("p")
        assert not pane(app).paused and len(view.lines) == 150
        await pilot.pause()
        assert view.is_vertical_scroll_end


async def test_scrolling_back_pauses_and_end_follows():
    async with cockpit() as (app, pilot, _):
        await feed(app, pilot, boot_lines(VM_A, 1, 200, T0))
        pane(app).view.focus()
        await pilot.press("pageup")
        assert pane(app).paused
        await pilot.press("end")
        assert not pane(app).paused


async def test_next_event_jumps_to_the_report_block():
    async with cockpit() as (app, pilot, _):
        lines1, ev1 = warn_event(VM_A, 101, T0)
        lines2, ev2 = warn_event(VM_B, 301, T0)
        await feed(app, pilot, [*boot_lines(VM_A, 1, 100, T0), *lines1, ev1, *boot_lines(VM_B, 1, 300, T0), *lines2, ev2, *boot_lines(VM_A, 106, 100, T0)])
        view = pane(app).view
        await pilot.press("n")
        assert pane(app).paused
        assert view.scroll_offset.y == 100  # first line of the first block (row 100)
        assert "cut here" in view.lines[view.scroll_offset.y]
        await pilot.press("n")
        assert view.scroll_offset.y == 100 + 5 + 1 + 300  # the second block
        await pilot.press("n")  # nothing further: stays, says so
        assert view.scroll_offset.y == 406
        await pilot.press("N")
        assert view.scroll_offset.y == 100


def painted_colours(view: KernelLogView, index: int) -> set[str]:
    """Foreground colours of row ``index`` as the view paints it."""
    return {seg.style.color.name for seg in view.row_strip(index) if seg.style is not None and seg.style.color is not None}


async def test_lines_of_a_report_take_its_colour():
    async with cockpit() as (app, pilot, _):
        lines, ev = warn_event(VM_A, 31, T0)
        await feed(app, pilot, [*boot_lines(VM_A, 1, 30, T0), *lines])
        model, view = pane(app).model, pane(app).view
        assert "WARNING: CPU" in view.lines[31]  # line 32
        assert "yellow" not in painted_colours(view, 31)
        await feed(app, pilot, [ev])  # the classifier reports after the block: recoloured
        assert "yellow" in painted_colours(view, 31) and "yellow" not in painted_colours(view, 29)
        assert "▶ WARNING in selftest_write [vexfs_selftest]" in view.lines[-1]
        marker = view.row_strip(len(view.rows) - 1)
        assert any(seg.style and seg.style.reverse and seg.style.color and seg.style.color.name == "yellow" for seg in marker)
        assert model.severity_of(VM_A, 33) == Severity.WARNING


async def test_rows_paint_as_textual_would():
    # The one-Strip fast path equals row_strip cropped and offset the way Textual's Log does.
    async with cockpit() as (app, pilot, _):
        lines, ev = warn_event(VM_A, 31, T0)
        await feed(app, pilot, [*boot_lines(VM_A, 1, 30, T0), *lines, ev])
        view = pane(app).view
        top, width, style = view.scroll_offset.y, view.size.width, view.rich_style
        assert any(len(row) > width for row in view.lines[top:])  # some rows are cropped
        for y in range(view.size.height):
            expected = view.row_strip(top + y).crop_extend(0, width, style).apply_offsets(0, top + y)
            assert list(view.render_line(y)) == list(expected)


async def test_log_filters_from_keys():
    async with cockpit() as (app, pilot, _):
        lines, ev = warn_event(VM_A, 31, T0)
        await feed(app, pilot, [*boot_lines(VM_A, 1, 30, T0), *boot_lines(VM_B, 1, 20, T0), *lines, ev])
        view = pane(app).view
        await pilot.press("v")  # first VM only
        assert len(view.lines) == 36 and "vm=" in screen_text(app)
        await pilot.press("v", "v")  # back to all
        await pilot.press("e")  # classified rows only
        assert len(view.lines) == 6
        await pilot.press("c")
        assert len(view.lines) == 56
        await pilot.press("slash")
        await pilot.press(*"e1000", "enter")
        assert view.lines and all("e1000" in r.lower() for r in view.lines)
        assert "“e1000”" in screen_text(app)
        # new lines are filtered as they arrive
        await feed(app, pilot, [KernelLogLine(vm=VM_A, line_no=500, text="unrelated", ts=T0), KernelLogLine(vm=VM_A, line_no=501, text="e1000 0000:00:09.0 eth0: link up", ts=T0)])
        assert view.lines[-1].endswith("link up") and not any("unrelated" in r for r in view.lines)


async def test_severity_filter_picks_up_late_reports():
    async with cockpit() as (app, pilot, _):
        await pilot.press("e", "e")  # ≥ warning
        lines, ev = warn_event(VM_A, 31, T0)
        await feed(app, pilot, [*boot_lines(VM_A, 1, 30, T0), *lines])
        view = pane(app).view
        assert len(view.lines) == 0
        await feed(app, pilot, [ev])
        assert len(view.lines) == 6


async def test_a_key_is_handled_between_pump_slices():
    # A backlog of many slices (a kernel-log flood): the key must not wait behind all of it.
    async with cockpit(pump_interval=3600) as (app, pilot, _):
        total = 20 * PUMP_SLICE
        for ev in boot_lines(VM_A, 1, total, T0):
            app.backend.bus.publish(ev)
        log = pane(app)
        seen_at_key: list[int] = []
        real_toggle = log.toggle_pause

        def toggle() -> None:
            seen_at_key.append(log.model.lines_seen)
            real_toggle()

        log.toggle_pause = toggle  # type: ignore[method-assign]
        pump = asyncio.create_task(app._pump())
        await pilot.press("p")
        await pump
        assert log.model.lines_seen == total and log.paused
        assert seen_at_key and 0 < seen_at_key[0] < total  # between two slices


async def test_log_memory_is_bounded_by_retain():
    async with cockpit(log_retain=500) as (app, pilot, _):
        for start in range(0, 3000, 1000):
            await feed(app, pilot, boot_lines(VM_A, start, 1000, T0))
        view = pane(app).view
        assert len(view.lines) == 500 and len(pane(app).model.records) == 500
        assert view.lines[-1].split("│")[0].split()[-1] == "2999"


# -- run control ---------------------------------------------------------------------------------


async def test_start_run_picker_sends_the_request():
    be = UiBackend()
    async with cockpit(be) as (app, pilot, notes):
        await pilot.press("s")
        assert isinstance(app.screen, StartRunScreen)
        await pilot.press("ctrl+a")  # all were selected: now none
        await pilot.press("space")  # the first domain
        await pilot.press("down", "down", "space")  # and the third
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert be.called("start_run") == [(RunRequest(env="dev", domains=("kernel_module", "vector_operations")),)]
        assert isinstance(app.screen, DashboardScreen)
        assert ("run run-2 started", "information") in notes


async def test_start_run_picker_env_and_cancel():
    be = UiBackend()
    async with cockpit(be) as (app, pilot, _):
        await pilot.press("s")
        app.screen.query_one("#env").value = "ci"
        await pilot.press("ctrl+s")
        await settle(app, pilot)
        assert be.called("start_run")[0][0].env == "ci"
        await pilot.press("s", "escape")
        await settle(app, pilot)
        assert len(be.called("start_run")) == 1


async def test_start_refused_while_a_run_is_active_and_abort_confirms():
    be = UiBackend()
    async with cockpit(be) as (app, pilot, notes):
        await feed(app, pilot, mid_run_events())
        await pilot.press("s")
        assert not isinstance(app.screen, StartRunScreen)
        assert any("a run is in progress" in m for m, _ in notes)
        await pilot.press("a")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        await settle(app, pilot)
        assert be.called("abort_run") == []
        await pilot.press("a", "y")
        await settle(app, pilot)
        assert be.called("abort_run") == [()]


async def test_abort_without_a_run_says_so():
    async with cockpit() as (app, pilot, notes):
        await pilot.press("a")
        assert ("no run in progress", "warning") in notes


async def test_rerun_domain_from_the_progress_table():
    be = UiBackend()
    async with cockpit(be) as (app, pilot, _):
        await feed(app, pilot, mid_run_events())
        await feed(app, pilot, [RunFinished(run_id="run-1", status="failed", counts={}, ts=T0)])
        doms = app.screen.query_one("#domains", DataTable)
        doms.focus()
        doms.move_cursor(row=1)
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)  # a new run: asked first
        await pilot.press("y")
        await settle(app, pilot)
        assert be.called("start_run") == [(RunRequest(env="dev", domains=("filesystem_operations",)),)]


async def test_results_screen_shows_evidence_and_reruns_one_test():
    be = UiBackend()
    async with cockpit(be) as (app, pilot, _):
        await feed(app, pilot, mid_run_events())
        await pilot.press("r")
        assert isinstance(app.screen, ResultsScreen)
        await pilot.press("down")  # module_load, FAILED
        await pilot.pause()
        evidence = app.screen.query_one(EvidenceView)
        body = rendered(evidence.query_one("#evidence").content)
        assert "exit 1" in body and "insmod: ERROR: could not insert module" in body
        assert "WARNING in selftest_write" in body  # the report attributed to that test
        await pilot.press("t")  # mid-run: refused before the engine would refuse it
        assert be.called("start_run") == [] and not isinstance(app.screen, ConfirmScreen)
        await feed(app, pilot, [RunFinished(run_id="run-1", status="failed", counts={}, ts=T0)])
        await pilot.press("t", "y")
        await settle(app, pilot)
        assert be.called("start_run") == [(RunRequest(env="dev", domains=("kernel_module",), only=(TestRef("kernel_module", "module_load"),)),)]
        await pilot.press("d", "y")
        await settle(app, pilot)
        assert be.called("start_run")[-1] == (RunRequest(env="dev", domains=("kernel_module",)),)
        # live: a new result appears without leaving the screen
        from tests.support.tui import result
        from vexfs_cockpit.engine.events import TestFinished
        from vexfs_cockpit.engine.results import TestStatus

        await feed(app, pilot, [TestFinished(run_id="run-1", result=result("kernel_module", "module_unload", TestStatus.PASSED, 1.0, T0), ts=T0)])
        assert app.screen.query_one("#results", DataTable).row_count == 4
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)


# -- VM control -------------------------------------------------------------------------------------


async def test_vm_keys_reach_the_backend_with_confirmation():
    be = UiBackend(vms=[VmInfo(VM_A, "ready", dev_vm=True)])
    async with cockpit(be) as (app, pilot, notes):
        await pilot.press("l")
        await settle(app, pilot)
        await pilot.press("L")
        await settle(app, pilot)
        assert be.called("kload") == [(VM_A,)] and be.called("kunload") == [(VM_A,)]
        assert (f"kload: loaded on {VM_A}", "information") in notes
        await pilot.press("t", "y")
        await settle(app, pilot)
        assert be.called("vm_reset") == [(VM_A,)]
        await pilot.press("x")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(app, pilot)
        assert be.called("vm_stop") == [(VM_A,)]
        await feed(app, pilot, [VmStateChanged(vm=VM_A, state="stopped", ts=T0)])
        await pilot.press("u")
        await settle(app, pilot)
        assert be.called("vm_start") == [(VM_A,)]
        assert len(be.called("vm_list")) >= 3  # the table is refreshed after each action


async def test_vm_menu_from_enter():
    be = UiBackend(vms=[VmInfo(VM_A, "ready", dev_vm=True)])
    async with cockpit(be) as (app, pilot, _):
        app.screen.query_one("#vm-table").focus()
        await pilot.press("enter")
        assert isinstance(app.screen, VmMenuScreen)
        from textual.widgets import OptionList

        options = app.screen.query_one(OptionList)
        assert [options.get_option_at_index(i).id for i in range(options.option_count)] == ["stop", "reset", "console", "ssh", "kload", "kunload"]
        assert "SSH shell on VM  i" in screen_text(app)  # the key hint survives (no markup)
        options.highlighted = options.get_option_index("reset")
        await pilot.press("enter")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await settle(app, pilot)
        assert be.called("vm_reset") == [(VM_A,)]


async def test_vm_keys_without_a_vm_explain():
    async with cockpit() as (app, pilot, notes):
        await pilot.press("x")
        assert any("no VM selected" in m for m, _ in notes)


async def test_console_without_a_terminal_is_a_one_line_error():
    be = UiBackend(vms=[VmInfo(VM_A, "ready")])
    async with cockpit(be) as (app, pilot, notes):
        await pilot.press("o")
        await settle(app, pilot)
        # headless: App.suspend is not supported; the app says so and keeps going
        assert any(m.startswith("console dev/kmod-0:") and s == "error" for m, s in notes)
        assert isinstance(app.screen, DashboardScreen)


async def test_engine_errors_become_notifications():
    be = UiBackend(vms=[VmInfo(VM_A, "stopped")])

    async def broken(name: str) -> None:
        raise InfraError(f"cannot start {name}: domain not found — run `vexfs-cockpit vm list`")

    be.vm_start = broken  # type: ignore[method-assign]
    async with cockpit(be) as (app, pilot, notes):
        await pilot.press("u")
        await settle(app, pilot)
        assert (f"start dev/kmod-0: cannot start {VM_A}: domain not found — run `vexfs-cockpit vm list`", "error") in notes


async def test_failed_kbuild_shows_compiler_output():
    be = UiBackend(kbuild_result=ActionResult(False, "module did not build against 6.1.0-56-amd64", "super.c:12:10: fatal error: linux/filelock.h: No such file or directory\nmake[1]: *** Error 1"))
    async with cockpit(be) as (app, pilot, notes):
        await pilot.press("k")
        await settle(app, pilot)
        assert isinstance(app.screen, OutputScreen)
        assert "linux/filelock.h" in screen_text(app)
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)
        assert ("kbuild: module did not build against 6.1.0-56-amd64", "error") in notes


# -- palette, help, quit ----------------------------------------------------------------------------


async def test_palette_has_every_binding_and_per_vm_actions():
    from vexfs_cockpit.tui.commands import CockpitCommands

    be = UiBackend(vms=[VmInfo(VM_A, "ready")])
    async with cockpit(be) as (app, pilot, _):
        provider = CockpitCommands(app.screen)
        titles = {t for t, _, _ in provider._entries()}
        for expected in ("Start run", "Abort", "History", "Results", "Build module", "Help", "Pause/follow", "Next event", "Filter log", "Re-run domain", "Reset VM dev/kmod-0", "Serial console of VM dev/kmod-0"):
            assert expected in titles
        await pilot.press("ctrl+p")
        await pilot.press(*"Stop VM dev/kmod-0")
        await settle(app, pilot)
        await pilot.press("enter")
        await settle(app, pilot)
        await pilot.press("y")
        await settle(app, pilot)
        assert be.called("vm_stop") == [(VM_A,)]


async def test_help_lists_the_screen_keys():
    async with cockpit() as (app, pilot, _):
        await pilot.press("question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "Concepts" in screen_text(app)  # first: what a run, a domain, a dev VM are
        keys = rendered(app.screen.query_one("#help-keys").content)  # below them (scrolls at 80x24)
        assert "Pause/follow" in keys and "Start run" in keys and "This screen" in keys
        await pilot.press("escape")
        assert isinstance(app.screen, DashboardScreen)


async def test_quit_asks_while_a_run_is_active():
    async with cockpit() as (app, pilot, _):
        await feed(app, pilot, mid_run_events())
        await pilot.press("q")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("n")
        assert isinstance(app.screen, DashboardScreen)
        await pilot.press("q", "y")
        await pilot.pause()
        assert app.return_value == 0
    async with cockpit() as (app, pilot, _):
        await pilot.press("q")
        await pilot.pause()
        assert app.return_value == 0


async def test_dashboard_fits_80x24_and_120x40():
    for size in ((80, 24), (120, 40)):
        be = UiBackend()
        async with cockpit(be, size=size) as (app, pilot, _):
            await feed(app, pilot, mid_run_events())
            dash = app.screen
            for sel in ("#summary", "#vms", "#domains", "#klog", "#log-view"):
                region = dash.query_one(sel).region
                assert region.height > 0 and region.bottom <= size[1] - 1, (size, sel, region)
            assert dash.query_one("#log-view").region.height >= (5 if size == (80, 24) else 15)
            assert be.called("close") == []
        assert be.called("close") == [()]


async def test_before_a_run_the_dashboard_says_where_each_domain_stands(db):
    from vexfs_cockpit.tui.widgets.standing_table import StandingTable

    async with cockpit(UiBackend(db_path=db)) as (app, pilot, _):
        await settle(app, pilot)
        table = app.screen.query_one(StandingTable)
        assert table.display and table.row_count == 6  # the next run's domains: all six by default
        km = cells(table, table.get_row_index("kernel_module"))
        assert km[1].startswith("✗ 1/2 bad") and km[3] == "1 regression: module_load"
        assert km[2].strip().endswith("50%")  # two dev runs: 100 % then 50 %
        assert cells(table, table.get_row_index("filesystem_operations"))[3] == "none"
        assert cells(table, table.get_row_index("vector_operations"))[1] == "never run here"
        assert "where you stand in dev · vs previous run run-a" in str(table.border_title)
        await feed(app, pilot, mid_run_events())
        assert not table.display  # the run's progress takes its place


async def test_an_empty_history_shows_no_standing():
    from vexfs_cockpit.tui.widgets.standing_table import StandingTable

    async with cockpit() as (app, pilot, _):
        await settle(app, pilot)
        assert not app.screen.query_one(StandingTable).display
