"""A run as one self-contained HTML file (inline CSS, inline SVG, no script, nothing
fetched): summary, the domains, every test, each bad test with its evidence (commands
with exit codes and output, kernel reports, the kernel-log window, notes, attempts),
the run's kernel reports with their text, and trends from the history as SVG charts
(each metric this run recorded, each domain's pass rate), this run's point in red.

Rendered with Jinja2, autoescaped: kernel logs and command output are data, never markup.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from jinja2 import Environment, StrictUndefined
from markupsafe import Markup

from vexfs_cockpit.reports.output import write_atomic
from vexfs_cockpit.reports.svg import polyline_chart
from vexfs_cockpit.store.codec import cap_kernel_log
from vexfs_cockpit.store.history import History
from vexfs_cockpit.store.render import fmt_duration, fmt_time
from vexfs_cockpit.store.report import RunReport

MAX_TREND_POINTS = 50
MAX_CHARTS = 40


@dataclass(frozen=True, slots=True)
class Trend:
    title: str
    points: tuple[tuple[float, float], ...]  # (time, value), oldest first, this run's last

    def svg(self) -> Markup:
        return Markup(polyline_chart(self.points, title=self.title))  # noqa: S704 - built escaped


def collect_trends(history: History, report: RunReport) -> list[Trend]:
    """Trends up to this run, from runs of the same env: every metric this run recorded
    (per test and per domain) and each domain's pass rate."""
    run = report.run
    until = run.finished_at if run.finished_at is not None else float("inf")
    env = run.env or None
    trends: list[Trend] = []
    keys = sorted({(t.domain, t.name, m) for t in report.tests() for m in t.metrics}
                  | {(d.name, "", m) for d in report.domains for m in d.metrics})
    for domain, test, name in keys[:MAX_CHARTS]:
        pts = [(p.ts, p.value) for p in history.metric_trend(name, domain=domain, test=test, env=env) if p.ts <= until]
        where = f"{domain}.{test}" if test else domain
        trends.append(Trend(f"{where} {name}", tuple(pts[-MAX_TREND_POINTS:])))
    for d in report.domains:
        pts = [(p.started_at, 100.0 * p.pass_rate) for p in history.domain_trend(d.name, env=env)
               if p.pass_rate is not None and p.started_at <= until]
        trends.append(Trend(f"{d.name} pass rate %", tuple(pts[-MAX_TREND_POINTS:])))
    return trends


