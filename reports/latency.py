"""The latency report: per request/response case, ours against its peer, and a percentile
plot per path, from result-shaped dicts (a run document's `cases`, as JSON).

A case's samples carry the requester's `latency` block (workloads/rr_stats.py: the encoded
histogram, exact min/max, transactions/s); warm-up samples are left out, the others merged
into one histogram (bench/latency.py). A reference row is sockperf's (percentiles) or qperf's
(a mean round trip: `round_trip_ns`); its figures are the median over the repeats. Ratios are
ours / peer: above 1, ours is slower (latency) or faster (transactions/s). A figure the
results do not hold is shown as "—", never filled in."""

from __future__ import annotations

import math
import statistics

from bench import latency

PEER_KEYS = ("p50_ns", "p99_ns", "p99_9_ns", "mean_ns", "transactions_per_s")


def _cases(result) -> list[dict]:
    return list(result.get("cases", [])) if isinstance(result, dict) else list(result)


def _blocks(case: dict) -> list[dict]:
    return [s["latency"] for s in case.get("samples") or []
            if not s.get("warmup") and isinstance(s.get("latency"), dict)]


def peer(case: dict) -> dict | None:
    """The reference rows' medians (errors left out), or None without a usable row."""
    rows = [r for r in case.get("reference") or [] if not r.get("error") and not r.get("warmup")]
    if not rows:
        return None
    out: dict = {"tool": rows[0].get("tool"), "repeats": len(rows)}
    for key in PEER_KEYS:
        vals = [r.get(key) if key != "mean_ns" else r.get("mean_ns", r.get("round_trip_ns"))
                for r in rows]
        vals = [v for v in vals if v is not None]
        out[key] = statistics.median(vals) if vals else None
    return out


def _ratio(a, b) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _share(case: dict, p50: float | None) -> dict | None:
    copies = case.get("copies") or {}
    traced = copies.get("traced_sample") or {}
    n = (traced.get("latency") or {}).get("transactions") or traced.get("messages")
    if copies.get("status") != "ok" or not copies.get("points") or not n:
        return None
    return latency.copy_share(p50, latency.copy_parts(copies["points"], n))


def rows(result) -> list[dict]:
    """One row per case that has latency samples: ours merged, the peer, ratios, copies."""
    out = []
    for case in _cases(result):
        blocks = _blocks(case)
        if case.get("status") != "ok" or not blocks:
            continue
        ours = latency.merged(blocks)
        ref = peer(case)
        row = {"id": case.get("id"), "path": case.get("workload"), "size": case.get("size"),
               "topology": case.get("topology"), "ours": ours, "peer": ref}
        if ref:
            if ref.get("p50_ns") is not None:
                row["ratio_p50"] = _ratio(ours.get("p50_ns"), ref["p50_ns"])
                row["ratio_p99"] = _ratio(ours.get("p99_ns"), ref.get("p99_ns"))
            else:     # qperf: a mean round trip only; ours' mean from the merged histogram
                mean = latency.merge([b.get("histogram") for b in blocks]).get_mean_value()
                row["ratio_mean"] = _ratio(mean, ref.get("mean_ns"))
            row["ratio_tps"] = _ratio(ours.get("transactions_per_s"),
                                      ref.get("transactions_per_s"))
        share = _share(case, ours.get("p50_ns"))
        if share is not None:
            row["copy_share"] = share
            row["copy_share_text"] = latency.share_text(share)
        out.append(row)
    return out


def _us(ns) -> str:
    if ns is None:
        return "—"
    us = ns / 1000
    return f"{us:.1f}" if us < 100 else f"{us:.0f}"


def _x(v, fmt: str = "{:.2f}") -> str:
    return "—" if v is None else fmt.format(v)


HEADER = ("| path | size | topology | p50 µs | p99 µs | p99.9 µs | transactions/s | peer | "
          "peer p50 µs | peer p99 µs | p50 ours/peer | transactions/s ours/peer | copies |")


