"""Small static SVG charts for the offline HTML report: no JavaScript, no network, no extra dependency.

Plotly's static export needs kaleido (a headless browser), which an offline server may not have; these few
charts (bars, a heatmap grid, lines with a band) are drawn from the numbers as plain <svg> elements that any
browser shows and prints. Every chart scales to its container (viewBox, max-width 100 %). No xmlns
attribute: inline SVG in HTML5 needs none, and the report holds no URL at all.
"""
from __future__ import annotations

import html
import math
from typing import Sequence

#: Matplotlib's/plotly's "tab10": distinct for ten series, the colours readers know from other tools.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
           "#bcbd22", "#17becf")
FONT = "font-family:system-ui,sans-serif;font-size:12px"


def _esc(text: object) -> str:
    return html.escape(str(text), quote=True)


def _open(width: int, height: int, title: str) -> list[str]:
    return [f'<svg viewBox="0 0 {width} {height}" width="{width}" height="{height}" role="img" '
            f'style="max-width:100%;height:auto;{FONT}"><title>{_esc(title)}</title>',
            f'<text x="{width / 2:.0f}" y="16" text-anchor="middle" font-weight="bold">{_esc(title)}</text>']


def nice_ticks(low: float, high: float, most: int = 7) -> list[float]:
    """Round tick values (steps of 1, 2, 2.5 or 5 points and their tens) from low to high, at most `most`."""
    span = max(high - low, 1e-9)
    step = next((s for s in (0.001, 0.002, 0.005, 0.01, 0.02, 0.025, 0.05, 0.1, 0.2, 0.25, 0.5, 1.0)
                 if span / s <= most - 1), 1.0)
    first = round(math.ceil(low / step - 1e-9) * step, 6)  # the first multiple of step at or above low
    return [round(first + k * step, 6) for k in range(int((high - first) / step + 1e-9) + 1)]


def _percent_axis(parts: list[str], left: float, top: float, w: float, h: float, y_min: float = 0.0,
                  y_max: float = 1.0, label: str = "") -> None:
    """Horizontal grid lines at round percentages, labelled on the left, and the y-axis title."""
    for v in nice_ticks(y_min, y_max):
        y = top + h - h * (v - y_min) / ((y_max - y_min) or 1)
        digits = 0 if abs(v * 100 - round(v * 100)) < 1e-6 else 1
        parts.append(f'<line x1="{left:.1f}" y1="{y:.1f}" x2="{left + w:.1f}" y2="{y:.1f}" stroke="#ddd"/>')
        parts.append(f'<text x="{left - 6:.1f}" y="{y + 4:.1f}" text-anchor="end">{v * 100:.{digits}f} %</text>')
    if label:
        parts.append(f'<text transform="translate(12,{top + h / 2:.0f}) rotate(-90)" text-anchor="middle">'
                     f'{_esc(label)}</text>')


def _legend(parts: list[str], names: Sequence[str], x: float, y: float, colors: Sequence[str],
            dashes: Sequence[str] = ()) -> None:
    """One row of legend entries, left to right."""
    for i, name in enumerate(names):
        dash = f' stroke-dasharray="{dashes[i]}"' if i < len(dashes) and dashes[i] else ""
        parts.append(f'<line x1="{x:.0f}" y1="{y:.0f}" x2="{x + 18:.0f}" y2="{y:.0f}" stroke="{colors[i]}" '
                     f'stroke-width="4"{dash}/><text x="{x + 22:.0f}" y="{y + 4:.0f}">{_esc(name)}</text>')
        x += 30 + 7 * len(str(name))