TEMPLATE = r"""<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>vexfs-cockpit run {{ run.run_id }}: {{ run.status }}</title>
<style>
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em auto; max-width: 70em; color: #222; padding: 0 1em; }
h1 { font-size: 1.5em; } h2 { border-bottom: 1px solid #ddd; margin-top: 2em; }
table { border-collapse: collapse; margin: .5em 0 1em; }
th, td { border: 1px solid #ddd; padding: .25em .6em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
pre { background: #f7f7f7; border: 1px solid #e3e3e3; padding: .5em; overflow-x: auto; white-space: pre-wrap; font-size: 12px; }
.PASSED, .passed { color: #2e7d32; } .SKIPPED, .skipped { color: #8a6d00; }
.FAILED, .ERROR, .TIMEOUT, .failed, .errored, .aborted, .running, .NO_RESULT { color: #c62828; font-weight: bold; }
.summary span { display: inline-block; margin-right: 1.2em; }
.failure { border-left: 4px solid #c62828; padding-left: .8em; margin: 1.2em 0; }
.charts svg { margin: 0 1em 1em 0; border: 1px solid #eee; }
.muted { color: #777; }
</style>
</head>
<body>
<h1>vexfs-cockpit run <code>{{ run.run_id }}</code>: <span class="{{ run.status }}">{{ run.status }}</span></h1>
<p class="summary">
<span>env <b>{{ run.env or '-' }}</b></span><span>profile <b>{{ run.profile or '-' }}</b></span>
<span>host {{ run.host or '-' }}</span><span>started {{ started }}</span><span>took {{ duration }}</span>
</p>
<p class="summary">{% for status, n in tally %}<span class="{{ status }}">{{ n }} {{ status.lower() }}</span>{% endfor %}
{% if missing_total %}<span class="NO_RESULT">{{ missing_total }} without result</span>{% endif %}
<span>{{ crashes|length }} kernel crash report(s)</span></p>
{% if run.reason %}<p><b>reason:</b> {{ run.reason }}</p>{% endif %}
{% for p in report.infra_problems %}<p class="failed">infrastructure: {{ p.message }}{% if p.vm %} [{{ p.vm }}]{% endif %}</p>{% endfor %}

<h2>Domains</h2>
<table id="domains">
<tr><th>domain</th><th>status</th><th>VM</th><th>duration</th><th>results</th><th>reason</th></tr>
{% for d in report.domains %}
<tr><td><a href="#{{ ("domain-" ~ d.name)|anchor }}">{{ d.name }}</a></td><td class="{{ d.status }}">{{ d.status }}</td>
<td>{{ d.vm or '-' }}</td><td>{{ fmt_duration(d.duration_s) }}</td>
<td>{% for k, v in d.tally()|dictsort %}<span class="{{ k }}">{{ v }} {{ k.lower() }}</span> {% endfor %}</td><td>{{ d.reason }}</td></tr>
{% endfor %}
</table>

<h2>Tests</h2>
{% for d in report.domains %}
<h3 id="{{ ("domain-" ~ d.name)|anchor }}">{{ d.name }}</h3>
<table class="tests">
<tr><th>test</th><th>status</th><th>duration</th><th>attempts</th><th>message</th><th>metrics</th></tr>
{% for t in d.tests %}
<tr><td>{% if t.status.bad %}<a href="#{{ ("fail-" ~ d.name ~ "-" ~ t.name)|anchor }}">{{ t.name }}</a>{% else %}{{ t.name }}{% endif %}</td>
<td class="{{ t.status }}">{{ t.status }}</td><td>{{ fmt_duration(t.duration_s) }}</td><td>{{ t.attempts|length or 1 }}</td>
<td>{{ t.message }}</td><td>{% for k, v in t.metrics|dictsort %}{{ k }}={{ '%g'|format(v) }}<br>{% endfor %}</td></tr>
{% endfor %}
{% for name in d.missing_tests() %}
<tr><td><a href="#{{ ("fail-" ~ d.name ~ "-" ~ name)|anchor }}">{{ name }}</a></td><td class="NO_RESULT">NO RESULT</td><td>-</td><td>0</td><td>domain {{ d.status }}{% if d.reason %}: {{ d.reason }}{% endif %}</td><td></td></tr>
{% endfor %}
</table>
{% if d.metrics %}<p class="muted">domain metrics: {% for k, v in d.metrics|dictsort %}{{ k }}={{ '%g'|format(v) }} {% endfor %}</p>{% endif %}
{% endfor %}

<h2>Failures</h2>
{% if not failures and not missing %}<p class="passed">none</p>{% endif %}
{% for f in failures %}{% set t = f.result %}
<section class="failure" id="{{ ("fail-" ~ t.domain ~ "-" ~ t.name)|anchor }}">
<h3>{{ t.domain }}.{{ t.name }}: <span class="{{ t.status }}">{{ t.status }}</span> in {{ fmt_duration(t.duration_s) }}</h3>
{% if t.message %}<p class="message">{{ t.message }}</p>{% endif %}
{% if t.attempts|length > 1 %}<table><tr><th>attempt</th><th>status</th><th>duration</th><th>message</th></tr>
{% for a in t.attempts %}<tr><td>#{{ a.number }}</td><td class="{{ a.status }}">{{ a.status }}</td><td>{{ fmt_duration(a.duration_s) }}</td><td>{{ a.message }}</td></tr>{% endfor %}</table>{% endif %}
{% if t.evidence.commands %}<h4>Commands</h4>
<table class="commands"><tr><th>command</th><th>exit</th><th>duration</th><th>target</th></tr>
{% for c in t.evidence.commands %}<tr><td><code>{{ c.cmd }}</code></td>
<td>{% if c.timed_out %}timed out{% elif c.exit_code is none %}none{% else %}{{ c.exit_code }}{% endif %}</td>
<td>{{ fmt_duration(c.duration_s) }}</td><td>{{ c.target or '-' }}</td></tr>
{% if c.output_tail.strip() %}<tr><td colspan="4"><pre>{{ c.output_tail }}</pre></td></tr>{% endif %}{% endfor %}
</table>{% endif %}
{% if f.kernel %}<h4>Kernel reports</h4>{% for k in f.kernel %}<p><b>[{{ k.kind }}]</b> {{ k.title }} <span class="muted">(line {{ k.line }}{% if k.vm %}, {{ k.vm }}{% endif %})</span></p><pre>{{ k.text }}</pre>{% endfor %}{% endif %}
{% if t.metrics %}<h4>Metrics</h4><p>{% for k, v in t.metrics|dictsort %}{{ k }} = {{ '%g'|format(v) }}<br>{% endfor %}</p>{% endif %}
{% if t.evidence.notes %}<h4>Notes</h4><ul>{% for n in t.evidence.notes %}<li>{{ n }}</li>{% endfor %}</ul>{% endif %}
{% if f.kernel_log %}<h4>Kernel log window ({{ f.kernel_log|length }} lines)</h4><pre class="klog">{{ f.kernel_log|join('\n') }}</pre>{% endif %}
</section>
{% endfor %}
{% for d, name in missing %}
<section class="failure" id="{{ ("fail-" ~ d.name ~ "-" ~ name)|anchor }}">
<h3>{{ d.name }}.{{ name }}: <span class="NO_RESULT">NO RESULT</span></h3>
<p class="message">domain {{ d.status }}{% if d.reason %}: {{ d.reason }}{% endif %}</p>
</section>
{% endfor %}

<h2>Kernel reports</h2>
{% if not report.kernel_events %}<p class="muted">none</p>{% endif %}
{% for k in report.kernel_events %}
<section class="kernel-report">
<h4>[{{ k.report.kind }}] {{ k.report.title }} <span class="muted">{{ k.report.severity.name.lower() }}{% if k.expected %}, expected{% endif %}
 &middot; {{ [k.domain, k.test]|select|join('.') or 'no test running' }} &middot; {{ k.vm or '-' }} &middot; {{ fmt_time(k.ts) }}</span></h4>
<pre>{{ k.report.text }}</pre>
</section>
{% endfor %}

<h2>Trends</h2>
<p class="muted">From the history of env {{ run.env or '-' }}, up to this run (red).</p>
<div class="charts">{% for tr in trends %}{{ tr.svg() }}{% endfor %}</div>
{% if not trends %}<p class="muted">no metrics recorded</p>{% endif %}
</body>
</html>
"""

