"""MSG_ZEROCOPY over loopback TCP, for checking where the "avoided" copy goes (lab VM).

usage: zc_peer.py COUNT SIZE -> JSON {"pids", "received", "counts"} traced with kmod, or with
kprobe_events on skb_copy_ubufs alone when BACKEND=kprobe_events (6.1: _copy_*_iter notrace).
Loopback cannot keep the user pages: the kernel copies them (skb_copy_ubufs) and reports
SO_EE_CODE_ZEROCOPY_COPIED, so send_copy should vanish and zc_fallback appear.
"""

import json
import mmap
import os
import socket
import sys
import threading
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2]))

from bench.tracing import catalog  # noqa: E402
from bench.tracing.kmod import KmodTracer  # noqa: E402
from bench.tracing.kprobe_events import KprobeEventsTracer  # noqa: E402

MSG_ZEROCOPY = 0x4000000
SO_ZEROCOPY = 60


def main() -> None:
    count, size = int(sys.argv[1]), int(sys.argv[2])
    ls = socket.socket()
    ls.bind(("127.0.0.1", 0))
    ls.listen(1)
    got = [0]

    def receive() -> None:
        conn, _ = ls.accept()
        while chunk := conn.recv(1 << 16):
            got[0] += len(chunk)

    t = threading.Thread(target=receive)
    t.start()
    s = socket.create_connection(ls.getsockname())
    s.setsockopt(socket.SOL_SOCKET, SO_ZEROCOPY, 1)
    buf = mmap.mmap(-1, size)            # page aligned
    buf.write(b"z" * size)

    if os.environ.get("BACKEND") == "kprobe_events":
        tracer = KprobeEventsTracer(probes=[catalog.by_symbol("skb_copy_ubufs")])
    else:
        tracer = KmodTracer(stacks=int(os.environ.get("STACKS", "0")))
    tracer.attach({"process": os.getpid()})
    try:
        for _ in range(count):
            s.sendmsg([memoryview(buf)], [], MSG_ZEROCOPY)
        s.close()
        t.join()
        counts = tracer.read()
    finally:
        tracer.detach()
    print(json.dumps({"received": got[0], "counts": [c.to_json() for c in counts if c.calls]}))


if __name__ == "__main__":
    main()
