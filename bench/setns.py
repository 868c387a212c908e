"""Entering a named network namespace: setns(2) on the file `ip netns` / pyroute2 pin it to.

The agents and `bench nsexec` only ever join a namespace our topology created (with pyroute2),
several times per sample; the topology configures and inspects each end from inside for a
moment (`inside`), in its own thread, instead of starting a child process for it. Importing
pyroute2 for one call costs about 0.2 s natively and 7.5 s in the TCG lab VM (measured), so
this is the system call alone, through libc. Python 3.12 has os.setns; Debian 12's 3.11
does not.
"""

from __future__ import annotations

import contextlib
import ctypes
import os

NETNS_RUN_DIR = "/var/run/netns"      # where ip-netns(8) and pyroute2 pin named namespaces
CLONE_NEWNET = 0x40000000


def enter(name: str) -> None:
    """Move the calling thread into the named namespace; OSError naming it if that fails (a
    namespace that does not exist is not created)."""
    if not name or "/" in name or name in (".", ".."):
        raise ValueError(f"network namespace name {name!r}")
    path = os.path.join(NETNS_RUN_DIR, name)
    fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        _setns(fd, path)
    finally:
        os.close(fd)


@contextlib.contextmanager
def inside(name: str):
    """The calling thread in the named namespace for the block, then back where it was.

    setns(2) with CLONE_NEWNET moves only the calling thread (threads it starts meanwhile begin
    there too), and sockets (netlink included) and /proc/sys/net files opened meanwhile belong
    to the namespace they were opened in. Not getting back is not survivable for a runner that
    goes on in the wrong namespace, so that failure is a RuntimeError, never swallowed."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY | os.O_CLOEXEC)
    try:
        enter(name)
        try:
            yield
        finally:
            try:
                _setns(home, "the namespace this thread came from")
            except OSError as exc:
                raise RuntimeError(f"could not return from network namespace {name}: {exc}") \
                    from None
    finally:
        os.close(home)


def _setns(fd: int, what: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"setns({what}): {os.strerror(err)}")
