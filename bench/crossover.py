"""The zerocopy break-even size: from which message size a path costs the sender less CPU per
GB than the plain copy (`tcp`), measured in one run, same topology, same repeats.

The question users of MSG_ZEROCOPY and io_uring send_zc ask ("about 10 KB" says the kernel's
msg_zerocopy.rst; slower in practice in many setups). Method, stated in each entry:
  - metric: the sender's CPU-seconds per GB sent (its own user+sys), median of the measured
    repeats; ratio = path / tcp at each size both ran at;
  - spread: the ratio's range from the repeats' extremes (min/max and max/min); a break-even is
    "clear" when even the worst pairing is below 1;
  - break-even: the smallest measured size from which the path is cheaper at every larger
    measured size too (a crossing, not a lucky point);
  - a zerocopy path whose sends the kernel copied anyway (veth, loopback: every completion
    says copied) has no break-even: "no zerocopy happened", never a number.
Pure: reads a RunResult, returns JSON-ready dicts (stored as the result's `analysis`).
"""

from __future__ import annotations

BASELINE = "tcp"
ZEROCOPY_PATHS = ("msg_zerocopy", "io_uring_zc")   # the kernel may send from the user's pages
COMPARED = ZEROCOPY_PATHS + ("io_uring_fixed",)     # registered buffers: still copies
METRIC = "cpu_s_per_gb.sender"


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


def _point(size: int, path_case, base_case) -> dict | None:
    z, b = path_case.stat(METRIC), base_case.stat(METRIC)
    if not z or not b or not (z["min"] > 0 and b["min"] > 0):
        return None
    return {"size": size, "ratio": round(z["median"] / b["median"], 4),
            "ratio_min": round(z["min"] / b["max"], 4), "ratio_max": round(z["max"] / b["min"], 4),
            "n": min(z["n"], b["n"]), "zerocopy_fraction": zerocopy_fraction(path_case)}


def breakeven(result) -> list[dict]:
    """One entry per (compared path, topology) the run has together with the baseline."""
    ok = {(c.workload, c.size, c.topology): c for c in result.cases if c.status == "ok"}
    out = []
    topologies = sorted({t for (_, _, t) in ok})
    for topo in topologies:
        for path in COMPARED:
            sizes = sorted(s for (w, s, t) in ok if w == path and t == topo
                           and (BASELINE, s, t) in ok)
            points = [p for p in (_point(s, ok[(path, s, topo)], ok[(BASELINE, s, topo)])
                                  for s in sizes) if p]
            if points:
                out.append(_entry(path, topo, points))
    return out


def _entry(path: str, topo: str, points: list[dict]) -> dict:
    entry = {"path": path, "baseline": BASELINE, "topology": topo,
             "metric": "sender CPU-seconds per GB sent, median of the measured repeats; "
                       "ratio = path / baseline (below 1: the path is cheaper)",
             "points": points, "breakeven": None}
    fractions = [p["zerocopy_fraction"] for p in points if p["zerocopy_fraction"] is not None]
    if path in ZEROCOPY_PATHS and fractions and max(fractions) == 0:
        entry["verdict"] = (f"no zerocopy happened: the kernel copied every send on {topo} "
                            "(its completions say so), so there is no break-even to report")
        return entry
    first = None
    for i, p in enumerate(points):
        if all(q["ratio"] < 1 for q in points[i:]):
            first = p
            break
    if first is None:
        entry["verdict"] = (f"never cheaper than {BASELINE} at the sizes measured "
                            f"({points[0]['size']}–{points[-1]['size']} B)")
        return entry
    clear = first["ratio_max"] < 1
    entry["breakeven"] = {"size": first["size"], "ratio": first["ratio"],
                          "ratio_min": first["ratio_min"], "ratio_max": first["ratio_max"],
                          "clear": clear}
    below = (" (every size measured: the break-even is at or below it)" if first is points[0]
             else f" (not at {points[points.index(first) - 1]['size']} B)")
    entry["verdict"] = (f"cheaper than {BASELINE} from {first['size']} B up{below}: ratio "
                        f"{first['ratio']:.2f} (range {first['ratio_min']:.2f}–"
                        f"{first['ratio_max']:.2f}{', clear' if clear else ', within the noise'})"
                        + ("" if len(points) > 1 else "; one size only"))
    return entry
