"""TCP with MSG_ZEROCOPY on the send side (Documentation/networking/msg_zerocopy.rst).

The sender pins its (constant) pattern pages instead of copying them, and learns from the
socket's error queue when the kernel is done with each send. Each completion range says whether
the kernel really avoided the copy or fell back (SO_EE_CODE_ZEROCOPY_COPIED) — on loopback and
veth the skb is delivered locally and must be copied after all (skb_copy_ubufs). We count both
and never assume. The receiver is the plain TCP receiver (recv_into + verification).
"""

from __future__ import annotations

import errno
import select
import socket
import struct
from array import array

from workloads import tcp
from workloads.agent import AgentIO, CpuWindow, buffer_address, now
from workloads.pattern import PAGE_BITS, PAGE_MASK, page
from workloads.sockets import AlignedPatternSource, PatternSource, bound_from, connect_sender

SO_ZEROCOPY = 60
MSG_ZEROCOPY = 0x4000000
SO_EE_ORIGIN_ZEROCOPY = 5
SO_EE_CODE_ZEROCOPY_COPIED = 1
IP_RECVERR, IPV6_RECVERR = 11, 25
SOL_IP, SOL_IPV6 = 0, 41
# struct sock_extended_err { u32 ee_errno; u8 ee_origin, ee_type, ee_code, ee_pad;
#                            u32 ee_info; u32 ee_data; }
EXTENDED_ERR = struct.Struct("=IBBBBII")

receiver = tcp.receiver


class Completions:
    """Reads zerocopy completion notifications; counts sends completed, and copied ones.

    The kernel numbers successful MSG_ZEROCOPY send calls 0, 1, 2, ... per socket and reports
    ranges of them; `sent(n)` records each call's byte count, so the bytes the kernel copied
    after all (SO_EE_CODE_ZEROCOPY_COPIED) are known exactly, not only the calls."""

    def __init__(self, sock: socket.socket):
        self.sock = sock
        self.done = 0
        self.copied = 0
        self.copied_bytes = 0
        self.notifications = 0
        self.sizes = array("I")
        # Error-queue readiness is POLLERR (always reported by poll, whatever was asked for);
        # select()'s exception set is POLLPRI and never wakes for it.
        self.poller = select.poll()
        self.poller.register(sock.fileno(), select.POLLERR)

    def sent(self, nbytes: int) -> None:
        self.sizes.append(nbytes)

    def _bytes(self, lo: int, hi: int) -> int:
        if hi >= lo:
            return sum(self.sizes[lo:hi + 1])
        return sum(self.sizes[lo:]) + sum(self.sizes[:hi + 1])   # ids wrapped at 2^32

    def drain(self, wait: float = 0.0) -> None:
        if wait:
            self.poller.poll(max(1, int(wait * 1000)))   # returns as soon as one is queued
        while True:
            try:
                _, ancdata, _, _ = self.sock.recvmsg(0, 256, socket.MSG_ERRQUEUE | socket.MSG_DONTWAIT)
            except BlockingIOError:
                return
            for level, ctype, data in ancdata:
                if (level, ctype) not in ((SOL_IP, IP_RECVERR), (SOL_IPV6, IPV6_RECVERR)):
                    continue
                ee_errno, origin, _type, code, _pad, lo, hi = EXTENDED_ERR.unpack_from(data)
                if origin != SO_EE_ORIGIN_ZEROCOPY or ee_errno != 0:
                    continue
                n = (hi - lo + 1) & 0xFFFFFFFF  # ids wrap at 2^32
                self.notifications += 1
                self.done += n
                if code & SO_EE_CODE_ZEROCOPY_COPIED:
                    self.copied += n
                    self.copied_bytes += self._bytes(lo, hi)


def sender(cfg: dict, io: AgentIO, aligned: bool = False) -> dict:
    """`aligned`: send from page-aligned buffers (what TCP_ZEROCOPY_RECEIVE needs)."""
    size = int(cfg["size"])
    src = AlignedPatternSource(size) if aligned else PatternSource(size)
    sock, ready = connect_sender(cfg, socket.SOCK_STREAM, src)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
    except OSError as exc:
        raise RuntimeError(f"SO_ZEROCOPY refused ({exc}): kernel < 4.14 or disabled") from exc
    io.emit("ready", **ready)
    io.wait_cmd("go")
    cpu = CpuWindow().start()
    bound = bound_from(cfg)
    comp = Completions(sock)
    sent = calls = enobufs = 0
    views = src.views
    tab = page(0)
    while not bound.done(sent):
        if (sent & PAGE_MASK) == 0:      # message i is the pattern from phase(i)
            tab = page(sent >> PAGE_BITS)
        view = views[tab[sent & PAGE_MASK]]
        while view:
            try:
                n = sock.send(view, MSG_ZEROCOPY)
            except OSError as exc:
                # ENOBUFS: too many notifications outstanding (optmem_max); reap and retry.
                if exc.errno != errno.ENOBUFS:
                    raise
                enobufs += 1
                comp.drain(wait=0.01)
                continue
            calls += 1
            comp.sent(n)
            view = view[n:]
        sent += 1
        if (calls & 63) == 0:
            comp.drain()
    t_end = now()
    deadline = now() + 10.0  # every pinned page must be released before we report
    while comp.done < calls and now() < deadline:
        comp.drain(wait=0.05)
    sock.shutdown(socket.SHUT_WR)
    sock.close()
    return {"messages": sent, "bytes": sent * size, "t_start": bound.t_start, "t_end": t_end,
            "cpu": cpu.stop(), "buffer_addr": buffer_address(src.buf),
            "zerocopy": {"send_calls": calls, "completed": comp.done, "copied": comp.copied,
                         "copied_bytes": comp.copied_bytes,
                         "zerocopy": comp.done - comp.copied, "notifications": comp.notifications,
                         "enobufs_retries": enobufs, "all_completed": comp.done >= calls}}
