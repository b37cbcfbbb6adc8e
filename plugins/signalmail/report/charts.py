"""Small inline SVG charts for the report: no JavaScript, no downloads, crisp at any size.

Each function returns an `<svg>` element as a string; every label is escaped. Colours are few
and meaningful: green for what reached an inbox, grey for held out, blue for waiting, warm
colours for the reasons an email was not sent.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from html import escape

GREEN = "#2f9e44"
GREY = "#adb5bd"
BLUE = "#4c6ef5"
WARM = ("#f08c00", "#e8590c", "#d6336c", "#ae3ec9", "#c92a2a", "#a61e4d", "#862e9c", "#5f3dc4")
INK = "#212529"
MUTED = "#868e96"


def _text(x: float, y: float, text: str, anchor: str = "start", size: int = 12, **kw: str) -> str:
    extra = "".join(f' {k.replace("_", "-")}="{escape(v)}"' for k, v in kw.items())
    return (
        f'<text x="{x:.1f}" y="{y:.1f}" font-size="{size}" text-anchor="{anchor}" '
        f'fill="{INK}"{extra}>{escape(text)}</text>'
    )


def _svg(width: int, height: int, body: list[str], title: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="100%" role="img" aria-label="{escape(title)}" '
        f'font-family="system-ui, -apple-system, Segoe UI, sans-serif">'
        f"<title>{escape(title)}</title>{''.join(body)}</svg>"
    )


def funnel(steps: Sequence[tuple[str, int]], title: str = "Funnel", same_unit_from: int = 0) -> str:
    """Draw one horizontal bar per step with its count.

    From `same_unit_from` on, where the steps count the same thing, each bar also shows its
    share of the step before.
    """
    width, label_w, bar_h, gap = 720, 150, 28, 10
    height = len(steps) * (bar_h + gap) + 10
    top = max((count for _, count in steps), default=0) or 1
    body = []
    previous: int | None = None
    for i, (label, count) in enumerate(steps):
        y = 5 + i * (bar_h + gap)
        # a log scale: events outnumber orders by orders of magnitude, and each bar must show
        scale = math.log10(count + 1) / math.log10(top + 1) if count else 0
        bar_w = max(2.0, scale * (width - label_w - 170))
        body.append(_text(label_w - 8, y + bar_h * 0.68, label, "end", 13))
        body.append(
            f'<rect x="{label_w}" y="{y}" width="{bar_w:.1f}" height="{bar_h}" rx="3" '
            f'fill="{GREEN if i >= 3 else BLUE}"/>'
        )
        share = ""
        if previous and i > same_unit_from:
            share = f"  ({count / previous:.1%} of {steps[i - 1][0]})"
        body.append(_text(label_w + bar_w + 8, y + bar_h * 0.68, f"{count:,}{share}", size=12))
        previous = count
    return _svg(width, height, body, title)


def stacked_bars(
    rows: Sequence[tuple[str, Sequence[tuple[str, int]]]],
    colors: dict[str, str],
    title: str,
) -> str:
    """One horizontal bar per row, split into labelled segments; a legend below."""
    width, label_w, bar_h, gap = 720, 170, 24, 12
    legend = sorted({name for _, segments in rows for name, n in segments if n})
    legend_rows = math.ceil(len(legend) / 4)
    height = len(rows) * (bar_h + gap) + 20 + legend_rows * 20
    biggest = max((sum(n for _, n in segments) for _, segments in rows), default=0) or 1
    body = []
    for i, (label, segments) in enumerate(rows):
        y = 5 + i * (bar_h + gap)
        body.append(_text(label_w - 8, y + bar_h * 0.7, label, "end", 13))
        x = float(label_w)
        total = sum(n for _, n in segments)
        for name, n in segments:
            if not n:
                continue
            w = n / biggest * (width - label_w - 70)
            body.append(
                f'<rect x="{x:.1f}" y="{y}" width="{max(w, 1):.1f}" height="{bar_h}" '
                f'fill="{colors.get(name, GREY)}"><title>{escape(name)}: {n:,}</title></rect>'
            )
            x += w
        body.append(_text(x + 6, y + bar_h * 0.7, f"{total:,}", size=12))
    y0 = len(rows) * (bar_h + gap) + 12
    for j, name in enumerate(legend):
        lx, ly = 10 + (j % 4) * 178, y0 + (j // 4) * 20
        body.append(
            f'<rect x="{lx}" y="{ly}" width="12" height="12" fill="{colors.get(name, GREY)}"/>'
        )
        body.append(_text(lx + 17, ly + 10, name.replace("_", " "), size=11))
    return _svg(width, height, body, title)


def histogram(values: Sequence[float], edges: Sequence[float], title: str, unit: str = "s") -> str:
    """Draw counts of `values` per bucket [edges[i], edges[i+1]) (the last open), p50/p95 lines."""
    width, height, left, bottom = 720, 240, 50, 40
    counts = [0] * len(edges)
    for v in values:
        i = max(j for j, edge in enumerate(edges) if v >= edge) if v >= edges[0] else 0
        counts[i] += 1
    top = max(counts) or 1
    plot_w, plot_h = width - left - 20, height - bottom - 20
    bar_w = plot_w / len(edges)
    body = [
        f'<line x1="{left}" y1="{20 + plot_h}" x2="{width - 20}" y2="{20 + plot_h}" '
        f'stroke="{MUTED}"/>'
    ]
    for i, n in enumerate(counts):
        h = n / top * plot_h
        x = left + i * bar_w
        body.append(
            f'<rect x="{x + 2:.1f}" y="{20 + plot_h - h:.1f}" width="{bar_w - 4:.1f}" '
            f'height="{h:.1f}" fill="{BLUE}"><title>{n}</title></rect>'
        )
        label = f"{edges[i]:g}+" if i == len(edges) - 1 else f"{edges[i]:g}"
        body.append(_text(x + bar_w / 2, height - bottom + 16, label, "middle", 11))
        if n:
            body.append(_text(x + bar_w / 2, 20 + plot_h - h - 4, str(n), "middle", 10))
    body.append(
        _text(left + plot_w / 2, height - 6, f"seconds from due to accepted ({unit})", "middle", 11)
    )
    if values:
        ordered = sorted(values)
        for share, color in ((0.5, GREEN), (0.95, WARM[1])):
            v = ordered[max(0, math.ceil(share * len(ordered)) - 1)]
            i = max(j for j, edge in enumerate(edges) if v >= edge) if v >= edges[0] else 0
            span = (edges[i + 1] - edges[i]) if i + 1 < len(edges) else (edges[i] or 1)
            x = left + (i + min(1.0, (v - edges[i]) / span)) * bar_w
            body.append(
                f'<line x1="{x:.1f}" y1="18" x2="{x:.1f}" y2="{20 + plot_h}" stroke="{color}" '
                f'stroke-dasharray="4 3" stroke-width="2"/>'
            )
            # the label stays inside the chart: left of its line in the right half
            right_half = x > left + plot_w / 2
            body.append(
                _text(
                    x - 4 if right_half else x + 4,
                    30 if share == 0.5 else 46,
                    f"p{int(share * 100)} {v:,.1f}{unit}",
                    "end" if right_half else "start",
                    11,
                    fill=color,
                )
            )
    return _svg(width, height, body, title)


def uplift(rows: Sequence[tuple[str, float | None, float | None, float | None]], title: str) -> str:
    """Per campaign: the uplift (treated minus held-out conversion) and its 95% interval."""
    width, label_w, row_h = 720, 170, 30
    height = len(rows) * row_h + 40
    known = [v for _, u, lo, hi in rows for v in (u, lo, hi) if v is not None]
    span = max((abs(v) for v in known), default=0.05) or 0.05
    plot_w = width - label_w - 90

    def x_of(v: float) -> float:
        return label_w + (v + span) / (2 * span) * plot_w

    zero = x_of(0)
    body = [
        f'<line x1="{zero:.1f}" y1="5" x2="{zero:.1f}" y2="{height - 25}" stroke="{MUTED}" '
        f'stroke-dasharray="3 3"/>',
        _text(zero, height - 8, "no difference", "middle", 11, fill=MUTED),
        _text(label_w, height - 8, f"{-span:+.1%}", "start", 11, fill=MUTED),
        _text(label_w + plot_w, height - 8, f"{span:+.1%}", "end", 11, fill=MUTED),
    ]
    for i, (campaign, value, low, high) in enumerate(rows):
        y = 18 + i * row_h
        body.append(_text(label_w - 8, y + 4, campaign, "end", 13))
        if value is None:
            body.append(_text(label_w, y + 4, "no hold-out group yet", size=11, fill=MUTED))
            continue
        if low is not None and high is not None:
            body.append(
                f'<line x1="{x_of(low):.1f}" y1="{y}" x2="{x_of(high):.1f}" y2="{y}" '
                f'stroke="{INK}" stroke-width="2"/>'
            )
        color = GREEN if (low is not None and low > 0) else BLUE
        body.append(f'<circle cx="{x_of(value):.1f}" cy="{y}" r="5" fill="{color}"/>')
        interval = f" [{low:+.1%}, {high:+.1%}]" if low is not None and high is not None else ""
        body.append(_text(width - 8, y + 4, f"{value:+.1%}{interval}", "end", 11))
    return _svg(width, height, body, title)
