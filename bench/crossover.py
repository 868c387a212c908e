"""The zerocopy break-even size: from which message size a zerocopy path costs the sender less
CPU per GB than its own copying twin, measured in one run, same topology, same repeats.

The question users of MSG_ZEROCOPY and io_uring send_zc ask ("about 10 KB" says the kernel's
msg_zerocopy.rst; slower in practice in many setups). Method, stated in each entry:
  - twin: each zerocopy path against the path that differs from it only by the copy
    (msg_zerocopy vs tcp; io_uring_zc vs io_uring). Against tcp, io_uring_zc would be credited
    with io_uring's batching, which is not zerocopy;
  - metric: the sender's CPU-seconds per GB sent (its own user+sys), median of the measured
    repeats; ratio = path / twin at each size both ran at, with the range from the repeats'
    extremes (min/max and max/min);
  - break-even: the smallest measured size from which the path is cheaper at every larger
    measured size too (a crossing, not a lucky point);
  - "clear" only with at least MIN_REPEATS repeats per side at the break-even size, an exact
    two-sided Mann-Whitney U on those repeats with p < ALPHA (the path's repeats lie below the
    twin's), and most sends there really zerocopy (>= MIN_ZC_FRACTION of the kernel's
    completions): a CPU saving on sends the kernel copied anyway is not zerocopy's;
  - a zerocopy path whose sends the kernel copied anyway (veth, loopback: every completion
    says copied) has no break-even: "no zerocopy happened", never a number;
  - io_uring_fixed (registered buffers) never avoids a copy: it is reported apart as "fixed
    buffers", its ratio to io_uring shown, never called a zerocopy break-even.
Pure: reads a RunResult, returns JSON-ready dicts (stored as the result's `analysis`). The
reports and plots read these entries (`entries`), never recompute their own.
"""

from __future__ import annotations

from bench.results import dig
from reports.gatestats import mann_whitney_p

METHOD = 2                                            # bumped when the verdict's rule changes
TWINS = {"msg_zerocopy": "tcp", "io_uring_zc": "io_uring"}   # zerocopy path -> copying twin
FIXED = {"io_uring_fixed": "io_uring"}                # registered buffers: still copies
METRIC = "cpu_s_per_gb.sender"
MIN_REPEATS = 5
ALPHA = 0.05
MIN_ZC_FRACTION = 0.5


def zerocopy_fraction(case) -> float | None:
    """Share of completed sends the kernel really sent from the user's pages (its own
    completion reports over the measured samples); None where the path reports none."""
    done = zc = 0
    for s in case.measured():
        z = s.get("zerocopy") or {}
        if isinstance(z.get("completed"), int):
            done += z["completed"]
            zc += z.get("zerocopy") or 0
    return zc / done if done else None


def _values(case) -> list[float]:
    return [v for v in (dig(s, METRIC) for s in case.measured()) if v is not None]


def _point(size: int, path_case, twin_case) -> dict | None:
    z, b = path_case.stat(METRIC), twin_case.stat(METRIC)
    if not z or not b or not (z["min"] > 0 and b["min"] > 0):
        return None
    a, t = _values(path_case), _values(twin_case)
    return {"size": size, "ratio": round(z["median"] / b["median"], 4),
            "ratio_min": round(z["min"] / b["max"], 4), "ratio_max": round(z["max"] / b["min"], 4),
            "n": min(len(a), len(t)), "n_path": len(a), "n_twin": len(t),
            "p_mann_whitney": (round(p, 4) if (p := mann_whitney_p(a, t)) is not None else None),
            "zerocopy_fraction": zerocopy_fraction(path_case)}


