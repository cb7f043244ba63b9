"""Live metrics and alerts of a real `run --batch`: metrics (monitoring.listen) scraped
over HTTP while the guest runs the tests, not read from the history afterwards; alerts
printed and posted while the run goes. 30-50 s here for the three (TCG, shared host)."""

from __future__ import annotations

import os
import socket
import subprocess
import urllib.request
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.e2e import CI_PROFILE, ROOT, LineReader, cockpit_argv, owned_vms

pytestmark = pytest.mark.vm

DOMAIN = "kernel_module"
# module_build and the two it brings: a short run with three results.
TESTS = f"{DOMAIN}/module_load_basic,{DOMAIN}/module_unload_basic"
READY = "vexfs_cockpit_vm_ready_duration_seconds"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _scrape(url: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    with urllib.request.urlopen(url, timeout=30) as resp:
        text = resp.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for fam in text_string_to_metric_families(text) for s in fam.samples}


def _total(sc: dict, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, ls), v in sc.items() if n == name and want <= ls)


@pytest.mark.timeout(900)
@pytest.mark.parametrize("restore, modes", [("auto", {"boot", "restore"}), ("off", {"boot"})])
def test_batch_run_serves_live_metrics(tmp_path: Path, restore: str, modes: set[str]) -> None:
    """fleet.restore auto: the VM is restored from the golden snapshot (booted when that
    fails); off: booted cold. Either way its measured time is in the histogram."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/metrics"
    proc = subprocess.Popen(
        cockpit_argv("run", "--batch", *CI_PROFILE, "--db", str(tmp_path / "h.db"), "--domains", DOMAIN,
                     "--tests", TESTS, "--set", f"monitoring.listen=127.0.0.1:{port}", "--set", f"fleet.restore={restore}"),
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None and proc.stderr is not None
    try:
        out = LineReader(proc.stdout)
        out.wait_for(lambda ln: "] run " in ln and " profile=" in ln, timeout=120)  # RunStarted
        at_start = _scrape(url)
        first = out.wait_for(lambda ln: f"{DOMAIN}/" in ln and (": PASSED" in ln or ": FAILED" in ln), timeout=600)
        mid = _scrape(url)
        out.wait_for(lambda ln: f"{DOMAIN}/module_unload_basic:" in ln, timeout=600)
        last = _scrape(url)
        code = proc.wait(timeout=300)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    lines = out.rest()
    err = proc.stderr.read()
    assert code == 0, "\n".join(lines[-20:]) + err
    assert owned_vms(proc.pid) == []

    runs, tests = "vexfs_cockpit_session_runs_in_progress", "vexfs_cockpit_session_run_tests"
    assert at_start[(runs, frozenset())] == 1
    assert mid[(runs, frozenset())] == 1 and last[(runs, frozenset())] == 1
    assert _total(at_start, "vexfs_cockpit_session_run_planned_tests", domain=DOMAIN) == 3
    # The results so far, as the run goes: more at the last test than at the start.
    assert _total(at_start, tests, domain=DOMAIN) < _total(mid, tests, domain=DOMAIN) <= 3
    assert _total(last, tests, domain=DOMAIN, status="passed") == 3, first
    # The VM came up before its first test: the fleet's measured boot or restore time.
    n = _total(mid, READY + "_count")
    took = _total(mid, READY + "_sum")
    assert n >= 1 and took > 0
    seen = {dict(ls)["mode"] for (name, ls) in mid if name == READY + "_count"}
    assert seen and seen <= modes, seen
    assert _total(mid, "vexfs_cockpit_session_vm_state", state="ready") + _total(
        mid, "vexfs_cockpit_session_vm_state", state="running") >= 1
    print(f"\nVM ready: {n:g} x, {took:.2f}s in all ({', '.join(sorted(seen))})")
    # The exporter went with the run.
    with pytest.raises(OSError):
        _scrape(url)


@pytest.mark.timeout(900)
def test_batch_run_fires_alerts_live_and_posts_them(tmp_path: Path) -> None:
    """Tests given 0.3 s time out: the default rules fire while the run goes, as ALERT
    lines before the run's end, and reach a real webhook server on 127.0.0.1."""
    import json
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bodies: list[dict] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            bodies.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            pass

    hook = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=hook.serve_forever, daemon=True).start()
    try:
        proc = subprocess.run(
            cockpit_argv("run", "--batch", *CI_PROFILE, "--db", str(tmp_path / "h.db"), "--domains", DOMAIN,
                         "--tests", f"{DOMAIN}/module_build", "--set", "execution.test_timeout_minutes=0.005"),
            cwd=ROOT, capture_output=True, text=True, timeout=600,
            env={**os.environ, "VEXFS_COCKPIT_WEBHOOK_URL": f"http://127.0.0.1:{hook.server_address[1]}/hook/t0k3n"},
        )
    finally:
        hook.shutdown()
        hook.server_close()
    lines = proc.stdout.splitlines()
    assert proc.returncode == 1, proc.stdout[-3000:] + proc.stderr
    alerts = [ln.split("] ", 1)[1] for ln in lines if "] ALERT " in ln]
    assert alerts[:2] == [
        f"ALERT TestTimedOut [warning] {DOMAIN}/module_build timed out after 0.3s (env ci)",
        f"ALERT DomainFailureRateHigh [warning] {DOMAIN} failure rate at least 1/1 = 1.00 > 0.2 (env ci, run going)",
    ], alerts
    first = next(i for i, ln in enumerate(lines) if "] ALERT " in ln)
    end = next(i for i, ln in enumerate(lines) if "] run " in ln and " FAILED" in ln)
    assert first < end  # live, not at the run's end
    texts = [b["text"] for b in bodies]
    assert any("TestTimedOut" in t for t in texts) and any("DomainFailureRateHigh" in t for t in texts), texts
    assert "t0k3n" not in proc.stdout + proc.stderr
