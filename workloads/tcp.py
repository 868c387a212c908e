"""TCP stream: sendall() of fixed-size messages, recv_into() a buffer of the same size.

Expected copies (DESIGN.md): COPY#1 + COPY#4; bytes copied = payload bytes (the kernel segments).
"""

from __future__ import annotations

import os
import socket

from workloads.agent import AgentIO, CpuWindow, buffer_address, now
from workloads.pattern import StreamVerifier
from workloads.sockets import PatternSource, bound_from, connect_sender, listen_stream, stream_result


def receiver(cfg: dict, io: AgentIO) -> dict:
    size = int(cfg["size"])
    lsock, bufs = listen_stream(cfg)
    buf = bytearray(size)
    mv = memoryview(buf)
    io.emit("ready", pid=os.getpid(), port=lsock.getsockname()[1],
            buffer_addr=buffer_address(buf), **bufs)
    conn, _ = lsock.accept()
    lsock.close()
    verify = StreamVerifier(size)
    cpu = CpuWindow().start()
    recv_calls = 0
    t_first = t_last = None
    first = 0
    recv_into = conn.recv_into
    check = verify.check
    while True:
        n = recv_into(buf)
        if n == 0:
            break
        t_last = now()
        if t_first is None:
            t_first, first = t_last, n   # those bytes arrived at the window's start
        recv_calls += 1
        check(mv[:n])
    conn.close()
    return stream_result(verify, size, recv_calls=recv_calls, t_first=t_first, t_last=t_last,
                         first_bytes=first,
                         cpu=cpu.stop(), buffer_addr=buffer_address(buf))


def sender(cfg: dict, io: AgentIO) -> dict:
    size = int(cfg["size"])
    src = PatternSource(size)
    sock, ready = connect_sender(cfg, socket.SOCK_STREAM, src)
    io.emit("ready", **ready)
    io.wait_cmd("go")
    cpu = CpuWindow().start()
    bound = bound_from(cfg)
    sent = 0
    sendall = sock.sendall
    views = src.views
    period = len(views)
    while not bound.done(sent):
        # Message i starts at stream offset i*size, whose pattern phase is (i*size) % 251.
        sendall(views[(sent * size) % period])
        sent += 1
    t_end = now()
    sock.shutdown(socket.SHUT_WR)
    sock.close()
    return {"messages": sent, "bytes": sent * size, "t_start": bound.t_start, "t_end": t_end,
            "cpu": cpu.stop(), "buffer_addr": buffer_address(src.buf)}