def bar_chart(categories: Sequence[str], series: dict[str, Sequence[float | None]], title: str,
              x_label: str = "", y_label: str = "", width: int = 640, height: int = 260) -> str:
    """Grouped bars of shares in [0, 1], one group per category (every category labelled), legend on top."""
    left, right, top, bottom = 56, 10, 44 if len(series) > 1 else 28, 40
    w, h = width - left - right, height - top - bottom
    parts = _open(width, height, title)
    _percent_axis(parts, left, top, w, h, label=y_label)
    n_series = max(len(series), 1)
    group = w / max(len(categories), 1)
    bar = group * 0.8 / n_series
    colors = PALETTE if n_series > 1 else ("#4c78a8",)
    for s, (name, values) in enumerate(series.items()):
        for i, v in enumerate(values):
            if v is None:
                continue
            x = left + i * group + group * 0.1 + s * bar
            bh = h * max(0.0, min(1.0, float(v)))
            parts.append(f'<rect x="{x:.1f}" y="{top + h - bh:.1f}" width="{bar:.1f}" height="{bh:.1f}" '
                         f'fill="{colors[s % len(colors)]}"><title>{_esc(name)} {_esc(categories[i])}: '
                         f'{v * 100:.1f} %</title></rect>')
    for i, c in enumerate(categories):
        parts.append(f'<text x="{left + (i + 0.5) * group:.1f}" y="{top + h + 16:.1f}" text-anchor="middle">'
                     f'{_esc(c)}</text>')
    if x_label:
        parts.append(f'<text x="{left + w / 2:.0f}" y="{height - 6}" text-anchor="middle">{_esc(x_label)}</text>')
    if len(series) > 1:
        _legend(parts, list(series), left, 32, colors)
    parts.append("</svg>")
    return "".join(parts)


def heatmap(counts: Sequence[Sequence[int]], title: str, row_totals: Sequence[int] | None = None,
            x_label: str = "predicted digit", y_label: str = "true digit", cell: int = 40) -> str:
    """A confusion matrix: counts written in each cell, shaded by the share of their row.

    Right answers (the diagonal) in blue, mistakes in red at three times their share, so a 5 % confusion
    still shows (the same colours as the report's tables).
    """
    n = len(counts)
    left, top = 64, 40
    width, height = left + n * cell + 10, top + n * cell + 40
    totals = list(row_totals) if row_totals is not None else [sum(r) for r in counts]
    parts = _open(width, height, title)
    for t in range(n):
        for p in range(n):
            v = int(counts[t][p])
            share = v / totals[t] if totals[t] else 0.0
            alpha = share if t == p else min(1.0, 3 * share)
            rgb = "31,119,180" if t == p else "214,39,40"
            x, y = left + p * cell, top + t * cell
            ink = "#fff" if alpha > 0.6 else "#222"
            parts.append(f'<rect x="{x}" y="{y}" width="{cell}" height="{cell}" fill="rgba({rgb},{alpha:.2f})" '
                         f'stroke="#ccc"><title>true {t}, predicted {p}: {v}</title></rect>')
            if v:
                parts.append(f'<text x="{x + cell / 2:.0f}" y="{y + cell / 2 + 4:.0f}" text-anchor="middle" '
                             f'fill="{ink}">{v}</text>')
    for d in range(n):
        parts.append(f'<text x="{left + (d + 0.5) * cell:.0f}" y="{top - 6}" text-anchor="middle">{d}</text>')
        parts.append(f'<text x="{left - 8}" y="{top + (d + 0.5) * cell + 4:.0f}" text-anchor="end">{d}</text>')
    parts.append(f'<text x="{left + n * cell / 2:.0f}" y="{top + n * cell + 24}" text-anchor="middle">'
                 f'{_esc(x_label)} (columns)</text>')
    parts.append(f'<text transform="translate(14,{top + n * cell / 2:.0f}) rotate(-90)" text-anchor="middle">'
                 f'{_esc(y_label)} (rows)</text>')
    parts.append("</svg>")
    return "".join(parts)


