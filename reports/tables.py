"""Rows of the comparison table, computed from a result. Pure: reporting never measures."""

from __future__ import annotations

from dataclasses import dataclass

from bench.metrics import agent_limit_note
from bench.results import CaseResult, RunResult, rdma_retransmits


@dataclass(frozen=True)
class Row:
    case: str
    workload: str
    size: int
    topology: str
    status: str
    gbps: float | None = None
    gbps_range: str | None = None       # min-max of the measured repeats
    spread_pct: float | None = None     # (max - min) / median
    mmsgs: float | None = None
    ref_gbps: float | None = None
    ratio: float | None = None
    tx_cpu_gb: float | None = None
    rx_cpu_gb: float | None = None
    tx_sys_gb: float | str | None = None    # the sender's syscalls per GB sent (≥: lossy)
    rx_sys_gb: float | str | None = None    # the receiver's per GB received
    ref_cpu_gb: str | None = None       # iperf3's sender / receiver CPU per GB
    softirq_gb: float | None = None
    loss_pct: float | None = None
    note: str = ""


def _median(cr: CaseResult, key: str, which: str = "samples") -> float | None:
    st = cr.stat(key, which)
    return st["median"] if st else None


def case_row(cr: CaseResult) -> Row:
    if cr.status == "skipped" or not cr.samples:
        note = cr.reason or ""
        if cr.fix:
            note += f" — fix: {cr.fix}"
        return Row(cr.id, cr.workload, cr.size, cr.topology, cr.status, note=note)
    gbps = _median(cr, "gbps")
    ref = _median(cr, "gbps", "reference")
    st = cr.stat("gbps")
    msgs = _median(cr, "msgs_per_s")
    errors = [r["error"] for r in cr.reference if r.get("error")]
    note = cr.reason or ""
    zr = [s["zerocopy_receive"] for s in cr.measured() if s.get("zerocopy_receive")]
    if zr:
        mapped = sum(z["mapped_bytes"] for z in zr)
        total = mapped + sum(z["copied_bytes"] for z in zr)
        if total:
            note = (f"TCP_ZEROCOPY_RECEIVE: {100 * mapped / total:.0f}% of bytes mapped, "
                    f"{100 * (total - mapped) / total:.0f}% copied" + ("; " + note if note else ""))
    zc = [s["zerocopy"] for s in cr.measured() if s.get("zerocopy")]
    if zc:
        done = sum(z["completed"] for z in zc)
        copied = sum(z["copied"] for z in zc)
        api = zc[0].get("api", "MSG_ZEROCOPY")
        flag = ("IORING_NOTIF_USAGE_ZC_COPIED" if api.startswith("io_uring")
                else "SO_EE_CODE_ZEROCOPY_COPIED")
        if done:
            note = (f"{api}: {100 * (done - copied) / done:.0f}% of {done} sends zerocopy, "
                    f"{100 * copied / done:.0f}% copied by the kernel ({flag})"
                    + ("; " + note if note else ""))
    if errors:
        note = (note + "; " if note else "") + f"reference failed: {errors[0]}"
    rtx_note = _retransmits(cr)
    if rtx_note:
        note = (note + "; " if note else "") + rtx_note
    busy = agent_limit_note(cr.measured())
    if busy:
        note = (note + "; " if note else "") + busy
    waits = _rdma_wait(cr)
    if waits:
        note = (note + "; " if note else "") + waits
    util = _machine_user(cr)
    if util:
        note = (note + "; " if note else "") + util
    from reports import flows
    several = flows.note(cr)
    if several:
        note = (note + "; " if note else "") + several
    peer = (cr.params or {}).get("reference_note")
    if peer and not cr.reference:
        note = (note + "; " if note else "") + peer
    rtx, rrx = _median(cr, "cpu_s_per_gb.sender", "reference"), _median(
        cr, "cpu_s_per_gb.receiver", "reference")
    return Row(
        cr.id, cr.workload, cr.size, cr.topology, cr.status,
        gbps=gbps, gbps_range=f"{st['min']:.3f}–{st['max']:.3f}" if st and st["n"] > 1 else None,
        spread_pct=st["spread_pct"] if st and st["n"] > 1 else None,
        mmsgs=msgs / 1e6 if msgs is not None else None,
        ref_gbps=ref, ratio=(gbps / ref) if (gbps and ref) else None,
        tx_cpu_gb=_median(cr, "cpu_s_per_gb.sender"), rx_cpu_gb=_median(cr, "cpu_s_per_gb.receiver"),
        tx_sys_gb=syscalls_per_gb(cr, "sender"), rx_sys_gb=syscalls_per_gb(cr, "receiver"),
        ref_cpu_gb=(f"{rtx:.3f} / {rrx:.3f}" if rtx is not None and rrx is not None else None),
        softirq_gb=_median(cr, "cpu_s_per_gb.softirq"), loss_pct=_median(cr, "loss_pct"),
        note=note,
    )


