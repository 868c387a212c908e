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


def scaling_data(results, key: str) -> dict[str, list[tuple[int, float]]]:
    """'path size topology' -> [(flows, median of the sample field `key`)], for every path
    measured at two flow counts or more (a scaling suite), sorted by flows."""
    out: dict[str, dict[int, float]] = {}
    for r in results:
        for cr in r.cases:
            if cr.status != "ok" or cr.is_latency:
                continue
            st = cr.stat(key)
            if st is None:
                continue
            label = f"{cr.workload} {cr.size} B {cr.topology}"
            out.setdefault(label, {})[(cr.params or {}).get("flows", 1)] = st["median"]
    return {k: sorted(v.items()) for k, v in out.items() if len(v) > 1}


def plots(results) -> list[tuple[str, str, object]]:
    """Throughput and CPU per GB (sender) against flows, where a path ran at several."""
    from matplotlib.figure import Figure
    figs = []
    for key, ylabel, fkey, title in (
            ("gbps", "aggregate Gbit/s", "scaling-throughput", "Throughput against flows"),
            ("cpu_s_per_gb.sender", "sender CPU s/GB", "scaling-cpu",
             "Sender CPU per GB against flows")):
        data = scaling_data(results, key)
        if not data:
            continue
        fig = Figure(figsize=(7.5, 4.0), dpi=96, layout="constrained")
        ax = fig.add_subplot()
        for label, pts in data.items():
            ax.plot([f for f, _ in pts], [v for _, v in pts], marker="o", label=label)
        ax.set_xscale("log", base=2)
        ax.set_xticks(sorted({f for pts in data.values() for f, _ in pts}))
        ax.get_xaxis().set_major_formatter("{x:g}")
        ax.set_xlabel("flows")
        ax.set_ylabel(ylabel)
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize="small")
        figs.append((fkey, title, fig))
    return figs
