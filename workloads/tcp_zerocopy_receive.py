"""TCP_ZEROCOPY_RECEIVE: the receiver maps the socket's pages instead of copying them.

Receiver: mmap() a window on the TCP socket, then getsockopt(TCP_ZEROCOPY_RECEIVE) maps as many
whole, aligned payload pages into it as the receive queue holds; the rest (recv_skip_hint) must
be read — copied — with recv(). We verify mapped and copied bytes alike and report both,
counted from the kernel's answers, and TCP_INFO's byte count to check their sum against.
Sender: MSG_ZEROCOPY from page-aligned buffers (msg_zerocopy.sender), the condition under which
the skb fragments are whole pages at all; with a plain send() nothing maps (DESIGN.md).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import select
import socket
import struct

from workloads import msg_zerocopy
from workloads.agent import AgentIO, CpuWindow, buffer_address, now
from workloads.pattern import StreamVerifier
from workloads.sockets import listen_stream, stream_result

TCP_ZEROCOPY_RECEIVE = 35
WINDOW = 512 << 10           # bytes mapped per call (a multiple of the page size)
MAX_SIZE = 1 << 20           # the aligned sender keeps 251 buffers of this size


class ZeroCopyReceive(ctypes.Structure):
    # struct tcp_zerocopy_receive (include/uapi/linux/tcp.h, 5.11+ layout)
    _fields_ = [("address", ctypes.c_uint64), ("length", ctypes.c_uint32),
                ("recv_skip_hint", ctypes.c_uint32), ("inq", ctypes.c_uint32),
                ("err", ctypes.c_int32), ("copybuf_address", ctypes.c_uint64),
                ("copybuf_len", ctypes.c_int32), ("flags", ctypes.c_uint32),
                ("msg_control", ctypes.c_uint64), ("msg_controllen", ctypes.c_uint64),
                ("msg_flags", ctypes.c_uint32), ("reserved", ctypes.c_uint32)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.getsockopt.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_void_p,
                             ctypes.POINTER(ctypes.c_uint32)]


def kernel_bytes_received(sock: socket.socket) -> int:
    """Payload bytes the kernel's TCP took in on `sock` after its FIN: TCP_INFO's
    tcpi_bytes_received (offset 128 since Linux 4.1) counts sequence space, the FIN's one
    included. A count that does not pass through our loop, to check mapped + copied against."""
    info = sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    return struct.unpack_from("=Q", info, 128)[0] - 1


def _check(ret: int, what: str) -> int:
    if ret == -1 or ret is None:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def sender(cfg: dict, io: AgentIO) -> dict:
    return msg_zerocopy.sender(cfg, io, aligned=True)


def receiver(cfg: dict, io: AgentIO) -> dict:
    """Per the kernel's semantics (tcp_zerocopy_receive, 5.11+): each call maps whole pages
    (length), names bytes that must be read the copying way (recv_skip_hint), and copies a
    sub-page remainder into copybuf itself (copybuf_len); EIO means "queue empty and FIN seen",
    i.e. end of stream. With nothing to take, wait for POLLIN and ask again: no MSG_PEEK (that
    is itself a copy) and no stale inq."""
    size = int(cfg["size"])
    lsock, bufs = listen_stream(cfg)
    copybuf = bytearray(max(size, WINDOW))
    cmv = memoryview(copybuf)
    # Only sub-page leftovers go to copybuf: the kernel copies whenever inq <= copybuf_len.
    tail = (ctypes.c_char * (mmap.PAGESIZE - 1)).from_buffer(copybuf)
    io.emit("ready", pid=os.getpid(), port=lsock.getsockname()[1],
            buffer_addr=buffer_address(copybuf), **bufs)
    conn, _ = lsock.accept()
    lsock.close()
    fd = conn.fileno()
    window = _check(_libc.mmap(None, WINDOW, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0), "mmap(socket)")
    verify = StreamVerifier(size, max(size, WINDOW))
    zc = ZeroCopyReceive()
    zlen = ctypes.c_uint32(ctypes.sizeof(zc))
    poller = select.poll()
    poller.register(fd, select.POLLIN | select.POLLRDHUP)
    mapped = copied = copybuf_bytes = calls = waits = first = 0
    t_first = t_last = None
    cpu = CpuWindow().start()
    try:
        while True:
            ctypes.memset(ctypes.byref(zc), 0, ctypes.sizeof(zc))
            zc.address, zc.length = window, WINDOW
            zc.copybuf_address, zc.copybuf_len = ctypes.addressof(tail), ctypes.sizeof(tail)
            zlen.value = ctypes.sizeof(zc)
            rc = _libc.getsockopt(fd, socket.IPPROTO_TCP, TCP_ZEROCOPY_RECEIVE,
                                  ctypes.byref(zc), ctypes.byref(zlen))
            calls += 1
            if rc == -1:
                err = ctypes.get_errno()
                if err == errno.EIO:           # queue empty and FIN received: end of stream
                    kernel_bytes = kernel_bytes_received(conn)
                    break
                raise OSError(err, f"TCP_ZEROCOPY_RECEIVE: {os.strerror(err)}")
            if zc.err:
                raise OSError(-zc.err, f"TCP_ZEROCOPY_RECEIVE: {os.strerror(-zc.err)}")
            got = 0
            if zc.length:
                # Verify straight from the mapped pages: no copy on our side either.
                verify.check(memoryview((ctypes.c_char * zc.length).from_address(window)).cast("B"))
                mapped += zc.length
                got += zc.length
            if zc.copybuf_len > 0:             # the kernel copied a sub-page remainder for us
                verify.check(cmv[:zc.copybuf_len])
                copied += zc.copybuf_len
                copybuf_bytes += zc.copybuf_len
                got += zc.copybuf_len
            elif zc.copybuf_len < 0:
                raise OSError(-zc.copybuf_len, "TCP_ZEROCOPY_RECEIVE copybuf: "
                              f"{os.strerror(-zc.copybuf_len)}")
            if zc.recv_skip_hint:              # not mappable (unaligned frags): read = copy
                try:
                    n = conn.recv_into(cmv, min(zc.recv_skip_hint, len(copybuf)),
                                       socket.MSG_DONTWAIT)
                except BlockingIOError:
                    n = 0
                verify.check(cmv[:n])
                copied += n
                got += n
            if got:
                t_last = now()
                if t_first is None:
                    t_first, first = t_last, got   # arrived at the window's start
                continue
            waits += 1
            poller.poll(1000)                  # then ask the kernel again, fresh
    finally:
        _libc.munmap(window, WINDOW)
        conn.close()
    return stream_result(
        verify, size, t_first=t_first, t_last=t_last, first_bytes=first, cpu=cpu.stop(),
        buffer_addr=buffer_address(copybuf),
        zerocopy_receive={"calls": calls, "mapped_bytes": mapped, "copied_bytes": copied,
                          "copybuf_bytes": copybuf_bytes, "waits": waits,
                          # mapped + copied must equal it: neither counted twice nor missed
                          "kernel_bytes_received": kernel_bytes,
                          "mapped_pct": round(100 * mapped / verify.offset, 2)
                          if verify.offset else None, "window": WINDOW,
                          "end_of_stream": "EIO"})
