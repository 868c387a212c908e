"""Per TCP_ZEROCOPY_RECEIVE row: its receiver CPU against tcp's on the same topology and size,
where that CPU went, the kernel's own reference figures, and the measured reason when ours
differs from them. Pure: reads a result, computes medians, never measures.

Units: µs of receiver CPU (user + sys, getrusage) per MiB received, tcp_mmap's own unit (its MB
is 2^20 bytes): µs/MiB = CPU s/GB (1e9 B) x 1048.576.
"""

from __future__ import annotations

from statistics import median

from bench.results import RunResult

WORKLOADS = ("tcp_zerocopy_receive", "tcp_zerocopy_receive_send")
PAGE = 4096
US_PER_MIB_PER_S_PER_GB = (1 << 20) * 1e6 / 1e9     # CPU s/GB -> µs/MiB: x 1048.576
GOAL = 2.0                        # the kernel's figures: mapping about 2x cheaper than copying
# tools/testing/selftests/net/tcp_mmap.c's header (bare metal, loopback, IPv6 at MTU 61512,
# MSG_ZEROCOPY sender, no verification) and commit 93ab6cc69162 (a 40 GbE NIC).
REFERENCE = ("bare metal (the kernel's tcp_mmap header, loopback, MSG_ZEROCOPY sender, no "
             "payload check): 202–251 µs/MB with copies (18–25 Gbit/s) against 88–110, about "
             "107 µs/MB with TCP_ZEROCOPY_RECEIVE (99.99% mapped, 36–41 Gbit/s), about 2x less; "
             "commit 93ab6cc69162 on a 40 GbE NIC: 116–129 against 45.5 µs/MB. Its MB is 2^20 bytes")
STEPS = (("getsockopt_s", "map (getsockopt)"), ("madvise_s", "unmap (madvise)"),
         ("verify_s", "verify"), ("recv_s", "copy (recv)"), ("poll_s", "poll"))


def _measured(case) -> list[dict]:
    return [s for s in case.samples if s and not s.get("warmup") and s.get("bytes")]


def _us_per_mib(seconds: float | None, nbytes: int) -> float | None:
    return None if seconds is None or not nbytes else seconds / nbytes * (1 << 20) * 1e6


def _rx_us(s: dict) -> float | None:
    cpu = (s.get("cpu") or {}).get("receiver") or {}
    if cpu.get("user_s") is None:
        return None
    return _us_per_mib(cpu["user_s"] + cpu.get("sys_s", 0.0), s["bytes"])


def _remote(tlb: dict) -> int | None:
    by = tlb.get("by_reason")
    if by is None or not tlb.get("by_reason_complete"):
        return None
    return sum(n for k, n in by.items() if k.startswith("remote"))


def _med(values) -> float | None:
    vals = [v for v in values if v is not None]
    return median(vals) if vals else None


def rows(result: RunResult) -> list[dict]:
    """One dict per zerocopy-receive case that ran: medians over its measured samples."""
    tcp = {(c.topology, c.size): c for c in result.cases if c.workload == "tcp" and _measured(c)}
    out = []
    for c in result.cases:
        if c.workload not in WORKLOADS or not _measured(c):
            continue
        ss = _measured(c)
        zs = [(s, s.get("zerocopy_receive") or {}) for s in ss]
        z0 = zs[-1][1]
        steps = {k: _med(_us_per_mib((z.get("breakdown") or {}).get(k), s["bytes"]) for s, z in zs)
                 for k, _ in STEPS}
        total = _med(_rx_us(s) for s in ss)
        accounted = sum(v for v in steps.values() if v is not None)
        twin = tcp.get((c.topology, c.size))
        tcp_us = _med(_rx_us(s) for s in _measured(twin)) if twin else None
        calibrated = _med((z.get("breakdown") or {}).get("verify_calibrated_s_per_gb") for _, z in zs)
        row = {
            "case": c.id, "topology": c.topology, "size": c.size,
            "sender": z0.get("sender"), "mapped_pct": _med(z.get("mapped_pct") for _, z in zs),
            "segment": (z0.get("segments") or {}).get("rcv_mss"),
            "page_multiple": (z0.get("segments") or {}).get("page_multiple"),
            "chunk": z0.get("chunk"), "rcvlowat": z0.get("rcvlowat_effective"),
            "mtu_set": (c.network or {}).get("mtu_set"),
            "rx_us_per_mib": total, "tcp_us_per_mib": tcp_us,
            "tcp_over_zc": tcp_us / total if tcp_us and total else None,
            "steps": steps, "other": total - accounted if total is not None else None,
            "verify_calibrated": calibrated * US_PER_MIB_PER_S_PER_GB if calibrated else None,
            "tlb_per_mib": _med(((z.get("tlb") or {}).get("per_mb")) for _, z in zs),
            # flushes that reach another CPU: an IPI, on a VM an exit
            "ipi_per_mib": _med(None if _remote(z.get("tlb") or {}) is None
                                else _remote(z.get("tlb") or {}) / (s["bytes"] / (1 << 20))
                                for s, z in zs),
            "tlb_note": (z0.get("tlb") or {}).get("note"),
            "gbps": _med(s.get("gbps") for s in ss), "n": len(ss),
        }
        out.append(row)
    # the plain-send row's recv copied the same whole-page segments: what a copy costs here
    copy = {(r["topology"], r["size"]): r["steps"].get("recv_s") for r in out
            if r["sender"] == "send" and r["mapped_pct"] == 0}
    for r in out:
        r["copy_elsewhere"] = copy.get((r["topology"], r["size"])) if r["sender"] != "send" else None
        r["reason"] = reason(r)
    return out


