"""The seed's send and receive path diagrams, redrawn per case with the copies that really
happened (inline SVG), and the seed's address correlation (COPY#1's kernel address against
COPY#4's, the user buffers, "same skb?").

Only what the result holds is drawn: a count the tracer did not measure reads "not measured";
the DMA steps (COPY#2, COPY#3) are never CPU copies and are labelled by the topology."""

from __future__ import annotations

from dataclasses import dataclass
from html import escape

from reports.figures import CaseFigures, SideCopies

NOT_MEASURED = "not measured"
BOX_W, BOX_H, GAP, ROW_H = 150, 54, 240, 120


def _fmt_bytes(n: int | None) -> str:
    if n is None:
        return NOT_MEASURED
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return f"{n} B"


def copy_label(s: SideCopies | None, name: str) -> list[str]:
    """The arrow's text: which copy, how many calls and bytes, per payload byte, quality."""
    if s is None:
        return [name, NOT_MEASURED]
    lines = [f"{name}: {s.calls if s.calls is not None else '?'} calls, {_fmt_bytes(s.bytes)}"]
    if s.per_payload_byte is not None:
        lines.append(f"{s.per_payload_byte:g} B per payload B, {s.quality or 'quality not stated'}")
    return lines


def _middle(f: CaseFigures, direction: str) -> list[str]:
    topo = f.case.topology
    if f.protocol == "rdma":
        if f.soft_roce is not None:
            return ["soft-RoCE: kernel copies", f"{_fmt_bytes(f.soft_roce.bytes)} (rxe_mr_copy)"]
        if f.soft_roce_device:
            return ["soft-RoCE copies", NOT_MEASURED]
        return ["RDMA NIC DMA", "no CPU copy"]
    if topo.split("-mtu")[0] in ("veth", "loopback"):     # KIND-mtuN: the same device
        return [f"{topo}: skb handed over", "no NIC, no DMA"]
    return ["COPY#2 (DMA)" if direction == "send" else "COPY#3 (DMA)", "NIC, not a CPU copy"]


def _box(x: int, y: int, title: str, sub: str | None, fill: str) -> str:
    out = [f'<rect x="{x}" y="{y}" width="{BOX_W}" height="{BOX_H}" rx="6" fill="{fill}" '
           f'stroke="#333"/>',
           f'<text x="{x + BOX_W // 2}" y="{y + 22}" text-anchor="middle" font-weight="bold">'
           f'{escape(title)}</text>']
    if sub:
        out.append(f'<text x="{x + BOX_W // 2}" y="{y + 40}" text-anchor="middle" '
                   f'font-family="monospace" font-size="11">{escape(sub)}</text>')
    return "".join(out)


def _arrow(x1: int, x2: int, y: int, lines: list[str], copied: bool) -> str:
    color = "#c0392b" if copied else "#7f8c8d"
    dash = "" if copied else ' stroke-dasharray="5,4"'
    out = [f'<line x1="{x1}" y1="{y}" x2="{x2 - 6}" y2="{y}" stroke="{color}" stroke-width="2"'
           f'{dash}/>',
           f'<polygon points="{x2},{y} {x2 - 8},{y - 5} {x2 - 8},{y + 5}" fill="{color}"/>']
    for i, line in enumerate(lines):
        out.append(f'<text x="{(x1 + x2) // 2}" y="{y - 30 + 13 * i}" text-anchor="middle" '
                   f'font-size="10.5" fill="{color}">{escape(line)}</text>')
    return "".join(out)


