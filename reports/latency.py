"""The latency report: per request/response case, ours against its peer, and a percentile
plot per path, from result-shaped dicts (a run document's `cases`, as JSON).

A case's samples carry the requester's `latency` block (workloads/rr_stats.py: the encoded
histogram, exact min/max, transactions/s); warm-up samples are left out, the others merged
into one histogram (bench/latency.py). A reference row is sockperf's or perftest's ib_*_lat
(percentiles) or qperf's (a mean round trip: `round_trip_ns`), one row per tool per repeat;
each tool's figures are
the median over its repeats. Ratios are
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


def rows_by_tool(case: dict) -> dict[str, list[dict]]:
    """A case's measured reference rows (errors and warm-ups left out) per tool, in the rows'
    order: a request/response case has a row per latency tool per repeat (sockperf, qperf)."""
    by_tool: dict[str, list[dict]] = {}
    for r in case.get("reference") or []:
        if not r.get("error") and not r.get("warmup"):
            by_tool.setdefault(r.get("tool") or "?", []).append(r)
    return by_tool


def peers(case: dict) -> dict[str, dict]:
    """tool -> the medians of its rows (rows_by_tool)."""
    out = {}
    for tool, rows_ in rows_by_tool(case).items():
        med: dict = {"tool": tool, "repeats": len(rows_)}
        for key in PEER_KEYS:
            vals = [r.get(key) if key != "mean_ns" else r.get("mean_ns", r.get("round_trip_ns"))
                    for r in rows_]
            vals = [v for v in vals if v is not None]
            med[key] = statistics.median(vals) if vals else None
        out[tool] = med
    return out


def peer(case: dict) -> dict | None:
    """The case's first peer with percentiles (sockperf, ib_*_lat), else its first (qperf), or
    None."""
    ps = list(peers(case).values())
    return next((p for p in ps if p.get("p50_ns") is not None), ps[0] if ps else None)


def _ratio(a, b) -> float | None:
    return round(a / b, 3) if a is not None and b else None


def _share(case: dict, p50: float | None) -> dict | None:
    """The copies' share as the run computed it (case `latency`), else from its counts."""
    stored = (case.get("latency") or {}).get("copy_share")
    if stored:
        return stored if stored.get("status") != "not counted" else None
    copies = case.get("copies") or {}
    traced = copies.get("traced_sample") or {}
    n = (traced.get("latency") or {}).get("transactions") or traced.get("messages_sent") \
        or traced.get("messages")
    if copies.get("status") != "ok" or not copies.get("points") or not n:
        return None
    return latency.copy_share(p50, latency.copy_parts(copies["points"], n))


def rows(result) -> list[dict]:
    """One row per case that has latency samples: ours merged, each peer, ratios, copies.
    Ratios per peer: p50 and p99 against sockperf's percentiles, the mean against qperf's
    mean round trip (ours' mean from the merged histogram), transactions/s against each."""
    out = []
    for case in _cases(result):
        blocks = _blocks(case)
        if case.get("status") != "ok" or not blocks:
            continue
        ours = latency.merged(blocks)
        mean = latency.merge([b.get("histogram") for b in blocks]).get_mean_value()
        ours["mean_ns"] = round(mean, 1)
        ps = peers(case)
        row = {"id": case.get("id"), "path": case.get("workload"), "size": case.get("size"),
               "topology": case.get("topology"), "ours": ours, "peer": peer(case),
               "peers": ps, "ratios": {},
               "cpu_us_per_transaction": (case.get("latency") or {}).get(
                   "cpu_us_per_transaction"),
               "user_us_per_transaction": (case.get("latency") or {}).get(
                   "user_us_per_transaction")}
        for tool, ref in ps.items():
            r = {"transactions_per_s": _ratio(ours.get("transactions_per_s"),
                                              ref.get("transactions_per_s"))}
            if ref.get("p50_ns") is not None:
                r["p50"] = _ratio(ours.get("p50_ns"), ref["p50_ns"])
                r["p99"] = _ratio(ours.get("p99_ns"), ref.get("p99_ns"))
            else:
                r["mean"] = _ratio(mean, ref.get("mean_ns"))
            row["ratios"][tool] = r
        first = row["peer"]
        if first:          # the headline ratios: against the first peer
            r = row["ratios"][first["tool"]]
            if "p50" in r:
                row["ratio_p50"], row["ratio_p99"] = r["p50"], r["p99"]
            else:
                row["ratio_mean"] = r["mean"]
            row["ratio_tps"] = r["transactions_per_s"]
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


HEAD = ["path", "size", "topology", "p50 µs", "p99 µs", "p99.9 µs", "transactions/s",
        "CPU µs/transaction (requester / responder)",
        "of which user (Python) µs (requester / responder)", "peer p50 µs (its tool)",
        "peer p99 µs", "p50 ours/peer", "qperf mean µs", "mean ours/qperf",
        "transactions/s ours/peer", "copies"]
