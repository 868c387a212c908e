"""The runner's glue to the tracers: summarise one traced sample per side.

The seed's questions, per sample and side: how many copies, how many bytes, copies per
message, bytes copied per payload byte, time per copy — and which backend and symbols said so,
and whether each figure is exact, an estimate, or lossy (the kernel reported losses).

Copies that a zerocopy path moves rather than avoids are shown where they happened: a
MSG_ZEROCOPY skb delivered locally is copied later by `skb_copy_ubufs` (softirq, often in the
sender's own context, or in ksoftirqd). Those copies are "deferred" copies of the sender's data
and count in its "total copied per payload byte" beside COPY#1. Where no probe can see them (a
kprobe-less host), the kernel's own completion reports (`SO_EE_CODE_ZEROCOPY_COPIED`,
`IORING_NOTIF_USAGE_ZC_COPIED`) fill that figure, labelled as such. A zerocopy row whose
deferred copies nobody could see has no total: it must not look copy-free.
"""

from __future__ import annotations

from collections import defaultdict

from bench.results import SOFT_ROCE_SIDE  # the row's soft-RoCE copies, whatever context ran them
from bench.tracing.base import PointCounts

# Which logical points are "the" data copy of a side; others (rxe, zerocopy receive calls) are
# reported beside them, never summed into them.
SIDE_POINT = {"sender": "send_copy", "receiver": "recv_copy"}
DEFERRED_POINT = "zc_fallback"     # copies of MSG_ZEROCOPY pages done later: the sender's data
ZC_SEND_POINT = "zc_send"          # bytes handed over by MSG_ZEROCOPY sends (tracepoints)
SPLICED_POINT = "spliced"          # bytes sent inside sendfile/splice: page references (tracepoints)
RXE_POINT = "rxe_copy"             # soft-RoCE's own payload copies (rxe_mr_copy)
QUALITY_ORDER = ("exact", "estimate", "lossy")


def worst(qualities) -> str | None:
    qs = [q for q in qualities if q]
    return max(qs, key=QUALITY_ORDER.index) if qs else None


def _ratio(a, b, digits: int = 4):
    return round(a / b, digits) if a is not None and b else None


def _base_side(side: str) -> str:
    """'other@lab0' -> 'other': two-node runs label copies outside the agents per node."""
    return side.partition("@")[0]


def _deferred(plist_all: list[PointCounts], completions: dict | None) -> dict | None:
    """The sender's deferred copies: measured by a probe if any backend saw the point, else
    from the kernel's completion reports; None if neither exists."""
    measured = [p for p in plist_all if p.point == DEFERRED_POINT]
    if measured:
        where = sorted({p.side for p in measured if p.calls})
        out = {
            "calls": sum(p.calls for p in measured),
            "bytes": sum(p.bytes for p in measured),
            "source": "probe",
            "symbols": sorted({p.symbol for p in measured}),
            "backends": sorted({p.backend for p in measured}),
            "quality": worst(p.quality for p in measured),
            "ran_in": where,     # "sender" = its own context (softirq on its time); "other" = elsewhere
        }
        out.update(_unattributed(measured, "the zerocopy skbs' copies"))
        return out
    if completions and "copied_bytes" in completions:
        return {
            "calls": completions.get("copied", 0),
            "bytes": completions["copied_bytes"],
            "source": "completion report",
            "symbols": [completions.get("api", "SO_EE_CODE_ZEROCOPY_COPIED")],
            "backends": ["kernel completion report"],
            "quality": _report_quality(completions),
            "ran_in": [],
        }
    return None


def _unattributed(measured: list[PointCounts], what: str) -> dict:
    """Copies counted for side "other" ran outside the flow's tasks (ksoftirqd, a kworker,
    another task's softirq) and no backend tied them to this flow: they stay in the total (a
    row never looks cleaner than the kernel was), but the figure is then an upper bound for
    the flow, labelled an estimate with the share that is not proven to be the flow's."""
    other = [p for p in measured if _base_side(p.side) == "other" and p.bytes]
    if not other:
        return {}     # (calls of no bytes change no total)
    nbytes = sum(p.bytes for p in other)
    return {"unattributed": {"calls": sum(p.calls for p in other), "bytes": nbytes},
            "quality": worst([worst(p.quality for p in measured), "estimate"]),
            "attribution_note": f"{nbytes} B of {what} ran outside the flow's tasks and could "
                                "not be tied to this flow: counted, so an upper bound"}


