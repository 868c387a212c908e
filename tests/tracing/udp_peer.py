"""A tiny UDP sender/receiver for tracer tests: names itself like the seed's programs.

usage: udp_peer.py recv PORT COUNT SIZE | udp_peer.py send PORT COUNT SIZE
Both wait for a line on stdin before moving data, so the tracer attaches first; the receiver
prints "ready" once bound and "got N" at the end (N = bytes received).
"""

import ctypes
import socket
import sys

PR_SET_NAME = 15


def set_name(name: str) -> None:
    ctypes.CDLL(None).prctl(PR_SET_NAME, name.encode(), 0, 0, 0)


def main() -> None:
    role, port, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    if role == "recv":
        set_name("receiver")
        s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16 << 20)
        s.bind(("127.0.0.1", port))
        print("ready", flush=True)
        sys.stdin.readline()
        buf = bytearray(size + 1)
        got = 0
        for _ in range(count):
            got += s.recv_into(buf)
        print("got", got, flush=True)
    else:
        set_name("sender")
        sys.stdin.readline()
        msg = bytes(range(256)) * (size // 256) + bytes(size % 256)
        for _ in range(count):
            s.sendto(msg, ("127.0.0.1", port))
        print("sent", count * size, flush=True)


if __name__ == "__main__":
    main()
