"""TCP request/response (netperf TCP_RR): Q-byte requests, R-byte responses, N in flight.

Both directions are streams of fixed-size messages as in the tcp workload: transaction i's
request is the pattern from phase(i) (workloads.pattern), Q bytes, and its response the pattern
from the same phase, R bytes. Each side reads one whole message with recv_into(MSG_WAITALL)
and compares it with one memcmp: a lost, duplicated or shifted message changes every later
message's phase, so it fails the next one's check (250/251 each), and the counts are exact.
TCP_NODELAY on both ends: a request or response is never held back for an ACK.

Expected copies: COPY#1 + COPY#4 per request and per response (4 per transaction).
"""

from __future__ import annotations

import socket
import time

from workloads.agent import AgentIO, buffer_address
from workloads.pattern import block
from workloads.rr import (
    RRParams,
    Stalled,
    accept_stream,
    params,
    phases,
    respond_stream,
    run_requester,
    serve,
)
from workloads.rr_stats import Recorder
from workloads.sockets import PatternSource

WAITALL = socket.MSG_WAITALL


def _recv_message(recv_into, mv: memoryview, size: int, n: int) -> int:
    """The rest of a message MSG_WAITALL returned short (a signal, a timeout mid-message):
    the bytes read so far, `size` when whole, less at end of stream."""
    while 0 < n < size:
        k = recv_into(mv[n:], size - n, WAITALL)
        if k == 0:
            break
        n += k
    return n


def receiver(cfg: dict, io: AgentIO) -> dict:
    """The responder: answers each verified-or-not request with its response, until EOF."""
    p = params(cfg)
    qbuf = bytearray(p.request)
    src = PatternSource(p.response)
    conn = accept_stream(cfg, io, qbuf)
    return serve(p, conn, lambda: respond(conn, p, qbuf, src), buffer_address(qbuf),
                 nodelay=True)


def respond(conn: socket.socket, p: RRParams, qbuf: bytearray, src: PatternSource):
    """respond_stream on the socket: recv_into(MSG_WAITALL), sendall; a reset, or the
    shutdown by "stop", ends it like end of stream."""
    recv_into, qmv, q = conn.recv_into, memoryview(qbuf), p.request
    return respond_stream(p, qbuf, src.views, recv_into,
                          lambda n: _recv_message(recv_into, qmv, q, n), conn.sendall,
                          ends=(OSError,))


def sender(cfg: dict, io: AgentIO) -> dict:
    """The requester: up to `in_flight` requests outstanding, each response verified and
    timed on this process's one clock."""
    p = params(cfg)
    req = PatternSource(p.request)
    return run_requester(
        cfg, io, p, socket.SOCK_STREAM, req,
        lambda sock, rbuf, rec, t_start: request(sock, p, req.views, rbuf, rec, t_start),
        nodelay=True)


def request(sock: socket.socket, p: RRParams, req_views: list, rbuf: bytearray, rec: Recorder,
            t_start: float) -> dict:
    """Transactions until the count or the deadline: `done`, `bad` (responses)."""
    sendall, recv_into, clock = sock.sendall, sock.recv_into, time.monotonic_ns
    r, n_flight = p.response, p.in_flight
    rmv = memoryview(rbuf)
    startswith = block(r).startswith
    append = rec.append
    limit, deadline = p.bounds(t_start)
    t_sent = [0] * n_flight
    sent = done = bad = 0
    phase_of = phases()

    def refill() -> None:
        nonlocal sent
        while sent - done < n_flight and sent < limit and clock() < deadline:
            t_sent[sent % n_flight] = clock()
            sendall(req_views[phase_of(sent)])
            sent += 1

    try:
        refill()
        while done < sent:
            n = recv_into(rbuf, r, WAITALL)
            if n != r:
                n = _recv_message(recv_into, rmv, r, n)
                if n != r:
                    raise Stalled(f"the responder closed the connection in transaction "
                                  f"{done} ({n} of {r} response bytes)")
            t1 = clock()
            if not startswith(rmv, phase_of(done)):
                bad += 1
            append(t1 - t_sent[done % n_flight])
            done += 1
            if rec.due():
                # Fold with nothing outstanding, so no transaction's time includes it.
                if done == sent:
                    rec.fold()
                    refill()
            elif sent < limit and t1 < deadline:
                t_sent[sent % n_flight] = clock()
                sendall(req_views[phase_of(sent)])
                sent += 1
    except BlockingIOError:
        raise Stalled(f"no progress within {p.timeout:g} s in transaction {done}: the "
                      "responder stopped answering") from None
    return {"done": done, "bad": bad}
