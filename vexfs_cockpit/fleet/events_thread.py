"""libvirt's default event loop, run on one daemon thread for the whole process.

libvirt lets a process register its event implementation exactly once, and
``libvirtaio`` would tie it to one asyncio loop (test runners and Textual make a
new loop per test/app). So: the default impl, once, plus a daemon thread that
spins ``virEventRunDefaultImpl()``. Callbacks (lifecycle, console streams) run on
that thread and must hand work to asyncio with ``loop.call_soon_threadsafe``.

This module holds the one piece of process-global state the cockpit has, because
libvirt itself makes it process-global. It must run BEFORE any connection opens:
connections only deliver events if an impl existed when they were opened.
"""

from __future__ import annotations

import logging
import threading

import libvirt

log = logging.getLogger(__name__)

_lock = threading.Lock()
_thread: threading.Thread | None = None


def _quiet_errors(_ctx: object, _err: object) -> None:
    # libvirt prints every error to stderr by default; we raise them as
    # libvirtError and turn them into one-line messages ourselves.
    return None


def _run() -> None:
    while True:
        try:
            if libvirt.virEventRunDefaultImpl() < 0:
                log.warning("virEventRunDefaultImpl failed")
        except libvirt.libvirtError as err:  # keep the loop alive: it is the only one
            log.warning("libvirt event loop: %s", err)
        except Exception:  # a buggy callback must not kill every later event
            log.exception("libvirt event callback raised")


def ensure_event_loop() -> None:
    """Register the default event impl and start its thread (idempotent, thread-safe)."""
    global _thread
    with _lock:
        if _thread is not None and _thread.is_alive():
            return
        libvirt.virEventRegisterDefaultImpl()
        libvirt.registerErrorHandler(_quiet_errors, None)
        _thread = threading.Thread(target=_run, name="libvirt-events", daemon=True)
        _thread.start()