def _report_quality(completions: dict) -> str:
    """The kernel flags whole ranges of sends "copied" when any skb of the range was copied,
    and the sender knows each send's bytes: all or none copied is exact; a mix is an upper
    bound (an estimate)."""
    if not completions.get("all_completed"):
        return "estimate"
    copied, done = completions.get("copied", 0), completions.get("completed", 0)
    return "exact" if copied in (0, done) else "estimate"


def _receiver_unseen(main: list[PointCounts], report: dict | None) -> dict | None:
    """TCP_ZEROCOPY_RECEIVE copies a sub-page remainder into copybuf inside getsockopt: a kprobe
    on _copy_to_iter sees it, the sock_recv_length tracepoint cannot. The kernel reports those
    bytes (copybuf_len), so they fill in for tracepoint counts, labelled as such."""
    if not report or not report.get("copybuf_bytes"):
        return None
    if main and not all(p.backend == "tracepoints" for p in main):
        return None      # a kprobe backend counted them in recv_copy already
    return {"calls": None, "bytes": report["copybuf_bytes"], "source": "completion report",
            "symbols": ["TCP_ZEROCOPY_RECEIVE copybuf_len"],
            "backends": ["kernel getsockopt report"], "quality": "exact", "ran_in": ["receiver"],
            "kind": "copied by the kernel inside getsockopt(TCP_ZEROCOPY_RECEIVE), unseen by "
                    "the recv tracepoint"}


def summarize(points: list[PointCounts], messages: dict[str, int], payload_bytes: dict[str, int],
              completions: dict | None = None, receive_report: dict | None = None,
              rdma: dict | None = None) -> dict:
    """Per side: calls, bytes, per-message and per-byte ratios, ns per copy, symbols, quality,
    deferred copies and the total copied per payload byte.

    `messages`/`payload_bytes` are what that side sent or received (verified), so a ratio of
    1.0 copies per message and 1.0 bytes per byte is the seed's COPY#1/COPY#4 picture.
    `completions`: the sender's zerocopy completion report (sample["zerocopy"]), if any."""
    sides: dict[str, dict] = {}
    by_side: dict[str, list[PointCounts]] = defaultdict(list)
    for p in points:
        by_side[p.side].append(p)
    zerocopy_sender = bool(completions) or any(p.point == ZC_SEND_POINT and p.calls for p in points)
    for side, plist in by_side.items():
        main = [p for p in plist if p.point == SIDE_POINT.get(side)]
        calls = sum(p.calls for p in main)
        nbytes = sum(p.bytes for p in main)
        timed = [p for p in main if p.ns_total is not None]
        ns_total = sum(p.ns_total for p in timed) if timed else None
        timed_calls = sum(p.calls for p in timed)
        probe_ns = [p.ns_probe_per_call for p in timed if p.ns_probe_per_call is not None]
        ns_probe = max(probe_ns) if probe_ns and len(probe_ns) == len(timed) else None
        raw = ns_total / timed_calls if ns_total is not None and timed_calls else None
        msgs, pb = messages.get(side, 0), payload_bytes.get(side, 0)
        lost: dict[str, int] = {}
        for p in main:
            for k, v in p.lost.items():
                lost[k] = lost.get(k, 0) + v
        quality = worst(p.quality for p in main)
        d = {
            "point": SIDE_POINT.get(side),
            "calls": calls,
            "bytes": nbytes,
            "copies_per_message": _ratio(calls, msgs),
            "bytes_per_payload_byte": _ratio(nbytes, pb),
            "ns_total": ns_total,
            # Calibrated: the probe's own cost per call (measured by the backend) subtracted.
            "ns_per_copy": (round(max(raw - ns_probe, 0.0), 1) if raw is not None and ns_probe
                            is not None else (round(raw, 1) if raw is not None else None)),
            "ns_per_copy_raw": round(raw, 1) if raw is not None else None,
            "ns_probe_per_call": ns_probe,
            "quality": quality,
            "exact": quality == "exact" if main else None,
            "calls_exact": all(p.calls_exact for p in main) if main else None,
            "bytes_exact": all(p.bytes_exact for p in main) if main else None,
            "lost": lost,
            "backends": sorted({p.backend for p in main}),
            "symbols": sorted({p.symbol for p in main if p.calls}),
            "other_points": {p.point: {"calls": p.calls, "bytes": p.bytes, "symbol": p.symbol,
                                       "quality": p.quality}
                             for p in plist if p.point != SIDE_POINT.get(side) and p.calls},
            "samples": [s for p in main for s in p.samples][:16],
            "notes": sorted({n for p in main for n in p.notes}
                            | ({"ns per copy includes the probe's own cost (no calibration for "
                                "this backend)"} if raw is not None and ns_probe is None else set())),
        }
        if side == "sender":
            d.update(_sender_totals(d, points, completions, zerocopy_sender, pb))
            d.update(_spliced(plist, d))
        elif _base_side(side) != "other":
            unseen = _receiver_unseen(main, receive_report)
            total = nbytes + (unseen["bytes"] if unseen else 0)
            if unseen:
                unseen["per_payload_byte"] = _ratio(unseen["bytes"], pb)
            d.update({"deferred": unseen, "total_bytes_copied": total,
                      "total_copied_per_payload_byte": _ratio(total, pb),
                      "total_quality": worst([quality, unseen["quality"] if unseen else None])})
        sides[side] = d
    if rdma is not None:
        _rdma_totals(sides, points, messages, payload_bytes, rdma)
    return sides


