"""TCP stream: sendall() of fixed-size messages, recv_into() a buffer of the same size.

Expected copies (DESIGN.md): COPY#1 + COPY#4; bytes copied = payload bytes (the kernel segments).
"""

from __future__ import annotations

import os
import socket

from workloads.agent import AgentIO, CpuWindow, buffer_address, now
from workloads.pattern import StreamVerifier
from workloads.sockets import (
    PatternSource,
    bound_from,
    connect_sender,
    listen_stream,
    receive_stream,
    send_messages,
    stream_result,
)


def receiver(cfg: dict, io: AgentIO) -> dict:
    size = int(cfg["size"])
    lsock, bufs = listen_stream(cfg)
    buf = bytearray(size)
    io.emit("ready", pid=os.getpid(), port=lsock.getsockname()[1],
            buffer_addr=buffer_address(buf), **bufs)
    conn, _ = lsock.accept()
    lsock.close()
    verify = StreamVerifier(size)
    cpu = CpuWindow().start()
    window = receive_stream(conn.recv_into, buf, verify)
    conn.close()
    return stream_result(verify, size, **window, cpu=cpu.stop(), buffer_addr=buffer_address(buf))


def sender(cfg: dict, io: AgentIO) -> dict:
    size = int(cfg["size"])
    src = PatternSource(size)
    sock, ready = connect_sender(cfg, socket.SOCK_STREAM, src)
    io.emit("ready", **ready)
    io.wait_cmd("go")
    cpu = CpuWindow().start()
    bound = bound_from(cfg)
    sent, _ = send_messages(sock.sendall, src.views, bound)
    t_end = now()
    sock.shutdown(socket.SHUT_WR)
    sock.close()
    return {"messages": sent, "bytes": sent * size, "t_start": bound.t_start, "t_end": t_end,
            "cpu": cpu.stop(), "buffer_addr": buffer_address(src.buf)}
