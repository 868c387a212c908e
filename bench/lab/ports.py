"""Ports on 127.0.0.1 for QEMU's SSH forwards and the two-node socket link.

The host only ever listens on loopback (project traffic rule)."""

from __future__ import annotations

import socket

from bench.errors import UsageError

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    """A port that is free on 127.0.0.1 right now (the kernel picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def port_in_use(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return True
        return False


def require_free(port: int, what: str) -> int:
    if not 1 <= port <= 65535:
        raise UsageError(f"{what}: port {port} is out of range", "use a port between 1024 and 65535")
    if port_in_use(port):
        raise UsageError(
            f"{what}: port {port} on {LOOPBACK} is already in use",
            "stop what listens there (ss -ltnp) or let the lab pick a free port",
        )
    return port
