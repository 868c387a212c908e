"""`bench history plot`: throughput per case over the stored runs (request/response cases: their
p50 round trip), one plot per case, in one self-contained HTML page (plots embedded as PNG)."""

from __future__ import annotations

import base64
from html import escape


def trend_figure(case_id: str, points: list[tuple[str, float]], ylabel: str = "Gbit/s (median)"):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7, 2.8), dpi=96, layout="constrained")
    ax = fig.add_subplot()
    xs = list(range(len(points)))
    ax.plot(xs, [p[1] for p in points], marker="o")
    ax.set_xticks(xs, [p[0][:16].replace("T", "\n") for p in points], fontsize=7)
    ax.set_ylabel(ylabel)
    ax.set_title(case_id)
    ax.grid(True, alpha=0.3)
    return fig


def page(trend: dict[str, list[tuple[str, float]]], title: str,
         latency: dict[str, list[tuple[str, float]]] | None = None) -> str:
    """`trend`: Gbit/s per case; `latency`: p50 round trips (ns) per request/response case."""
    from reports.html import CSS
    from reports.plots import png
    parts = [f"<h1>{escape(title)}</h1>"]
    latency = latency or {}
    if not trend and not latency:
        parts.append('<p class="nm">no stored runs with measured cases</p>')
    figures = [(c, p, "Gbit/s (median)") for c, p in trend.items()] + [
        (c, [(t, v / 1000) for t, v in p], "p50 round trip µs (median)")
        for c, p in latency.items()]
    for case_id, points, ylabel in sorted(figures):
        data = base64.b64encode(png(trend_figure(case_id, points, ylabel))).decode()
        parts.append(f'<figure><img alt="{escape(case_id)}" src="data:image/png;base64,{data}">'
                     f"<figcaption>{escape(case_id)}: {len(points)} run(s)</figcaption></figure>")
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>{escape(title)}'
            f"</title><style>{CSS}</style></head><body>{''.join(parts)}</body></html>\n")
