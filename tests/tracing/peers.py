"""Start a udp_peer receiver/sender pair for tracer tests, and run it once the tracer is on."""

from __future__ import annotations

import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

PEER = Path(__file__).with_name("udp_peer.py")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def raised_rmem(size: int = 16 << 20):
    """So no datagram is dropped (SO_RCVBUF is capped by net.core.rmem_max, a host-wide
    sysctl): raised for the test only, and always put back."""
    path = Path("/proc/sys/net/core/rmem_max")
    old = int(path.read_text())
    if old < size:
        path.write_text(str(size))
    try:
        yield
    finally:
        if old < size:
            path.write_text(str(old))


@contextmanager
def udp_pair(count: int, size: int, proto: str = "udp"):
    """Yields (pids, go); go() releases both peers and returns bytes received."""
    with raised_rmem(), _pair(count, size, proto) as pair:
        yield pair


@contextmanager
def _pair(count: int, size: int, proto: str):
    port = free_port()
    recv_role, send_role = ("tcprecv", "tcpsend") if proto == "tcp" else ("recv", "send")
    args = [str(port), str(count), str(size)]
    procs = []
    try:
        recv = subprocess.Popen([sys.executable, str(PEER), recv_role, *args], text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        procs.append(recv)
        assert recv.stdout.readline().strip() == "ready"
        send = subprocess.Popen([sys.executable, str(PEER), send_role, *args], text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        procs.append(send)

        def go() -> int:
            for p in (recv, send):
                p.stdin.write("go\n")
                p.stdin.flush()
            send.communicate(timeout=60)
            out, _ = recv.communicate(timeout=60)
            return int(out.split()[1])

        yield {"sender": send.pid, "receiver": recv.pid}, go
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
