"""Several flows in one sample, pure: per-flow figures, the aggregate over one clock, Jain's
fairness index, and the side names that keep each flow's processes apart in the tracers.

Every flow is its own sender and receiver process (no shared interpreter). The aggregate is
measured on the receivers' machine clock (all receivers run on one machine): from the first
verified byte of any flow to the last of any flow, all bytes but the first receive of the
flow that opened the window (it arrived at the window's start, as for one flow). CPU per GB:
each side's processes summed, per byte that side handled; system CPU counted once for the
whole sample. Jain's index over the flows' own throughputs: 1 when all are equal, 1/N when
one flow took everything.
"""

from __future__ import annotations

from bench import metrics

FLOW_SEP = "."          # "sender.1": flow 1's sender; flow 0 keeps the plain side names


def flow_side(role: str, i: int) -> str:
    """The tracer side name of flow i's `role` ("sender" / "receiver")."""
    return role if i == 0 else f"{role}{FLOW_SEP}{i}"


def base_side(side: str) -> tuple[str, int]:
    """'sender.2' -> ('sender', 2); 'receiver' -> ('receiver', 0); others as they are."""
    role, sep, idx = side.partition(FLOW_SEP)
    return (role, int(idx)) if sep and idx.isdigit() else (side, 0)


def jain(values: list[float]) -> float | None:
    """Jain's fairness index (sum x)^2 / (n * sum x^2); None without positive values."""
    xs = [v for v in values if v is not None]
    sq = sum(x * x for x in xs)
    if not xs or not sq:
        return None
    return round(sum(xs) ** 2 / (len(xs) * sq), 6)


def _sum_cpu(cpus: list[dict]) -> dict:
    out = {k: round(sum(c.get(k, 0.0) for c in cpus), 6) for k in ("user_s", "sys_s")}
    out["wall_s"] = max((c.get("wall_s") or 0.0) for c in cpus)
    out["processes"] = len(cpus)
    return out


def _window(rx: list[dict]) -> tuple[float | None, int]:
    """(seconds, bytes in it) from the first verified byte of any flow to the last of any."""
    spans = [(r["t_first"], r["t_last"], r) for r in rx
             if r.get("t_first") is not None and r.get("t_last") is not None]
    if not spans:
        return None, 0
    t0, _, opener = min(spans, key=lambda s: s[0])
    t1 = max(s[1] for s in spans)
    total = sum(int(r.get("bytes", 0)) for r in rx)
    if t1 <= t0:
        return None, total
    return t1 - t0, max(total - int(opener.get("first_bytes") or 0), 0)


def aggregate(tx: list[dict], rx: list[dict], system: dict, size: int,
              cpus: list[tuple[int | None, int | None]], same_clock: bool = True) -> dict:
    """One sample of N flows: the aggregate fields a one-flow sample has (bytes, messages,
    window, gbps, cpu, cpu_s_per_gb, stream gap, loss) and `flows` (each flow's own figures,
    its CPUs) and `fairness` (Jain's index over the flows' Gbit/s)."""
    per = []
    for i, (t, r) in enumerate(zip(tx, rx, strict=True)):
        f = metrics.derive(t, r, {}, size, same_clock=same_clock)
        f["payload_errors"] = int(r.get("bad", 0)) + int(bool(f.get("stream_gap_bytes")))
        f["flow"] = i
        f["cpus"] = {"sender": cpus[i][0], "receiver": cpus[i][1]}
        f["cpu"] = {"sender": t["cpu"], "receiver": r["cpu"]}
        if "rdma" in t or "rdma" in r:      # each flow's own QP: WRs, completions, sleeps
            f["rdma"] = {"sender": t.get("rdma"), "receiver": r.get("rdma")}
        per.append(f)
    nbytes = sum(int(r.get("bytes", 0)) for r in rx)
    sent = sum(int(t.get("bytes", 0)) or int(t.get("messages", 0)) * size for t in tx)
    window, wbytes = _window(rx)
    tx_cpu, rx_cpu = _sum_cpu([t["cpu"] for t in tx]), _sum_cpu([r["cpu"] for r in rx])
    out = {
        "bytes": nbytes,
        "messages": sum(int(r.get("messages", 0)) for r in rx),
        "messages_sent": sum(int(t.get("messages", 0)) for t in tx),
        "window_s": round(window, 6) if window else None,
        "window_bytes": wbytes if window else None,
        "clock": (metrics.RECEIVER_CLOCK + ": the receivers' machine, first byte of any flow "
                  "to the last of any") if window else None,
        "gbps": round(wbytes * 8 / window / 1e9, 6) if window else None,
        "msgs_per_s": round(wbytes / size / window, 1) if window and size else None,
        "cpu": {"sender": tx_cpu, "receiver": rx_cpu,
                "softirq_s": system.get("softirq"), "system_busy_s": system.get("busy"),
                **{k: system[k] for k in ("sender_machine", "receiver_machine") if k in system}},
        "cpu_s_per_gb": {
            "sender": _r(metrics.per_gb(tx_cpu["user_s"] + tx_cpu["sys_s"], sent)),
            "receiver": _r(metrics.per_gb(rx_cpu["user_s"] + rx_cpu["sys_s"], nbytes)),
            "softirq": _r(metrics.per_gb(system.get("softirq"), nbytes)),
            "system": _r(metrics.per_gb(system.get("busy"), nbytes)),
        },
        "payload_errors": sum(f["payload_errors"] for f in per),
        "flows": per,
        "fairness": {"jain": jain([f.get("gbps") for f in per]), "of": "Gbit/s per flow",
                     "flows": len(per)},
    }
    gaps = [f["stream_gap_bytes"] for f in per if "stream_gap_bytes" in f]
    if gaps:
        out["stream_gap_bytes"] = sum(abs(g) for g in gaps)
    if out["messages_sent"] and any("sequence" in r for r in rx):
        out["loss_pct"] = round(100.0 * max(out["messages_sent"] - out["messages"], 0)
                                / out["messages_sent"], 3)
    return out


def _r(x: float | None) -> float | None:
    return None if x is None else round(x, 6)


def summed(reports: list[dict | None]) -> dict | None:
    """Per-flow kernel reports (MSG_ZEROCOPY completions) as one: counts added, flags true
    only if true in every flow, anything else taken from the first flow that has it."""
    reports = [r for r in reports if r]
    if not reports:
        return None
    out: dict = {}
    for r in reports:
        for k, v in r.items():
            if isinstance(v, bool):
                out[k] = out.get(k, True) and v
            elif isinstance(v, (int, float)):
                out[k] = out.get(k, 0) + v
            else:
                out.setdefault(k, v)
    out["flows_summed"] = len(reports)
    return out