def markdown(result) -> str:
    """The latency table, or "" when no case has latency samples."""
    data = rows(result)
    if not data:
        return ""
    lines = [HEADER, "|" + "---|" * HEADER.count(" | ") + "---|"]
    for r in data:
        o, p = r["ours"], r["peer"] or {}
        if "ratio_mean" in r:
            ratio = _x(r["ratio_mean"]) + " (mean)"
            peer_p50 = _us(p.get("mean_ns")) + " (mean)"
        else:
            ratio, peer_p50 = _x(r.get("ratio_p50")), _us(p.get("p50_ns"))
        lines.append("| " + " | ".join([
            str(r["path"]), str(r["size"]), str(r["topology"]), _us(o.get("p50_ns")),
            _us(o.get("p99_ns")), _us(o.get("p99_9_ns")),
            _x(o.get("transactions_per_s"), "{:,.0f}"), p.get("tool") or "—", peer_p50,
            _us(p.get("p99_ns")), ratio, _x(r.get("ratio_tps")),
            r.get("copy_share_text", "not counted")]) + " |")
    return "\n".join(lines) + "\n"


# -- the percentile plot ----------------------------------------------------------------------
def _nines(p: float) -> float:
    """x position of a percentile: 1 per nine (90% -> 1, 99% -> 2, 99.9% -> 3)."""
    return -math.log10(1 - p / 100) if p < 100 else math.inf


PEER_PERCENTILES = (("p25_ns", 25.0), ("p50_ns", 50.0), ("p75_ns", 75.0), ("p90_ns", 90.0),
                    ("p99_ns", 99.0), ("p99_9_ns", 99.9), ("p99_99_ns", 99.99),
                    ("p99_999_ns", 99.999))


def plot_data(result) -> dict[str, dict[str, list[tuple[float, float]]]]:
    """path -> {line label -> [(percentile, latency µs)]}: ours from the merged histogram, up
    to the percentile its transaction count resolves (one nine per factor 10), and the peer's
    own percentiles where it prints them (sockperf), median over repeats."""
    out: dict[str, dict[str, list[tuple[float, float]]]] = {}
    for case in _cases(result):
        blocks = _blocks(case)
        if case.get("status") != "ok" or not blocks:
            continue
        hist = latency.merge([b.get("histogram") for b in blocks])
        n = hist.get_total_count()
        if not n:
            continue
        label = f"{case.get('size')} B {case.get('topology')}"
        top = max(1.0, math.log10(n))
        pts = []
        k = 0.0
        while k <= top + 1e-9:
            p = 100 * (1 - 10 ** -k)
            pts.append((round(p, 6), hist.get_value_at_percentile(p) / 1000))
            k += 0.1
        lines = out.setdefault(str(case.get("workload")), {})
        lines[f"ours {label}"] = pts
        rows_ = [r for r in case.get("reference") or [] if not r.get("error")]
        peer_pts = []
        for key, p in PEER_PERCENTILES:
            vals = [r[key] for r in rows_ if r.get(key) is not None]
            if vals:
                peer_pts.append((p, statistics.median(vals) / 1000))
        if peer_pts:
            lines[f"{rows_[0].get('tool')} {label}"] = peer_pts
    return out


def plots(result) -> list[tuple[str, str, object]]:
    """(key, title, Figure) per path with latency samples: log latency against percentile."""
    from matplotlib.figure import Figure
    figs = []
    for path, lines in plot_data(result).items():
        fig = Figure(figsize=(7.5, 4.0), dpi=96, layout="constrained")
        ax = fig.add_subplot()
        for label, pts in lines.items():
            ax.plot([_nines(p) for p, _ in pts], [v for _, v in pts], label=label,
                    linestyle="--" if not label.startswith("ours ") else "-",
                    marker="o" if not label.startswith("ours ") else None)
        ticks = [0, 1, 2, 3, 4, 5]
        ax.set_xticks(ticks, ["0%", "90%", "99%", "99.9%", "99.99%", "99.999%"])
        ax.set_yscale("log")
        ax.set_xlabel("percentile")
        ax.set_ylabel("round trip (µs, log)")
        ax.set_title(f"{path}: round-trip latency by percentile")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize="small")
        figs.append((f"latency-{path}", f"{path} latency by percentile", fig))
    return figs
