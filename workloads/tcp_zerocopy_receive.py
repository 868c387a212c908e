"""TCP_ZEROCOPY_RECEIVE: the receiver maps the socket's pages instead of copying them.

Receiver, set up as the kernel's reference program (tools/testing/selftests/net/tcp_mmap.c)
does it: SO_RCVLOWAT = the chunk, poll() for it, getsockopt(TCP_ZEROCOPY_RECEIVE) maps as many
whole payload pages of the receive queue as the chunk holds into an mmap() window on the socket
(aligned to the huge-page size, as tcp_mmap aligns it), the pages are verified where they lie
and unmapped at once (madvise MADV_DONTNEED); bytes that cannot be mapped (recv_skip_hint) are
read — copied — with recv() (no copybuf: see the receive loop). The chunk (bytes mapped per
call) is tcp_mmap's 512 KiB, or the message size where that is larger, and SO_RCVLOWAT the
chunk, unless the suite sets them (zc_chunk, zc_rcvlowat: the plan checks them against the
limits below). We verify mapped
and copied bytes alike and report both, counted from the kernel's answers, with TCP_INFO's byte
count to check their sum against, and the receiver's time per step.
Sender: MSG_ZEROCOPY from page-aligned buffers (msg_zerocopy.sender); the plain-send() sender is
the `tcp_zerocopy_receive_send` workload. Pages map only where each segment's payload is whole
pages (the `-mtuN` topologies) and the skb's pages are not compound (DESIGN.md).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import select
import socket
import struct
import time

from workloads import msg_zerocopy
from workloads.agent import AgentIO, CpuWindow, buffer_address, now
from workloads.pattern import StreamVerifier
from workloads.sockets import listen_stream, stream_result
from workloads.tlb_flushes import TlbFlushCounter

TCP_ZEROCOPY_RECEIVE = 35
MAX_SIZE = 1 << 20           # the aligned sender keeps 251 buffers of this size
CHUNK = 512 << 10            # tcp_mmap's default chunk_size
# A suite's zc_chunk / zc_rcvlowat beyond this is a typo: the window and the recv() buffer
# are each one chunk, and the kernel caps SO_RCVLOWAT at half the receive buffer anyway.
MAX_CHUNK = 64 << 20
MADV_DONTNEED = 4
HUGE_DEFAULT = 2 << 20       # tcp_mmap's fallback when /proc/meminfo has no Hugepagesize
SENDERS = {"tcp_zerocopy_receive": "MSG_ZEROCOPY", "tcp_zerocopy_receive_send": "send"}
TCPI_OPT_TIMESTAMPS = 1


class ZeroCopyReceive(ctypes.Structure):
    # struct tcp_zerocopy_receive (include/uapi/linux/tcp.h, 5.11+ layout)
    _fields_ = [("address", ctypes.c_uint64), ("length", ctypes.c_uint32),
                ("recv_skip_hint", ctypes.c_uint32), ("inq", ctypes.c_uint32),
                ("err", ctypes.c_int32), ("copybuf_address", ctypes.c_uint64),
                ("copybuf_len", ctypes.c_int32), ("flags", ctypes.c_uint32),
                ("msg_control", ctypes.c_uint64), ("msg_controllen", ctypes.c_uint64),
                ("msg_flags", ctypes.c_uint32), ("reserved", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
_libc.getsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                             ctypes.POINTER(ctypes.c_uint32)]


def kernel_bytes_received(sock: socket.socket) -> int:
    """Payload bytes the kernel's TCP took in on `sock` after its FIN: TCP_INFO's
    tcpi_bytes_received (offset 128 since Linux 4.1) counts sequence space, the FIN's one
    included. A count that does not pass through our loop, to check mapped + copied against."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("=Q", info, 128)[0] - 1


