"""What the request/response agents share: their parameters, timeouts, set-up, the stream
responder's loop and their results.

netperf's RR meaning: a transaction is one request of Q bytes (the agent config's `size`) and
its response of R bytes (`response_size`, default Q); `in_flight` transactions are outstanding
at once (default 1). The requester is the `sender` role (it waits for "go", connects, measures
on its one clock), the responder the `receiver` role (it listens and answers until the
requester closes, or the runner says stop). Bounded by `count` transactions and `duration`
seconds, whichever comes first, and every wait by `rr_timeout_s` (SO_RCVTIMEO/SO_SNDTIMEO: a
kernel timeout adds no poll() per call, as Python's settimeout would).
"""

from __future__ import annotations

import os
import socket
import struct
import time
from dataclasses import dataclass

from workloads.agent import AgentIO, CpuWindow, buffer_address, now
from workloads.pattern import PAGE_BITS, PAGE_MASK, block, page
from workloads.rr_stats import Recorder, cpu_per_transaction
from workloads.sockets import listen_stream, size_buffers

IN_FLIGHT_MAX = 1024
TIMEOUT_S = 2.0          # one response's wait: far above any round trip on our paths


@dataclass(frozen=True)
class RRParams:
    request: int
    response: int
    in_flight: int
    count: int | None
    duration: float
    timeout: float

    def bounds(self, t_start: float) -> tuple[int, int]:
        """The requester's limits: (transactions, deadline in monotonic ns)."""
        return (self.count if self.count is not None else 1 << 62,
                int(t_start * 1e9) + int(self.duration * 1e9))

    def config(self) -> dict:
        return {"request_size": self.request, "response_size": self.response,
                "in_flight": self.in_flight, "timeout_s": self.timeout}


def params(cfg: dict, min_size: int = 1, max_size: int = 1 << 20) -> RRParams:
    """The transaction's shape from an agent config; a ValueError names what is wrong."""
    q = int(cfg["size"])
    r = int(cfg.get("response_size") or q)
    for name, v in (("request", q), ("response", r)):
        if not min_size <= v <= max_size:
            raise ValueError(f"{name} size {v}: must be {min_size}..{max_size} bytes")
    n = int(cfg.get("in_flight", 1))
    if not 1 <= n <= IN_FLIGHT_MAX:
        raise ValueError(f"in_flight {n}: must be 1..{IN_FLIGHT_MAX}")
    count = cfg.get("count")
    if count is not None and int(count) < 1:
        raise ValueError(f"count {count}: must be at least 1 transaction")
    return RRParams(q, r, n, int(count) if count is not None else None,
                    float(cfg.get("duration", 10.0)),
                    float(cfg.get("rr_timeout_s", TIMEOUT_S)))


def set_timeouts(sock: socket.socket, seconds: float) -> None:
    tv = struct.pack("ll", int(seconds), int((seconds % 1) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, tv)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDTIMEO, tv)


def accept_stream(cfg: dict, io: AgentIO, qbuf: bytearray) -> socket.socket:
    """The stream responder's connection: listen, say ready (port, request buffer, socket
    buffers), accept the requester, TCP_NODELAY. "stop" shuts down the listener and the
    connection, which wakes accept() or a blocked receive; the loop then sees end of stream."""
    lsock, bufs = listen_stream(cfg)
    io.emit("ready", pid=os.getpid(), port=lsock.getsockname()[1],
            buffer_addr=buffer_address(qbuf), **bufs)
    held = [lsock]

    def end():
        for s in held:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    io.on_cmd("stop", end)
    conn, _ = lsock.accept()
    held.append(conn)
    lsock.close()
    conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return conn


def phases():
    """phase_of(i): transaction i's pattern phase (workloads.pattern), one page of the phase
    table computed at a time as the transactions reach it."""
    tp, tab = 0, page(0)

    def phase_of(i: int) -> int:
        nonlocal tp, tab
        if (i >> PAGE_BITS) != tp:
            tp = i >> PAGE_BITS
            tab = page(tp)
        return tab[i & PAGE_MASK]
    return phase_of


