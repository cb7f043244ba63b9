"""The dashboard's watch toggle (w): watches the module source for the selected dev VM
through the backend, shows each save's result line, and w again stops the watch."""

from __future__ import annotations

from tests.support.tui import VM_A, UiBackend, cockpit, settle
from vexfs_cockpit.tui.backend import VmInfo
from vexfs_cockpit.tui.widgets.watch_line import WatchLine

WATCHING = f"watching /src/selftest_fs for {VM_A}: a save rebuilds, reloads and reruns what failed last; Ctrl-C stops"


def _shown(app) -> str:  # noqa: ANN001
    line = app.screen.query_one(WatchLine)
    return str(line.render()) if line.display else ""


async def until(app, pilot, pred) -> None:  # noqa: ANN001
    """Pause until ``pred()`` (settle() would wait for the watch worker, which runs on)."""
    for _ in range(100):
        await pilot.pause()
        if pred():
            return
    raise AssertionError(f"not reached; the watch line shows {_shown(app)!r}")


async def test_w_watches_the_selected_dev_vm_shows_each_save_and_w_stops_it():
    be = UiBackend(vms=[VmInfo(VM_A, "ready", dev_vm=True)])
    async with cockpit(be, size=(100, 30)) as (app, pilot, notes):
        assert _shown(app) == ""  # no watch: no line
        await pilot.press("w")
        await until(app, pilot, lambda: be.called("watch"))
        assert be.called("watch") == [(VM_A,)]
        assert "starting" in _shown(app)
        await be.watch_feed.put(WATCHING)
        await until(app, pilot, lambda: "watching" in _shown(app))
        assert "watching /src/selftest_fs" in _shown(app) and "w stops" in _shown(app)
        await be.watch_feed.put("12:00:01 save 1: build FAILED (0.9s): vexfs_selftest.c:12: error: expected ';'")
        await until(app, pilot, lambda: "save 1" in _shown(app))
        assert "save 1 at 12:00:01: build FAILED (0.9s): vexfs_selftest.c:12: error" in _shown(app)
        await be.watch_feed.put("12:00:09 save 2: PASS 4/4 (3.1s)")
        await until(app, pilot, lambda: "save 2" in _shown(app))
        assert "save 2 at 12:00:09: PASS 4/4 (3.1s)" in _shown(app) and "FAILED" not in _shown(app)

        await pilot.press("w")  # stop: the backend's watch is closed (its process gets Ctrl-C)
        await settle(app, pilot)
        assert be.called("watch_closed") == [(VM_A,)]
        assert _shown(app) == ""
        assert ("stopped watching the module source", "information") in notes
        await pilot.press("w")  # and again: a new watch
        await until(app, pilot, lambda: len(be.called("watch")) == 2)
        await be.watch_feed.put(None)  # it ends by itself (the VM went away): said, and w starts anew
        await settle(app, pilot)
        assert "watch ended" in _shown(app)
        assert any(n.startswith("watch ended") and sev == "warning" for n, sev in notes)


async def test_w_refuses_a_vm_it_cannot_attach_to():
    be = UiBackend(vms=[VmInfo(VM_A, "ready", dev_vm=False)])  # a run's VM: no SSH details
    async with cockpit(be) as (app, pilot, notes):
        await pilot.press("w")
        await settle(app, pilot)
        assert be.called("watch") == []
        assert any(n.startswith("cannot watch:") and "no SSH" in n for n, _ in notes)
        assert _shown(app) == ""
