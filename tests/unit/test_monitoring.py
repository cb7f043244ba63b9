"""The exporter, the alert rules and their check, the webhook: real history DBs,
real HTTP on 127.0.0.1, the real CLI. No Prometheus binary needed here
(tests/unit/test_monitoring_prometheus.py has those)."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from collections.abc import Iterator
from pathlib import Path

import prometheus_client
import psycopg
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support.monitoring import FS, KM, R1, R2, R3, T0, DAY, VM_SAMPLES, cli, make_history
from tests.support.store import BACKENDS, new_history, record, run_events
from vexfs_cockpit.config.models import AlertRule, MonitoringSettings
from vexfs_cockpit.errors import ConfigError, ReportError, UsageError
from vexfs_cockpit.monitoring import exporter as x
from vexfs_cockpit.monitoring.alerts import check_run, resolve_run, rules_document, validate
from vexfs_cockpit.monitoring.webhook import WebhookError, message, post, webhook_url
from vexfs_cockpit.config.load import load_config
from vexfs_cockpit.store.location import PgUrl, StoreLocation
from vexfs_cockpit.store.recorder import HistoryStore


def samples(text: str) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, frozenset(s.labels.items()))] = s.value
    return out


def v(got: dict, name: str, **labels: str) -> float:
    return got[(name, frozenset(labels.items()))]


@pytest.fixture(params=BACKENDS)
def db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[StoreLocation]:
    """make_history's runs and VM samples in an SQLite file or a real PostgreSQL, the
    writer kept open: r3 reads as running (on PostgreSQL while its writer holds the
    run's lock, from this and any other process)."""
    loc = new_history(request, tmp_path)
    store = HistoryStore.open(loc)

    async def go() -> None:
        for spec in (R1, R2, R3):
            await record(loc, run_events(spec), store)
        await record(loc, VM_SAMPLES, store)

    try:
        asyncio.run(go())
        yield loc
    finally:
        store.close()


# -- the exposition ------------------------------------------------------------------
def test_exposition_parses_with_the_history_figures(db: Path) -> None:
    got = samples(x.exposition(db).decode())
    # results: r1 (3 passed), r2 (KM: pass, fail, error; FS: timeout, skip, pass), r3 (KM: pass)
    assert v(got, x.TESTS_TOTAL, domain=KM, status="passed") == 4
    assert v(got, x.TESTS_TOTAL, domain=KM, status="failed") == 1
    assert v(got, x.TESTS_TOTAL, domain=KM, status="error") == 1
    assert v(got, x.TESTS_TOTAL, domain=KM, status="skipped") == 0
    assert v(got, x.TESTS_TOTAL, domain=FS, status="timeout") == 1
    assert v(got, x.TESTS_TOTAL, domain=FS, status="skipped") == 1
    assert v(got, x.TESTS_TOTAL, domain=FS, status="passed") == 2
    # durations: KM 0.3 s x3 (r1 x2, r3) and 4.0 s x3 (r2); buckets are cumulative
    h = f"{x.TEST_DURATION}_bucket"
    assert v(got, h, domain=KM, le="0.1") == 0
    assert v(got, h, domain=KM, le="0.5") == 3
    assert v(got, h, domain=KM, le="2.5") == 3
    assert v(got, h, domain=KM, le="5.0") == 6
    assert v(got, h, domain=KM, le="+Inf") == 6
    assert v(got, f"{x.TEST_DURATION}_count", domain=KM) == 6
    assert v(got, f"{x.TEST_DURATION}_sum", domain=KM) == pytest.approx(0.3 * 3 + 4.0 * 3)
    assert len([k for k in got if k[0] == h and dict(k[1])["domain"] == KM]) == len(x.DURATION_BUCKETS) + 1
    # the newest finished domain run per env/domain: KM's in r3 (its run still runs), FS's in r2
    assert v(got, x.DOMAIN_FAILURE_RATIO, env="dev", domain=KM) == 0
    assert v(got, x.DOMAIN_FAILURE_RATIO, env="dev", domain=FS) == pytest.approx(1 / 2)
    assert v(got, x.DOMAIN_LAST_RUN_TESTS, env="dev", domain=FS, status="timeout") == 1
    assert v(got, x.DOMAIN_LAST_RUN_TESTS, env="dev", domain=KM, status="timeout") == 0
    assert v(got, x.DOMAIN_LAST_RUN_TESTS, env="dev", domain=KM, status="passed") == 1
    assert v(got, x.DOMAIN_LAST_RUN_TS, env="dev", domain=KM) == pytest.approx(T0 + 2 * DAY + 1)
    assert v(got, x.DOMAIN_LAST_RUN_TS, env="dev", domain=FS) > T0 + DAY
    # stored metrics: the newest run's value and the run before it
    assert v(got, x.METRIC_VALUE, env="dev", domain=KM, test="load", metric="load_p50_ms") == 25.0
    assert v(got, x.METRIC_BASELINE, env="dev", domain=KM, test="load", metric="load_p50_ms") == 10.0
    assert v(got, x.METRIC_VALUE, env="dev", domain=KM, test="unload", metric="unload_p50_ms") == 5.0
    assert (x.METRIC_BASELINE, frozenset({"env": "dev", "domain": KM, "test": "unload", "metric": "unload_p50_ms"}.items())) \
        not in got  # no run before r2 stored it
    # VMs: the newest sample of each
    assert v(got, x.VM_CPU, vm="vm-0") == 37.5
    assert v(got, x.VM_MEMORY, vm="vm-0") == 2048 * 1024
    assert v(got, x.VM_CPU, vm="vm-1") == 80.0
    assert v(got, x.VM_SAMPLE_TS, vm="vm-1") == pytest.approx(T0 + DAY + 3)
    # kernel reports: the planted warning is expected; crash kinds are there at 0 too
    assert v(got, x.KERNEL_REPORTS_TOTAL, kind="oops", expected="false") == 1
    assert v(got, x.KERNEL_REPORTS_TOTAL, kind="warning", expected="true") == 1
    assert v(got, x.KERNEL_REPORTS_TOTAL, kind="panic", expected="false") == 0
    assert v(got, x.RUNS_TOTAL, status="passed") == 1
    assert v(got, x.RUNS_TOTAL, status="failed") == 1
    assert v(got, x.RUNS_TOTAL, status="running") == 1
    assert v(got, x.RUNS_IN_PROGRESS) == 1
    if isinstance(db, PgUrl):  # the database on the server, as PostgreSQL counts it
        with psycopg.connect(db.url) as conn:
            size = conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]
        # autovacuum may add a page map or two between the scrape and this read
        assert size - 2**20 < v(got, x.STORE_SIZE) <= size and size > 2**20
    else:
        size = sum(p.stat().st_size for p in db.parent.glob("history.db*"))
        assert v(got, x.STORE_SIZE) == size > 0
    # every series is one the module declares (the dashboard and rules test rely on it)
    assert {k[0] for k in got} <= x.ALL_SERIES
    assert all(name.startswith("vexfs_cockpit_") for name in x.SERIES_NAMES)


