"""CPU accounting from /proc/stat and derived per-GB figures. `proc` root is a parameter so
tests can feed captured files."""

from __future__ import annotations

import os
from pathlib import Path

CPU_FIELDS = ("user", "nice", "system", "idle", "iowait", "irq", "softirq", "steal")
# Time this machine's CPUs spent working for anyone here. Not idle/iowait (nobody's), not
# steal (another guest's time on the hypervisor). Every CPU-second is in exactly one field of
# /proc/stat, so this sum counts each once.
BUSY_FIELDS = ("user", "nice", "system", "irq", "softirq")


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
    d["busy"] = round(sum(d[k] for k in BUSY_FIELDS), 6)
    return d


def irq_time_accounting(proc: Path = Path("/proc"), boot: Path = Path("/boot"),
                        release: str | None = None) -> bool | None:
    """CONFIG_IRQ_TIME_ACCOUNTING of the running kernel (None: config not readable).

    Without it (tick-based accounting) a softirq that interrupts a task is charged both to
    /proc/stat's softirq and to that task's system time: the per-process figures then already
    hold softirq work, and adding /proc/stat softirq to them would count it twice."""
    import gzip
    text = None
    try:
        text = gzip.decompress((proc / "config.gz").read_bytes()).decode(errors="replace")
    except OSError:
        try:
            text = (boot / f"config-{release or os.uname().release}").read_text()
        except OSError:
            return None
    return "CONFIG_IRQ_TIME_ACCOUNTING=y" in text


def two_machines(tx: dict | None, rx: dict | None) -> dict:
    """System CPU of a two-node sample: each side's machine as its agent measured it, summed."""
    tx, rx = tx or {}, rx or {}
    out = {"sender_machine": tx, "receiver_machine": rx}
    for key in ("softirq", "busy"):
        if key in tx and key in rx:
            out[key] = round(tx[key] + rx[key], 6)
    return out


def one_machine(tx_cpu: dict | None, rx_cpu: dict | None) -> dict:
    """System CPU of a sample whose two agents ran on one remote machine: from the sender's
    start to the receiver's end, the transfer. The receiver's own window opens when it is
    ready, before the sender is even configured (UDP), so alone it spans idle time too.
    Agents without raw readings: the receiver's window, as before."""
    a = (tx_cpu or {}).get("machine_at") or {}
    b = (rx_cpu or {}).get("machine_at") or {}
    start, end = a.get("start"), b.get("end")
    if start and end and all(k in start and k in end for k in ("softirq", "busy")):
        return {k: round(end[k] - start[k], 6) for k in end if k in start}
    return dict((rx_cpu or {}).get("machine") or {})


def per_gb(seconds: float | None, nbytes: int) -> float | None:
    """CPU-seconds per GB (1e9 bytes) moved; None when nothing was moved."""
    if seconds is None or nbytes <= 0:
        return None
    return seconds / (nbytes / 1e9)


RECEIVER_CLOCK = "receiver: first to last verified byte (one CLOCK_MONOTONIC)"
SAME_MACHINE_CLOCK = "sender's first send to receiver's last byte (one machine's CLOCK_MONOTONIC)"


def window_of(tx: dict, rx: dict, same_clock: bool) -> tuple[float | None, int, str | None]:
    """(seconds, bytes delivered in it, which clock) for one sample: never two machines' clocks.

    The receiver's own clock from its first to its last verified byte; the bytes of the first
    receive arrived at the window's start, so they are not counted in it. When the receiver saw
    a single receive, the sender's start serves only if both ran on one machine (one clock)."""
    nbytes = int(rx.get("bytes", 0))
    t0, t1 = rx.get("t_first"), rx.get("t_last")
    if t0 is not None and t1 is not None and t1 > t0:
        first = int(rx.get("first_bytes") or 0)
        return t1 - t0, max(nbytes - first, 0), RECEIVER_CLOCK
    ts = tx.get("t_start")
    if same_clock and ts is not None and t1 is not None and t1 > ts:
        return t1 - ts, nbytes, SAME_MACHINE_CLOCK
    return None, nbytes, None