def _rdma_totals(sides: dict, points: list[PointCounts], messages: dict[str, int],
                 payload_bytes: dict[str, int], rdma: dict) -> None:
    """RDMA verbs rows: the agents' socket copies (zero on the verbs data path; the control
    connection's exchange ends before the tracer attaches) stay per side. On soft-RoCE the
    kernel itself copies every payload byte between MRs and packets (rxe_mr_copy, requester and
    responder); those copies run in whatever context rxe schedules them (the poster's syscall,
    a tasklet on someone's time), so they are the row's, not a side's: one `soft-RoCE` entry,
    and no side may then show a copy-free total. On a real NIC the payload moves by DMA."""
    rxe = [p for p in points if p.point == RXE_POINT]
    payload = payload_bytes.get("receiver") or payload_bytes.get("sender") or 0
    msgs = messages.get("receiver") or messages.get("sender") or 0
    soft = bool(rdma.get("soft"))
    entry = None
    if rxe:
        calls, nbytes = sum(p.calls for p in rxe), sum(p.bytes for p in rxe)
        entry = {"point": RXE_POINT, "calls": calls, "bytes": nbytes,
                 "copies_per_message": _ratio(calls, msgs),
                 "bytes_per_payload_byte": _ratio(nbytes, payload),
                 "quality": worst(p.quality for p in rxe),
                 "symbols": sorted({p.symbol for p in rxe if p.calls}),
                 "backends": sorted({p.backend for p in rxe}),
                 "ran_in": sorted({p.side for p in rxe if p.calls}),
                 "kind": "copied by soft-RoCE in the kernel (a real RDMA NIC moves these bytes "
                         "by DMA)"}
        entry.update(_unattributed(rxe, "soft-RoCE's copies"))
        sides[SOFT_ROCE_SIDE] = entry
    for side in ("sender", "receiver"):
        d = sides.get(side)
        if d is None:
            continue
        d["data_path"] = "RDMA verbs"
        if d.get("deferred") and not d["deferred"].get("bytes"):
            d["deferred"] = None     # a zerocopy fallback probe that saw nothing: not this path
        if soft and entry is not None:
            d.update(total_bytes_copied=None, total_copied_per_payload_byte=None,
                     total_quality=None)
            d["total_note"] = (
                f"RDMA verbs: {d['calls']} socket copies on the data path; soft-RoCE copied "
                f"{entry['bytes']} B ({entry['bytes_per_payload_byte']} per payload byte, "
                f"{entry['calls']} {'/'.join(entry['symbols']) or 'rxe'} calls, "
                f"{entry['quality']}) in the kernel for this row, requester and responder "
                "together (not split per side): not a CPU-free path"
                + (f"; {entry['attribution_note']}" if entry.get("attribution_note") else "")
                if side == "sender" else "soft-RoCE's kernel copies: see the sender's note")
        elif soft:
            d.update(total_bytes_copied=None, total_copied_per_payload_byte=None,
                     total_quality=None)
            d["total_note"] = ("soft-RoCE copies every payload byte in the kernel (rxe_mr_copy) "
                               "but nothing could count them here: no total, not zero"
                               if side == "sender" else "see the sender's note")
        else:
            d["total_note"] = "RDMA NIC: the payload moves by DMA; only socket copies counted"