def test_labels_stay_bounded(db: Path) -> None:
    allowed = {"domain", "status", "env", "test", "metric", "vm", "kind", "expected", "le", "verdict"}
    for fam in text_string_to_metric_families(x.exposition(db).decode()):
        for s in fam.samples:
            assert set(s.labels) <= allowed, s
            if "status" in s.labels and fam.name != "vexfs_cockpit_runs":
                assert s.labels["status"] in {"passed", "failed", "skipped", "timeout", "error"}
            assert s.labels.get("verdict", "regression") in x.VERDICTS


def test_no_global_registry_state(db: Path) -> None:
    before = set(prometheus_client.REGISTRY._names_to_collectors)
    a, b = x.build_registry(db), x.build_registry(db)
    assert a is not b
    x.exposition(db)
    assert set(prometheus_client.REGISTRY._names_to_collectors) == before
    assert not any(n.startswith("vexfs_cockpit") for n in before)


def test_an_absent_db_reads_as_empty(tmp_path: Path) -> None:
    got = samples(x.exposition(tmp_path / "none.db").decode())
    assert v(got, x.STORE_SIZE) == 0 and v(got, x.RUNS_IN_PROGRESS) == 0
    assert not (tmp_path / "none.db").exists()  # reading never creates it


# -- the endpoint --------------------------------------------------------------------
def test_served_metrics_are_computed_at_scrape_time(tmp_path: Path) -> None:
    db = make_history(tmp_path / "h.db", [R1], samples=False)
    server, thread = x.serve_in_thread(db, "127.0.0.1", 0)
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
        first = samples(urllib.request.urlopen(url, timeout=10).read().decode())
        assert v(first, x.TESTS_TOTAL, domain=KM, status="passed") == 2
        make_history(db, [R2], samples=False)  # a run lands while the server runs
        second = samples(urllib.request.urlopen(url, timeout=10).read().decode())
        assert v(second, x.TESTS_TOTAL, domain=KM, status="passed") == 3
        assert v(second, x.TESTS_TOTAL, domain=KM, status="failed") == 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def test_served_on_ipv6_loopback(tmp_path: Path) -> None:
    db = make_history(tmp_path / "h.db", [R1], samples=False)
    try:
        server, thread = x.serve_in_thread(db, "::1", 0)
    except UsageError as err:
        pytest.skip(f"no IPv6 loopback here: {err}")
    try:
        body = urllib.request.urlopen(f"http://[::1]:{server.server_address[1]}/metrics", timeout=10).read().decode()
        assert v(samples(body), x.TESTS_TOTAL, domain=FS, status="passed") == 1
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.mark.parametrize("text, want", [("127.0.0.1:9464", ("127.0.0.1", 9464)), ("localhost:0", ("127.0.0.1", 0)),
                                        ("[::1]:9100", ("::1", 9100)), ("127.8.9.10:1", ("127.8.9.10", 1))])
