"""Turn ReportData into one self-contained HTML page (inline CSS and SVG, no script)."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import jinja2

from signalmail.report import charts
from signalmail.report.data import ReportData, campaign_rows
from signalmail.watch.latency import Summary

#: latency buckets of the histogram, in seconds (the last is open-ended)
LATENCY_EDGES = (0, 2, 4, 6, 8, 10, 15, 20, 30, 60, 300)
#: outcome -> colour; the order is the order of the segments in each bar
OUTCOME_COLORS = {
    "sent": charts.GREEN,
    "held_out": charts.GREY,
    "scheduled": charts.BLUE,
    "due, not sent yet": "#74c0fc",
    "in_ledger": charts.GREY,
}


def _outcome_colors(names: list[str]) -> dict[str, str]:
    colors = dict(OUTCOME_COLORS)
    warm = iter(charts.WARM * 3)
    for name in names:
        colors.setdefault(name, next(warm))
    return colors


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def render(data: ReportData) -> str:
    """Render the report page."""
    names: list[str] = sorted(
        {name for counts in data.outcomes.values() for name in counts},
        key=lambda n: (list(OUTCOME_COLORS).index(n) if n in OUTCOME_COLORS else 99, n),
    )
    colors = _outcome_colors(names)
    bars = [
        (campaign.replace("_", " "), [(name, counts[name]) for name in names])
        for campaign, counts in data.outcomes.items()
    ]
    rows = campaign_rows(data)
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(Path(__file__).parent),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    template = environment.get_template("report.html.j2")
    return template.render(
        generated_at=data.generated_at.strftime("%Y-%m-%d %H:%M"),
        engine=data.engine,
        # events, shoppers and triggers count different things; from triggers on, emails
        funnel_svg=charts.funnel(data.funnel, "Funnel from events to orders", same_unit_from=2),
        outcomes_svg=charts.stacked_bars(bars, colors, "Triggers by campaign and outcome")
        if bars
        else "",
        outcomes_table=[(c, Counter(v)) for c, v in data.outcomes.items()],
        outcome_names=names,
        latency=Summary.of(data.latencies),
        latency_svg=charts.histogram(data.latencies, LATENCY_EDGES, "Send latency histogram"),
        campaigns=rows,
        uplift_svg=charts.uplift(
            [(r["result"].campaign.replace("_", " "), *r["uplift"]) for r in rows],
            "Hold-out uplift by campaign",
        ),
        deferred=data.deferred,
        emails=data.emails,
        gallery_note=data.gallery_note,
        percent=_percent,
    )


def write(data: ReportData, folder: Path) -> Path:
    """Write `index.html` into `folder`; returns its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "index.html"
    path.write_text(render(data), encoding="utf-8")
    return path
