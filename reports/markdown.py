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
        "Gbit/s: verified payload bytes at the receiver over the window from the sender's first "
        "send to the receiver's last byte (median of repeats, ± stdev). ratio = ours / reference "
        "(iperf3, same size, same topology, same socket buffers). CPU s/GB: CPU-seconds per 1e9 "
        "payload bytes, per agent process (user+sys) and system-wide softirq.",
    ]
    return "\n".join(lines) + "\n"
