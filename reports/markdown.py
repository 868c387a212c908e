"""A result as a Markdown document: what was measured, where, and the comparison table."""

from __future__ import annotations

from bench.results import RunResult
from reports.tables import COLUMNS, fmt, rows


def table(result: RunResult) -> str:
    head = "| " + " | ".join(title for _, title in COLUMNS) + " |"
    sep = "|" + "|".join("---" for _ in COLUMNS) + "|"
    body = ["| " + " | ".join(fmt(getattr(r, key)).replace("|", "/") for key, _ in COLUMNS) + " |"
            for r in rows(result)]
    return "\n".join([head, sep, *body])


COPY_COLUMNS = ["case", "side", "copies", "per msg", "bytes copied", "per payload byte",
                "ns/copy", "model ms", "measured ms", "CPU ms", "copy share of CPU", "symbols",
                "backend", "kind"]


def _ms(seconds):
    return None if seconds is None else seconds * 1e3


def copies_table(result: RunResult) -> str | None:
    """The seed's view per case and side: how many copies, how many bytes, who measured them."""
    rows = []
    notes = []
    for c in result.cases:
        cp = c.copies or {}
        if cp.get("status") != "ok":
            if cp.get("reason") and cp.get("status") != "off":
                notes.append(f"- {c.id}: copies not counted: {cp['reason']}")
            continue
        for side in ("sender", "receiver"):
            d = cp["sides"].get(side)
            if not d:
                continue
            k = d.get("cost") or {}
            rows.append([c.id, side, d["calls"], d["copies_per_message"], d["bytes"],
                         d["bytes_per_payload_byte"], d["ns_per_copy"], _ms(k.get("model_seconds")),
                         _ms(k.get("measured_copy_seconds")), _ms(k.get("cpu_seconds")),
                         k.get("share_of_cpu"), ", ".join(d["symbols"]),
                         "+".join(d["backends"]), "exact" if d["exact"] else "estimate"])
        # "other": outside both agents; two-node runs: "other@<node>", per node.
        for oside, od in cp["sides"].items():
            if oside != "other" and not oside.startswith("other@"):
                continue
            where = f" on {oside.partition('@')[2]}" if "@" in oside else ""
            for point, d in (od.get("other_points") or {}).items():
                notes.append(f"- {c.id}: {d['calls']} {point} copies ({d['bytes']} B, "
                             f"{d['symbol']}) ran outside both agents{where} "
                             "(softirq/kernel threads)")
        ratio = cp.get("tracer_overhead_ratio")
        if ratio:
            notes.append(f"- {c.id}: throughput while counting = {ratio:.2f}× untraced")
    if not rows and not notes:
        return None
    bw = result.metadata.get("memory_bandwidth")
    if bw:
        notes.append(f"- model: bytes copied × 2 / {bw['memory_bytes_per_s'] / 1e9:.1f} GB/s memory "
                     f"bandwidth (memcpy {bw['memcpy_bytes_per_s'] / 1e9:.1f} GB/s measured here); "
                     "share = model time / the agent's CPU time in the traced sample")
    lines = []
    if rows:
        lines = ["| " + " | ".join(COPY_COLUMNS) + " |",
                 "|" + "|".join("---" for _ in COPY_COLUMNS) + "|"]
        lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows] + [""]
    return "\n".join(lines + notes)


def render(result: RunResult) -> str:
    m = result.metadata
    lines = [
        f"# copybench: {result.suite}",
        "",
        f"- status: **{result.status}**, started {result.started}",
        f"- host: {m.get('hostname')} — kernel {m.get('kernel')}, {m.get('cpu_model')}, "
        f"{m.get('cpu_count')} CPUs, virtualization: {m.get('virtualization')}",
        f"- copybench {m.get('libraries', {}).get('copybench')} (git {m.get('git_sha')}), "
        f"reference: iperf3 {m.get('tools', {}).get('iperf3')}",
        "",
        table(result),
        "",
        *(["## Copies (one traced sample per case)", "", copies_table(result), ""]
          if copies_table(result) else []),
        "Gbit/s: verified payload bytes at the receiver over the window from the sender's first "
        "send to the receiver's last byte (median of repeats, ± stdev). ratio = ours / reference "
        "(iperf3, same size, same topology, same socket buffers). CPU s/GB: CPU-seconds per 1e9 "
        "payload bytes, per agent process (user+sys) and system-wide softirq.",
    ]
    return "\n".join(lines) + "\n"
