"""TCP request/response through io_uring (workloads/io_uring.py's Ring): one transaction in
flight, one io_uring_enter per transaction on each side.

Requester: the request's send (MSG_WAITALL) linked to the response's recv (MSG_WAITALL), both
submitted and the recv reaped with one io_uring_submit_and_wait; the send carries
IOSQE_CQE_SKIP_SUCCESS (a full send posts nothing; a failed one posts its error and cancels the
recv). Responder: the response's send linked to the next request's recv, the same way. The
messages and their checks are tcp_rr's (pattern phase per transaction, one memcmp each).
in_flight > 1 is refused: N linked chains on one socket would race (see io_uring.py).

Timing as in tcp_rr: CLOCK_MONOTONIC before the submission that sends the request, after the
response's completion is reaped. Each wait is bounded by `rr_timeout_s`.

Expected copies: COPY#1 + COPY#4 per request and per response (io_uring saves system calls,
not copies).
"""

from __future__ import annotations

import errno
import os
import socket
import time

from workloads.agent import AgentIO, CpuWindow, buffer_address, now
from workloads.io_uring import Ring
from workloads.pattern import block
from workloads.rr import (
    RRParams,
    Stalled,
    accept_stream,
    connect_requester,
    params,
    phases,
    requester_result,
    respond_stream,
    responder_result,
    start_requests,
)
from workloads.rr_stats import Recorder
from workloads.sockets import PatternSource

MSG_WAITALL = socket.MSG_WAITALL
SEND, RECV = 1, 2          # user_data of the two requests of a chain


def _params(cfg: dict) -> RRParams:
    p = params(cfg)
    if p.in_flight != 1:
        raise ValueError(f"in_flight {p.in_flight}: io_uring_rr keeps one transaction in "
                         "flight (linked chains on one socket would race)")
    return p


class Chain:
    """send(view) linked to recv(into buf), or a recv alone; returns the recv's byte count
    once the whole message is in (`size`), 0 at end of stream."""

    def __init__(self, ring: Ring, fd: int, buf: bytearray, timeout: float):
        L, K = ring.L, ring.K
        self.ring, self.fd, self.timeout = ring, fd, timeout
        self.mv, self.size = memoryview(buf), len(buf)
        self.prep_send, self.prep_recv = L.io_uring_prep_send, L.io_uring_prep_recv
        self.set_flags, self.set_data = L.io_uring_sqe_set_flags, L.io_uring_sqe_set_data64
        self.link_skip = K["IOSQE_IO_LINK"] | K["IOSQE_CQE_SKIP_SUCCESS"]
        self.short = 0
        self.sending = 0           # bytes of the send queued in this chain, 0 if none

    def queue(self, view=None) -> None:
        ring = self.ring
        if view is not None:
            s = ring.sqe()
            self.prep_send(s, self.fd, view, len(view), MSG_WAITALL)
            self.set_flags(s, self.link_skip)
            self.set_data(s, SEND)
        self.sending = len(view) if view is not None else 0
        s = ring.sqe()
        self.prep_recv(s, self.fd, self.mv, self.size, MSG_WAITALL)
        self.set_data(s, RECV)
        ring.inflight = 2 if view is not None else 1

    def wait(self) -> int:
        """Reap the chain: the recv's bytes, the rest of a short recv fetched first."""
        ring = self.ring
        got = self._reap()
        while 0 < got < self.size:          # a signal or a reset cut MSG_WAITALL short
            self.short += 1
            s = ring.sqe()
            self.prep_recv(s, self.fd, self.mv[got:], self.size - got, MSG_WAITALL)
            self.set_data(s, RECV)
            ring.inflight = 1
            more = self._reap()
            if more <= 0:
                return got
            got += more
        return got

    def _reap(self) -> int:
        ring = self.ring
        ring.deadline = now() + self.timeout
        try:
            while True:
                for data, res, _flags in ring.submit_wait(1):
                    if data == SEND:       # only a failed or short send posts a CQE
                        if res >= 0:
                            # a short send breaks the link: the recv is cancelled and the
                            # peer holds part of a message, so the transaction cannot go on
                            raise OSError(errno.EIO, f"io_uring send: {res} of {self.sending} "
                                          "bytes sent; the linked recv was cancelled")
                        if res != -errno.ECANCELED:
                            raise OSError(-res, f"io_uring send: {os.strerror(-res)}")
                        continue
                    ring.inflight = 0
                    if res < 0:
                        if res in (-errno.ECANCELED, -errno.ECONNRESET, -errno.EPIPE):
                            return 0
                        raise OSError(-res, f"io_uring recv: {os.strerror(-res)}")
                    return res
        except TimeoutError:
            raise Stalled(f"no completion within {self.timeout:g} s: the peer stopped "
                          "answering") from None


