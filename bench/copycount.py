"""The runner's glue to the tracers: attach around one sample, summarise per side.

The seed's questions, per sample and side: how many copies, how many bytes, copies per
message, bytes copied per payload byte, time per copy — and which backend and symbols said so.
"""

from __future__ import annotations

from collections import defaultdict

from bench.tracing.base import PointCounts

# Which logical points are "the" data copy of a side; others (zerocopy fallbacks, rxe) are
# reported beside them, never summed into them.
SIDE_POINT = {"sender": "send_copy", "receiver": "recv_copy"}


def summarize(points: list[PointCounts], messages: dict[str, int], payload_bytes: dict[str, int]) -> dict:
    """Per side: calls, bytes, per-message and per-byte ratios, ns per copy, symbols, exactness.

    `messages`/`payload_bytes` are what that side sent or received (verified), so a ratio of
    1.0 copies per message and 1.0 bytes per byte is the seed's COPY#1/COPY#4 picture."""
    sides: dict[str, dict] = {}
    by_side: dict[str, list[PointCounts]] = defaultdict(list)
    for p in points:
        by_side[p.side].append(p)
    for side, plist in by_side.items():
        main = [p for p in plist if p.point == SIDE_POINT.get(side)]
        calls = sum(p.calls for p in main)
        nbytes = sum(p.bytes for p in main)
        timed = [p for p in main if p.ns_total is not None]
        ns_total = sum(p.ns_total for p in timed) if timed else None
        timed_calls = sum(p.calls for p in timed)
        msgs, pb = messages.get(side, 0), payload_bytes.get(side, 0)
        sides[side] = {
            "point": SIDE_POINT.get(side),
            "calls": calls,
            "bytes": nbytes,
            "copies_per_message": round(calls / msgs, 4) if msgs else None,
            "bytes_per_payload_byte": round(nbytes / pb, 4) if pb else None,
            "ns_total": ns_total,
            "ns_per_copy": round(ns_total / timed_calls, 1) if ns_total is not None and timed_calls else None,
            "exact": all(p.exact for p in main) if main else None,
            "backends": sorted({p.backend for p in main}),
            "symbols": sorted({p.symbol for p in main if p.calls}),
            "other_points": {p.point: {"calls": p.calls, "bytes": p.bytes, "symbol": p.symbol}
                             for p in plist if p.point != SIDE_POINT.get(side) and p.calls},
            "samples": [s for p in main for s in p.samples][:16],
        }
    return sides
