"""CPU accounting from /proc/stat and derived per-GB figures. `proc` root is a parameter so
tests can feed captured files."""

from __future__ import annotations

import os
from pathlib import Path

CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")


def read_cpu_times(proc: Path = Path("/proc")) -> dict[str, float]:
    """System-wide CPU seconds per state (first line of /proc/stat)."""
    hz = os.sysconf("SC_CLK_TCK")
    with open(proc / "stat") as f:
        parts = f.readline().split()
    return parse_cpu_line(parts, hz)


def parse_cpu_line(parts: list[str], hz: int) -> dict[str, float]:
    if not parts or parts[0] != "cpu":
        raise ValueError("not an aggregate cpu line")
    values = [int(x) for x in parts[1:1 + len(CPU_FIELDS)]]
    return {name: v / hz for name, v in zip(CPU_FIELDS, values, strict=False)}


def cpu_delta(before: dict[str, float], after: dict[str, float]) -> dict[str, float]:
    d = {k: round(after[k] - before[k], 6) for k in CPU_FIELDS}
    d["busy"] = round(sum(v for k, v in d.items() if k not in ("idle", "iowait")), 6)
    return d


def two_machines(tx: dict | None, rx: dict | None) -> dict:
    """System CPU of a two-node sample: each side's machine as its agent measured it, summed."""
    tx, rx = tx or {}, rx or {}
    out = {"sender_machine": tx, "receiver_machine": rx}
    for key in ("softirq", "busy"):
        if key in tx and key in rx:
            out[key] = round(tx[key] + rx[key], 6)
    return out


def per_gb(seconds: float | None, nbytes: int) -> float | None:
    """CPU-seconds per GB (1e9 bytes) moved; None when nothing was moved."""
    if seconds is None or nbytes <= 0:
        return None
    return seconds / (nbytes / 1e9)


def derive(tx: dict, rx: dict, system: dict, size: int) -> dict:
    """Throughput and CPU figures of one sample from the agents' own reports.

    The window runs from the sender's first send to the receiver's last verified byte, so a
    receiver that falls behind is charged for it."""
    nbytes = int(rx.get("bytes", 0))
    t0, t1 = tx.get("t_start"), rx.get("t_last")
    window = (t1 - t0) if (t0 is not None and t1 is not None and t1 > t0) else None
    tx_cpu = tx["cpu"]["user_s"] + tx["cpu"]["sys_s"]
    rx_cpu = rx["cpu"]["user_s"] + rx["cpu"]["sys_s"]
    out = {
        "bytes": nbytes,
        "messages": int(rx.get("messages", 0)),
        "messages_sent": int(tx.get("messages", 0)),
        "window_s": round(window, 6) if window else None,
        "gbps": round(nbytes * 8 / window / 1e9, 6) if window else None,
        "msgs_per_s": round(rx.get("messages", 0) / window, 1) if window else None,
        "cpu": {
            "sender": tx["cpu"], "receiver": rx["cpu"],
            "softirq_s": system.get("softirq"), "system_busy_s": system.get("busy"),
            **{k: system[k] for k in ("sender_machine", "receiver_machine") if k in system},
        },
        "cpu_s_per_gb": {
            "sender": _r(per_gb(tx_cpu, nbytes)),
            "receiver": _r(per_gb(rx_cpu, nbytes)),
            "softirq": _r(per_gb(system.get("softirq"), nbytes)),
            "system": _r(per_gb(system.get("busy"), nbytes)),
        },
    }
    sent = out["messages_sent"]
    if sent:
        out["loss_pct"] = round(100.0 * max(sent - out["messages"], 0) / sent, 3)
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 6)
