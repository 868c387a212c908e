"""The report's plots, drawn with matplotlib's Agg canvas (no display, no pyplot state).

Each plot has a pure `*_data` function (what will be drawn, from the results; tested on its
own) and a drawing function returning a Figure, or None when the results hold nothing for it:
a plot is never drawn from invented numbers. `png(fig)` gives the bytes the HTML embeds."""

from __future__ import annotations

import io
from collections import defaultdict

from bench.results import RunResult
from reports.figures import case_figures, protocol

# What each plot shows, in report order: (key, title).
PLOTS = (
    ("throughput", "Throughput vs message size"),
    ("cpu", "CPU per GB vs message size"),
    ("copies", "Bytes copied per payload byte, per path"),
    ("zerocopy", "Zerocopy vs copied-anyway bytes"),
    ("breakeven", "Zerocopy break-even: each path against its copying twin"),
)


def path_label(workload: str, params: dict | None) -> str:
    batch = (params or {}).get("batch")
    return f"{workload} ×{batch}" if protocol(workload) == "udp" and batch and batch > 1 else workload


def _label(result: RunResult, many: bool) -> str:
    return f" [{result.suite} {result.started[:16]}]" if many else ""


def _median(cr, key):
    st = cr.stat(key)
    return st["median"] if st else None


def size_series(results: list[RunResult], key: str) -> dict[str, list[tuple[int, float]]]:
    """path -> [(message size, median of `key`)] over the ok cases, sorted by size."""
    many = len(results) > 1
    out: dict[str, list[tuple[int, float]]] = defaultdict(list)
    for r in results:
        for cr in r.cases:
            if cr.status != "ok" or cr.is_latency:     # round trips: the latency plots
                continue
            if (cr.params or {}).get("flows", 1) > 1:   # several flows: the scaling plots
                continue
            v = _median(cr, key)
            if v is not None:
                label = path_label(cr.workload, cr.params) + (f" {cr.topology}" if key else "")
                out[label + _label(r, many)].append((cr.size, v))
    return {k: sorted(v) for k, v in out.items()}


def copies_data(results: list[RunResult]) -> list[tuple[str, dict[str, float]]]:
    """Per counted case: bytes copied per payload byte, split into COPY#1 (the sender's
    copies), COPY#4 (the receiver's), deferred/fallback copies (either side) and soft-RoCE's
    kernel copies. Cases whose copies were not counted are left out (the table says why)."""
    many = len(results) > 1
    out = []
    for r in results:
        for cr in r.cases:
            f = case_figures(cr)
            if not f.counted or cr.is_latency:   # per transaction: the latency table's copies
                continue
            parts = {
                "COPY#1 (send)": f.sender.per_payload_byte if f.sender else None,
                "COPY#4 (receive)": f.receiver.per_payload_byte if f.receiver else None,
                "deferred / fallback": sum(s.deferred_per_payload_byte or 0
                                           for s in (f.sender, f.receiver) if s) or None,
                "soft-RoCE (rxe)": f.soft_roce.per_payload_byte if f.soft_roce else None,
            }
            if any(v is not None for v in parts.values()):
                out.append((cr.id + _label(r, many), {k: v or 0.0 for k, v in parts.items()}))
    return out


def zerocopy_data(results: list[RunResult]) -> list[tuple[str, float, float]]:
    """(case, bytes that went zerocopy, bytes copied anyway) in GB, from the kernel's own
    reports: MSG_ZEROCOPY/send_zc completions (copied bytes as reported) and
    TCP_ZEROCOPY_RECEIVE (mapped vs copied)."""
    many = len(results) > 1
    out = []
    for r in results:
        for cr in r.cases:
            f = case_figures(cr)
            if f.zerocopy and f.zerocopy["copied_bytes"] is not None and f.zerocopy["payload_bytes"]:
                copied = f.zerocopy["copied_bytes"]
                out.append((cr.id + " send" + _label(r, many),
                            max(f.zerocopy["payload_bytes"] - copied, 0) / 1e9, copied / 1e9))
            if f.zerocopy_receive:
                z = f.zerocopy_receive
                out.append((cr.id + " receive" + _label(r, many), z["mapped_bytes"] / 1e9,
                            z["copied_bytes"] / 1e9))
    return out