def derive(tx: dict, rx: dict, system: dict, size: int, same_clock: bool = True) -> dict:
    """Throughput and CPU figures of one sample from the agents' own reports.

    Throughput: verified bytes over a window on one clock (`window_of`). CPU per GB: each
    agent's user+sys per byte it handled (sender: sent, receiver: received); system: every
    busy CPU-second of the machine(s) once, per byte received."""
    nbytes = int(rx.get("bytes", 0))
    sent_bytes = int(tx.get("bytes", 0)) or int(tx.get("messages", 0)) * size
    window, wbytes, clock = window_of(tx, rx, same_clock)
    tx_cpu = tx["cpu"]["user_s"] + tx["cpu"]["sys_s"]
    rx_cpu = rx["cpu"]["user_s"] + rx["cpu"]["sys_s"]
    messages = int(rx.get("messages", 0))
    out = {
        "bytes": nbytes,
        "messages": messages,
        "messages_sent": int(tx.get("messages", 0)),
        "window_s": round(window, 6) if window else None,
        "window_bytes": wbytes if window else None,
        "clock": clock,
        "gbps": round(wbytes * 8 / window / 1e9, 6) if window else None,
        "msgs_per_s": round(wbytes / size / window, 1) if window and size else None,
        "cpu": {
            "sender": tx["cpu"], "receiver": rx["cpu"],
            "softirq_s": system.get("softirq"), "system_busy_s": system.get("busy"),
            **{k: system[k] for k in ("sender_machine", "receiver_machine") if k in system},
        },
        "cpu_s_per_gb": {
            "sender": _r(per_gb(tx_cpu, sent_bytes)),
            "receiver": _r(per_gb(rx_cpu, nbytes)),
            "softirq": _r(per_gb(system.get("softirq"), nbytes)),
            "system": _r(per_gb(system.get("busy"), nbytes)),
        },
    }
    gap = stream_gap(tx, rx)
    if gap is not None:
        out["stream_gap_bytes"] = gap
    if rx.get("sequence") is not None:
        # datagrams: gaps (loss), duplicates and late arrivals by sequence number
        out["sequence"] = rx["sequence"]
    sent = out["messages_sent"]
    if sent:
        out["loss_pct"] = round(100.0 * max(sent - out["messages"], 0) / sent, 3)
    return out


def stream_gap(tx: dict, rx: dict) -> int | None:
    """A stream's bytes seen by the receiver less those the sender sent (TCP paths, RDMA):
    anything but 0 is a payload error, a loss or duplicate at the stream's end included, which
    no later message could show. None for datagrams (they may be lost: `sequence` says how)."""
    if "sequence" in rx or "bytes_seen" not in rx or tx.get("bytes") is None:
        return None
    return int(rx["bytes_seen"]) - int(tx["bytes"])


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


# An agent whose process was on a CPU this share of its measured wall time was itself the
# limit: one Python thread cannot go faster, whatever the path could carry.
AGENT_LIMIT = 0.90


def agent_busy(samples: list[dict], side: str) -> float | None:
    """CPU-seconds (user + sys) over wall seconds of one agent (`sender` or `receiver`) summed
    over `samples`, from each agent's own CpuWindow: the share of one CPU it used. None when no
    sample recorded its wall time (results from before wall_s). Several flows: each flow's
    own process of that side, and the busiest of them."""
    cpu: dict[int, float] = {}
    wall: dict[int, float] = {}
    for s in samples:
        procs = [(f["flow"], (f.get("cpu") or {}).get(side) or {}) for f in s["flows"]] \
            if s.get("flows") else [(0, ((s.get("cpu") or {}).get(side)) or {})]
        for i, c in procs:
            if c.get("wall_s"):
                cpu[i] = cpu.get(i, 0.0) + float(c.get("user_s") or 0) + float(c.get("sys_s") or 0)
                wall[i] = wall.get(i, 0.0) + float(c["wall_s"])
    busy = [cpu[i] / wall[i] for i in wall if wall[i] > 0]
    return max(busy) if busy else None


def agent_limit_note(samples: list[dict]) -> str | None:
    """The row note naming each agent that used >= AGENT_LIMIT of one CPU in `samples`."""
    parts = []
    for side in ("sender", "receiver"):
        busy = agent_busy(samples, side)
        if busy is not None and busy >= AGENT_LIMIT:
            parts.append(f"limited by the {side} agent ({100 * busy:.0f}% of one CPU)")
    return "; ".join(parts) or None