def supported() -> str | None:
    """None where this kernel has TCP_ZEROCOPY_RECEIVE, else why not: mmap() of a TCP socket
    and the getsockopt on an empty queue (answers 0 with nothing mapped), over loopback."""
    lsock = socket.socket()
    try:
        lsock.bind(("127.0.0.1", 0))
        lsock.listen(1)
        with socket.create_connection(lsock.getsockname(), timeout=5):
            conn, _ = lsock.accept()
            with conn:
                size = mmap.PAGESIZE
                addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, conn.fileno(), 0)
                if addr in (None, ctypes.c_void_p(-1).value):
                    err = ctypes.get_errno()
                    return f"mmap() of a TCP socket refused ({os.strerror(err)}): Linux 4.18+"
                try:
                    zc = ZeroCopyReceive(address=addr, length=size)
                    zlen = ctypes.c_uint32(ctypes.sizeof(zc))
                    if _libc.getsockopt(conn.fileno(), socket.IPPROTO_TCP, TCP_ZEROCOPY_RECEIVE,
                                        ctypes.byref(zc), ctypes.byref(zlen)) == -1:
                        err = ctypes.get_errno()
                        return (f"getsockopt(TCP_ZEROCOPY_RECEIVE) refused ({os.strerror(err)}): "
                                "this receiver needs Linux 5.11+ (its struct layout)")
                finally:
                    _libc.munmap(addr, size)
    except OSError as exc:
        return f"cannot probe TCP_ZEROCOPY_RECEIVE on loopback: {exc}"
    finally:
        lsock.close()
    return None


