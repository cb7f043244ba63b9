"""The HTML report, parsed by html5lib: self-contained, every test and failure named with
its evidence, kernel reports with their text, trend charts from the history as SVG."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from xml.etree.ElementTree import Element

import html5lib
import pytest

from tests.support.report import SPEC, history
from tests.support.store import BACKENDS, FS, KM, new_history
from vexfs_cockpit.reports.html import collect_trends, html_text, write_html
from vexfs_cockpit.reports.svg import polyline_chart
from vexfs_cockpit.store.history import History

NS = "{http://www.w3.org/1999/xhtml}"
SVG = "{http://www.w3.org/2000/svg}"


def parse(text: str) -> Element:
    # strict: a parse error (unclosed tag, stray markup) fails the test
    return html5lib.HTMLParser(strict=True, namespaceHTMLElements=True).parse(text)


def text_of(el: Element) -> str:
    return "".join(el.itertext())


def by_id(doc: Element, ident: str) -> Element:
    found = [e for e in doc.iter() if e.get("id") == ident]
    assert len(found) == 1, ident
    return found[0]


@pytest.fixture(params=BACKENDS)
def stored(request: pytest.FixtureRequest, tmp_path: Path) -> History:
    return History(history(new_history(request, tmp_path, "h.db")))


def test_names_each_test_and_failure_with_its_evidence(stored: History, tmp_path: Path) -> None:
    rep = stored.run_detail(SPEC.run_id)
    assert rep is not None
    out = write_html(rep, tmp_path / "out" / "run.html", collect_trends(stored, rep))
    doc = parse(out.read_text())
    assert text_of(doc.find(f".//{NS}title")) == "vexfs-cockpit run run-1: failed"
    # the domains table and one row per test, with its status
    domains = by_id(doc, "domains")
    assert {text_of(tr.findall(f"{NS}td")[0]) for tr in domains.iter(f"{NS}tr") if tr.findall(f"{NS}td")} == {KM, FS}
    rows = {text_of(tds[0]): text_of(tds[1]) for table in doc.iter(f"{NS}table") if table.get("class") == "tests"
            for tr in table.iter(f"{NS}tr") if (tds := tr.findall(f"{NS}td"))}
    assert rows == {
        "module_build": "PASSED", "load": "FAILED", "unload": "TIMEOUT", "leak": "SKIPPED",
        "mount": "ERROR", "rw": "PASSED"}
    # one failure section per bad test, with commands, exit code, kernel report and log window
    fails = {s.get("id"): s for s in doc.iter(f"{NS}section") if s.get("class") == "failure"}
    assert set(fails) == {f"fail-{KM}-load", f"fail-{KM}-unload", f"fail-{FS}-mount"}
    load = fails[f"fail-{KM}-load"]
    load_text = text_of(load)
    assert "kernel_module.load: FAILED" in load_text and "load failed" in load_text
    cmd_cells = [text_of(td) for td in load.iter(f"{NS}td")]
    assert "run-load" in cmd_cells and "1" in cmd_cells and "vm-a" in cmd_cells
    assert "output of load" in load_text and "last line" in load_text
    assert "BUG: unable to handle page fault in vexfs_read" in load_text and "Call Trace:" in load_text
    klog = [p for p in load.iter(f"{NS}pre") if p.get("class") == "klog"]
    assert len(klog) == 1 and "line for load" in text_of(klog[0])
    assert "INFO: task mount blocked" in text_of(fails[f"fail-{FS}-mount"])
    # the run's kernel reports, each with its text
    kreports = [s for s in doc.iter(f"{NS}section") if s.get("class") == "kernel-report"]
    assert len(kreports) == 2 and all("Call Trace:" in text_of(s) for s in kreports)


def test_trends_are_inline_svg_from_the_history(stored: History) -> None:
    rep = stored.run_detail(SPEC.run_id)
    assert rep is not None
    trends = {t.title: t for t in collect_trends(stored, rep)}
    # load_time_ms from the four earlier ci runs and this one (not the dev runs, nor later ones)
    assert [v for _, v in trends[f"{KM}.load load_time_ms"].points] == [8.0, 9.0, 10.0, 11.0, 12.0]
    assert [v for _, v in trends[f"{KM} pass rate %"].points][-1] == pytest.approx(100 / 3)
    doc = parse(html_text(rep, list(trends.values())))
    charts = list(doc.iter(f"{SVG}svg"))
    assert len(charts) == len(trends)
    load_chart = next(c for c in charts if c.get("aria-label") == f"{KM}.load load_time_ms")
    (line,) = load_chart.iter(f"{SVG}polyline")
    ys = [float(p.split(",")[1]) for p in line.get("points").split()]
    assert len(ys) == 5 and ys == sorted(ys, reverse=True)  # rising values: the line climbs (SVG y grows down)


def test_self_contained_and_escaped(stored: History) -> None:
    rep = stored.run_detail(SPEC.run_id)
    assert rep is not None
    evil = '<script>alert(1)</script><img src="http://x/y.png">'
    rep.domains[0].tests[1] = dataclasses.replace(rep.domains[0].tests[1], message=evil, name="load twice #2")
    text = html_text(rep, collect_trends(stored, rep))
    doc = parse(text)
    assert not list(doc.iter(f"{NS}script")) and not list(doc.iter(f"{NS}img")) and not list(doc.iter(f"{NS}link"))
    assert not [e for e in doc.iter() if e.get("src") or (e.get("href") or "#").split("#")[0]]
    assert evil in text_of(doc)  # shown as text
    assert doc.find(f".//{NS}style") is not None
    # every in-page link lands on an id, and no id holds whitespace (a test named 'load twice #2')
    ids = [e.get("id") for e in doc.iter() if e.get("id")]
    assert not [i for i in ids if any(c.isspace() for c in i)] and len(ids) == len(set(ids))
    links = [e.get("href") for e in doc.iter(f"{NS}a")]
    assert "#fail-kernel_module-load_twice_2" in links
    assert links and all(h[1:] in ids for h in links)


def test_a_chart_with_no_or_one_point() -> None:
    for pts in ([], [(1.0, 5.0)]):
        svg = html5lib.parseFragment(polyline_chart(pts, title="t"), namespaceHTMLElements=False)
        assert svg is not None
    assert "no data" in polyline_chart([], title="t")
    assert "<circle" in polyline_chart([(1.0, 5.0)])
