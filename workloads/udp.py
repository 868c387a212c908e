"""UDP datagrams on a connected socket: send()/recv_into(), or sendmmsg()/recvmmsg() batches.

`batch` (default 1 = one syscall per datagram, as in the seed) sets datagrams per system call.
Every datagram carries its sequence number (workloads.pattern: 8-byte header, then the pattern
from phase seq % 251): the receiver counts gaps as loss and reports duplicates and late
(reordered) datagrams; a datagram whose bytes are wrong is a payload error.

Expected copies (DESIGN.md): COPY#1 + COPY#4 per datagram; bytes copied = payload bytes.
"""

from __future__ import annotations

import errno
import os
import socket
import sys
import time

from workloads.agent import AgentIO, CpuWindow, buffer_address, now
from workloads.mmsg import BatchReceiver, BatchSender
from workloads.pattern import PERIOD, SEQ, SEQ_BYTES, SeqTracker, block, datagram_seq
from workloads.sockets import BLOCK, bound_from, connect_sender, size_buffers

TOLERATED = (errno.ENOBUFS, errno.EAGAIN)   # the qdisc or socket is full: that datagram is lost


class DatagramSource:
    """Datagram buffers: buffer j holds room for the sequence number, then the pattern from
    phase j % PERIOD. A multiple of PERIOD buffers, at least `batch`, in one bytearray (the
    batch sender addresses them), so the datagrams of one sendmmsg never share a buffer; the
    header is written just before the send (the kernel copies the datagram in the call)."""

    def __init__(self, size: int, batch: int = 1):
        if size < SEQ_BYTES:
            raise ValueError(f"UDP datagrams of {size} B cannot carry the {SEQ_BYTES}-byte "
                             "sequence number")
        self.size = size
        self.nbufs = PERIOD * -(-batch // PERIOD)
        ref = block(size)
        self.buf = bytearray(self.nbufs * size)
        for j in range(self.nbufs):
            k = j % PERIOD
            self.buf[j * size + SEQ_BYTES:(j + 1) * size] = ref[k:k + size - SEQ_BYTES]
        mv = memoryview(self.buf)
        self.views = [mv[j * size:(j + 1) * size] for j in range(self.nbufs)]

    def stamp(self, seq: int) -> memoryview:
        """Datagram `seq`, its header written."""
        j = seq % self.nbufs
        SEQ.pack_into(self.buf, j * self.size, seq)
        return self.views[j]


def bind_datagram(cfg: dict) -> tuple[socket.socket, dict]:
    """The receiving side of a UDP workload: a socket bound to the configured address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    bufs = size_buffers(sock, cfg)
    sock.bind((cfg["bind"], int(cfg.get("port", 0))))
    return sock, bufs


def stop_by_shutdown(io: AgentIO, sock: socket.socket) -> None:
    """"stop" ends the receive loop: shutdown(SHUT_RD) wakes the blocked receive; queued
    datagrams still come first, then recv returns 0. On an unconnected UDP socket Linux answers
    ENOTCONN but still wakes it. (An end-marker datagram would add a zero-length copy call to
    the exact counts.)"""
    def end_receive():
        try:
            sock.shutdown(socket.SHUT_RD)
        except OSError:
            pass

    io.on_cmd("stop", end_receive)


def receiver(cfg: dict, io: AgentIO) -> dict:
    size = int(cfg["size"])
    sock, bufs = bind_datagram(cfg)
    addr = sock.getsockname()
    batch = int(cfg.get("batch", 1))
    batcher = BatchReceiver(sock.fileno(), size, batch) if batch > 1 else None
    buf = batcher.buf if batcher else bytearray(size)
    ref = block(size)
    io.emit("ready", pid=os.getpid(), port=addr[1], buffer_addr=buffer_address(buf), **bufs)
    stop_by_shutdown(io, sock)
    cpu = CpuWindow().start()
    counts = receive_batches(batcher, size, ref) if batcher else receive_one_by_one(sock, buf, ref)
    return {**counts, "cpu": cpu.stop(), "buffer_addr": buffer_address(buf)}


def receive_one_by_one(sock: socket.socket, buf: bytearray, ref: bytes) -> dict:
    """recv_into per datagram until shutdown (recv returns 0). The hot loop makes C calls
    only, in order: a datagram is good when it has the full size and its body is the pattern
    its sequence number names (datagram_seq, inlined); the next expected sequence number is one
    compare, anything else goes to the SeqTracker."""
    size, mv = len(buf), memoryview(buf)
    body = mv[SEQ_BYTES:]
    # The header read in place: a one-element view (~40 ns) where struct.unpack_from costs
    # ~150 ns per datagram. The header is little endian, as a native 'Q' is here.
    head = mv[:SEQ_BYTES].cast("Q") if sys.byteorder == "little" and size >= SEQ_BYTES else None
    recv_into, clock, startswith = sock.recv_into, time.monotonic, ref.startswith
    track = SeqTracker()
    messages = bad = expect = 0
    n = recv_into(buf)
    t_first = t_last = clock() if n else None
    first = size if n == size and datagram_seq(ref, mv) is not None else 0
    while n:
        if n == size and startswith(body, (seq := (head[0] if head is not None else
                                                   SEQ.unpack_from(buf)[0])) % PERIOD):
            if seq == expect:
                expect += 1
                messages += 1
            else:
                track.expect = expect
                messages += track._slow(seq)
                expect = track.expect
        else:
            bad += 1
        n = recv_into(buf)
        if n:
            t_last = clock()
    track.expect = expect
    return {"messages": messages, "bytes": messages * size, "bad": bad, "t_first": t_first,
            "t_last": t_last, "first_bytes": first, "sequence": track.report()}


def receive_batches(batcher: BatchReceiver, size: int, ref: bytes) -> dict:
    """recvmmsg batches until shutdown; a batch's datagrams are checked one by one."""
    mv = memoryview(batcher.buf)
    track = SeqTracker()
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
            seq = datagram_seq(ref, mv[i * size:i * size + n]) if n == size else None
            if seq is None:
                bad += 1
            elif track.see(seq):
                messages += 1
                nbytes += n
        if opens:
            first = nbytes   # this batch arrived at the window's start
    return {"messages": messages, "bytes": nbytes, "bad": bad, "t_first": t_first,
            "t_last": t_last, "first_bytes": first, "sequence": track.report()}


def send_datagrams(send, src: DatagramSource, bound, tolerate=TOLERATED) -> tuple[int, int]:
    """send(datagram seq) for seq = 0, 1, ... until `bound`; (sent, errors). The count and the
    clock are checked once per BLOCK datagrams. A send that fails with an errno in `tolerate`
    is counted and the same sequence number goes again: the receiver's gaps are the path's."""
    seq = errors = 0
    count, deadline, clock, stamp = bound.count, bound.deadline, time.monotonic, src.stamp
    while True:
        todo = BLOCK if count is None else min(BLOCK, count - seq)
        if todo <= 0:
            return seq, errors
        for _ in range(todo):
            try:
                send(stamp(seq))
                seq += 1
            except OSError as exc:
                if exc.errno not in tolerate:
                    raise
                errors += 1
        if clock() >= deadline:
            return seq, errors


def sender(cfg: dict, io: AgentIO) -> dict:
    size = int(cfg["size"])
    batch = int(cfg.get("batch", 1))
    src = DatagramSource(size, batch)
    sock, ready = connect_sender(cfg, socket.SOCK_DGRAM, src)
    io.emit("ready", **ready)
    io.wait_cmd("go")
    cpu = CpuWindow().start()
    bound = bound_from(cfg)
    sent = errors = 0
    if batch > 1:
        batcher = BatchSender(sock.fileno(), src.buf, size, src.nbufs, batch, stride=size)
        while not bound.done(sent):
            left = batch if bound.count is None else min(batch, bound.count - sent)
            for seq in range(sent, sent + left):
                src.stamp(seq)
            try:
                sent += batcher.send(sent, left)
            except OSError as exc:
                if exc.errno not in TOLERATED:
                    raise
                errors += 1
                if bound.count is None and now() >= bound.deadline:
                    break
    else:
        sent, errors = send_datagrams(sock.send, src, bound)
    t_end = now()
    return {"messages": sent, "bytes": sent * size, "send_errors": errors,
            "t_start": bound.t_start, "t_end": t_end, "cpu": cpu.stop(),
            "buffer_addr": buffer_address(src.buf)}
