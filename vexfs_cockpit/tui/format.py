"""Small, pure formatting helpers shared by widgets (no Textual imports)."""

from __future__ import annotations

import re
import time
from collections.abc import Sequence

from vexfs_cockpit.errors import CockpitError
from vexfs_cockpit.klog.model import KernelReport, Severity

_BARS = " ▁▂▃▄▅▆▇█"

# Styles per severity, used by the log pane, event tables and evidence views.
SEVERITY_STYLE: dict[Severity, str] = {
    Severity.INFO: "cyan",
    Severity.WARNING: "yellow",
    Severity.ERROR: "bold red",
    Severity.CRITICAL: "bold white on red",
}

STATUS_STYLE: dict[str, str] = {
    "PASSED": "green",
    "passed": "green",
    "FAILED": "bold red",
    "failed": "bold red",
    "ERROR": "bold magenta",
    "errored": "bold magenta",
    "TIMEOUT": "bold red",
    "SKIPPED": "dim",
    "skipped": "dim",
    "RUNNING": "cyan",
    "running": "cyan",
    "aborted": "yellow",
    "pending": "dim",
}

VM_STATE_STYLE: dict[str, str] = {
    "ready": "green",
    "running": "green",
    "booting": "cyan",
    "paused": "yellow",
    "hung": "bold red",
    "crashed": "bold white on red",
    "stopped": "dim",
    "defined": "dim",
    "undefined": "dim",
}


_VM_NAME = re.compile(r"^vexfs-([^-]+)-(.+)-(\d+)$")  # vexfs-<env>-<domain>-<n>
# Short tags keep names narrow at 80 columns (the log's prefix, the VM table).
DOMAIN_TAGS = {
    "kernel_module": "kmod",
    "filesystem_operations": "fsops",
    "vector_operations": "vecops",
    "performance_metrics": "perf",
    "safety_validation": "safety",
    "integration_testing": "integ",
}


def parse_vm_name(name: str) -> tuple[str, str, str] | None:
    """``vexfs-<env>-<domain>-<n>`` -> ``(env, domain, n)``; None for other names."""
    m = _VM_NAME.match(name)
    return None if m is None else (m.group(1), m.group(2), m.group(3))


def vm_display_name(name: str) -> str:
    """The one name the TUI shows for a VM: ``vexfs-dev-kernel_module-0`` -> ``dev/kmod-0``.

    Made from the libvirt name alone, so it is the same in every table, the log, the
    menus and the notifications, whatever other VMs exist (the environment is in it: the
    same domain's VMs of two environments never share one). Other names are shown as they
    are; the full libvirt name is in the VM menu."""
    parts = parse_vm_name(name)
    if parts is None:
        return name
    env, domain, index = parts
    tag = DOMAIN_TAGS.get(domain) or (domain if domain not in DOMAIN_TAGS.values() else f"{domain}+")
    return f"{env}/{tag}-{index}"


def report_title(kind: str, title: str) -> str:
    """A kernel report's title with its kind once: ``taint: out-of-tree module m``, never
    ``taint: taint: …`` (the store's signature is ``kind: title``, and titles often start
    with their kind); ``title (kind)`` when the title does not say it."""
    if kind.replace("_", " ") in title.lower().replace("_", " "):
        return title
    return f"{title} ({kind})"


def report_text(rep: KernelReport, expected: bool = False) -> str:
    """``SEVERITY title (kind) [module]`` with each said once (the log's marker rows, the
    evidence and the run detail); the first word is what the highlighter styles by."""
    sev = rep.severity.name
    title = report_title(rep.kind, rep.title)
    text = title if title.upper().startswith(sev) else f"{sev} {title}"
    if rep.module and rep.module not in rep.title:
        text += f" [{rep.module}]"
    return text + (" — expected" if expected else "")


def duration(seconds: float | None) -> str:
    """Compact human duration: 9.2s, 3m07s, 2h05m; '—' when unknown."""
    if seconds is None or seconds < 0:
        return "—"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    minutes, sec = divmod(int(seconds), 60)
    if minutes < 60:
        return f"{minutes}m{sec:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def memory_kb(kb: int | None) -> str:
    if kb is None:
        return "—"
    if kb < 1024:
        return f"{kb}K"
    if kb < 1024 * 1024:
        return f"{kb / 1024:.0f}M"
    return f"{kb / 1024 / 1024:.1f}G"


def timestamp(ts: float | None, now: float | None = None) -> str:
    """Local date-time, short when it is today."""
    if ts is None:
        return "—"
    lt = time.localtime(ts)
    today = time.localtime(now if now is not None else time.time())
    if lt[:3] == today[:3]:
        return time.strftime("%H:%M:%S", lt)
    return time.strftime("%Y-%m-%d %H:%M", lt)


def sparkline(values: Sequence[float], width: int, top: float = 100.0) -> str:
    """Unicode bar cells for ``values`` scaled to [0, top], newest on the right.

    When there are more values than cells, each cell shows the max of its bucket so
    a short spike stays visible.
    """
    if width <= 0:
        return ""
    vals = list(values)
    if not vals:
        return " " * width
    if len(vals) > width:
        size = len(vals) / width
        vals = [max(vals[int(i * size): max(int((i + 1) * size), int(i * size) + 1)]) for i in range(width)]
    cells = []
    for v in vals:
        frac = 0.0 if top <= 0 else min(max(v / top, 0.0), 1.0)
        idx = round(frac * (len(_BARS) - 1))
        if v > 0 and idx == 0:
            idx = 1  # a non-zero value never looks idle
        cells.append(_BARS[idx])
    return "".join(cells).rjust(width)


def progress_bar(done: int, total: int, width: int) -> str:
    if total <= 0 or width <= 0:
        return "░" * max(width, 0)
    filled = min(width, round(width * done / total))
    return "█" * filled + "░" * (width - filled)


def one_line(text: str, limit: int = 200) -> str:
    """First non-empty line, clipped: user-facing errors are one line."""
    line = next((ln.strip() for ln in text.splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def error_line(err: BaseException) -> str:
    """A one-line message for any exception; CockpitErrors already are one line."""
    msg = one_line(str(err))
    if isinstance(err, CockpitError):
        return msg or type(err).__name__
    return f"{type(err).__name__}: {msg}" if msg else type(err).__name__


# The history and trends screens' period filters: label and length in seconds.
PERIODS: tuple[tuple[str, float], ...] = (("24h", 86400.0), ("7d", 7 * 86400.0), ("30d", 30 * 86400.0), ("90d", 90 * 86400.0))
