"""Socket plumbing shared by the plain socket workloads (udp, tcp): buffers, bounds, pacing."""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass

from workloads.agent import buffer_address, now
from workloads.pattern import (
    PAGE_BITS,
    PAGE_MASK,
    PERIOD,
    SEGMENT,
    StreamVerifier,
    block,
    page,
    phase,
)

# Messages per bound check in send_messages: the loop's Python work per message is one step and
# one call; the clock is read once per block (overshoot: BLOCK messages past the deadline).
BLOCK = 16


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


class MappedPatternSource:
    """PatternSource's layout in an anonymous mapping of its own, pages no allocator shares.

    For senders that hand their pages to the kernel by reference with no completion to wait
    for (vmsplice): the receiver copies them only when it reads, maybe after the sender is
    done. A heap bytearray is freed when the sender returns, and malloc writes its free-chunk
    pointers into those very pages: 1 run in about 10 of 300 x 4 KiB messages delivered them
    (heap pointers at a message's start) where the pattern should be. An unmapped mapping's
    pages keep their bytes while the socket still holds them: none in 66 runs of 1000, 4096 and
    65536 B (loopback, measured 2026-12-03)."""

    def __init__(self, size: int):
        import mmap
        data = block(size)
        self.size = size
        self.buf = mmap.mmap(-1, -(-len(data) // mmap.PAGESIZE) * mmap.PAGESIZE)
        self.buf[:len(data)] = data
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


def send_messages(send, views: list, bound: SendBound, tolerate: tuple[int, ...] = ()
                  ) -> tuple[int, int]:
    """send(views[phase(i)]) for message i = 0, 1, ... until `bound`; (sent, errors). `views`
    holds one view per pattern phase (PatternSource.views).

    The agents must not be the bottleneck (a Python loop per message costs ~0.5 us where the
    kernel's send costs a few): the loop runs over pre-cut blocks of BLOCK views (one list per
    schedule page of 64 Ki messages, built once) and checks the count and the clock once per
    block. An OSError whose errno is in `tolerate` loses that message and the rest of its
    block, is counted, and the loop goes on with the next block."""
    sent = errors = 0
    count, deadline, clock = bound.count, bound.deadline, time.monotonic
    p = 0
    while True:
        ordered = [views[k] for k in page(p)]
        for j in range(0, len(ordered), BLOCK):
            blk = ordered[j:j + BLOCK]
            if count is not None and count - sent < BLOCK:
                blk = blk[:count - sent]
                if not blk:
                    return sent, errors
            k = 0
            try:
                for view in blk:
                    send(view)
                    k += 1
            except OSError as exc:
                if exc.errno not in tolerate:
                    raise
                errors += 1
            sent += k
            if clock() >= deadline:
                return sent, errors
        p += 1


def receive_stream(recv_into, buf: bytearray, verify: StreamVerifier) -> dict:
    """recv_into(buf) until end of stream, every byte verified; returns the calls and the
    receiver's window (first and last byte's arrival, bytes of the first call).

    The hot loop makes C calls only (recv_into, the clock, one memcmp per message part in a
    chunk: one, or two where a chunk straddles a message boundary), plus a table index for
    the message's phase (workloads.pattern.phase), so the receiver measures the kernel's path,
    not the interpreter. Chunks longer than SEGMENT or than two messages go to
    verify.matches."""
    mv = memoryview(buf)
    nbuf = len(buf)
    size = verify.size
    fast = size <= SEGMENT
    clock = time.monotonic
    startswith = verify.ref.startswith
    matches = verify.matches
    off = verify.offset
    i, within = divmod(off, size)           # the message the next byte belongs to, and where
    tp = i >> PAGE_BITS
    tab = page(tp)
    calls = total = bad = 0
    n = recv_into(buf)
    t_first = t_last = clock() if n else None
    first = n
    while n:
        calls += 1
        if (i >> PAGE_BITS) != tp:
            tp = i >> PAGE_BITS
            tab = page(tp)
        a = size - within                   # bytes left in message i
        if fast and n < a:
            ok = startswith(mv if n == nbuf else mv[:n], (tab[i & PAGE_MASK] + within) % PERIOD)
            within += n
        elif fast and n == a:
            ok = startswith(mv if n == nbuf else mv[:n], (tab[i & PAGE_MASK] + within) % PERIOD)
            i += 1
            within = 0
        elif fast and n < a + size:
            ok = (startswith(mv[:a], (tab[i & PAGE_MASK] + within) % PERIOD)
                  and startswith(mv[a:n], phase(i + 1)))
            i += 1
            within = n - a
        else:
            ok = matches(mv[:n], off)
            i, within = divmod(off + n, size)
        if not ok:
            bad += 1
        off += n
        total += n
        n = recv_into(buf)
        if n:
            t_last = clock()
    verify.offset += total
    verify.bad_chunks += bad
    return {"recv_calls": calls, "t_first": t_first, "t_last": t_last, "first_bytes": first}


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