def test_listen_takes_loopback(text: str, want: tuple[str, int]) -> None:
    assert x.parse_listen(text) == want


@pytest.mark.parametrize("text", ["0.0.0.0:9464", "10.0.0.1:9464", "[::]:9464", "example.com:80", "9464", "127.0.0.1:x",
                                  "127.0.0.1:70000"])
def test_listen_refuses_the_rest(text: str) -> None:
    with pytest.raises(UsageError):
        x.parse_listen(text)


# -- the textfile export ---------------------------------------------------------------
def test_textfile_export_is_atomic_and_parses(db: Path, tmp_path: Path) -> None:
    out = tmp_path / "tf" / "vexfs_cockpit.prom"
    out.parent.mkdir()
    out.write_text("old contents\n")
    n = x.write_textfile(db, out)
    text = out.read_text()
    assert n == len(text.encode())
    assert v(samples(text), x.TESTS_TOTAL, domain=KM, status="failed") == 1
    assert "_created" not in text  # node_exporter's textfile collector wants plain samples
    assert sorted(p.name for p in out.parent.iterdir()) == ["vexfs_cockpit.prom"]  # no temp file left
    with pytest.raises(ReportError):
        x.write_textfile(db, out.parent)
    with pytest.raises(ReportError):
        x.write_textfile(db, tmp_path / "missing-dir" / "x.prom")


# -- alerts ----------------------------------------------------------------------------
RULES = [
    AlertRule(name="FailRate", kind="failure_rate", threshold=0.6, severity="warning"),
    AlertRule(name="Timeout", kind="test_timeout", severity="warning"),
    AlertRule(name="Crash", kind="kernel_crash", severity="critical"),
    AlertRule(name="LoadSlower", kind="metric_regression", metric="load_p50_ms", threshold=100, severity="warning"),
    AlertRule(name="LoadMuchSlower", kind="metric_regression", metric="load_p50_ms", threshold=200, severity="critical"),
]


def test_check_fires_on_the_bad_run_only(db: Path) -> None:
    firing = check_run(db, resolve_run(db, "r2"), RULES)
    got = sorted((f.rule, f.labels.get("domain", "")) for f in firing)
    # KM 2/3 > 0.6 fires, FS 1/2 does not; the expected warning is no crash; +150% > 100% but not > 200%
    assert got == [("Crash", KM), ("FailRate", KM), ("LoadSlower", KM), ("Timeout", FS)]
    assert check_run(db, resolve_run(db, "r1"), RULES) == []
    assert resolve_run(db, "latest").run.run_id == "r3"
    with pytest.raises(UsageError):
        resolve_run(db, "nope")


def test_rules_document_names_only_exported_metrics() -> None:
    doc = rules_document(RULES)
    rules = doc["groups"][0]["rules"]
    assert [r["alert"] for r in rules] == [r.name for r in RULES]
    for r in rules:
        names = {n for n in x.ALL_SERIES if n in r["expr"]}
        assert names, r["expr"]
        assert r["labels"]["severity"] in {"warning", "critical"}


