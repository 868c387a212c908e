"""The seed's skb and wire arithmetic per case: payload + UDP/TCP + IP + Ethernet headers,
frames per message at the link's MTU, bytes on the wire per payload byte.

Header sizes are the protocols' minimum (no IP or TCP options: Linux TCP adds 12 B of
timestamps by default, which no result records, so it is named, not added). headroom and
tailroom are the kernel's per-skb allocation choices, which no tracer here records: the report
says "not measured" rather than the seed's example figures."""

from __future__ import annotations

from dataclasses import dataclass

ETH, IPV4, UDP, TCP, FCS = 14, 20, 8, 20, 4


@dataclass(frozen=True)
class Wire:
    protocol: str
    payload: int
    mtu: int
    transport_header: int
    frames: int                 # Ethernet frames per message at this MTU
    header_bytes: int           # all frames' Ethernet + IP + transport headers
    frame_bytes: int            # payload + headers, what skb->len sums to at the MAC layer
    wire_bytes: int             # plus the 4-byte FCS per frame on a physical link
    note: str

    @property
    def per_payload_byte(self) -> float:
        return self.wire_bytes / self.payload if self.payload else 0.0


def udp(payload: int, mtu: int) -> Wire:
    datagram = payload + UDP
    per_fragment = (mtu - IPV4) // 8 * 8            # IP fragments carry multiples of 8 bytes
    frames = 1 if datagram <= mtu - IPV4 else -(-datagram // per_fragment)
    headers = UDP + frames * (IPV4 + ETH)
    note = ("one frame" if frames == 1 else
            f"IP fragments: {frames} × ≤{per_fragment} B of the {datagram} B datagram")
    return Wire("udp", payload, mtu, UDP, frames, headers, payload + headers,
                payload + headers + frames * FCS, note)


def tcp(payload: int, mtu: int) -> Wire:
    mss = mtu - IPV4 - TCP
    frames = max(1, -(-payload // mss))
    headers = frames * (TCP + IPV4 + ETH)
    return Wire("tcp", payload, mtu, TCP, frames, headers, payload + headers,
                payload + headers + frames * FCS,
                f"MSS {mss} B without options (timestamps would add 12 B per segment); TCP is a "
                "stream, so this is per message-sized write, and GSO/GRO move larger skbs "
                "inside the host")


def for_case(protocol: str, payload: int, mtu: int | None) -> Wire | None:
    """None for RDMA (RoCE headers are the NIC's) and where the MTU was not recorded."""
    if not mtu or payload <= 0:
        return None
    if protocol == "udp":
        return udp(payload, mtu)
    if protocol == "tcp":
        return tcp(payload, mtu)
    return None
