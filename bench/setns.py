"""Entering a named network namespace: setns(2) on the file `ip netns` / pyroute2 pin it to.

The agents and `bench nsexec` only ever join a namespace our topology created (with pyroute2),
several times per sample. Importing pyroute2 for that one call costs about 0.2 s natively and
7.5 s in the TCG lab VM (measured), so this is the system call alone, through libc. Python 3.12
has os.setns; Debian 12's 3.11 does not.
"""

from __future__ import annotations

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
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.setns(fd, CLONE_NEWNET) != 0:
            err = ctypes.get_errno()
            raise OSError(err, f"setns({path}): {os.strerror(err)}")
    finally:
        os.close(fd)
