"""TCP from a file in the page cache: os.sendfile() of fixed-size messages, the tcp receiver.

The file holds the pattern block (workloads.pattern), so message i is the `size` bytes at
offset phase(i): the receiver verifies every byte as it does for tcp. The file is created in
`sendfile_dir` (the agent config; default the temporary directory), written, read back once so
its pages are in the page cache, and unlinked at once: only the open descriptor keeps it, so
nothing is left behind, even when the agent is killed.

What the kernel does (DESIGN.md, "Copy paths"): since 6.5 sendfile to a TCP socket splices the
file's page-cache pages into the socket (sock_sendmsg with MSG_SPLICE_PAGES: page references,
no copy from user memory); the receiver copies as for tcp (COPY#4). A file system that cannot
splice its pages (sendfile's EINVAL/ENOSYS) fails with the fix: another `sendfile_dir`.
"""

from __future__ import annotations

import errno
import os
import socket
import tempfile

from workloads import tcp
from workloads.agent import AgentIO, CpuWindow, now
from workloads.pattern import block
from workloads.sockets import bound_from, send_messages, size_buffers

receiver = tcp.receiver         # the same verifying stream receiver as tcp
UNSUPPORTED = (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP)


class PatternFile:
    """The pattern block in an unlinked file of `directory`, its pages read into the page
    cache. `views` are the message offsets, one per pattern phase (as PatternSource.views)."""

    def __init__(self, size: int, directory: str | None = None):
        data = bytes(block(size))
        self.size, self.length = size, len(data)
        self.directory = directory or tempfile.gettempdir()
        fd, path = tempfile.mkstemp(prefix="copybench-sendfile-", dir=self.directory)
        os.unlink(path)             # the descriptor keeps it: nothing to clean up later
        self.fd = fd
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.pread(fd, self.length, 0)        # every page in the page cache before "go"
        self.views = list(range(self.length - size + 1))

    def close(self) -> None:
        os.close(self.fd)


def sendfile_all(sock_fd: int, src: PatternFile):
    """send(offset): the whole message at `offset` of the file, however many calls it takes."""
    size, fd, sendfile = src.size, src.fd, os.sendfile

    def send(offset: int) -> None:
        left = size
        while left:
            n = sendfile(sock_fd, fd, offset + size - left, left)
            if n == 0:
                raise OSError(errno.EIO, "sendfile sent nothing: the file is shorter than "
                              "the pattern block")
            left -= n
    return send


def unsupported(exc: OSError, directory: str) -> RuntimeError:
    return RuntimeError(
        f"sendfile from a file in {directory} failed ({exc.strerror}): its file system cannot "
        "splice page-cache pages into a socket; set sendfile_dir (the suite key) to a "
        "directory on ext4, xfs or tmpfs")


def probe(directory: str | None) -> str | None:
    """Why sendfile cannot send from a file in `directory` (one byte over a socket pair), or
    None where it can: checked before a run starts, so a wrong sendfile_dir is bad input."""
    where = directory or tempfile.gettempdir()
    if not os.path.isdir(where):
        return f"sendfile_dir {where} is not a directory"
    try:
        fd, path = tempfile.mkstemp(prefix="copybench-probe-", dir=where)
    except OSError as exc:
        return f"cannot create a file in {where}: {exc.strerror}"
    a, b = socket.socketpair()
    try:
        os.unlink(path)
        os.write(fd, b"x")
        os.sendfile(a.fileno(), fd, 0, 1)
    except OSError as exc:
        return str(unsupported(exc, where))
    finally:
        os.close(fd)
        a.close()
        b.close()
    return None


def sender(cfg: dict, io: AgentIO) -> dict:
    size = int(cfg["size"])
    src = PatternFile(size, cfg.get("sendfile_dir"))
    try:
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        bufs = size_buffers(sock, cfg)
        sock.connect(tuple(cfg["target"]))
        # no user buffer to announce: the payload never leaves the kernel's page cache
        io.emit("ready", pid=os.getpid(), buffer_addr=None, sendfile_dir=src.directory, **bufs)
        io.wait_cmd("go")
        cpu = CpuWindow().start()
        bound = bound_from(cfg)
        try:
            sent, _ = send_messages(sendfile_all(sock.fileno(), src), src.views, bound)
        except OSError as exc:
            if exc.errno in UNSUPPORTED:
                raise unsupported(exc, src.directory) from None
            raise
        t_end = now()
        sock.shutdown(socket.SHUT_WR)
        sock.close()
    finally:
        src.close()
    return {"messages": sent, "bytes": sent * size, "t_start": bound.t_start, "t_end": t_end,
            "cpu": cpu.stop(), "buffer_addr": None, "sendfile": {"dir": src.directory,
                                                                "file_bytes": src.length}}
