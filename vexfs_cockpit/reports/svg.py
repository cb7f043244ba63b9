"""A tiny inline SVG line chart (no script, no external asset) for the HTML report."""

from __future__ import annotations

from collections.abc import Sequence
from html import escape


def _fmt(v: float) -> str:
    return f"{v:.4g}"


def polyline_chart(
    points: Sequence[tuple[float, float]],
    *,
    title: str = "",
    width: int = 320,
    height: int = 90,
    highlight_last: bool = True,
) -> str:
    """``points`` are (x, y) in data units (x: a time, say), drawn in order of x.

    The y axis shows min and max; the last point (this run) is marked. One point gives
    a dot, none an empty frame saying so. Returns one ``<svg>`` element."""
    pad_l, pad_r, pad_t, pad_b = 44, 8, 16 if title else 6, 6
    pw, ph = width - pad_l - pad_r, height - pad_t - pad_b
    pts = sorted(points)
    head = (f'<svg xmlns="http://www.w3.org/2000/svg" class="chart" width="{width}" height="{height}" '
            f'viewBox="0 0 {width} {height}" role="img" aria-label="{escape(title)}">')
    parts = [head]
    if title:
        parts.append(f"<title>{escape(title)}</title>")
        parts.append(f'<text x="{pad_l}" y="11" font-size="10">{escape(title)}</text>')
    parts.append(f'<rect x="{pad_l}" y="{pad_t}" width="{pw}" height="{ph}" fill="none" stroke="#ccc"/>')
    if not pts:
        parts.append(f'<text x="{pad_l + 4}" y="{pad_t + ph / 2:.1f}" font-size="10">no data</text></svg>')
        return "".join(parts)
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    x0, x1, y0, y1 = min(xs), max(xs), min(ys), max(ys)
    if y0 == y1:
        y0, y1 = y0 - 1, y1 + 1
    sx = (lambda x: pad_l + pw / 2) if x0 == x1 else (lambda x: pad_l + (x - x0) / (x1 - x0) * pw)

    def sy(y: float) -> float:
        return pad_t + ph - (y - y0) / (y1 - y0) * ph

    coords = " ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)
    parts.append(f'<text x="{pad_l - 3}" y="{pad_t + 8}" font-size="9" text-anchor="end">{escape(_fmt(y1))}</text>')
    parts.append(f'<text x="{pad_l - 3}" y="{pad_t + ph}" font-size="9" text-anchor="end">{escape(_fmt(y0))}</text>')
    parts.append(f'<polyline fill="none" stroke="#3465a4" stroke-width="1.5" points="{coords}"/>')
    if highlight_last:
        lx, ly = pts[-1]
        parts.append(f'<circle cx="{sx(lx):.1f}" cy="{sy(ly):.1f}" r="3" fill="#cc0000">'
                     f"<title>{escape(_fmt(ly))}</title></circle>")
    parts.append("</svg>")
    return "".join(parts)