@pytest.mark.parametrize("bad", [
    [AlertRule(name="A", kind="failure_rate", threshold=1.5)],
    [AlertRule(name="A", kind="metric_regression", threshold=10)],
    [AlertRule(name="A", kind="metric_regression", metric="m")],
    [AlertRule(name="A", kind="kernel_crash"), AlertRule(name="A", kind="test_timeout")],
])
def test_bad_rules_are_config_errors(bad: list[AlertRule]) -> None:
    with pytest.raises(ConfigError):
        validate(bad)


def test_default_config_has_alerts() -> None:
    cfg = load_config(None, None, {})
    kinds = {r.kind for r in cfg.monitoring.alerts}
    assert kinds == {"failure_rate", "test_timeout", "kernel_crash", "metric_regression", "new_regression"}
    validate(cfg.monitoring.alerts)


# -- webhook ---------------------------------------------------------------------------
class Hook:
    """A real HTTP server on 127.0.0.1 answering each POST with the next status."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.bodies: list[dict] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's name
                n = int(self.headers["Content-Length"])
                hook.bodies.append(json.loads(self.rfile.read(n)))
                status = hook.statuses.pop(0) if hook.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"ok")

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/T000/B000/secret-token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> "Hook":
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_webhook_retries_after_a_500() -> None:
    waits: list[float] = []
    with Hook([500]) as hook:
        attempts = post(hook.url, {"text": "hello"}, timeout_s=5, retries=3, backoff_s=0.2, sleep=waits.append)
    assert attempts == 2
    assert hook.bodies == [{"text": "hello"}, {"text": "hello"}]
    assert waits == [0.2]


def test_webhook_gives_up_with_backoff_and_without_the_url() -> None:
    waits: list[float] = []
    with Hook([503, 503, 503]) as hook:
        with pytest.raises(WebhookError) as err:
            post(hook.url, {"text": "x"}, retries=2, backoff_s=0.1, sleep=waits.append)
    assert waits == [0.1, 0.2]
    assert "HTTP 503" in str(err.value) and "secret-token" not in str(err.value) and "127.0.0.1" not in str(err.value)
    with Hook([400]) as hook:  # a client error is not retried
        with pytest.raises(WebhookError):
            post(hook.url, {"text": "x"}, retries=3, sleep=waits.append)
        assert len(hook.bodies) == 1


def test_webhook_times_out() -> None:
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(1)  # accepts the connection, never answers
    try:
        with pytest.raises(WebhookError) as err:
            post(f"http://127.0.0.1:{silent.getsockname()[1]}/hook", {"text": "x"}, timeout_s=0.3, retries=1,
                 sleep=lambda s: None)
        assert "2 attempt" in str(err.value)
    finally:
        silent.close()


def test_webhook_url_comes_from_the_environment() -> None:
    assert webhook_url("HOOK", {"HOOK": " https://h.example/x "}) == "https://h.example/x"
    with pytest.raises(UsageError):
        webhook_url("HOOK", {})
    with pytest.raises(UsageError):
        webhook_url("HOOK", {"HOOK": "file:///etc/passwd"})
    assert MonitoringSettings().webhook_url_env == "VEXFS_COCKPIT_WEBHOOK_URL"
    assert message([], "r9") == {"text": "vexfs-cockpit: run r9: no alert fires"}


# -- the CLI -----------------------------------------------------------------------------
def test_cli_alerts_test_sends_a_sample_and_never_shows_the_url() -> None:
    with Hook([500]) as hook:
        r = cli("alerts", "test", env={"VEXFS_COCKPIT_WEBHOOK_URL": hook.url})
    assert r.returncode == 0, r.stderr
    assert len(hook.bodies) == 2 and "SampleAlert" in hook.bodies[1]["text"]
    assert "attempt 2" in r.stdout
    assert "secret-token" not in r.stdout + r.stderr


def test_cli_check_notifies_firing_alerts(db: Path) -> None:
    with Hook([]) as hook:
        r = cli("alerts", "check", "r2", "--db", str(db), "--notify", env={"VEXFS_COCKPIT_WEBHOOK_URL": hook.url})
    assert r.returncode == 1, r.stderr
    assert "FIRING DomainFailureRateHigh" in r.stdout and "FIRING KernelCrash" in r.stdout
    assert "KernelCrash" in hook.bodies[0]["text"]
    r = cli("alerts", "check", "r1", "--db", str(db))
    assert r.returncode == 0 and "0 alert(s) firing" in r.stdout


def test_cli_check_keeps_a_dead_letter_and_posts_plain_json(db: Path) -> None:
    from vexfs_cockpit.store.history import History

    with Hook([500, 500]) as hook:
        r = cli("alerts", "check", "r2", "--db", str(db), "--notify", "--set", "monitoring.webhook_retries=1",
                env={"VEXFS_COCKPIT_WEBHOOK_URL": hook.url})
    assert r.returncode == 1 and len(hook.bodies) == 2
    assert r.stderr.strip().splitlines() == ["vexfs-cockpit: webhook: POST failed after 2 attempt(s): HTTP 500"]
    letters = [p.message for p in History(db).run_detail("r2").infra_problems]
    assert letters == ["5 alert(s) not delivered: webhook: POST failed after 2 attempt(s): HTTP 500"]
    assert not any("secret-token" in m for m in letters)

    with Hook([]) as hook:  # monitoring.webhook_format: json
        r = cli("alerts", "check", "r2", "--db", str(db), "--notify", "--set", "monitoring.webhook_format=json",
                env={"VEXFS_COCKPIT_WEBHOOK_URL": hook.url})
    assert r.returncode == 1 and "webhook took it (attempt 1)" in r.stdout
    body = hook.bodies[0]
    assert body["source"] == "vexfs-cockpit" and body["run_id"] == "r2"
    crash = next(a for a in body["alerts"] if a["rule"] == "KernelCrash")
    assert crash["severity"] == "critical" and crash["labels"]["kind"] == "oops" and "oops" in crash["summary"]


def test_cli_export_and_rules(db: Path, tmp_path: Path) -> None:
    r = cli("metrics", "export", str(tmp_path / "m.prom"), "--db", str(db))
    assert r.returncode == 0, r.stderr
    assert v(samples((tmp_path / "m.prom").read_text()), x.RUNS_IN_PROGRESS) == 1
    r = cli("alerts", "rules", "--output", str(tmp_path / "rules.yml"))
    assert r.returncode == 0, r.stderr
    assert "DomainFailureRateHigh" in (tmp_path / "rules.yml").read_text()


@pytest.mark.parametrize("argv, code, words", [
    (["metrics", "serve", "--listen", "0.0.0.0:9464"], 2, "loopback address only"),
    (["metrics", "serve", "--listen", "127.0.0.1:0", "--db", "{missing}"], 2, "no history DB"),
    (["metrics", "export", "{dir}", "--db", "{db}"], 2, "is a directory"),
    (["metrics", "export", "{dir}/x.prom", "--db", "{missing}"], 2, "no history DB"),
    (["alerts", "check", "--db", "{missing}"], 2, "no history DB"),
    (["alerts", "check", "nosuchrun", "--db", "{db}"], 2, "no run"),
    (["alerts", "test"], 2, "no webhook URL"),
    (["alerts", "rules", "--output", "{dir}"], 2, "cannot write"),
])
def test_cli_bad_input_is_one_line(argv: list[str], code: int, words: str, db: Path, tmp_path: Path) -> None:
    subs = {"missing": str(tmp_path / "missing.db"), "dir": str(tmp_path), "db": str(db)}
    r = cli(*[a.format(**subs) for a in argv], env={"VEXFS_COCKPIT_WEBHOOK_URL": ""})
    assert r.returncode == code, (r.stdout, r.stderr)
    assert words in r.stderr and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr


def test_latest_metric_values_are_the_newest_before_a_time(db: StoreLocation) -> None:
    """What the live metric_regression alert compares with (one SQL on both backends:
    the newest row per test by a window, not SQLite's bare column beside max(ts))."""
    from vexfs_cockpit.monitoring.queries import latest_metric_values

    name = "load_p50_ms"
    assert latest_metric_values(db, "dev", [name], T0 + 3 * DAY) == {(KM, "load", name): 25.0}
    assert latest_metric_values(db, "dev", [name], T0 + DAY) == {(KM, "load", name): 10.0}
    assert latest_metric_values(db, "ci", [name], T0 + 3 * DAY) == {}
