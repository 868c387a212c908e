"""UDP request/response (netperf UDP_RR): Q-byte request datagrams, R-byte responses, N in
flight.

Every datagram carries its transaction's sequence number (workloads.pattern: an 8-byte header,
then the pattern from phase seq % 251), so Q and R are at least 8 bytes. The responder answers
each request with the response of the same sequence number; the requester matches responses to
its outstanding requests by it, so a late, duplicated or stray response is counted, never
taken for another transaction's. Nothing arriving for `rr_timeout_s` counts every outstanding
transaction lost (the path dropped them) and sends new ones; three such timeouts in a row mean
the responder stopped answering, and the requester fails with that.

Expected copies: COPY#1 + COPY#4 per request and per response datagram (4 per transaction).
"""

from __future__ import annotations

import os
import socket
import time

from workloads.agent import AgentIO, buffer_address
from workloads.pattern import PERIOD, SEQ, SEQ_BYTES, block
from workloads.rr import (
    RRParams,
    Stalled,
    params,
    run_requester,
    serve,
)
from workloads.rr_stats import Recorder
from workloads.udp import DatagramSource, bind_datagram, stop_by_shutdown

MAX_SIZE = 65507
STALLS = 3        # timeouts in a row that end the requester
# MSG_TRUNC: a datagram's real length even where it is longer than the buffer (then wrong)
TRUNC = socket.MSG_TRUNC


def _params(cfg: dict) -> RRParams:
    return params(cfg, min_size=SEQ_BYTES, max_size=MAX_SIZE)


def receiver(cfg: dict, io: AgentIO) -> dict:
    """The responder: one response datagram per request, to the address it came from."""
    p = _params(cfg)
    sock, bufs = bind_datagram(cfg)
    qbuf = bytearray(p.request)
    src = DatagramSource(p.response)
    io.emit("ready", pid=os.getpid(), port=sock.getsockname()[1],
            buffer_addr=buffer_address(qbuf), **bufs)
    stop_by_shutdown(io, sock)
    return serve(p, sock, lambda: respond(sock, p, qbuf, src), buffer_address(qbuf),
                 stream=False)


def respond(sock: socket.socket, p: RRParams, qbuf: bytearray, src: DatagramSource):
    recvfrom_into, sendto, clock = sock.recvfrom_into, sock.sendto, time.monotonic
    qmv = memoryview(qbuf)
    body = qmv[SEQ_BYTES:]
    q = p.request
    startswith = block(q).startswith
    unpack, stamp = SEQ.unpack_from, src.stamp
    requests = bad = 0
    t_first = t_last = None
    while True:
        n, addr = recvfrom_into(qbuf, 0, TRUNC)
        if n == 0 or addr is None:
            break          # shut down by "stop" (requests are never empty: 8-byte header)
        t_last = clock()
        if t_first is None:
            t_first = t_last
        requests += 1
        if n < SEQ_BYTES:
            bad += 1
            continue       # no sequence number to answer with
        seq = unpack(qbuf)[0]
        if n != q or not startswith(body, seq % PERIOD):
            bad += 1       # answered all the same: the requester's wait stays bounded
        sendto(stamp(seq), addr)
    return requests, bad, t_first, t_last


def sender(cfg: dict, io: AgentIO) -> dict:
    p = _params(cfg)
    src = DatagramSource(p.request)
    return run_requester(
        cfg, io, p, socket.SOCK_DGRAM, src,
        lambda sock, rbuf, rec, t_start: request(sock, p, src, rbuf, rec, t_start))


def request(sock: socket.socket, p: RRParams, src: DatagramSource, rbuf: bytearray,
            rec: Recorder, t_start: float) -> dict:
    """Transactions until the count or the deadline: `done` (answered, verified or `bad`),
    `lost` (given up after a timeout), `late` (a response to one given up, or a duplicate),
    `stray` (a response too short to carry a sequence number)."""
    send, recv_into, clock = sock.send, sock.recv_into, time.monotonic_ns
    r = p.response
    rmv = memoryview(rbuf)
    body = rmv[SEQ_BYTES:]
    startswith = block(r).startswith
    unpack, stamp, append = SEQ.unpack_from, src.stamp, rec.append
    limit, deadline = p.bounds(t_start)
    outstanding: dict[int, int] = {}       # seq -> send time (ns)
    sent = done = bad = lost = late = stray = stalls = 0

    def refill() -> None:
        nonlocal sent
        while len(outstanding) < p.in_flight and sent < limit and clock() < deadline:
            outstanding[sent] = clock()
            send(stamp(sent))
            sent += 1

    refill()
    while outstanding:
        try:
            n = recv_into(rbuf, 0, TRUNC)
        except BlockingIOError:            # SO_RCVTIMEO: nothing for p.timeout seconds
            stalls += 1
            if stalls >= STALLS:
                raise Stalled(f"no response for {STALLS} x {p.timeout:g} s after "
                              f"{done} transactions: the responder stopped answering") from None
            lost += len(outstanding)
            outstanding.clear()
            refill()
            continue
        t1 = clock()
        if n < SEQ_BYTES:
            stray += 1
            continue
        seq = unpack(rbuf)[0]
        t0 = outstanding.pop(seq, None)
        if t0 is None:
            late += 1
            continue
        stalls = 0
        if n != r or not startswith(body, seq % PERIOD):
            bad += 1
        append(t1 - t0)
        done += 1
        if rec.due():
            if not outstanding:            # fold with nothing outstanding (see tcp_rr)
                rec.fold()
                refill()
        elif sent < limit and t1 < deadline:
            outstanding[sent] = clock()
            send(stamp(sent))
            sent += 1
    return {"done": done, "bad": bad, "lost": lost, "late": late, "stray": stray}
