"""Latency figures of request/response cases, pure: histograms merged across repeats,
percentiles, and the copies' share of a round trip.

The agents (workloads/rr_stats.py) keep each sample's latencies as an encoded HDR histogram;
here they are decoded and added (HdrHistogram.add: counts per bucket, so merging is exact at
the histogram's 3 significant figures). The copies' share multiplies the traced sample's
copies per transaction by the calibrated time per copy (kmod times each copy and subtracts its
own probe cost, measured at load); a backend that does not time copies gives no share, and the
figure says so instead of guessing.
"""

from __future__ import annotations

import statistics

from bench.copycount import QUALITY_ORDER, RXE_POINT, SIDE_POINT
from workloads.rr_stats import PERCENTILES, new_histogram

# The points that are payload copies: each side's send and receive copy (both sides do both
# in a round trip) and soft-RoCE's own. Others (recv_skb, zc_send) correlate, they do not copy.
COPY_POINTS = (*SIDE_POINT.values(), RXE_POINT)


def decode(encoded: str):
    from hdrh.histogram import HdrHistogram
    return HdrHistogram.decode(encoded)


def merge(encoded: list[str | None]):
    """One histogram of every sample's transactions (None entries skipped)."""
    hist = new_histogram()
    for e in encoded:
        if e:
            hist.add(decode(e))
    return hist


def percentiles(hist) -> dict:
    """p50/p90/p99/p99.9 (ns, the upper end of the value's bucket) and the count."""
    n = hist.get_total_count()
    out = {key: (hist.get_value_at_percentile(p) if n else None) for key, p in PERCENTILES}
    out["transactions"] = n
    return out


def merged(blocks: list[dict]) -> dict:
    """The case's latency over its samples' `latency` blocks (warm-up excluded by the caller):
    percentiles of the merged histogram, exact min and max of the raw values, transactions,
    transactions/s over the summed windows and the median of the samples' rates."""
    blocks = [b for b in blocks if b and b.get("transactions")]
    if not blocks:
        return {"transactions": 0}
    out = percentiles(merge([b.get("histogram") for b in blocks]))
    out["min_ns"] = min(b["min_ns"] for b in blocks if b.get("min_ns") is not None)
    out["max_ns"] = max(b["max_ns"] for b in blocks if b.get("max_ns") is not None)
    window = sum(b.get("window_s") or 0 for b in blocks)
    total = sum(b["transactions"] for b in blocks)
    out["transactions"] = total
    out["transactions_per_s"] = round(total / window, 3) if window else None
    rates = [b["transactions_per_s"] for b in blocks if b.get("transactions_per_s")]
    out["transactions_per_s_median"] = statistics.median(rates) if rates else None
    out["samples"] = len(blocks)
    return out


def copy_parts(points: list[dict], transactions: int) -> list[dict]:
    """Per (side, point) of a traced sample's PointCounts rows: copies per transaction and
    ns per copy, calibrated only where the backend timed copies and measured its own probe
    cost (ns_total and ns_probe_per_call known: kmod)."""
    if not transactions:
        raise ValueError("copies per transaction need the traced sample's transactions")
    acc: dict[tuple[str, str], dict] = {}
    for p in points:
        calls = int(p.get("calls") or 0)
        if not calls or p.get("point") not in COPY_POINTS:
            continue
        key = (p.get("side") or "?", p.get("point") or "?")
        a = acc.setdefault(key, {"side": key[0], "point": key[1], "calls": 0, "ns_total": 0,
                                 "calibrated": True, "backends": set(), "probe_ns": [],
                                 "quality": "exact"})
        a["calls"] += calls
        q = p.get("quality") or "estimate"
        a["quality"] = max(a["quality"], q, key=QUALITY_ORDER.index)
        a["backends"].add(p.get("backend"))
        if p.get("ns_total") is None or p.get("ns_probe_per_call") is None:
            a["calibrated"] = False
        else:
            a["ns_total"] += p["ns_total"]
            a["probe_ns"].append((calls, p["ns_probe_per_call"]))
    parts = []
    for a in acc.values():
        ns = None
        if a["calibrated"]:
            probe = sum(c * v for c, v in a["probe_ns"]) / a["calls"]
            ns = max(a["ns_total"] / a["calls"] - probe, 0.0)
        parts.append({"side": a["side"], "point": a["point"],
                      "copies_per_transaction": a["calls"] / transactions,
                      "ns_per_copy": ns, "calibrated": a["calibrated"],
                      "quality": a["quality"],
                      "backends": sorted(b for b in a["backends"] if b)})
    return sorted(parts, key=lambda x: (x["side"], x["point"]))


