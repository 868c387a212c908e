"""Trace tcp_rw.py (os.write/os.read on TCP) under one backend with traceable TCP probes and
print the counts as JSON. For the backends that cannot reach the notrace _copy_*_iter on 6.1
(bpftrace, kprobe_events): tcp_sendmsg/tcp_recvmsg stand in, so what is tested is the socket
gate (write/read are no socket system calls), not the copy function.
With --unix the program also moves each message over a unix socketpair, and the probes are
the two skb copy functions unix sockets use (skb_copy_datagram_from_iter: unix sends only;
skb_copy_datagram_iter: unix and TCP receives): what is tested is that a unix socket's entry
opens no gate.
Usage: python3 trace_rw.py BACKEND [COUNT SIZE] [--unix]
"""

import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2]))

from bench.tracing.catalog import Probe  # noqa: E402
from bench.tracing.select import make_tracer  # noqa: E402

WAIT_THEN_RUN = ("import sys, runpy; sys.stdin.read(1); sys.argv = [sys.argv[1]] + sys.argv[2:]; "
                 "runpy.run_path(sys.argv[0], run_name='__main__')")


def main() -> None:
    backend, unix = sys.argv[1], "--unix" in sys.argv
    args = [a for a in sys.argv[2:4] if a.isdigit()]
    count, size = (args + ["23", "1000"][len(args):])
    probes = [Probe("send_copy", "tcp_sendmsg", "kprobe", "tcp_sendmsg(sk, msg, size)",
                    len_arg=2),
              Probe("recv_copy", "tcp_recvmsg", "kprobe", "tcp_recvmsg(sk, msg, len, ...)",
                    len_arg=2)]
    if unix:
        probes = [Probe("send_copy", "skb_copy_datagram_from_iter", "kprobe",
                        "skb_copy_datagram_from_iter(skb, offset, from, len)", len_arg=3),
                  Probe("recv_copy", "skb_copy_datagram_iter", "kprobe",
                        "skb_copy_datagram_iter(skb, offset, to, len)", len_arg=3)]
    tracer = make_tracer(backend, probes=probes)
    child = subprocess.Popen([sys.executable, "-c", WAIT_THEN_RUN,
                              str(Path(__file__).with_name("tcp_rw.py")), count, size,
                              *(["--unix"] if unix else [])],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        tracer.attach({"cmd": child.pid})
        out, _ = child.communicate("g")
        counts = tracer.read()
    finally:
        tracer.detach()
        if child.poll() is None:
            child.kill()
    moved = json.loads(out)
    print(json.dumps({"moved": moved["moved"], "unix": moved["unix"],
                      "counts": [c.to_json() for c in counts]}))


if __name__ == "__main__":
    main()