def line_chart(lines: Sequence[dict], title: str, x_label: str = "", y_label: str = "",
               x_range: tuple[float, float] = (0.0, 1.0), y_range: tuple[float, float] = (0.0, 1.0),
               x_ticks: Sequence[tuple[float, str]] | None = None, hlines: Sequence[tuple[float, str]] = (),
               points: Sequence[tuple[float, float, str]] = (), width: int = 640, height: int = 300) -> str:
    """Lines of (x, y) points; each line may carry a band (`low`, `high`) and a dash. Percent y axis.

    `lines`: dicts with `name`, `x`, `y` and optionally `low`, `high` (a shaded band), `dash`, `color`.
    `hlines`: horizontal reference lines (a target, zero-shot accuracy); `points`: labelled markers.
    """
    left, right, top, bottom = 56, 24, 44, 42
    w, h = width - left - right, height - top - bottom
    (x0, x1), (y0, y1) = x_range, y_range
    sx = lambda v: left + (float(v) - x0) / ((x1 - x0) or 1) * w  # noqa: E731
    sy = lambda v: top + h - (max(y0, min(y1, float(v))) - y0) / ((y1 - y0) or 1) * h  # noqa: E731
    parts = _open(width, height, title)
    _percent_axis(parts, left, top, w, h, y0, y1, label=y_label)
    ticks = x_ticks if x_ticks is not None else [(x0 + (x1 - x0) * i / 5, f"{(x0 + (x1 - x0) * i / 5) * 100:.0f} %")
                                                 for i in range(6)]
    for v, label in ticks:
        parts.append(f'<line x1="{sx(v):.1f}" y1="{top + h:.1f}" x2="{sx(v):.1f}" y2="{top + h + 4:.1f}" '
                     f'stroke="#888"/><text x="{sx(v):.1f}" y="{top + h + 16:.1f}" text-anchor="middle">'
                     f'{_esc(label)}</text>')
    parts.append(f'<line x1="{left}" y1="{top + h}" x2="{left + w}" y2="{top + h}" stroke="#888"/>')
    if x_label:
        parts.append(f'<text x="{left + w / 2:.0f}" y="{height - 6}" text-anchor="middle">{_esc(x_label)}</text>')
    colors = []
    for i, line in enumerate(lines):
        color = line.get("color") or PALETTE[i % len(PALETTE)]
        colors.append(color)
        pts = [(x, y) for x, y in zip(line["x"], line["y"]) if y is not None]
        if line.get("low") is not None and line.get("high") is not None:
            band = [(x, lo, hi) for x, lo, hi in zip(line["x"], line["low"], line["high"])
                    if lo is not None and hi is not None]
            if band:
                outline = [f"{sx(x):.1f},{sy(hi):.1f}" for x, _, hi in band]
                outline += [f"{sx(x):.1f},{sy(lo):.1f}" for x, lo, _ in reversed(band)]
                parts.append(f'<polygon points="{" ".join(outline)}" fill="{color}" fill-opacity="0.18" '
                             f'stroke="none"/>')
        if pts:
            dash = f' stroke-dasharray="{line["dash"]}"' if line.get("dash") else ""
            parts.append(f'<polyline points="{" ".join(f"{sx(x):.1f},{sy(y):.1f}" for x, y in pts)}" '
                         f'fill="none" stroke="{color}" stroke-width="2"{dash}/>')
            if line.get("markers"):
                parts += [f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="3" fill="{color}"/>' for x, y in pts]
            if line.get("errors"):
                for x, y, e in zip(line["x"], line["y"], line["errors"]):
                    if y is not None and e:
                        parts.append(f'<line x1="{sx(x):.1f}" y1="{sy(y - e):.1f}" x2="{sx(x):.1f}" '
                                     f'y2="{sy(y + e):.1f}" stroke="{color}"/>')
    for y, label in hlines:
        parts.append(f'<line x1="{left}" y1="{sy(y):.1f}" x2="{left + w}" y2="{sy(y):.1f}" stroke="#555" '
                     f'stroke-dasharray="5,4"/><text x="{left + w - 4}" y="{sy(y) - 4:.1f}" text-anchor="end" '
                     f'fill="#555">{_esc(label)}</text>')
    for x, y, label in points:
        anchor = "end" if sx(x) > left + w * 0.6 else "start"
        dx = -8 if anchor == "end" else 8
        parts.append(f'<circle cx="{sx(x):.1f}" cy="{sy(y):.1f}" r="5" fill="#d62728"/><text x="{sx(x) + dx:.1f}" '
                     f'y="{sy(y) + 16:.1f}" text-anchor="{anchor}">{_esc(label)}</text>')
    if len(lines) > 1:
        _legend(parts, [ln["name"] for ln in lines], left, 32, colors, [ln.get("dash", "") for ln in lines])
    parts.append("</svg>")
    return "".join(parts)