_ENV = Environment(autoescape=True, undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
# An id and its links: no whitespace (an HTML id may hold none), nothing a URL fragment escapes.
_ENV.filters["anchor"] = lambda text: re.sub(r"[^A-Za-z0-9_.-]+", "_", text)
_TEMPLATE = _ENV.from_string(TEMPLATE)


def html_text(report: RunReport, trends: list[Trend] | None = None) -> str:
    failures = []
    for t in report.tests():
        if not t.status.bad:
            continue
        kernel = list(t.evidence.kernel_events)
        seen = {(r.kind, r.title, r.line) for r in kernel}
        kernel += [k.report for k in report.kernel_events
                   if k.domain == t.domain and k.test == t.name and (k.report.kind, k.report.title, k.report.line) not in seen]
        failures.append({"result": t, "kernel": kernel, "kernel_log": cap_kernel_log(t.evidence.kernel_log)})
    missing = [(d, name) for d in report.domains for name in d.missing_tests()]
    return _TEMPLATE.render(
        report=report,
        run=report.run,
        started=fmt_time(report.run.started_at),
        duration=fmt_duration(report.run.duration_s),
        tally=sorted(report.tally().items()),
        missing_total=len(missing),
        crashes=report.crashes(),
        failures=failures,
        missing=missing,
        trends=trends or [],
        fmt_duration=fmt_duration,
        fmt_time=fmt_time,
    )


def write_html(report: RunReport, path: str | os.PathLike[str], trends: list[Trend] | None = None) -> Path:
    return write_atomic(path, html_text(report, trends), "HTML report")