def segment_info(sock: socket.socket) -> dict:
    """What the connection's segments carry, from TCP_INFO: the peer's payload per segment as
    this end saw it (tcpi_rcv_mss, offset 20), this end's own (tcpi_snd_mss, 16) and whether
    timestamps are on (tcpi_options, byte 5): the facts that decide whether pages can map."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 104)
    snd_mss, rcv_mss = struct.unpack_from("=II", info, 16)
    return {"rcv_mss": rcv_mss, "snd_mss": snd_mss,
            "timestamps": bool(info[5] & TCPI_OPT_TIMESTAMPS),
            "page_multiple": rcv_mss % mmap.PAGESIZE == 0}


def chunk_for(size: int) -> int:
    """Bytes mapped per call, and SO_RCVLOWAT: tcp_mmap's 512 KiB (its -C default, one size
    for the receiver's chunk and its SO_RCVLOWAT), or the message size in whole pages where
    that is larger. Per call the kernel takes the page tables' lock and maps a batch; with
    64 KiB messages a 64 KiB chunk cost 450 µs/MiB of receiver CPU here, 512 KiB 338."""
    return max(CHUNK, -(-size // mmap.PAGESIZE) * mmap.PAGESIZE)


def huge_page_size(meminfo: str = "/proc/meminfo") -> int:
    try:
        for line in open(meminfo):
            if line.startswith("Hugepagesize:"):
                return int(line.split()[1]) << 10
    except (OSError, ValueError, IndexError):
        pass
    return HUGE_DEFAULT


def verify_cost(size: int, chunk: int, nbytes: int = 8 << 20, best_of: int = 3) -> float:
    """Seconds per byte our verification takes on bytes already in memory (the stream's own
    pattern, `chunk` at a time, best of `best_of`, CLOCK_MONOTONIC): the verify's price with
    the mapping taken out, beside the time measured on the mapped pages in the sample."""
    from workloads.pattern import stream_bytes
    data = memoryview(stream_bytes(size, max(1, nbytes // size)))
    best = None
    for _ in range(best_of):
        v = StreamVerifier(size, chunk)
        t0 = time.perf_counter()
        for off in range(0, len(data), chunk):
            v.check(data[off:off + chunk])
        dt = time.perf_counter() - t0
        best = dt if best is None else min(best, dt)
    return best / len(data)


def _check(ret: int, what: str) -> int:
    if ret == -1 or ret is None:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret




def sender(cfg: dict, io: AgentIO) -> dict:
    return msg_zerocopy.sender(cfg, io, aligned=True)


class _Steps:
    """The receiver's CPU time per step: CLOCK_THREAD_CPUTIME_ID (time.thread_time_ns) read
    between steps, so time the thread spent preempted (by other work on its CPU) is not in it.
    Each read is a system call; their number and measured cost are reported with the figures
    (they are part of the receiver's CPU like everything else it does)."""

    __slots__ = ("poll", "getsockopt", "verify", "madvise", "recv", "polls", "madvises", "recvs",
                 "reads")

    def __init__(self):
        for k in self.__slots__:
            setattr(self, k, 0)

    def to_json(self, verify_per_byte: float, read_cost: float, nbytes: int) -> dict:
        ns = 1e-9
        return {"clock": "CLOCK_THREAD_CPUTIME_ID between steps (receiver thread CPU time)",
                "poll_s": round(self.poll * ns, 6), "polls": self.polls,
                "getsockopt_s": round(self.getsockopt * ns, 6),
                "verify_s": round(self.verify * ns, 6),
                "madvise_s": round(self.madvise * ns, 6), "madvise_calls": self.madvises,
                "recv_s": round(self.recv * ns, 6), "recv_calls": self.recvs,
                "clock_reads": self.reads, "clock_read_s": round(read_cost, 9),
                "clock_overhead_s": round(self.reads * read_cost, 6),
                # the same verification on bytes already in memory: its cost without the pages'
                # first touch (verify_s above is measured on the mapped pages)
                "verify_calibrated_s_per_gb": round(verify_per_byte * 1e9, 6),
                "verify_calibrated_s": round(verify_per_byte * nbytes, 6)}


def clock_read_cost(n: int = 2000) -> float:
    """Seconds one time.thread_time_ns() costs here (best of 3 runs of n reads)."""
    best = None
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(n):
            time.thread_time_ns()
        dt = (time.perf_counter() - t0) / n
        best = dt if best is None else min(best, dt)
    return best


def receiver(cfg: dict, io: AgentIO) -> dict:
    """Per the kernel's semantics (tcp_zerocopy_receive, 5.11+): each call maps whole pages
    (length), names bytes that must be read the copying way (recv_skip_hint), and copies a
    remainder into copybuf if one is given (we give none); EIO means "queue empty and FIN seen",
    i.e. end of stream. poll() first, as tcp_mmap does: with SO_RCVLOWAT it wakes once a chunk
    (or the FIN) is there, so each call maps a whole chunk. No MSG_PEEK (itself a copy)."""
    size = int(cfg["size"])
    chunk = int(cfg.get("zc_chunk") or chunk_for(size))
    rcvlowat = int(cfg.get("zc_rcvlowat") or chunk)
    lsock, bufs = listen_stream(cfg)
    # On the listener, as tcp_mmap sets it: the accepted socket inherits it.
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT, rcvlowat)
    copybuf = bytearray(chunk)
    cmv = memoryview(copybuf)
    verify_per_byte = verify_cost(size, chunk)
    align = huge_page_size()
    io.emit("ready", pid=os.getpid(), port=lsock.getsockname()[1],
            buffer_addr=buffer_address(copybuf), **bufs)
    conn, _ = lsock.accept()
    lsock.close()
    fd = conn.fileno()
    lowat = conn.getsockopt(socket.SOL_SOCKET, socket.SO_RCVLOWAT)   # as the kernel capped it
    # One huge page of slack so the window starts on a huge-page boundary (tcp_mmap: fewer
    # page-table lock collisions); only [window, window + chunk) is ever mapped.
    raw = _check(_libc.mmap(None, chunk + align, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0),
                 "mmap(socket)")
    window = -(-raw // align) * align
    verify = StreamVerifier(size, chunk)
    zc = ZeroCopyReceive()
    zlen = ctypes.c_uint32(ctypes.sizeof(zc))
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLRDHUP)
    mapped = copied = copybuf_bytes = calls = waits = first = 0
    t_first = t_last = None
    st = _Steps()
    clock = time.thread_time_ns
    read_cost = clock_read_cost()
    tlb = TlbFlushCounter().start()
    cpu = CpuWindow().start()
    try:
        t = clock()
        while True:
            poller.poll(1000)
            t1 = clock()
            st.poll += t1 - t
            st.polls += 1
            ctypes.memset(ctypes.byref(zc), 0, ctypes.sizeof(zc))
            # No copybuf (copybuf_len 0), as tcp_mmap: the kernel fills it with the first
            # copybuf_len bytes left in the skb whenever a full chunk stops mid-skb, which
            # leaves the stream off page alignment and the rest of that skb to recv() (with a
            # 4095-byte copybuf: 61% mapped at 64 KiB over whole-page segments, 100% without).
            zc.address, zc.length = window, chunk
            zlen.value = ctypes.sizeof(zc)
            rc = _libc.getsockopt(fd, socket.IPPROTO_TCP, TCP_ZEROCOPY_RECEIVE,
                                  ctypes.byref(zc), ctypes.byref(zlen))
            t = clock()
            st.getsockopt += t - t1
            st.reads += 2
            calls += 1
            if rc == -1:
                err = ctypes.get_errno()
                if err == errno.EIO:           # queue empty and FIN received: end of stream
                    kernel_bytes = kernel_bytes_received(conn)
                    segments = segment_info(conn)
                    break
                raise OSError(err, f"TCP_ZEROCOPY_RECEIVE: {os.strerror(err)}")
            if zc.err:
                raise OSError(-zc.err, f"TCP_ZEROCOPY_RECEIVE: {os.strerror(-zc.err)}")
            got = 0
            if zc.length:
                # Verify straight from the mapped pages: no copy on our side either.
                verify.check(memoryview((ctypes.c_char * zc.length).from_address(window)).cast("B"))
                t3 = clock()
                st.verify += t3 - t
                # Unmap now, as tcp_mmap does: cheaper than the zap in the next getsockopt.
                _check(_libc.madvise(window, zc.length, MADV_DONTNEED), "madvise(MADV_DONTNEED)")
                t = clock()
                st.madvise += t - t3
                st.madvises += 1
                st.reads += 2
                mapped += zc.length
                got += zc.length
            if zc.copybuf_len:                 # none asked for: never copied into copybuf
                raise OSError(errno.EPROTO, f"TCP_ZEROCOPY_RECEIVE copybuf_len {zc.copybuf_len} "
                              "without a copybuf")
            if zc.recv_skip_hint:              # not mappable (partial or compound pages): copy
                try:
                    n = conn.recv_into(cmv, min(zc.recv_skip_hint, len(copybuf)),
                                       socket.MSG_DONTWAIT)
                except BlockingIOError:
                    n = 0
                t4 = clock()
                st.recv += t4 - t
                st.recvs += 1
                verify.check(cmv[:n])
                t = clock()
                st.verify += t - t4
                st.reads += 2
                copied += n
                got += n
            if got:
                t_last = now()
                if t_first is None:
                    t_first, first = t_last, got   # arrived at the window's start
            else:
                waits += 1                     # nothing yet: the next poll waits for it
    finally:
        cpu_used = cpu.stop()
        _libc.munmap(raw, chunk + align)
        conn.close()
    tlb_counts = tlb.stop(verify.offset)
    return stream_result(
        verify, size, t_first=t_first, t_last=t_last, first_bytes=first, cpu=cpu_used,
        buffer_addr=buffer_address(copybuf),
        zerocopy_receive={"calls": calls, "mapped_bytes": mapped, "copied_bytes": copied,
                          "copybuf_bytes": copybuf_bytes, "waits": waits,
                          # mapped + copied must equal it: neither counted twice nor missed
                          "kernel_bytes_received": kernel_bytes,
                          "mapped_pct": round(100 * mapped / verify.offset, 2)
                          if verify.offset else None,
                          "sender": SENDERS.get(cfg.get("workload"), "MSG_ZEROCOPY"),
                          "chunk": chunk, "window": chunk, "rcvlowat": rcvlowat,
                          "rcvlowat_effective": lowat, "map_align": align,
                          "unmap": "madvise(MADV_DONTNEED) after each mapping",
                          "segments": segments,
                          "breakdown": st.to_json(verify_per_byte, read_cost, verify.offset),
                          "tlb": tlb_counts, "end_of_stream": "EIO"})
