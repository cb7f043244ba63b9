"""The live kernel-log pane: a status line, a search box and the log view.

The app feeds it batches (``feed``); the model absorbs them into its bounded deque and
the view, which reads that deque, only learns its new length, so a flood costs a
repaint per frame, not a row per line. Memory is bounded by the model's deques.

Pause freezes the view on a copy of the rows it showed (nothing shifts under the
reader) while the model keeps absorbing; follow shows the live rows again.

Each run starts a fresh log (``new_run``): the lines before it move to a second model,
one key (``show_earlier``) away and never mixed into the run's own, and the view follows
again (a pause from the last run does not carry into this one).
"""

from __future__ import annotations

from collections.abc import Sequence

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Static

from vexfs_cockpit.tui.logmodel import LOG_RETAIN, LogFilter, LogInput, LogModel
from vexfs_cockpit.tui.widgets.kernel_log_view import KernelLogView


class KernelLogPane(Vertical):
    DEFAULT_CSS = """
    KernelLogPane {
        height: 1fr;
        min-height: 4;
    }
    KernelLogPane > #log-status {
        height: 1;
        width: 1fr;
        background: $boost;
        text-wrap: nowrap;
        text-overflow: ellipsis;
    }
    KernelLogPane > #log-search {
        display: none;
        height: 1;
        border: none;
        padding: 0 1;
    }
    KernelLogPane > #log-search.-shown {
        display: block;
    }
    """

    def __init__(self, retain: int = LOG_RETAIN, *, id: str | None = None):
        super().__init__(id=id)
        self.retain = retain
        self.model = LogModel(retain=retain)
        self.earlier: LogModel | None = None  # the lines before this run's start
        self.earlier_label = ""  # what they were: "run 2025…-ab12" or "before run …"
        self.showing_earlier = False
        self.run_label = ""
        self.paused = False
        self.unseen = 0
        self._event_cursor: int | None = None  # marker row of the last jump (paused view)

    def compose(self) -> ComposeResult:
        yield Static(id="log-status")
        yield Input(placeholder="filter kernel log text (enter: apply, esc: cancel)", id="log-search")
        yield KernelLogView(self.model, id="log-view")

    def on_mount(self) -> None:
        self._show_status()

    @property
    def view(self) -> KernelLogView:
        return self.query_one(KernelLogView)

    # -- input --------------------------------------------------------------------
    def feed(self, events: Sequence[LogInput]) -> None:
        """Kernel line rows and events (reports become markers, others are skipped)."""
        if not events:
            return
        new, reports = self.model.add(events)
        if self.showing_earlier:
            self.unseen += len(new)  # this run's lines wait behind the earlier ones shown
        elif self.paused:
            self.unseen += len(new)
            if reports:
                self.view.refresh()  # re-colour rows already on screen
        else:
            self.view.show(self.model.shown)
        self._show_status()

    def on_kernel_log_view_scrolled_back(self, event: KernelLogView.ScrolledBack) -> None:
        event.stop()
        if not self.paused:
            self.pause()

    def on_kernel_log_view_end_requested(self, event: KernelLogView.EndRequested) -> None:
        event.stop()
        if self.paused or self.showing_earlier:
            self.follow()

    # -- runs -------------------------------------------------------------------------
    def new_run(self, run_id: str) -> None:
        """A run started: its log starts empty and followed; what came before is kept
        (the previous run's lines, or those before the first run) for ``show_earlier``."""
        before, had_run = self.model, bool(self.run_label)
        self.earlier = before if before.records else self.earlier
        if before.records:
            self.earlier_label = self.run_label if had_run else f"before run {run_id}"
        self.model = LogModel(retain=self.retain)
        self.model.set_filter(before.filter)
        self.view.model = self.model
        self.run_label = f"run {run_id}"
        self.showing_earlier = False
        self.follow()

    def show_earlier(self) -> bool:
        """Toggle between this run's lines and the earlier ones; False when there are none."""
        if self.showing_earlier:
            self.follow()
            return True
        if self.earlier is None:
            return False
        self.showing_earlier = True
        self.paused = True
        self._event_cursor = None
        view = self.view
        view.model = self.earlier
        view.auto_scroll = False
        view.show(list(self.earlier.shown))
        view.scroll_end(animate=False, immediate=True, x_axis=False)
        self._show_status()
        return True

    @property
    def shown_model(self) -> LogModel:
        """The model on screen: this run's, or the earlier one."""
        return self.earlier if self.showing_earlier and self.earlier is not None else self.model

    # -- controls -------------------------------------------------------------------
    def toggle_pause(self) -> None:
        if self.paused or self.showing_earlier:
            self.follow()
        else:
            self.pause()

    def pause(self) -> None:
        self.paused = True
        view = self.view
        view.auto_scroll = False
        view.show(list(view.rows))  # a copy: the live deque would shift under the reader
        self._show_status()

    def follow(self) -> None:
        self.paused = False
        self.showing_earlier = False
        self._event_cursor = None
        self.unseen = 0
        view = self.view
        view.model = self.model
        view.auto_scroll = True
        view.show(self.model.shown)
        view.scroll_end(animate=False, immediate=True, x_axis=False)
        self._show_status()

    def jump_event(self, forward: bool = True) -> bool:
        """Scroll to the next (previous) classified report; False when there is none."""
        view = self.view
        markers = view.marker_rows()
        if self._event_cursor is not None:
            ref = self._event_cursor
        elif not self.paused:  # tailing: n goes to the oldest report kept, N to the newest
            ref = -1 if forward else len(view.rows)
        else:  # paused after scrolling by hand: relative to what is on screen
            ref = view.scroll_offset.y - 1 if forward else view.scroll_offset.y + view.size.height
        candidates = [m for m in markers if m > ref] if forward else [m for m in markers if m < ref]
        if not candidates:
            return False
        marker = candidates[0] if forward else candidates[-1]
        self.pause()
        self._event_cursor = marker
        start = view.block_start(marker)
        # Show the whole block with its marker when it fits, else start at the block.
        top = start if marker - start < max(view.size.height - 1, 1) else marker
        view.scroll_to(y=top, animate=False, immediate=True)
        return True

    def set_filter_text(self, text: str) -> None:
        self._set_filter(self.shown_model.set_text(text))

    def cycle_vm(self) -> LogFilter:
        return self._set_filter(self.shown_model.cycle_vm())

    def cycle_severity(self) -> LogFilter:
        return self._set_filter(self.shown_model.cycle_severity())

    def clear_filter(self) -> None:
        self._set_filter(self.shown_model.reset_filter())

    def _set_filter(self, flt: LogFilter) -> LogFilter:
        for model in (self.model, self.earlier):  # one filter for this run's lines and the earlier ones
            if model is not None and model.filter != flt:
                model.set_filter(flt)
        self._rebuild()
        return flt

    def open_search(self) -> None:
        box = self.query_one("#log-search", Input)
        box.value = self.model.filter.text
        box.add_class("-shown")
        box.focus()

    def close_search(self) -> None:
        box = self.query_one("#log-search", Input)
        box.remove_class("-shown")
        self.view.focus()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.set_filter_text(event.value)
        self.close_search()

    def on_key(self, event) -> None:  # type: ignore[no-untyped-def]
        if event.key == "escape" and self.query_one("#log-search", Input).has_focus:
            event.stop()
            self.close_search()

    # -- internals ------------------------------------------------------------------
    def _rebuild(self) -> None:
        """The filter changed: show what it lets through (paused: frozen at that)."""
        shown = self.shown_model.shown
        self.view.show(list(shown) if self.paused else shown)
        self.unseen = 0
        self._event_cursor = None
        self._show_status()

    def _show_status(self) -> None:
        m = self.shown_model
        if self.showing_earlier:
            mode = Text(" EARLIER ", style="bold black on magenta")
            whose = Text(f" {self.earlier_label} · b: back to {self.run_label or 'now'}", style="bold")
        else:
            mode = Text(" PAUSED ", style="bold black on yellow") if self.paused else Text(" FOLLOW ", style="bold black on green")
            whose = Text(f" {self.run_label}" if self.run_label else "")
            if self.earlier is not None:
                whose.append(" · b: earlier lines", style="dim")
        status = Text.assemble(
            mode,
            whose,
            (f" +{self.unseen:,} new" if self.unseen else "", "yellow"),
            f" · filter: {m.filter.describe()}",
            f" · {m.lines_seen:,} lines",
            (f" · {m.events_seen} events" if m.events_seen else "", "bold"),
        )
        self.query_one("#log-status", Static).update(status, layout=False)  # one fixed row