def respond_stream(p: RRParams, qbuf: bytearray, views: list, recv, finish, answer,
                   ends: tuple = ()) -> tuple:
    """The stream responder's loop, until end of stream: `recv(qbuf, Q, MSG_WAITALL)` reads a
    request, `finish(n)` the rest of one that came short, and `answer(view)` sends transaction
    j's response, its phase the request's, whether or not the request verified (one memcmp).
    An exception in `ends` ends the loop as end of stream does. The phase table walk is written
    out here, not phases(): no call per transaction in the timed round trip.
    (requests, bad requests, first and last request's arrival on time.monotonic)."""
    qmv = memoryview(qbuf)
    q = p.request
    startswith = block(q).startswith
    clock, waitall = time.monotonic, socket.MSG_WAITALL
    j = bad = 0
    tp, tab = 0, page(0)
    t_first = t_last = None
    while True:
        try:
            n = recv(qbuf, q, waitall)
        except ends:
            break
        if n != q:
            n = finish(n)
            if n != q:
                bad += n > 0   # a request cut off by the end of the stream
                break
        t_last = clock()
        if t_first is None:
            t_first = t_last
        if (j >> PAGE_BITS) != tp:
            tp = j >> PAGE_BITS
            tab = page(tp)
        k = tab[j & PAGE_MASK]
        if not startswith(qmv, k):
            bad += 1
        answer(views[k])
        j += 1
    return j, bad, t_first, t_last


def connect_requester(cfg: dict, kind: int, timeout: float | None) -> tuple[socket.socket, dict]:
    """The requester's socket, connected to the target: buffers sized, TCP_NODELAY on a stream,
    SO_RCVTIMEO/SO_SNDTIMEO of `timeout` (None: the caller bounds its own waits, as io_uring's
    ring does)."""
    sock = socket.socket(socket.AF_INET, kind)
    bufs = size_buffers(sock, cfg)
    if kind == socket.SOCK_STREAM:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    if timeout is not None:
        set_timeouts(sock, timeout)
    sock.connect(tuple(cfg["target"]))
    return sock, bufs


def start_requests(io: AgentIO) -> tuple[CpuWindow, Recorder, float]:
    """After the runner's "go": the requester's CPU window, its recorder and its start time."""
    io.wait_cmd("go")
    return CpuWindow().start(), Recorder(), now()


def run_requester(cfg: dict, io: AgentIO, p: RRParams, kind: int, src, loop,
                  **extra) -> dict:
    """A socket requester's life: connect (connect_requester), say ready with the request
    source's buffer, then after "go" `loop(sock, rbuf, rec, t_start)` -> {"done", "bad", and
    the agent's own counts} timed on this process's clock and CPU window; its result."""
    sock, bufs = connect_requester(cfg, kind, p.timeout)
    rbuf = bytearray(p.response)
    io.emit("ready", pid=os.getpid(), buffer_addr=buffer_address(src.buf), **bufs)
    cpu, rec, t_start = start_requests(io)
    try:
        counts = loop(sock, rbuf, rec, t_start)
    finally:
        t_end = now()
        sock.close()
    done, bad = counts.pop("done"), counts.pop("bad")
    return requester_result(p, rec, done, done - bad, bad, t_start, t_end, cpu.stop(),
                            buffer_address(src.buf), **counts, **extra)


class Stalled(RuntimeError):
    """The peer stopped answering (timeout) or went away mid-transaction."""


def requester_result(p: RRParams, rec, done: int, verified: int, bad: int, t_start: float,
                     t_end: float, cpu: dict, buffer_addr: str, **extra) -> dict:
    """The requester's result: the sample's usual fields (messages = verified transactions,
    bytes = request bytes sent) and the `rr` and `latency` blocks."""
    window_ns = int(round((t_end - t_start) * 1e9))
    return {"messages": verified, "bytes": done * p.request, "t_start": t_start,
            "t_end": t_end, "cpu": cpu, "buffer_addr": buffer_addr,
            "rr": {**p.config(), "role": "requester", "transactions": done,
                   "verified": verified, "bad_responses": bad, **extra},
            "latency": rec.summary(window_ns, cpu)}


def serve(p: RRParams, sock: socket.socket, respond, buffer_addr: str, **extra) -> dict:
    """The responder's run: `respond()` -> (requests, bad, t_first, t_last) in this process's
    CPU window, the socket closed after it; its result."""
    cpu = CpuWindow().start()
    requests, bad, t_first, t_last = respond()
    sock.close()
    return responder_result(p, requests, bad, t_first, t_last, cpu.stop(), buffer_addr,
                            **extra)


def responder_result(p: RRParams, requests: int, bad: int, t_first, t_last, cpu: dict,
                     buffer_addr: str, stream: bool = True, **extra) -> dict:
    """`bytes_seen` only for streams (the sample's stream-gap check: every request byte the
    requester sent arrived); a UDP request or response may be lost, the requester counts it."""
    good = requests - bad
    return {"messages": good, "bytes": good * p.request,
            **({"bytes_seen": requests * p.request} if stream else {}),
            "bad": bad, "t_first": t_first, "t_last": t_last, "cpu": cpu,
            "buffer_addr": buffer_addr,
            "rr": {**p.config(), "role": "responder", "requests": requests,
                   "bad_requests": bad, "responses": requests,
                   "cpu_us_per_transaction": cpu_per_transaction(cpu, requests), **extra}}
