"""A tiny UDP sender/receiver for tracer tests: names itself like the seed's programs.

usage: udp_peer.py recv|send|tcprecv|tcpsend PORT COUNT SIZE
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
    if role.startswith("tcp"):
        return tcp(role, port, count, size)
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


def tcp(role: str, port: int, count: int, size: int) -> None:
    """TCP: COUNT sends of SIZE bytes; the receiver reads until EOF in 64 KiB recvs."""
    if role == "tcprecv":
        set_name("receiver")
        ls = socket.socket()
        ls.bind(("127.0.0.1", port))
        ls.listen(1)
        print("ready", flush=True)
        conn, _ = ls.accept()
        sys.stdin.readline()
        got = 0
        while chunk := conn.recv(65536):
            got += len(chunk)
        print("got", got, flush=True)
    else:
        set_name("sender")
        s = socket.create_connection(("127.0.0.1", port))
        sys.stdin.readline()
        msg = bytes(size)
        for _ in range(count):
            s.sendall(msg)
        s.close()
        print("sent", count * size, flush=True)


if __name__ == "__main__":
    main()
