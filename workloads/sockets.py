"""Socket plumbing shared by the plain socket workloads (udp, tcp): buffers, bounds, pacing."""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass

from workloads.agent import buffer_address, now
from workloads.pattern import PERIOD, block


def size_buffers(sock: socket.socket, cfg: dict) -> dict:
    """Apply the requested socket buffer sizes the way any program (iperf3) can: SO_RCVBUF /
    SO_SNDBUF, capped by net.core.{r,w}mem_max, never forced past them, so ours and the
    reference run with the same buffers; report what the kernel actually gave."""
    for opt, key in ((socket.SO_RCVBUF, "rcvbuf"), (socket.SO_SNDBUF, "sndbuf")):
        want = cfg.get(key)
        if want:
            sock.setsockopt(socket.SOL_SOCKET, opt, want)
    return {"rcvbuf": sock.getsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF),
            "sndbuf": sock.getsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF)}


class PatternSource:
    """Pre-cut payload views: message i of a stream/datagram flow is one slice, no per-send work.

    The backing store is a bytearray so its user address can be reported (seed exercise)."""

    def __init__(self, size: int):
        self.size = size
        self.buf = bytearray(block(size))
        mv = memoryview(self.buf)
        self.views = [mv[k:k + size] for k in range(PERIOD)]


class AlignedPatternSource:
    """Like PatternSource, but every phase starts on its own page boundary.

    Zerocopy receive can map a page only when the skb fragment is a whole, aligned page; with a
    MSG_ZEROCOPY sender the fragments are the sender's own pages, so the sender's buffers decide.
    Costs PERIOD x size bytes (251 x 64 KiB = 16 MiB), hence the size cap of the workload."""

    def __init__(self, size: int):
        import mmap
        self.size = size
        pattern = block(size)
        pages = -(-size // mmap.PAGESIZE) * mmap.PAGESIZE
        self._maps = []
        self.views = []
        for k in range(PERIOD):
            m = mmap.mmap(-1, pages)  # anonymous mappings are page-aligned
            m[:size] = pattern[k:k + size]
            self._maps.append(m)
            self.views.append(memoryview(m)[:size])
        self.buf = self._maps[0]


@dataclass
class SendBound:
    """Stops a send loop at `count` messages or `duration` seconds, whichever comes first.
    Both cannot be absent: every load loop is bounded (the runner always sets a duration cap)."""

    duration: float
    count: int | None = None

    def __post_init__(self):
        self.t_start = now()
        self.deadline = self.t_start + self.duration
        self._calls = 0

    def done(self, sent: int) -> bool:
        if self.count is not None and sent >= self.count:
            return True
        # Checking the clock costs ~40 ns; every 16th call keeps overshoot tiny.
        self._calls += 1
        return (self._calls & 15) == 0 and now() >= self.deadline


def bound_from(cfg: dict) -> SendBound:
    return SendBound(duration=float(cfg["duration"]), count=cfg.get("count"))


def listen_stream(cfg: dict) -> tuple[socket.socket, dict]:
    """The receiving side of every TCP workload: a listener on the configured address."""
    lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    bufs = size_buffers(lsock, cfg)
    lsock.bind((cfg["bind"], int(cfg.get("port", 0))))
    lsock.listen(1)
    return lsock, bufs


def connect_sender(cfg: dict, kind: int, src) -> tuple[socket.socket, dict]:
    """The sending side: a connected socket, announced to the runner with its buffer address."""
    sock = socket.socket(socket.AF_INET, kind)
    bufs = size_buffers(sock, cfg)
    sock.connect(tuple(cfg["target"]))
    return sock, {"pid": os.getpid(), "buffer_addr": buffer_address(src.buf), **bufs}


def stream_result(verify, size: int, **extra) -> dict:
    """What a stream receiver reports: only verified bytes count as delivered."""
    good = verify.offset if verify.bad_chunks == 0 else 0
    return {"messages": good // size, "bytes": good, "bytes_seen": verify.offset,
            "bad": verify.bad_chunks, **extra}
