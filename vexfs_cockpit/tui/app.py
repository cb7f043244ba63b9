"""The cockpit TUI: renders the engine's event stream, sends commands to the engine.

``CockpitApp(backend)`` takes anything satisfying ``backend.CockpitBackend``. A bus
listener puts every event in an inbox list, kernel lines already as the log model's
``(vm, line_no, text)`` rows (GC-untracked, so a backlog costs the collector nothing);
every ``PUMP_INTERVAL_S`` the pump takes the inbox and folds it in slices of
``PUMP_SLICE``, yielding to the event loop between slices, so under a kernel-log flood
a key press waits for one slice (under a millisecond), not for the backlog. The screen
repaints at most once per frame whatever the rate.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from textual.app import App
from textual.binding import Binding
from textual.screen import Screen

from vexfs_cockpit.engine.events import (
    AlertFired,
    Event,
    InfraProblem,
    KernelEventRaised,
    KernelLogLine,
    DomainStarted,
    RunFinished,
    RunStarted,
)
from vexfs_cockpit.tui.backend import ActionResult, CockpitBackend, RunChoices, RunRequest, TestRef
from vexfs_cockpit.tui.commands import CockpitCommands
from vexfs_cockpit.tui.format import error_line, vm_display_name
from vexfs_cockpit.tui.internals import mount_screen
from vexfs_cockpit.tui.logmodel import LOG_RETAIN, LogInput, line_row
from vexfs_cockpit.tui.state import LiveState, Part

if TYPE_CHECKING:
    from vexfs_cockpit.analysis.standing import DomainStanding
    from vexfs_cockpit.tui.screens.history import HistoryScreen

T = TypeVar("T")

PUMP_INTERVAL_S = 0.08  # engine events are drained and rendered in batches this often
PUMP_SLICE = 1_000  # events folded between two yields to the loop (under a millisecond)
TICK_INTERVAL_S = 1.0  # elapsed / uptime / ETA columns


class CockpitApp(App[int]):
    TITLE = "vexfs-cockpit"
    CSS_PATH = "app.tcss"
    # Ours only: CockpitCommands lists the cockpit's commands first and Textual's own
    # (theme, keys, screenshot) after them; Textual's provider put "Focus Next" first.
    COMMANDS = {CockpitCommands}
    BINDINGS = [
        Binding("s", "start_run", "Start run"),
        Binding("a", "abort_run", "Abort"),
        Binding("h", "history", "History"),
        Binding("r", "results", "Results"),
        Binding("g", "trends", "Trends", show=False),
        Binding("k", "kbuild", "Build module", show=False),
        Binding("question_mark", "help", "Help"),
        Binding("q", "quit_cockpit", "Quit"),
    ]

    def __init__(
        self,
        backend: CockpitBackend,
        *,
        clock: Callable[[], float] = time.time,
        log_retain: int = LOG_RETAIN,
        pump_interval: float = PUMP_INTERVAL_S,
    ):
        super().__init__()
        self.backend = backend
        self.clock = clock
        self.log_retain = log_retain
        self.pump_interval = pump_interval
        self.state = LiveState()
        self._inbox: list[LogInput] = []  # engine events (lines as rows) not yet folded in
        self._history: HistoryScreen | None = None  # kept once built: see action_history
        self._expected_asked: set[str] = set()  # domains of this run whose durations were asked for
        self.session_info: RunChoices | None = None  # profile, envs, module, DB: the header's (run_choices)
        # Set once the history and trends screens are built ahead (see _prebuild).
        self.screens_prebuilt = asyncio.Event()
        self.theme = "textual-dark"

    # -- lifecycle ---------------------------------------------------------------------
    def get_default_screen(self) -> Screen[Any]:
        from vexfs_cockpit.tui.screens.dashboard import DashboardScreen

        return DashboardScreen()

    async def on_mount(self) -> None:
        self._read_session_info()
        self._fetch_standing()
        self.backend.bus.listen(self._take)
        try:
            await self.backend.open()
        except Exception as err:  # the history screens still work without a fleet
            self.notify(error_line(err), title="engine", severity="error", timeout=10)
        self.set_interval(self.pump_interval, self._pump, name="event-pump")
        self.set_interval(TICK_INTERVAL_S, self._tick, name="clock-tick")
        self.refresh_vms()
        self.call_after_refresh(self._prebuild)

    # -- the history and trends screens, built ahead ---------------------------------------
    def _prebuild(self) -> None:
        """Once the dashboard is on screen: the history and trends screens' modules are
        imported in a thread (textual-plotext and plotext: ~60 ms, the screens' widget
        modules), then both screens are built and laid out here, off the screen stack,
        widget by widget as Textual mounts them (each a short step between other
        messages). A first 'h' then opens a built screen, as every later one does: the
        build (~90 ms history, ~150 ms trends, plus the imports) was on the first 'h' and
        'g' of every session. k9s and htop prefetch alike."""

        def imports() -> None:
            import vexfs_cockpit.tui.screens.history  # noqa: F401
            import vexfs_cockpit.tui.screens.trends  # noqa: F401

            self.call_from_thread(lambda: self.run_worker(self._build_screens(), group="prebuild", exit_on_error=False))

        self.run_worker(imports, thread=True, group="prebuild", exit_on_error=False)

    async def _build_screens(self) -> None:
        from vexfs_cockpit.tui.screens.history import HistoryScreen

        try:
            if self._history is None:  # not opened meanwhile
                history = self._history = HistoryScreen(ahead=True)
                self.install_screen(history, "history")
                await mount_screen(self, history)
                await history.build_trends()
                for screen in (history, history.trends):
                    if screen is not None and screen not in self.screen_stack:
                        screen.lay_out_ahead(self.size)
        finally:
            self.screens_prebuilt.set()

    async def on_unmount(self) -> None:
        self.backend.bus.unlisten(self._take)
        try:
            await self.backend.close()
        except Exception:  # noqa: BLE001 - the UI is gone; nothing left to show it on
            pass

    # -- the event pump ------------------------------------------------------------------
    def _take(self, ev: Event) -> None:
        """The bus listener, called per published event: one append, nothing more."""
        self._inbox.append(line_row(ev) if type(ev) is KernelLogLine else ev)

    def pump_now(self) -> None:
        """Fold the whole inbox in one batch (for tests and the bench)."""
        if self._inbox and self._can_consume():
            batch = self._inbox.copy()
            self._inbox.clear()
            self.consume(batch)

    async def _pump(self) -> None:
        """The pump timer: slice by slice; the timer does not tick again until this returns."""
        while self._inbox and self._can_consume():
            batch = self._inbox.copy()
            self._inbox.clear()
            for start in range(0, len(batch), PUMP_SLICE):
                if start:
                    await asyncio.sleep(0)  # a yield, not a wait: queued keys and paints run here
                    if not self._can_consume():
                        self._inbox[:0] = batch[start:]  # the app is closing: keep the order
                        return
                self.consume(batch[start:start + PUMP_SLICE])

    def _can_consume(self) -> bool:
        # Events wait in the inbox until the dashboard can take them.
        return bool(self.screen_stack) and self.screen_stack[0].is_mounted

    def consume(self, batch: Sequence[LogInput]) -> None:
        """Fold one batch of inbox items into the views."""
        # Kernel line rows are nearly all of a flood: they go to the log pane as they are,
        # found with one comprehension; only the events are looked at one by one.
        others: list[Event] = [ev for ev in batch if type(ev) is not tuple]  # type: ignore[misc]
        if not any(type(ev) is RunStarted for ev in others):
            self._fold(batch, others)
            return
        # A run starts in this batch (rare): the lines before it belong to what came before,
        # those after it to the run, so the screens hear of it (on_run_started) in between.
        start = 0
        for i, item in enumerate(batch):
            if type(item) is RunStarted:
                if i > start:
                    self.consume(batch[start:i])
                self._fold([item], [item])
                for screen in self.screen_stack:
                    hook = getattr(screen, "on_run_started", None)
                    if hook is not None:
                        hook(item.run_id)
                start = i + 1
        if start < len(batch):
            self.consume(batch[start:])

    def _fold(self, batch: Sequence[LogInput], others: list[Event]) -> None:
        changed: set[Part] = set()
        if self.state.kernel is None and len(others) < len(batch):  # only until the first boot says it
            changed |= self.state.see_kernel_lines(row[2] for row in batch if type(row) is tuple)  # type: ignore[index]
        for ev in others:
            changed |= self.state.apply(ev)
            if isinstance(ev, InfraProblem):
                where = f"{vm_display_name(ev.vm)}: " if ev.vm else ""
                self.notify(f"{where}{ev.message}", title="infrastructure", severity="error", timeout=10)
            elif isinstance(ev, AlertFired):  # monitoring.alerts, evaluated live by the session
                sev = "error" if ev.severity == "critical" else "warning"
                self.notify(ev.summary, title=f"alert {ev.rule} [{ev.severity}]", severity=sev, timeout=10)
            elif isinstance(ev, RunStarted):
                self._read_session_info()  # the run may have switched the environment
                self._expected_asked = set(ev.planned)
                if ev.planned:
                    self._fetch_expected(ev.env, ev.planned)
            elif isinstance(ev, DomainStarted) and ev.domain not in self._expected_asked:
                self._expected_asked.add(ev.domain)  # attached mid-run (no RunStarted seen)
                self._fetch_expected(self.state.run.env if self.state.run else "", {ev.domain: ev.planned_tests})
            elif isinstance(ev, RunFinished):
                sev = "information" if ev.status == "passed" else "warning"
                self.notify(f"run {ev.run_id} {ev.status}" + (f": {ev.reason}" if ev.reason else ""), severity=sev)
        log_events = batch if len(others) == sum(type(ev) is KernelEventRaised for ev in others) else [
            ev for ev in batch if type(ev) is tuple or type(ev) is KernelEventRaised
        ]
        for screen in self.screen_stack:
            live = getattr(screen, "on_live", None)
            if live is not None:
                live(changed, log_events)

    def _tick(self) -> None:
        for screen in self.screen_stack:
            tick = getattr(screen, "on_tick", None)
            if tick is not None:
                tick()

    # -- calling the engine (never a traceback on screen) -----------------------------
    def call_engine(
        self,
        what: str,
        fn: Callable[..., Awaitable[T]],
        *args: Any,
        then: Callable[[T], None] | None = None,
    ) -> None:
        """Run an async backend command in a worker; failures become one-line notifications."""

        async def job() -> None:
            try:
                result = await fn(*args)
            except Exception as err:
                self.notify(f"{what}: {error_line(err)}", severity="error", timeout=10)
                return
            if then is not None:
                then(result)

        self.run_worker(job(), group="engine", exit_on_error=False)

    def query_history(
        self,
        what: str,
        fn: Callable[..., T],
        *args: Any,
        then: Callable[[T], None],
        group: str = "history",
    ) -> None:
        """Run a blocking (SQLite) backend query in a thread; deliver on the UI thread."""

        def job() -> None:
            try:
                result = fn(*args)
            except Exception as err:
                self.call_from_thread(self.notify, f"{what}: {error_line(err)}", severity="error", timeout=10)
                return
            self.call_from_thread(then, result)

        self.run_worker(job, thread=True, group=group, exclusive=True, exit_on_error=False)

    def refresh_vms(self) -> None:
        async def job() -> None:
            try:
                vms = await self.backend.vm_list()
            except Exception as err:
                self.consume_state(self.state.set_fleet_error(error_line(err)))
                return
            self.consume_state(self.state.seed_vms(vms))

        self.run_worker(job(), group="vm-list", exclusive=True, exit_on_error=False)

    def consume_state(self, changed: set[Part]) -> None:
        for screen in self.screen_stack:
            live = getattr(screen, "on_live", None)
            if live is not None:
                live(changed, [])

    def _read_session_info(self) -> None:
        try:
            self.session_info = self.backend.run_choices()
        except Exception:  # noqa: BLE001 - the header then says less; s reports the error
            self.session_info = None

    def _fetch_standing(self) -> None:
        """Where the next run's domains stand (the dashboard before a run; one thread job)."""
        info = self.session_info
        if info is None:
            return
        env, domains = info.default_env, info.default_domains or info.domains

        def got(standing: Sequence[DomainStanding]) -> None:
            for screen in self.screen_stack:
                show = getattr(screen, "on_standing", None)
                if show is not None:
                    show(env, standing)

        self.query_history("where you stand", self.backend.standing, env, domains, then=got, group="standing")

    def _fetch_expected(self, env: str, planned: Mapping[str, Sequence[str]]) -> None:
        """Typical durations of ``planned`` tests from history, for the ETAs (one thread job)."""
        planned = {d: tuple(tests) for d, tests in planned.items()}

        def read() -> dict[str, dict[str, float]]:
            return {d: self.backend.expected_durations(env, d, tests) for d, tests in planned.items()}

        def got(found: dict[str, dict[str, float]]) -> None:
            changed: set[Part] = set()
            for domain, exp in found.items():
                changed |= self.state.set_expected(domain, exp)
            self.consume_state(changed)

        self.query_history("ETA from history", read, then=got, group=f"expected-{'-'.join(planned)}")

    # -- run control ----------------------------------------------------------------------
    def action_start_run(self) -> None:
        from vexfs_cockpit.tui.screens.start_run import StartRunScreen

        try:
            choices = self.backend.run_choices()
        except Exception as err:
            self.notify(f"start run: {error_line(err)}", severity="error")
            return
        if self.state.run is not None and self.state.run.active:
            self.notify("a run is in progress — abort it first (a)", severity="warning")
            return
        self.push_screen(StartRunScreen(choices), self._start_requested)

    def _start_requested(self, request: RunRequest | None) -> None:
        if request is not None:
            self.start_run(request)

    def start_run(self, request: RunRequest) -> None:
        what = "re-run" if request.only else "start run"
        self.call_engine(what, self.backend.start_run, request, then=lambda run_id: self.notify(f"run {run_id} started"))

    def rerun(self, env: str, domain: str, test: str | None = None) -> None:
        """Re-run one test (with what it depends on) or one domain, once confirmed: it is
        a new run, and the dashboard and results screen move on to it."""
        from vexfs_cockpit.tui.screens.confirm import ConfirmScreen

        if self.state.run is not None and self.state.run.active:
            self.notify("a run is in progress — abort it first (a)", severity="warning")
            return
        only = (TestRef(domain, test),) if test else ()
        what = f"{domain}/{test}" if test else f"every test of {domain}"

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.start_run(RunRequest(env=env, domains=(domain,), only=only))

        self.push_screen(
            ConfirmScreen(
                f"Re-run {what} in a new run ({env})?",
                "This run's results stay: b on the results screen (r) shows earlier runs, h (history) keeps them all.",
            ),
            confirmed,
        )

    def current_env(self) -> str:
        if self.state.run is not None and self.state.run.env:
            return self.state.run.env
        try:
            return self.backend.run_choices().default_env
        except Exception:  # noqa: BLE001 - fall back to the engine's default name
            return "dev"

    def action_abort_run(self) -> None:
        from vexfs_cockpit.tui.screens.confirm import ConfirmScreen

        run = self.state.run
        if run is None or not run.active:
            self.notify("no run in progress", severity="warning")
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.call_engine("abort", self.backend.abort_run, then=lambda _: self.notify("abort requested"))

        self.push_screen(ConfirmScreen(f"Abort run {run.run_id}?", "Running tests are stopped; finished results are kept."), confirmed)

    async def action_quit_cockpit(self) -> None:
        from vexfs_cockpit.tui.screens.confirm import ConfirmScreen

        run = self.state.run
        if run is None or not run.active:
            self.exit(0)
            return

        def confirmed(yes: bool | None) -> None:
            if yes:
                self.exit(0)

        self.push_screen(ConfirmScreen("Quit and abort the running run?", f"run {run.run_id} is still in progress."), confirmed)

    # -- VM control -----------------------------------------------------------------------
    def vm_action(self, action: str, vm: str) -> None:
        """start | stop | reset | console | ssh | kload | kunload on ``vm``."""
        from vexfs_cockpit.tui.screens.confirm import ConfirmScreen

        from vexfs_cockpit.tui.vm_actions import why_not

        b = self.backend
        shown = vm_display_name(vm)  # the backend gets the libvirt name, people see this one
        view = self.state.vms.get(vm)
        if view is not None and (reason := why_not(action, view)) is not None:
            self.notify(reason, severity="warning")
            return
        if action == "start":
            self.call_engine(f"start {shown}", b.vm_start, vm, then=lambda _: self._vm_done(f"{shown} started"))
        elif action in ("stop", "reset"):
            verb = "Stop" if action == "stop" else "Reset"

            def confirmed(yes: bool | None) -> None:
                if yes:
                    fn = b.vm_stop if action == "stop" else b.vm_reset
                    self.call_engine(f"{action} {shown}", fn, vm, then=lambda _: self._vm_done(f"{shown}: {action} done"))

            self.push_screen(ConfirmScreen(f"{verb} {shown}?", f"{vm} — a test running on it will fail or error."), confirmed)
        elif action in ("console", "ssh"):
            self.run_worker(self._attach_terminal(action, vm), group="attach", exclusive=True, exit_on_error=False)
        elif action in ("kload", "kunload"):
            fn = b.kload if action == "kload" else b.kunload
            self.call_engine(f"{action} {shown}", fn, vm, then=lambda res: self._show_action(action, res))
        else:
            self.notify(f"unknown VM action {action!r}", severity="error")

    def _vm_done(self, message: str) -> None:
        self.notify(message)
        self.refresh_vms()

    async def _attach_terminal(self, action: str, vm: str) -> None:  # not _attach: MessagePump's
        """Hand the terminal to `vm console` / `ssh` and come back when it exits.

        The engine keeps running on this loop meanwhile: painting is held off with
        ``batch_update`` (the driver is stopped) and Ctrl-C is left to the child.
        """
        try:
            argv = self.backend.console_argv(vm) if action == "console" else self.backend.ssh_argv(vm)
        except Exception as err:
            self.notify(f"{action} {vm_display_name(vm)}: {error_line(err)}", severity="error")
            return
        previous = signal.getsignal(signal.SIGINT)
        code: int | None = None
        try:
            with self.batch_update(), self.suspend():
                # A Python handler (unlike SIG_IGN) is reset to default in the child on exec.
                signal.signal(signal.SIGINT, lambda *_: None)
                try:
                    proc = await asyncio.create_subprocess_exec(*argv)
                    code = await proc.wait()
                finally:
                    signal.signal(signal.SIGINT, previous)
        except Exception as err:
            self.notify(f"{action} {vm_display_name(vm)}: {error_line(err)}", severity="error")
            return
        if code:
            self.notify(f"{' '.join(argv[-3:])} exited with {code}", severity="warning")

    # -- kernel-dev actions -------------------------------------------------------------------
    def action_kbuild(self) -> None:
        self.notify("building the module…")
        self.call_engine("kbuild", self.backend.kbuild, then=lambda res: self._show_action("kbuild", res))

    def _show_action(self, what: str, res: ActionResult) -> None:
        from vexfs_cockpit.tui.screens.output import OutputScreen

        if res.ok:
            self.notify(f"{what}: {res.summary}")
        else:
            self.notify(f"{what}: {res.summary}", severity="error", timeout=10)
            if res.output:
                self.push_screen(OutputScreen(f"{what} failed", res.output))

    # -- navigation ------------------------------------------------------------------------
    def action_history(self) -> None:
        from vexfs_cockpit.tui.screens.history import HistoryScreen

        if isinstance(self.screen, HistoryScreen):
            return
        # One history screen is kept (built ahead: see _prebuild) and reset as it closes:
        # building its widgets was ~90 ms of every open. Asked for from a screen above it
        # (trends, run detail), a second one opens, as before.
        if self._history is None:
            self._history = HistoryScreen()
            self.install_screen(self._history, "history")
            self.push_screen(self._history)
        elif self._history in self.screen_stack:
            self.push_screen(HistoryScreen())
        else:
            self._history.reopen()
            self.push_screen(self._history)

    def action_results(self) -> None:
        from vexfs_cockpit.tui.screens.results import ResultsScreen

        if not isinstance(self.screen, ResultsScreen):
            self.push_screen(ResultsScreen())

    def action_trends(self) -> None:
        from vexfs_cockpit.tui.screens.trends import TrendsScreen

        if not isinstance(self.screen, TrendsScreen):
            self.push_screen(TrendsScreen())

    def action_help(self) -> None:
        from vexfs_cockpit.tui.screens.help import HelpScreen

        if not isinstance(self.screen, HelpScreen):
            self.push_screen(HelpScreen(self.screen))


def run_tui(args: argparse.Namespace) -> int:
    """Entry point for `vexfs-cockpit tui`: open an engine session and run the app.

    The session is opened inside the loop the app then runs on, so the engine's tasks,
    the bus and libvirt's event forwarding all live on one loop.
    """

    async def main() -> int:
        from vexfs_cockpit.app.session import open_session
        from vexfs_cockpit.tui.session_backend import SessionBackend

        session = await open_session(args)
        backend = SessionBackend(session)
        result = await CockpitApp(backend).run_async()
        return int(result or 0)

    return asyncio.run(main())