def breakeven_data(results: list[RunResult]) -> dict[str, list[tuple[int, float]]]:
    """The break-even curves as bench/crossover.py computed them (never recomputed here):
    per entry, the sender's CPU per GB of the path over its copying twin at each size (below
    1: the path is cheaper). Empty unless some entry has two sizes or more (a curve)."""
    from bench.crossover import entries
    many = len(results) > 1
    out: dict[str, list[tuple[int, float]]] = {}
    for r in results:
        for e in entries(r):
            pts = [(p["size"], p["ratio"]) for p in e["points"]]
            if len(pts) >= 2:
                kind = (" (fixed buffers)" if e.get("kind") == "fixed buffers" else
                        " (no zerocopy happened)" if e["verdict"].startswith("no zerocopy")
                        else "")
                out[f"{e['path']} / {e['baseline']}{kind} {e['topology']}{_label(r, many)}"] = pts
    return out


# -- drawing --------------------------------------------------------------------------------------

def _figure(width: float = 7.5, height: float = 4.0):
    from matplotlib.figure import Figure
    fig = Figure(figsize=(width, height), dpi=96, layout="constrained")
    return fig, fig.add_subplot()


def _size_axis(ax) -> None:
    ax.set_xscale("log", base=2)
    ax.set_xlabel("message size (bytes)")
    ax.grid(True, alpha=0.3)


LEGEND_COLUMNS = 2


def _lines(series: dict[str, list[tuple[int, float]]], ylabel: str, title: str,
           dashed: set[str] = frozenset()):
    if not series:
        return None
    # The legend goes below the axes, never over them: the CPU plot has one entry per path,
    # topology and side (20 in socket-vs-rdma); the figure grows a row per two entries.
    rows = -(-len(series) // LEGEND_COLUMNS)
    fig, ax = _figure(height=4.0 + 0.2 * rows)
    for label, pts in series.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label,
                linestyle="--" if label in dashed else "-")
    _size_axis(ax)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    fig.legend(loc="outside lower center", ncols=LEGEND_COLUMNS, fontsize="small")
    return fig


def throughput(results: list[RunResult]):
    return _lines(size_series(results, "gbps"), "Gbit/s (median, verified payload)",
                  "Throughput vs message size")


def cpu(results: list[RunResult]):
    series = {}
    for side in ("sender", "receiver"):
        for label, pts in size_series(results, f"cpu_s_per_gb.{side}").items():
            series[f"{label} {side}"] = pts
    # receivers dashed: past ten paths the colour cycle repeats, the side must still read
    return _lines(series, "CPU-seconds per GB (median)", "CPU per GB vs message size",
                  dashed={k for k in series if k.endswith(" receiver")})


def copies(results: list[RunResult]):
    data = copies_data(results)
    if not data:
        return None
    fig, ax = _figure(7.5, max(2.5, 0.45 * len(data) + 1.5))
    names = [d[0] for d in data]
    left = [0.0] * len(data)
    for part in data[0][1]:
        vals = [d[1][part] for d in data]
        if any(vals):
            ax.barh(names, vals, left=left, label=part)
            left = [a + b for a, b in zip(left, vals, strict=True)]
    ax.invert_yaxis()
    ax.set_xlabel("bytes copied per payload byte (traced sample)")
    ax.set_title("Copies per path")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize="small")
    return fig


def zerocopy(results: list[RunResult]):
    data = zerocopy_data(results)
    if not data:
        return None
    fig, ax = _figure(7.5, max(2.5, 0.45 * len(data) + 1.5))
    names = [d[0] for d in data]
    zc = [d[1] for d in data]
    ax.barh(names, zc, label="zerocopy (mapped / not copied)")
    ax.barh(names, [d[2] for d in data], left=zc, label="copied anyway")
    ax.invert_yaxis()
    ax.set_xlabel("GB over the measured samples (kernel's own reports)")
    ax.set_title("Zerocopy vs copied-anyway bytes")
    ax.legend(fontsize="small")
    return fig


def breakeven(results: list[RunResult]):
    data = breakeven_data(results)
    if not data:
        return None
    fig, ax = _figure()
    for label, pts in data.items():
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=label)
    ax.axhline(1.0, color="grey", linestyle="--", linewidth=1)
    _size_axis(ax)
    ax.set_ylabel("sender CPU/GB, path / copying twin")
    ax.set_title("Zerocopy break-even (below 1: the path is cheaper)")
    ax.legend(fontsize="small")
    return fig


DRAW = {"throughput": throughput, "cpu": cpu, "copies": copies, "zerocopy": zerocopy,
        "breakeven": breakeven}


def draw_all(results: list[RunResult]) -> list[tuple[str, str, object]]:
    """(key, title, Figure) for every plot the results hold data for."""
    out = []
    for key, title in PLOTS:
        fig = DRAW[key](results)
        if fig is not None:
            out.append((key, title, fig))
    from reports import flows, latency
    for r in results:          # a percentile plot per request/response path
        out += latency.plots(r.to_json())
    out += flows.plots(results)    # throughput and CPU per GB against flows
    return out


def png(fig) -> bytes:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return buf.getvalue()
