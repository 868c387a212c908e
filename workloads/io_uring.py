"""TCP through io_uring (liburing): which copies remain with each io_uring mode.

  io_uring     send / recv submitted through the ring: same copies as send()/recv()
               (COPY#1 + COPY#4); io_uring saves syscalls, not copies.
  io_uring_zc  send_zc_fixed from a registered (fixed) buffer; the kernel reports per send
               whether it really avoided the copy (IORING_SEND_ZC_REPORT_USAGE) — on veth and
               loopback it must copy after all, like MSG_ZEROCOPY. recv still copies.

One request in flight per socket: two sends in flight on one TCP socket may complete out of
order or short, and a stream with a hole would fail verification, not measure anything.
"""

from __future__ import annotations

import os
import socket

from workloads.agent import AgentIO, CpuWindow, buffer_address, now
from workloads.pattern import StreamVerifier
from workloads.sockets import PatternSource, bound_from, connect_sender, listen_stream, stream_result

IORING_CQE_F_MORE = 1 << 1
IORING_CQE_F_NOTIF = 1 << 3
IORING_SEND_ZC_REPORT_USAGE = 1 << 3
IORING_NOTIF_USAGE_ZC_COPIED = 1 << 31
MSG_WAITALL = socket.MSG_WAITALL


class Ring:
    """A small ring with one request in flight at a time (see module docstring)."""

    def __init__(self, entries: int = 8, zerocopy: bool = False):
        import liburing
        self.L = liburing
        self.ring = liburing.io_uring()
        rc = liburing.io_uring_queue_init(entries, self.ring, 0)
        if rc < 0:
            raise OSError(-rc, f"io_uring_queue_init: {os.strerror(-rc)}")
        self.cqe = liburing.io_uring_cqe()
        self.notifs = 0
        self.notifs_copied = 0
        self.copied_bytes = 0
        self.submitted = 0
        self.zerocopy = zerocopy          # send_zc: each request gets a notification
        self.sizes: dict[int, int] = {}   # request number -> bytes sent (for copied bytes)

    def _wait(self):
        rc = self.L.io_uring_wait_cqe(self.ring, self.cqe)
        if rc < 0:
            raise OSError(-rc, f"io_uring_wait_cqe: {os.strerror(-rc)}")
        res, flags, data = self.cqe.res, self.cqe.flags, self.cqe.user_data
        self.L.io_uring_cqe_seen(self.ring, self.cqe)
        if flags & IORING_CQE_F_NOTIF:
            self._count_notif(res, data)
        return res, flags

    def run(self, prep) -> int:
        """Prepare one SQE with `prep(sqe)`, submit, return its result (notifications are
        counted on the way)."""
        sqe = self.L.io_uring_get_sqe(self.ring)
        prep(sqe)
        req = self.submitted
        self.submitted += 1
        self.L.io_uring_sqe_set_data64(sqe, req)   # the notification carries it back
        self.L.io_uring_submit(self.ring)
        while True:
            res, flags = self._wait()
            if flags & IORING_CQE_F_NOTIF:
                continue
            if res < 0:
                raise OSError(-res, os.strerror(-res))
            if self.zerocopy:
                self.sizes[req] = res   # the request's CQE comes before its notification
            return res

    def _count_notif(self, res: int, req: int) -> None:
        self.notifs += 1
        nbytes = self.sizes.pop(req, 0)
        if (res & 0xFFFFFFFF) & IORING_NOTIF_USAGE_ZC_COPIED:
            self.notifs_copied += 1
            self.copied_bytes += nbytes

    def drain_notifs(self, expected: int, timeout: float = 10.0) -> None:
        deadline = now() + timeout
        while self.notifs < expected and now() < deadline:
            self._wait()

    def close(self) -> None:
        self.L.io_uring_queue_exit(self.ring)


def receiver(cfg: dict, io: AgentIO) -> dict:
    size = int(cfg["size"])
    lsock, bufs = listen_stream(cfg)
    buf = bytearray(size)
    mv = memoryview(buf)
    ring = Ring()
    io.emit("ready", pid=os.getpid(), port=lsock.getsockname()[1],
            buffer_addr=buffer_address(buf), **bufs)
    conn, _ = lsock.accept()
    lsock.close()
    fd = conn.fileno()
    verify = StreamVerifier(size)
    cpu = CpuWindow().start()
    recvs = first = 0
    t_first = t_last = None
    prep = ring.L.io_uring_prep_recv
    while True:
        n = ring.run(lambda sqe: prep(sqe, fd, buf, size, 0))
        if n == 0:
            break
        t_last = now()
        if t_first is None:
            t_first, first = t_last, n   # those bytes arrived at the window's start
        recvs += 1
        verify.check(mv[:n])
    ring.close()
    conn.close()
    return stream_result(verify, size, recv_calls=recvs, t_first=t_first, t_last=t_last,
                         first_bytes=first,
                         cpu=cpu.stop(), buffer_addr=buffer_address(buf))


def sender(cfg: dict, io: AgentIO, zerocopy: bool = False) -> dict:
    size = int(cfg["size"])
    src = PatternSource(size)
    sock, ready = connect_sender(cfg, socket.SOCK_STREAM, src)
    fd = sock.fileno()
    ring = Ring(zerocopy=zerocopy)
    L = ring.L
    if zerocopy:
        # Register the whole pattern store as fixed buffer 0: every view lies inside it.
        rc = L.io_uring_register_buffers(ring.ring, L.iovec(src.buf), 1)
        if rc < 0:
            raise OSError(-rc, f"io_uring_register_buffers: {os.strerror(-rc)}")
    io.emit("ready", **ready)
    io.wait_cmd("go")
    cpu = CpuWindow().start()
    bound = bound_from(cfg)
    sent = requests = 0
    views = src.views
    period = len(views)
    while not bound.done(sent):
        view = views[(sent * size) % period]
        while view:
            if zerocopy:
                n = ring.run(lambda sqe, v=view: L.io_uring_prep_send_zc_fixed(
                    sqe, fd, v, len(v), 0, MSG_WAITALL, IORING_SEND_ZC_REPORT_USAGE))
            else:
                n = ring.run(lambda sqe, v=view: L.io_uring_prep_send(sqe, fd, v, len(v), MSG_WAITALL))
            requests += 1
            view = view[n:]
        sent += 1
    t_end = now()
    if zerocopy:
        ring.drain_notifs(requests)
    ring.close()
    sock.shutdown(socket.SHUT_WR)
    sock.close()
    out = {"messages": sent, "bytes": sent * size, "t_start": bound.t_start, "t_end": t_end,
           "cpu": cpu.stop(), "buffer_addr": buffer_address(src.buf), "requests": requests}
    if zerocopy:
        out["zerocopy"] = {"send_calls": requests, "completed": ring.notifs,
                           "copied": ring.notifs_copied,
                           "copied_bytes": ring.copied_bytes, "zerocopy": ring.notifs - ring.notifs_copied,
                           "notifications": ring.notifs, "enobufs_retries": 0,
                           "all_completed": ring.notifs >= requests, "api": "io_uring send_zc_fixed"}
    return out