def _retransmits(cr: CaseResult) -> str | None:
    """How many measured samples the RDMA transport retransmitted in, ours and the
    reference's side by side: soft-RoCE's retransmit timer also fires while ACKs keep coming
    (once per QP timeout, DESIGN.md "RDMA"), so a count alone is no fault of either."""
    parts = []
    for who, rows in (("ours", cr.measured()), (_tool(cr), cr.measured("reference"))):
        counts = [c for c in (rdma_retransmits(s) for s in rows) if c is not None]
        hit = [c for c in counts if c[0] or c[1]]
        if hit:
            parts.append(f"{who} in {len(hit)} of {len(counts)} samples "
                         f"({sum(c[0] for c in hit)} timeouts, "
                         f"{sum(c[1] for c in hit)} duplicate packets)")
    return "RDMA retransmitted: " + "; ".join(parts) if parts else None


def _tool(cr: CaseResult, default: str = "reference") -> str:
    """The reference tool's name, from the first reference row that has one."""
    return next((r.get("tool") for r in cr.reference if r.get("tool")), default)


def _rdma_wait(cr: CaseResult) -> str | None:
    """How ours and perftest waited for completions (the reference rows' method.wait, from
    the suite's rdma_wait), with our agents' measured sleeps; loud where not like for like."""
    w = next((r["method"]["wait"] for r in cr.reference if not r.get("warmup")
              and isinstance((r.get("method") or {}).get("wait"), dict)), None)
    if w is None:
        return None
    tool = _tool(cr, "perftest")
    blocks = [((s.get("rdma") or {}).get(side) or {}) for s in cr.measured()
              for side in ("sender", "receiver")]
    if w["ours"] == "poll":
        ours = "ours busy-poll"
    else:
        limit = next((b["spin_limit_s"] for b in blocks if b.get("spin_limit_s") is not None),
                     None)
        spin = f"spin ≤{limit * 1e3:g} ms, then " if limit else ""
        sleeps = sorted(b.get("sleeps", 0) for b in blocks)
        ours = (f"ours {spin}sleep on CQ events"
                + (f" (median {sleeps[len(sleeps) // 2]} sleeps per agent and sample)"
                   if sleeps else ""))
    theirs = f"{tool} " + ("-e sleeps on CQ events" if w["reference"] == "events"
                           else "busy-polls")
    if w.get("like_for_like"):
        return f"waiting: {ours}; {theirs}"
    return (f"waiting NOT like for like: {ours}; {theirs} ({w.get('unlike')}"
            + (f"; fix: {w['fix']})" if w.get("fix") else ")"))


def _machine_user(cr: CaseResult) -> str | None:
    """perftest's CPU_util as perftest means it (bench.perftest.CPU_UTIL_MEANING): the median
    over the reference samples, per end, labelled as the whole machine's user share."""
    vals: dict[str, list[float]] = {}
    for r in cr.reference:
        for end, v in (r.get("machine_user_pct") or {}).items():
            if v is not None:
                vals.setdefault(end, []).append(float(v))
    if not vals:
        return None
    tool = _tool(cr, "perftest")
    parts = [f"{end} {sorted(v)[len(v) // 2]:.0f}%" for end, v in sorted(vals.items())]
    return (f"{tool} CPU_util (whole machine, user time only, not its own CPU): "
            + " / ".join(parts))


def syscalls_per_gb(cr: CaseResult, side: str) -> float | str | None:
    """Calls per GB of payload from the case's counted sample; "≥N" when the kernel reported
    loss (a lower bound); None when not counted (older results, --syscalls off)."""
    sc = getattr(cr, "syscalls", None) or {}
    d = (sc.get("sides") or {}).get(side) if sc.get("status") == "ok" else None
    if not d or d.get("per_gb") is None:
        return None
    value = float(d["per_gb"])
    return f"≥{fmt(value)}" if d.get("quality") == "lossy" else value


def rows(result: RunResult) -> list[Row]:
    """The bandwidth table's rows: every case but the measured request/response ones (their
    round trips have a table of their own, reports/latency.py; failed ones say why here)."""
    return [case_row(c) for c in result.cases if not (c.is_latency and c.status == "ok")]


COLUMNS = [
    ("case", "case"), ("status", "status"), ("gbps", "Gbit/s"), ("gbps_range", "min–max"),
    ("spread_pct", "spread %"), ("mmsgs", "Mmsg/s"), ("ref_gbps", "ref Gbit/s"), ("ratio", "ratio"),
    ("tx_cpu_gb", "sender CPU s/GB"), ("rx_cpu_gb", "receiver CPU s/GB"),
    ("tx_sys_gb", "sender syscalls/GB"), ("rx_sys_gb", "receiver syscalls/GB"),
    ("ref_cpu_gb", "ref CPU s/GB (tx / rx)"),
    ("softirq_gb", "softirq s/GB"), ("loss_pct", "loss %"), ("note", "note"),
]


def fmt(value) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.3f}" if abs(value) < 100 else f"{value:.0f}"
    return str(value)