def copy_share(round_trip_ns: float | None, parts: list[dict], figure: str = "p50") -> dict:
    """The round trip split into copies x ns per copy and the rest; refused (status
    "not calibrated", with the reason) where any part's ns per copy was not measured."""
    copies = sum(p["copies_per_transaction"] for p in parts)
    quality = max((p.get("quality", "estimate") for p in parts), key=QUALITY_ORDER.index,
                  default=None)
    base = {"round_trip": figure, "round_trip_ns": round_trip_ns,
            "copies_per_transaction": round(copies, 3), "copies_quality": quality,
            "parts": parts}
    if not round_trip_ns:
        return {**base, "status": "no round trip", "reason": "no transactions were timed"}
    missing = [p for p in parts if not p["calibrated"] or p["ns_per_copy"] is None]
    if missing:
        names = ", ".join(f"{p['side']} {p['point']} ({'/'.join(p['backends']) or '?'})"
                          for p in missing)
        return {**base, "status": "not calibrated",
                "reason": f"ns per copy not calibrated for {names}: only kmod times copies "
                "and its own probe cost; no share shown"}
    copy_ns = sum(p["copies_per_transaction"] * p["ns_per_copy"] for p in parts)
    return {**base, "status": "ok", "copy_ns": round(copy_ns, 1),
            "rest_ns": round(round_trip_ns - copy_ns, 1),
            "share": round(copy_ns / round_trip_ns, 4)}


def _us(ns: float) -> str:
    us = ns / 1000
    return f"{us:.1f} µs" if us < 10 else f"{us:.0f} µs"


def share_text(share: dict) -> str:
    """'4 copies, 1.9 µs of a 72 µs round trip', or why there is no share."""
    n = share.get("copies_per_transaction")
    copies = f"{n:g} copies" if n is not None else "copies not counted"
    if share.get("copies_quality") and share["copies_quality"] != "exact":
        copies += f" ({share['copies_quality']})"
    if share.get("status") == "not calibrated":
        backends = sorted({b for p in share.get("parts") or [] if not p.get("calibrated")
                           for b in p.get("backends") or []})
        return (f"{copies}; no share: ns per copy not calibrated ({'/'.join(backends) or '?'}; "
                "only kmod times copies)")
    if share.get("status") != "ok":
        return f"{copies}; {share.get('reason', share.get('status'))}"
    return (f"{copies}, {_us(share['copy_ns'])} of a {_us(share['round_trip_ns'])} "
            f"({share['round_trip']}) round trip")


def _median(values) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def round_trips(cr) -> dict:
    """A request/response case's `latency`: its measured samples' round trips merged (the
    traced sample is not among them: probes lengthen round trips), CPU per transaction per
    side (median over the samples), system calls per transaction (the syscall sample), and
    the copies' share of the p50 round trip from the traced sample's counts."""
    samples = cr.measured()
    out = merged([s.get("latency") for s in samples])
    out["cpu_us_per_transaction"] = {
        "requester": _median((s.get("latency") or {}).get("cpu_us_per_transaction")
                             for s in samples),
        "responder": _median(((s.get("rr") or {}).get("responder") or {})
                             .get("cpu_us_per_transaction") for s in samples)}
    # user time: the interpreter's share of each transaction (the rest of the CPU is the
    # kernel's system calls): what Python costs a round trip, per side
    out["user_us_per_transaction"] = {
        role: _median(_user_us(s, side) for s in samples)
        for role, side in (("requester", "sender"), ("responder", "receiver"))}
    sc = cr.syscalls or {}
    out["syscalls_per_transaction"] = (
        {side: (sc["sides"].get(role) or {}).get("per_message")
         for side, role in (("requester", "sender"), ("responder", "receiver"))}
        if sc.get("status") == "ok" else None)
    out["copy_share"] = share_of(cr.copies or {}, out.get("p50_ns"))
    return out


def _user_us(sample: dict, side: str) -> float | None:
    """µs of user CPU per transaction of one side's agent in one sample."""
    cpu = ((sample.get("cpu") or {}).get(side)) or {}
    n = (sample.get("latency") or {}).get("transactions")
    if not n or cpu.get("user_s") is None:
        return None
    return round(cpu["user_s"] / n * 1e6, 3)


def share_of(copies: dict, round_trip_ns) -> dict:
    """copy_share() from a case's `copies`, or why it has none (copies not counted)."""
    if copies.get("status") != "ok":
        return {"status": "not counted",
                "reason": copies.get("reason") or "copies were not counted"}
    # the traced sample's requester transactions (its verified ones: a bad one fails the case)
    n = (copies.get("traced_sample") or {}).get("messages_sent")
    if not n:
        return {"status": "not counted", "reason": "the traced sample timed no transactions"}
    return copy_share(round_trip_ns, copy_parts(copies.get("points") or [], n))