HEADER = "| " + " | ".join(HEAD) + " |"
METHOD = ("Round trips: per transaction on the requester's CLOCK_MONOTONIC, from just before "
          "the request's send to just after the response's last byte, every request and "
          "response verified; the measured samples' HDR histograms merged (warm-up and the "
          "traced sample left out), transactions/s over the summed windows. sockperf: "
          "ping-pong, --full-rtt, --no-rdtsc, --data-integrity, its valid window, median over "
          "the repeats; perftest's ib_send_lat/ib_write_lat (verbs): 2 x its one-way figures, "
          "as many transactions as ours (-n), its median t_typical; qperf: its mean (2 x its "
          "one-way latency), msg_rate / 2 round trips/s. "
          "Each alternates with ours on the same CPUs, sizes and topology. Ratios: ours / peer "
          "(latency above 1: ours slower; transactions/s above 1: ours faster). CPU: each "
          "agent's own user+sys per transaction, and of it the user time: the interpreter's "
          "own work per round trip (the rest is the kernel's system calls). Copies: the "
          "traced sample's payload copies "
          "per transaction (both sides' send and receive copies) x the calibrated ns per copy "
          "(kmod only), against the untraced p50.")


def _cpu(r: dict, key: str = "cpu_us_per_transaction") -> str:
    c = r.get(key) or {}
    if not c:
        return "—"
    return f"{_x(c.get('requester'), '{:.1f}')} / {_x(c.get('responder'), '{:.1f}')}"


def table_rows(data: list[dict]) -> list[list[str]]:
    """rows() as the table's cells (HEAD), formatted."""
    out = []
    for r in data:
        o, ps, ratios = r["ours"], r["peers"], r["ratios"]
        # the percentiles' peer: sockperf for sockets, perftest's ib_*_lat for verbs
        sp = next((p for p in ps.values() if p.get("p50_ns") is not None), {})
        qp = ps.get("qperf", {})
        tps = " / ".join(f"{_x(ratios[t]['transactions_per_s'])} ({t})" for t in ps) or "—"
        out.append([
            str(r["path"]), str(r["size"]), str(r["topology"]), _us(o.get("p50_ns")),
            _us(o.get("p99_ns")), _us(o.get("p99_9_ns")),
            _x(o.get("transactions_per_s"), "{:,.0f}"), _cpu(r),
            _cpu(r, "user_us_per_transaction"),
            f"{_us(sp.get('p50_ns'))} ({sp['tool']})" if sp else "—", _us(sp.get("p99_ns")),
            _x(ratios.get(sp.get("tool"), {}).get("p50")), _us(qp.get("mean_ns")),
            _x(ratios.get("qperf", {}).get("mean")), tps,
            r.get("copy_share_text", "not counted")])
    return out


def markdown(result) -> str:
    """The latency table, or "" when no case has latency samples."""
    data = rows(result)
    if not data:
        return ""
    lines = [HEADER, "|" + "---|" * len(HEAD)]
    lines += ["| " + " | ".join(c.replace("|", "/") for c in cells) + " |"
              for cells in table_rows(data)]
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
        for tool, rows_ in rows_by_tool(case).items():
            peer_pts = []
            for key, p in PEER_PERCENTILES:
                vals = [r[key] for r in rows_ if r.get(key) is not None]
                if vals:
                    peer_pts.append((p, statistics.median(vals) / 1000))
            if peer_pts:         # qperf prints a mean only: no line
                lines[f"{tool} {label}"] = peer_pts
    return out


def share_data(result) -> list[tuple[str, float, float]]:
    """(case, µs copying, µs the rest) of each p50 round trip whose copies were timed
    (calibrated ns per copy: kmod); cases without a share are left out (the table says why)."""
    out = []
    for r in rows(result):
        sh = r.get("copy_share") or {}
        if sh.get("status") == "ok":
            out.append((str(r["id"]), sh["copy_ns"] / 1000, sh["rest_ns"] / 1000))
    return out


def share_plot(result):
    """The copies' share of each p50 round trip as a stacked bar, or None without one."""
    data = share_data(result)
    if not data:
        return None
    from matplotlib.figure import Figure
    fig = Figure(figsize=(7.5, 0.6 * len(data) + 1.6), dpi=96, layout="constrained")
    ax = fig.add_subplot()
    names = [d[0] for d in data]
    copy = [d[1] for d in data]
    rest = [d[2] for d in data]
    ax.barh(names, copy, label="copies (count x calibrated ns per copy)", color="#c0392b")
    ax.barh(names, rest, left=copy, label="the rest of the round trip", color="#95a5a6")
    ax.invert_yaxis()
    ax.set_xlabel("p50 round trip (µs)")
    ax.set_title("The copies' share of a round trip")
    ax.legend(fontsize="small")
    return fig


def plots(result) -> list[tuple[str, str, object]]:
    """(key, title, Figure) per path with latency samples: log latency against percentile;
    then the copies' share as a stacked bar where copies were timed."""
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
    share = share_plot(result)
    if share is not None:
        figs.append(("latency-copy-share", "The copies' share of a p50 round trip", share))
    return figs
