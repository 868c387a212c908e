"""sendmmsg/recvmmsg through ctypes: many datagrams per system call.

Python's socket module has neither; one syscall per datagram makes the interpreter, not the
kernel, the bottleneck for small UDP messages. Batching changes nothing about copies: the kernel
still copies each datagram once on each side (COPY#1, COPY#4 per datagram).
"""

from __future__ import annotations

import ctypes
import os

MSG_WAITFORONE = 0x10000


class IoVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


class MsgHdr(ctypes.Structure):
    _fields_ = [("msg_name", ctypes.c_void_p), ("msg_namelen", ctypes.c_uint32),
                ("msg_iov", ctypes.POINTER(IoVec)), ("msg_iovlen", ctypes.c_size_t),
                ("msg_control", ctypes.c_void_p), ("msg_controllen", ctypes.c_size_t),
                ("msg_flags", ctypes.c_int)]


class MMsgHdr(ctypes.Structure):
    _fields_ = [("msg_hdr", MsgHdr), ("msg_len", ctypes.c_uint)]


_libc = ctypes.CDLL(None, use_errno=True)
_libc.sendmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int]
_libc.recvmmsg.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint, ctypes.c_int, ctypes.c_void_p]


def _addr(buf: bytearray, offset: int = 0) -> int:
    return ctypes.addressof(ctypes.c_char.from_buffer(buf, offset))


def _headers(n: int, base_addrs: list[int], length: int):
    iovs = (IoVec * n)()
    hdrs = (MMsgHdr * n)()
    for i in range(n):
        iovs[i].iov_base, iovs[i].iov_len = base_addrs[i], length
        hdrs[i].msg_hdr.msg_iov = ctypes.pointer(iovs[i])
        hdrs[i].msg_hdr.msg_iovlen = 1
    return iovs, hdrs


class BatchSender:
    """Sends datagrams from `nbufs` buffers of `stride` bytes in `store` (datagram seq from
    buffer seq % nbufs), batch by batch.

    The header ring has nbufs + batch entries (entry j -> buffer j % nbufs), so any run of
    `batch` consecutive sequence numbers is one contiguous slice of it: no per-send setup."""

    def __init__(self, fd: int, store: bytearray, size: int, nbufs: int, batch: int,
                 stride: int = 1):
        self.fd, self.batch, self.period = fd, batch, nbufs
        addrs = [_addr(store, (j % nbufs) * stride) for j in range(nbufs + batch)]
        self._iovs, self._hdrs = _headers(nbufs + batch, addrs, size)
        self._base = ctypes.addressof(self._hdrs)
        self._step = ctypes.sizeof(MMsgHdr)

    def send(self, seq: int, count: int) -> int:
        """Send up to `count` (≤ batch) datagrams starting at sequence `seq`; returns how many
        the kernel took, or raises OSError."""
        n = _libc.sendmmsg(self.fd, self._base + (seq % self.period) * self._step, count, 0)
        if n < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        return n


class BatchReceiver:
    """Receives up to `batch` datagrams per call into one contiguous buffer."""

    def __init__(self, fd: int, size: int, batch: int):
        self.fd, self.size, self.batch = fd, size, batch
        self.buf = bytearray(size * batch)
        self.view = memoryview(self.buf)
        addrs = [_addr(self.buf, i * size) for i in range(batch)]
        self._iovs, self._hdrs = _headers(batch, addrs, size)
        self._base = ctypes.addressof(self._hdrs)

    def recv(self) -> list[int]:
        """Block for at least one datagram; return the lengths of those received."""
        n = _libc.recvmmsg(self.fd, self._base, self.batch, MSG_WAITFORONE, None)
        if n < 0:
            err = ctypes.get_errno()
            raise OSError(err, os.strerror(err))
        hdrs = self._hdrs
        return [hdrs[i].msg_len for i in range(n)]