def _row(y: int, boxes: list[tuple[str, str | None, str]], arrows: list[tuple[list[str], bool]]
         ) -> str:
    parts = []
    for i, (title, sub, fill) in enumerate(boxes):
        x = 10 + i * (BOX_W + GAP)
        parts.append(_box(x, y, title, sub, fill))
        if i < len(arrows):
            lines, copied = arrows[i]
            parts.append(_arrow(x + BOX_W, x + BOX_W + GAP, y + BOX_H // 2 + 14, lines, copied))
    return "".join(parts)


def _copied(s: SideCopies | None) -> bool:
    return s is not None and bool(s.bytes)


def _kernel_addr(s: SideCopies | None) -> str | None:
    """The first traced kernel address, marked "sk" when the tracer saw the socket, not the
    copy's buffer (tracepoints)."""
    if s is None or not s.kernel_addrs:
        return None
    return s.kernel_addrs[0] if address_kind(s.symbols)[1] else f"sk {s.kernel_addrs[0]}"


def path_svg(f: CaseFigures) -> str:
    """Send row (user buffer → skb → link) over receive row (link → skb → user buffer)."""
    user = "registered MR" if f.protocol == "rdma" else "user buffer"
    kernel = "RDMA QP / wire" if f.protocol == "rdma" else "kernel skb"
    s, r = f.sender, f.receiver
    tx_addr, rx_addr = f.user_buffers.get("sender"), f.user_buffers.get("receiver")
    mid_tx, mid_rx = _middle(f, "send"), _middle(f, "receive")
    send_arrows = [(copy_label(s, "COPY#1") if f.counted else ["COPY#1", NOT_MEASURED],
                    _copied(s)),
                   (mid_tx, f.soft_roce is not None)]
    if s is not None and s.deferred_bytes:
        send_arrows[1] = ([f"deferred copy ({s.deferred_kind}):", _fmt_bytes(s.deferred_bytes),
                           *mid_tx[:1]], True)
    recv_arrows = [(mid_rx, False),
                   (copy_label(r, "COPY#4") if f.counted else ["COPY#4", NOT_MEASURED],
                    _copied(r))]
    zr = f.zerocopy_receive
    if zr:
        recv_arrows[1] = (recv_arrows[1][0] + [f"mapped, not copied: {_fmt_bytes(zr['mapped_bytes'])}"],
                          recv_arrows[1][1])
    link = "link" if f.case.topology.split("-mtu")[0] in ("veth", "loopback") else "NIC / wire"
    send = _row(20, [(f"sender {user}", tx_addr, "#eaf2f8"),
                     (kernel, _kernel_addr(s), "#fdf2e9"),
                     (f"{link} ({f.case.topology})", None, "#f4f6f6")], send_arrows)
    recv = _row(20 + ROW_H, [(f"{link} ({f.case.topology})", None, "#f4f6f6"),
                             (kernel, _kernel_addr(r), "#fdf2e9"),
                             (f"receiver {user}", rx_addr, "#eaf2f8")], recv_arrows)
    width = 20 + 3 * BOX_W + 2 * GAP
    height = 30 + 2 * ROW_H - 40
    title = f"{f.id}: send path (top) and receive path (bottom), traced sample"
    return (f'<svg xmlns="http://www.w3.org/2000/svg" role="img" width="{width}" '
            f'height="{height}" viewBox="0 0 {width} {height}" font-family="sans-serif" '
            f'font-size="12"><title>{escape(title)}</title>'
            f'<text x="10" y="12" font-size="11" fill="#555">send</text>{send}'
            f'<text x="10" y="{12 + ROW_H}" font-size="11" fill="#555">receive</text>{recv}</svg>')


# -- address correlation -------------------------------------------------------------------------

@dataclass(frozen=True)
class Correlation:
    copy1_addrs: tuple[str, ...]
    copy4_addrs: tuple[str, ...]
    copy1_kind: str          # what the recorded address is (from the probe catalog)
    copy4_kind: str
    sender_buffer: str | None
    receiver_buffer: str | None
    same_kernel: str         # yes / no / not measured, with why
    same_user: str
    conclusion: str


def address_kind(symbols: tuple[str, ...]) -> tuple[str, bool]:
    """(what the tracer's address is, whether it is the copy's kernel buffer)."""
    from bench.tracing import catalog
    kinds = set()
    for sym in symbols:
        try:
            p = catalog.by_symbol(sym)
        except KeyError:
            kinds.add(("unknown (symbol not in the catalog)", False))
            continue
        if p.addr_arg is not None:
            kinds.add((f"kernel buffer of the copy (argument {p.addr_arg + 1} of {sym})", True))
        elif p.addr_field == "sk":
            kinds.add((f"the socket (struct sock, {sym}'s sk field), not the copy's buffer", False))
        elif p.addr_field:
            kinds.add((f"{p.addr_field} ({sym})", p.addr_field == "skbaddr"))
        else:
            kinds.add((f"no address ({sym})", False))
    if not kinds:
        return NOT_MEASURED, False
    return "; ".join(sorted(k for k, _ in kinds)), all(b for _, b in kinds)


def correlation(f: CaseFigures) -> Correlation:
    s, r = f.sender, f.receiver
    a1, a4 = (s.kernel_addrs if s else ()), (r.kernel_addrs if r else ())
    k1, buf1 = address_kind(s.symbols) if s else (NOT_MEASURED, False)
    k4, buf4 = address_kind(r.symbols) if r else (NOT_MEASURED, False)
    if not a1 or not a4:
        same_kernel = NOT_MEASURED + " (no addresses in the traced sample)"
    elif not (buf1 and buf4):
        same_kernel = NOT_MEASURED + " (the tracer recorded no copy buffer addresses)"
    else:
        common = set(a1) & set(a4)
        same_kernel = (f"YES: {len(common)} address(es) seen by both copies (loopback/veth may "
                       "hand the same skb over)" if common else
                       f"NO: {len(set(a1))} vs {len(set(a4))} distinct addresses, none shared")
    tb, rb = f.user_buffers.get("sender"), f.user_buffers.get("receiver")
    same_user = (NOT_MEASURED if not (tb and rb) else
                 ("YES (same address in two processes' own address spaces)" if tb == rb else
                  "NO: two processes, two buffers"))
    if f.counted and s and r and s.per_message is not None and r.per_message is not None:
        conclusion = (f"{s.per_message:g} + {r.per_message:g} CPU copies per message "
                      f"(COPY#1 + COPY#4)")
        extra = [x for x in (s.deferred_per_payload_byte, r.deferred_per_payload_byte) if x]
        if extra:
            conclusion += f", plus deferred copies: {sum(extra):g} B per payload byte"
        if f.soft_roce is not None:
            conclusion += (f", plus soft-RoCE's {f.soft_roce.per_payload_byte:g} B per payload "
                           "byte in the kernel")
    else:
        conclusion = f"copies not counted ({f.copies_status}" + (
            f": {f.copies_reason})" if f.copies_reason else ")")
    return Correlation(a1, a4, k1, k4, tb, rb, same_kernel, same_user, conclusion)
