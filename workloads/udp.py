"""UDP datagrams on a connected socket: send()/recv_into(), or sendmmsg()/recvmmsg() batches.

`batch` (default 1 = one syscall per datagram, as in the seed) sets datagrams per system call.

Expected copies (DESIGN.md): COPY#1 + COPY#4 per datagram; bytes copied = payload bytes.
"""

from __future__ import annotations

import errno
import os
import socket
import time

from workloads.agent import AgentIO, CpuWindow, buffer_address, now
from workloads.mmsg import BatchReceiver, BatchSender
from workloads.pattern import PERIOD, block, datagram_ok
from workloads.sockets import PatternSource, bound_from, connect_sender, send_messages, size_buffers


def receiver(cfg: dict, io: AgentIO) -> dict:
    size = int(cfg["size"])
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bufs = size_buffers(sock, cfg)
    sock.bind((cfg["bind"], int(cfg.get("port", 0))))
    addr = sock.getsockname()
    batch = int(cfg.get("batch", 1))
    batcher = BatchReceiver(sock.fileno(), size, batch) if batch > 1 else None
    buf = batcher.buf if batcher else bytearray(size)
    ref = block(size)
    io.emit("ready", pid=os.getpid(), port=addr[1], buffer_addr=buffer_address(buf), **bufs)

    def end_receive():
        # shutdown(SHUT_RD) wakes the blocked receive; queued datagrams still come first, then
        # recv returns 0. On an unconnected UDP socket Linux answers ENOTCONN but still wakes
        # it. (An end-marker datagram would add a zero-length copy call to the exact counts.)
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    io.on_cmd("stop", end_receive)
    cpu = CpuWindow().start()
    counts = receive_batches(batcher, size, ref) if batcher else receive_one_by_one(sock, buf, ref)
    return {**counts, "cpu": cpu.stop(), "buffer_addr": buffer_address(buf)}


def receive_one_by_one(sock: socket.socket, buf: bytearray, ref: bytes) -> dict:
    """recv_into per datagram until shutdown (recv returns 0). The hot loop makes C calls
    only: a datagram is good when it has the full size and equals the pattern slice its first
    byte names (datagram_ok, inlined)."""
    size, mv = len(buf), memoryview(buf)
    recv_into, clock, startswith = sock.recv_into, time.monotonic, ref.startswith
    messages = bad = 0
    n = recv_into(buf)
    t_first = t_last = clock() if n else None
    first = size if n == size and buf[0] < PERIOD and startswith(mv, buf[0]) else 0
    while n:
        if n == size and buf[0] < PERIOD and startswith(mv, buf[0]):
            messages += 1
        else:
            bad += 1
        n = recv_into(buf)
        if n:
            t_last = clock()
    return {"messages": messages, "bytes": messages * size, "bad": bad, "t_first": t_first,
            "t_last": t_last, "first_bytes": first}


def receive_batches(batcher: BatchReceiver, size: int, ref: bytes) -> dict:
    """recvmmsg batches until shutdown; a batch's datagrams are checked one by one."""
    mv = memoryview(batcher.buf)
    messages = nbytes = bad = first = 0
    t_first = t_last = None
    ended = False
    while not ended:
        lengths = batcher.recv()
        if not lengths:
            break  # recvmmsg found the socket shut down with nothing queued
        t = now()
        opens = False
        if lengths[0]:  # the window ends at the last datagram, not at the shutdown
            t_last = t
            if t_first is None:
                t_first, opens = t, True
        for i, n in enumerate(lengths):
            if n == 0:
                ended = True  # shut down; datagrams before it in this batch still count
                break
            if n == size and datagram_ok(ref, mv[i * size:i * size + n]):
                messages += 1
                nbytes += n
            else:
                bad += 1
        if opens:
            first = nbytes   # this batch arrived at the window's start
    return {"messages": messages, "bytes": nbytes, "bad": bad, "t_first": t_first,
            "t_last": t_last, "first_bytes": first}


def sender(cfg: dict, io: AgentIO) -> dict:
    size = int(cfg["size"])
    src = PatternSource(size)
    sock, ready = connect_sender(cfg, socket.SOCK_DGRAM, src)
    io.emit("ready", **ready)
    io.wait_cmd("go")
    cpu = CpuWindow().start()
    bound = bound_from(cfg)
    sent = errors = 0
    batch = int(cfg.get("batch", 1))
    if batch > 1:
        batcher = BatchSender(sock.fileno(), src.buf, size, PERIOD, batch)

        def send_some(seq: int) -> int:
            left = batch if bound.count is None else min(batch, bound.count - seq)
            return batcher.send(seq, left)
        while not bound.done(sent):
            try:
                sent += send_some(sent)
            except OSError as exc:
                # ENOBUFS/EAGAIN: the qdisc or socket is full; the datagram is lost.
                if exc.errno not in (errno.ENOBUFS, errno.EAGAIN):
                    raise
                errors += 1
                if bound.count is None and now() >= bound.deadline:
                    break
    else:
        # Datagram i carries phase i % 251 (its first byte), so it verifies on its own.
        sent, errors = send_messages(sock.send, src.views, bound,
                                     tolerate=(errno.ENOBUFS, errno.EAGAIN))
    t_end = now()
    return {"messages": sent, "bytes": sent * size, "send_errors": errors,
            "t_start": bound.t_start, "t_end": t_end, "cpu": cpu.stop(),
            "buffer_addr": buffer_address(src.buf)}
