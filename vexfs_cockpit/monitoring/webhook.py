"""Firing alerts to a webhook: a JSON POST, Slack-compatible ``{"text": ...}`` or, with
``monitoring.webhook_format: json``, a plain document of the alerts (``message``).

The URL comes from an environment variable (``monitoring.webhook_url_env``), never from
a file, and is never printed or logged: it is the credential. A failure names the
attempt count and the HTTP status or socket error only. Connection errors, 429 and
5xx answers are retried with exponential backoff; other 4xx are not (retrying a bad
request or a revoked hook changes nothing).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Mapping, Sequence

from vexfs_cockpit.errors import CockpitError, UsageError
from vexfs_cockpit.monitoring.alerts import Firing
from vexfs_cockpit.store.location import StoreLocation


class WebhookError(CockpitError):
    """The webhook did not take the message. Exit 1."""


def webhook_url(env_var: str, environ: Mapping[str, str] = os.environ) -> str:
    url = environ.get(env_var, "").strip()
    if not url:
        raise UsageError(f"no webhook URL: set ${env_var} (monitoring.webhook_url_env)")
    if not url.startswith(("https://", "http://")):
        raise UsageError(f"${env_var} is not an http(s) URL")
    return url


def message(firing: Sequence[Firing], run_id: str, fmt: str = "slack") -> dict[str, object]:
    if fmt == "json":  # for a receiver that reads fields rather than a chat line
        return {"source": "vexfs-cockpit", "run_id": run_id, "alerts": [
            {"rule": f.rule, "severity": f.severity, "summary": f.summary, "labels": dict(f.labels)} for f in firing]}
    if not firing:
        return {"text": f"vexfs-cockpit: run {run_id}: no alert fires"}
    lines = [f"vexfs-cockpit: {len(firing)} alert(s) firing for run {run_id}"]
    lines += [f"• [{f.severity}] {f.rule}: {f.summary}" for f in firing]
    return {"text": "\n".join(lines)}


def post(url: str, payload: Mapping[str, object], *, timeout_s: float = 5.0, retries: int = 3,
         backoff_s: float = 0.5, sleep: Callable[[float], None] = time.sleep) -> int:
    """POST ``payload`` as JSON; returns how many attempts it took. Raises WebhookError."""
    body = json.dumps(payload).encode()
    last = ""
    for attempt in range(1, retries + 2):
        req = urllib.request.Request(url, data=body, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "vexfs-cockpit"})
        try:
            with urllib.request.urlopen(req, timeout=timeout_s) as resp:  # noqa: S310 - http(s) checked above
                resp.read()
                return attempt
        except urllib.error.HTTPError as exc:
            last = f"HTTP {exc.code}"
            if exc.code != 429 and exc.code < 500:
                break
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            last = getattr(reason, "strerror", None) or type(reason).__name__
        if attempt <= retries:
            sleep(backoff_s * 2 ** (attempt - 1))
    raise WebhookError(f"webhook: POST failed after {attempt} attempt(s): {last}")


async def record_dead_letter(db: StoreLocation, run_id: str, text: str) -> None:
    """A delivery that failed for good, kept in the run's history as an infrastructure
    problem (history show, the reports): never the URL, only what failed."""
    from vexfs_cockpit.engine.bus import EventBus
    from vexfs_cockpit.engine.events import InfraProblem
    from vexfs_cockpit.store.recorder import HistoryStore, Recorder

    store = await HistoryStore.aopen(db)
    try:
        bus = EventBus()
        bus.bind_loop(asyncio.get_running_loop())
        rec = Recorder(store, bus)
        rec.start()
        bus.publish(InfraProblem(message=text, run_id=run_id))
        await rec.aclose()
    finally:
        await asyncio.to_thread(store.close)
