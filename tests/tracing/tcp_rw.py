"""Move COUNT x SIZE bytes over a loopback TCP socket with os.write / os.read (not send/recv).

Why lock-step (a thread per end, an Event between each message): each write is then one skb
that the reader takes whole with one read, so the kernel makes exactly one copy per message on
each side (no coalesced skbs, no read spanning two frags). The Event costs no system call
that copies, and the pipe-free hand-off keeps non-socket copies out of the count.
With --unix, each message also goes over a unix socketpair (os.write/os.read, what a node
launcher's agents do with their control lines): local IPC that no backend may count.
Prints one JSON line: {"moved": TCP bytes read, "unix": unix bytes read}.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import threading


def unix_round(a: socket.socket, b: socket.socket, msg: bytes) -> int:
    os.write(a.fileno(), msg)
    got = 0
    while got < len(msg):
        got += len(os.read(b.fileno(), len(msg) - got))
    return got


def main(count: int = 23, size: int = 1000, unix: bool = False) -> int:
    ua, ub = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    unix_moved = 0
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(1)
    cli = socket.create_connection(srv.getsockname())
    cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)   # no Nagle wait per message
    conn, _ = srv.accept()
    sent, got = threading.Event(), threading.Event()
    moved = 0

    def reader():
        nonlocal moved
        for _ in range(count):
            sent.wait()
            sent.clear()
            need = size
            while need:
                n = len(os.read(conn.fileno(), need))
                if not n:
                    return
                need -= n
                moved += n
            got.set()

    t = threading.Thread(target=reader)
    t.start()
    msg = bytes(range(256)) * (size // 256) + bytes(size % 256)
    for _ in range(count):
        if unix:
            unix_moved += unix_round(ua, ub, msg)
        os.write(cli.fileno(), msg)
        sent.set()
        got.wait()
        got.clear()
    t.join()
    for s in (cli, conn, srv, ua, ub):
        s.close()
    print(json.dumps({"moved": moved, "unix": unix_moved}))
    return 0 if moved == count * size else 1


if __name__ == "__main__":
    sys.exit(main(*map(int, sys.argv[1:3]), unix="--unix" in sys.argv))