def _spliced(plist: list[PointCounts], d: dict) -> dict:
    """Sends inside sendfile/splice seen by the send tracepoint: bytes handed to the socket by
    page reference. The copies counted beside them are a lower bound of what was copied (no
    tracepoint fires in a copy), so the total says estimate and why."""
    sp = [p for p in plist if p.point == SPLICED_POINT and p.calls]
    if not sp:
        return {}
    nbytes = sum(p.bytes for p in sp)
    return {"spliced": {"calls": sum(p.calls for p in sp), "bytes": nbytes,
                        "symbols": sorted({p.symbol for p in sp})},
            "total_quality": worst([d.get("total_quality"), "estimate"]),
            "total_note": (f"{nbytes} B went to the socket inside sendfile/splice as page "
                           "references (MSG_SPLICE_PAGES): counted apart, not as copies; only a "
                           "copy probe (kprobes) can show that nothing copied them")}


def _sender_totals(d: dict, points: list[PointCounts], completions: dict | None,
                   zerocopy_sender: bool, payload: int) -> dict:
    deferred = _deferred(points, completions)
    if completions:
        d["completion_report"] = {k: completions.get(k) for k in
                                  ("completed", "copied", "copied_bytes", "zerocopy", "api")
                                  if k in completions}
    if deferred is None and zerocopy_sender:
        return {"deferred": None, "total_bytes_copied": None, "total_copied_per_payload_byte": None,
                "total_quality": None,
                "total_note": "zerocopy sends whose later copies nobody could see here: no total"}
    extra = deferred["bytes"] if deferred else 0
    total = d["bytes"] + extra
    if deferred:
        deferred["per_payload_byte"] = _ratio(deferred["bytes"], payload)
    out = {"deferred": deferred, "total_bytes_copied": total,
           "total_copied_per_payload_byte": _ratio(total, payload),
           "total_quality": worst([d["quality"], deferred["quality"] if deferred else None])}
    # The kernel's word against the probes': sends it reports copied that no probed copy
    # function accounts for (copies outside the catalog, e.g. software segmentation) must not
    # leave the row looking cleaner than the kernel says it was.
    reported = (completions or {}).get("copied_bytes") or 0
    copied_sends = (completions or {}).get("copied") or 0
    probed = deferred is not None and deferred["source"] == "probe"
    # A mixed report over-flags (whole ranges), so only "nothing accounted for" is a conflict
    # then; an all-copied report is exact, so any shortfall is.
    if probed and copied_sends > 0 and (
            total == 0 or (_report_quality(completions) == "exact" and total < reported)):
        out["total_quality"] = "estimate"
        out["total_upper_bound"] = d["bytes"] + reported
        out["total_note"] = (f"the kernel reports {completions.get('copied')} sends "
                             f"({reported} B) copied that the probed functions do not account "
                             "for: they copied elsewhere (outside the catalog); total is a lower "
                             "bound, total_upper_bound the kernel's figure")
    return out


def add_costs(sides: dict, cpu: dict, bandwidth, cached=None) -> None:
    """The seed's cost model per side, beside the measured copy time and the agent's CPU.

    Bytes: everything copied for that side (deferred copies included, which ran on some CPU);
    measured time: the tracer's copy durations minus the probe's own cost when calibrated."""
    from bench.costmodel import cost
    for side, d in sides.items():
        agent_cpu = cpu.get(side) or {}
        cpu_s = (agent_cpu.get("user_s", 0) + agent_cpu.get("sys_s", 0)) if agent_cpu else None
        ns = d.get("ns_total")
        if ns is not None and d.get("ns_probe_per_call") is not None:
            ns = max(0, ns - d["ns_probe_per_call"] * d["calls"])
        nbytes = d.get("total_bytes_copied")
        d["cost"] = cost(d["bytes"] if nbytes is None else nbytes, bandwidth, ns, cpu_s,
                         cached=cached).to_json()
