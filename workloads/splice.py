"""TCP through a pipe: vmsplice() of the pattern's user pages into a pipe, splice() from the
pipe into the socket; the tcp receiver.

vmsplice hands the pipe references to the sender's own pages (no copy where the kernel keeps
it so), and splice passes them to the socket as MSG_SPLICE_PAGES (>= 6.5): the pages are the
payload until the receiver has copied it, so they must not change while in flight. Ours never
do: the pattern is written once, before "go", into an anonymous mapping of its own, since no
completion says when the receiver has read them (heap memory freed at the sender's end was
rewritten by malloc while still in flight: workloads.sockets.MappedPatternSource); a program
whose pages changed sends the new bytes, which the receiver's verification catches. Python has os.splice but no
vmsplice: it is called through libc (ctypes). The pipe is sized to hold one whole message
(F_SETPIPE_SZ, at most /proc/sys/fs/pipe-max-size, 1 MiB by default).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import socket

from workloads import tcp
from workloads.agent import AgentIO, CpuWindow, buffer_address, now
from workloads.sockets import MappedPatternSource, bound_from, connect_sender, send_messages

receiver = tcp.receiver
F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


class IOVec(ctypes.Structure):
    _fields_ = [("iov_base", ctypes.c_void_p), ("iov_len", ctypes.c_size_t)]


def _vmsplice():
    libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
    fn = libc.vmsplice
    fn.argtypes = (ctypes.c_int, ctypes.POINTER(IOVec), ctypes.c_ulong, ctypes.c_uint)
    fn.restype = ctypes.c_ssize_t
    return fn


def pipe_for(size: int) -> tuple[int, int, int]:
    """(read end, write end, capacity): a pipe that holds one message of `size` bytes."""
    r, w = os.pipe()
    try:
        cap = fcntl.fcntl(w, F_SETPIPE_SZ, max(size, 4096))
    except OSError as exc:
        os.close(r)
        os.close(w)
        limit = open("/proc/sys/fs/pipe-max-size").read().strip()
        raise RuntimeError(f"a pipe of {size} B is refused ({exc.strerror}): pipe-max-size is "
                           f"{limit} B; send smaller messages or raise fs.pipe-max-size") from None
    return r, w, cap


def splicer(sock_fd: int, src: MappedPatternSource, pipe: tuple[int, int, int]):
    """send(view): the message's pages into the pipe (vmsplice), then out to the socket
    (splice), until every byte has gone; the pipe is empty again after each message."""
    vmsplice, splice = _vmsplice(), os.splice
    r, w, _ = pipe
    base = int(buffer_address(src.buf), 16)
    iov = IOVec()
    start = {id(v): base + k for k, v in enumerate(src.views)}   # view -> its address

    def send(view) -> None:
        addr, left = start[id(view)], len(view)
        while left:
            iov.iov_base, iov.iov_len = addr, left
            n = vmsplice(w, ctypes.byref(iov), 1, 0)
            if n < 0:
                e = ctypes.get_errno()
                raise OSError(e, f"vmsplice: {os.strerror(e)}")
            m = n
            while m:
                m -= splice(r, sock_fd, m)
            addr += n
            left -= n
    return send


def sender(cfg: dict, io: AgentIO) -> dict:
    size = int(cfg["size"])
    src = MappedPatternSource(size)       # never heap memory: see MappedPatternSource
    sock, ready = connect_sender(cfg, socket.SOCK_STREAM, src)
    pipe = pipe_for(size)
    try:
        io.emit("ready", **ready, pipe_bytes=pipe[2])
        io.wait_cmd("go")
        cpu = CpuWindow().start()
        bound = bound_from(cfg)
        try:
            sent, _ = send_messages(splicer(sock.fileno(), src, pipe), src.views, bound)
        except OSError as exc:
            if exc.errno in (errno.EINVAL, errno.ENOSYS):
                raise RuntimeError(f"vmsplice/splice into a TCP socket failed "
                                   f"({exc.strerror}): this kernel cannot splice to sockets"
                                   ) from None
            raise
        t_end = now()
        sock.shutdown(socket.SHUT_WR)
        sock.close()
    finally:
        os.close(pipe[0])
        os.close(pipe[1])
    return {"messages": sent, "bytes": sent * size, "t_start": bound.t_start, "t_end": t_end,
            "cpu": cpu.stop(), "buffer_addr": buffer_address(src.buf),
            "splice": {"pipe_bytes": pipe[2]}}
