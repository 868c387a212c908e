"""Cases of several flows: the row note (flows, fairness), and the per-flow table (each flow's
median Gbit/s over the measured samples, its CPUs, its copies), from CaseResults."""

from __future__ import annotations

import statistics

HEAD = ["case", "flow", "CPUs (sender / receiver)", "Gbit/s (median)", "share of the flows' sum",
        "sender CPU s/GB", "receiver CPU s/GB", "copies B/B (sender / receiver)"]


def _flows(cr) -> list[list[dict]]:
    return [s["flows"] for s in cr.measured() if s.get("flows")]


def note(cr) -> str | None:
    """'2 flows, fairness (Jain) 0.99 (0.98-1.00)' and how CPUs were shared, if they were."""
    samples = [s for s in cr.measured() if s.get("flows")]
    if not samples:
        return None
    jains = [s["fairness"]["jain"] for s in samples if (s.get("fairness") or {}).get("jain")]
    text = f"{len(samples[0]['flows'])} flows"
    if jains:
        text += f", fairness (Jain) {statistics.median(jains):.2f}"
        if len(jains) > 1:
            text += f" ({min(jains):.2f}–{max(jains):.2f})"
    shared = next((s["cpu_placement_note"] for s in samples if s.get("cpu_placement_note")), None)
    return text + (f"; {shared}" if shared else "")


def _median(vals):
    vals = [v for v in vals if v is not None]
    return statistics.median(vals) if vals else None


def table_rows(cases) -> list[list]:
    """One row per flow of every case that has several."""
    out = []
    for cr in cases:
        runs = _flows(cr)
        if not runs:
            continue
        per_copy = {f["flow"]: f for f in (cr.copies or {}).get("flows") or []}
        total = _median([sum(f.get("gbps") or 0 for f in run) for run in runs])
        for i in range(len(runs[0])):
            mine = [run[i] for run in runs if i < len(run)]
            g = _median([f.get("gbps") for f in mine])
            cpus = mine[0].get("cpus") or {}
            c = per_copy.get(i) or {}
            out.append([
                cr.id, i, f"{cpus.get('sender', '–')} / {cpus.get('receiver', '–')}", g,
                (g / total) if g is not None and total else None,
                _median([(f.get("cpu_s_per_gb") or {}).get("sender") for f in mine]),
                _median([(f.get("cpu_s_per_gb") or {}).get("receiver") for f in mine]),
                (f"{c['sender']['bytes_per_payload_byte']} / "
                 f"{c['receiver']['bytes_per_payload_byte']}") if c else None])
    return out


METHOD = ("Each flow is its own sender and receiver process. The aggregate (the case's row) is "
          "every flow's verified bytes over one window on the receivers' clock, first byte of any "
          "flow to the last of any; a flow's Gbit/s is over its own window, so the flows' figures "
          "need not add up to the aggregate; their bytes do. Fairness: Jain's index over the "
          "flows' Gbit/s (1 = equal, 1/N = one flow took all). Reference: iperf3 -P N.")