def receiver(cfg: dict, io: AgentIO) -> dict:
    p = _params(cfg)
    qbuf = bytearray(p.request)
    src = PatternSource(p.response)
    conn = accept_stream(cfg, io, qbuf)
    ring = Ring(4, now() + float(cfg.get("max_seconds", 600)))
    ring.fd = conn.fileno()
    cpu = CpuWindow().start()
    try:
        # the responder waits for requests as long as the agent lives, not rr_timeout_s
        chain = Chain(ring, conn.fileno(), qbuf, float(cfg.get("max_seconds", 600)))
        requests, bad, t_first, t_last = _respond(chain, p, qbuf, src)
        described = {**ring.describe(1), "op": "send linked to recv", "short": chain.short}
    finally:
        ring.close()
        conn.close()
    return responder_result(p, requests, bad, t_first, t_last, cpu.stop(),
                            buffer_address(qbuf), nodelay=True, io_uring=described)


def _respond(chain: Chain, p: RRParams, qbuf: bytearray, src: PatternSource):
    """respond_stream on the ring: each response's send linked to the next request's recv
    (Chain.queue), which Chain.wait reaps, short reads already finished; an io_uring error
    other than the end of the stream fails the agent."""
    chain.queue()
    return respond_stream(p, qbuf, src.views, lambda *_: chain.wait(), lambda n: n,
                          chain.queue)


def sender(cfg: dict, io: AgentIO) -> dict:
    p = _params(cfg)
    req = PatternSource(p.request)
    sock, bufs = connect_requester(cfg, socket.SOCK_STREAM, None)
    rbuf = bytearray(p.response)
    ring = Ring(4, now() + p.timeout)
    ring.fd = sock.fileno()
    io.emit("ready", pid=os.getpid(), buffer_addr=buffer_address(req.buf), **bufs,
            io_uring_setup=ring.setup)
    try:
        cpu, rec, t_start = start_requests(io)
        chain = Chain(ring, sock.fileno(), rbuf, p.timeout)
        try:
            done, bad = _request(chain, p, req.views, rbuf, rec, t_start)
        finally:
            t_end = now()
        described = {**ring.describe(1), "op": "send linked to recv", "short": chain.short}
    finally:
        ring.close()
        sock.close()
    return requester_result(p, rec, done, done - bad, bad, t_start, t_end, cpu.stop(),
                            buffer_address(req.buf), nodelay=True, io_uring=described)


def _request(chain: Chain, p: RRParams, req_views: list, rbuf: bytearray, rec: Recorder,
             t_start: float) -> tuple[int, int]:
    r = p.response
    rmv = memoryview(rbuf)
    startswith = block(r).startswith
    append, clock = rec.append, time.monotonic_ns
    phase_of = phases()
    limit, deadline = p.bounds(t_start)
    done = bad = 0
    while done < limit:
        k = phase_of(done)
        chain.queue(req_views[k])
        t0 = clock()
        n = chain.wait()
        t1 = clock()
        if n != r:
            raise Stalled(f"the responder closed the connection in transaction {done} "
                          f"({n} of {r} response bytes)")
        if not startswith(rmv, k):
            bad += 1
        append(t1 - t0)
        done += 1
        if t1 >= deadline:
            break
        if rec.due():
            rec.fold()            # nothing outstanding between transactions
    return done, bad