def breakeven(result) -> list[dict]:
    """One entry per (compared path, topology) the run has together with its twin."""
    ok = {(c.workload, c.size, c.topology): c for c in result.cases if c.status == "ok"}
    out = []
    for topo in sorted({t for (_, _, t) in ok}):
        for path, twin in (*TWINS.items(), *FIXED.items()):
            sizes = sorted(s for (w, s, t) in ok if w == path and t == topo
                           and (twin, s, t) in ok)
            points = [p for p in (_point(s, ok[(path, s, topo)], ok[(twin, s, topo)])
                                  for s in sizes) if p]
            if points:
                out.append(_fixed(path, twin, topo, points) if path in FIXED
                           else _entry(path, twin, topo, points))
            elif any(w == path and t == topo for (w, _, t) in ok):
                entry = _base(path, twin, topo, [], "fixed buffers" if path in FIXED
                              else "zerocopy")
                entry["verdict"] = (f"not compared: its copying twin {twin} did not run on "
                                    f"{topo} at its sizes (add {twin} to the suite)")
                out.append(entry)
    return out


def entries(result) -> list[dict]:
    """The break-even entries for a report: the result's own when computed by this METHOD,
    else computed now from its cases (older files carry verdicts of a retired rule)."""
    stored = (result.analysis or {}).get("breakeven") or []
    if stored and all(e.get("method") == METHOD for e in stored):
        return stored
    return breakeven(result)


def _base(path: str, twin: str, topo: str, points: list[dict], kind: str) -> dict:
    return {"path": path, "baseline": twin, "topology": topo, "kind": kind, "method": METHOD,
            "metric": "sender CPU-seconds per GB sent, median of the measured repeats; "
                      "ratio = path / its copying twin (below 1: the path is cheaper)",
            "points": points, "breakeven": None}


def _fixed(path: str, twin: str, topo: str, points: list[dict]) -> dict:
    entry = _base(path, twin, topo, points, "fixed buffers")
    ratios = ", ".join(f"{p['ratio']:.2f} at {p['size']} B" for p in points)
    entry["verdict"] = (f"fixed buffers, not zerocopy (registered buffers still copy, so no "
                        f"break-even): ratio to {twin} {ratios}")
    return entry


def _clear(p: dict) -> tuple[bool, str]:
    """Whether the break-even point is clear, and the test's words either way."""
    if p["n_path"] < MIN_REPEATS or p["n_twin"] < MIN_REPEATS:
        return False, (f"not enough repeats (n < {MIN_REPEATS}: {p['n_path']} vs "
                       f"{p['n_twin']})")
    zc = p["zerocopy_fraction"]
    if zc is not None and zc < MIN_ZC_FRACTION:
        return False, (f"not clear: only {100 * zc:.1f}% of sends went zerocopy there, "
                       "mostly copied")
    pv = p["p_mann_whitney"]
    test = f"Mann-Whitney p = {pv:.3f}, {p['n_path']} vs {p['n_twin']} repeats"
    if pv is None or pv >= ALPHA:
        return False, f"within the noise ({test})"
    return True, f"clear ({test})"


def _entry(path: str, twin: str, topo: str, points: list[dict]) -> dict:
    entry = _base(path, twin, topo, points, "zerocopy")
    fractions = [p["zerocopy_fraction"] for p in points if p["zerocopy_fraction"] is not None]
    if fractions and max(fractions) == 0:
        entry["verdict"] = (f"no zerocopy happened: the kernel copied every send on {topo} "
                            "(its completions say so), so there is no break-even to report")
        return entry
    first = None
    for i, p in enumerate(points):
        if all(q["ratio"] < 1 for q in points[i:]):
            first = p
            break
    if first is None:
        entry["verdict"] = (f"never cheaper than {twin} at the sizes measured "
                            f"({points[0]['size']}–{points[-1]['size']} B)")
        return entry
    clear, why = _clear(first)
    entry["breakeven"] = {"size": first["size"], "ratio": first["ratio"],
                          "ratio_min": first["ratio_min"], "ratio_max": first["ratio_max"],
                          "clear": clear, "test": why}
    below = (" (every size measured: the break-even is at or below it)" if first is points[0]
             else f" (not at {points[points.index(first) - 1]['size']} B)")
    entry["verdict"] = (f"cheaper than {twin} from {first['size']} B up{below}: ratio "
                        f"{first['ratio']:.2f} (range {first['ratio_min']:.2f}–"
                        f"{first['ratio_max']:.2f}; {why})"
                        + ("" if len(points) > 1 else "; one size only"))
    return entry