def reason(r: dict) -> str:
    """Why this row is not the kernel's 2x, from its own measurements."""
    mapped, total, tcp = r["mapped_pct"], r["rx_us_per_mib"], r["tcp_us_per_mib"]
    if mapped is not None and mapped < 99:
        if r["page_multiple"] is False:
            return (f"{mapped:.1f}% mapped: segments carry {r['segment']} B, not whole pages "
                    "(use a KIND-mtuN topology)")
        if r["sender"] == "send":
            return (f"{mapped:.1f}% mapped although segments carry whole pages "
                    f"({r['segment']} B), so every byte is copied by recv(): a plain send() fills "
                    "skbs from the socket's page fragments, compound (order-3) pages, and the "
                    "kernel maps no compound page (can_map_frag, 6.8 on; the cause read from its "
                    "source, the 0% measured)")
        return f"{mapped:.1f}% mapped with {r['segment']} B segments: the rest copied by recv()"
    if tcp is None or total is None:
        return "no tcp row on this topology and size in the run to hold it against"
    st = r["steps"]
    unmap = (st.get("getsockopt_s") or 0) + (st.get("madvise_s") or 0)
    if tcp / total >= GOAL:
        return f"{tcp / total:.2f}x cheaper than tcp per MiB: the kernel's 2x holds here"
    per_page = unmap / ((1 << 20) / PAGE)
    ipi = r.get("ipi_per_mib")
    tlb = ("" if r["tlb_per_mib"] is None else
           f"; TLB flushes {r['tlb_per_mib']:.1f}/MiB"
           + ("" if ipi is None else f", {ipi:.2f}/MiB to another CPU (IPIs)"))
    return (f"{mapped:.1f}% mapped, yet mapping and unmapping alone cost {unmap:.0f} µs/MiB "
            f"({per_page:.2f} µs per 4 KiB page; getsockopt {st.get('getsockopt_s') or 0:.0f}, "
            f"madvise {st.get('madvise_s') or 0:.0f}) against {tcp:.0f} µs/MiB for tcp's whole "
            f"receive, copy and verify included; verify {st.get('verify_s') or 0:.0f} µs/MiB "
            f"(tcp_mmap verifies nothing){tlb}"
            + ("" if r.get("copy_elsewhere") is None else
               f"; recv() copied the same segments for {r['copy_elsewhere']:.0f} µs/MiB "
               "(the plain-send row)"))


HEAD = ["case", "sender", "mapped %", "segment B", "chunk / SO_RCVLOWAT", "Gbit/s",
        "receiver µs/MiB", "tcp µs/MiB (same topology, size)", "tcp / ours",
        "map", "unmap", "verify (calibrated)", "copy (recv)", "poll", "other", "TLB flushes/MiB"]


def _r(v):
    return None if v is None else round(v)


def table_rows(rs: list[dict]) -> list[list]:
    out = []
    for r in rs:
        st = {k: _r(v) for k, v in r["steps"].items()}
        ver = st.get("verify_s")
        out.append([r["case"], r["sender"], r["mapped_pct"], r["segment"],
                    f"{r['chunk']} / {r['rcvlowat']}" if r["chunk"] else None, r["gbps"],
                    _r(r["rx_us_per_mib"]), _r(r["tcp_us_per_mib"]),
                    None if r["tcp_over_zc"] is None else round(r["tcp_over_zc"], 2),
                    st.get("getsockopt_s"), st.get("madvise_s"),
                    None if ver is None else f"{ver:.0f} ({r['verify_calibrated'] or 0:.0f})",
                    st.get("recv_s"), st.get("poll_s"), _r(r["other"]),
                    r["tlb_per_mib"] if r["tlb_per_mib"] is not None else r["tlb_note"]])
    return out


METHOD = ("Receiver CPU: the agent's user+sys (getrusage) per MiB it received, median of the "
          "measured repeats; tcp's from the tcp row of the same run, topology and size. Steps: "
          "the receiver thread's CPU time (CLOCK_THREAD_CPUTIME_ID) between calls, per MiB, "
          "their clock reads included in the total; verify (calibrated): the same check on "
          "bytes already in memory, timed in the agent. other = total − the steps (Python, "
          "softirq charged to the receiver). TLB flushes: tlb:tlb_flush events of the "
          "receiver's threads. segment: the peer's payload per segment (TCP_INFO rcv_mss).")
