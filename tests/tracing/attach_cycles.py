"""Load and unload copytrace N times, optionally while a loopback UDP flood keeps its probes
firing, and print one JSON document: how long each insmod and rmmod took, and what the kernel
logged (RCU stalls, soft lockups, hung tasks). Run inside the lab VM by the lab tests, or by hand:
`python3 attach_cycles.py 20 busy`."""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[2]))

from bench.tracing.kmod import KmodTracer  # noqa: E402

FLOOD_SECONDS = 600            # the flood's own bound; it is killed after the cycles anyway
KERNEL_TROUBLE = ("rcu_sched self-detected stall", "rcu: INFO", "soft lockup", "hung_task",
                  "blocked for more than", "BUG:", "WARNING:", "Oops")


def flood() -> subprocess.Popen:
    """A child that sends 1000 B datagrams to itself on loopback until killed or bounded."""
    code = ("import socket,time\n"
            "r=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);r.bind(('127.0.0.1',0))\n"
            "r.setblocking(False)\n"
            "s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM);a=r.getsockname();b=bytes(1000)\n"
            f"end=time.monotonic()+{FLOOD_SECONDS}\n"
            "while time.monotonic()<end:\n"
            " s.sendto(b,a)\n"
            " try: r.recv(2000)\n"
            " except BlockingIOError: pass\n")
    return subprocess.Popen([sys.executable, "-c", code])


def dmesg() -> list[str]:
    out = subprocess.run(["dmesg"], capture_output=True, text=True, timeout=30).stdout
    return out.splitlines()


def main() -> None:
    cycles, mode = int(sys.argv[1]), sys.argv[2]
    opt = Path("/proc/sys/debug/kprobes-optimization")
    if "--no-optimize" in sys.argv[3:]:
        opt.write_text("0\n")     # breakpoint kprobes only: no jump-optimized detours
    before = len(dmesg())
    peer = flood() if mode == "busy" else None
    me = os.getpid()
    attach_s, detach_s = [], []
    try:
        for _ in range(cycles):
            tracer = KmodTracer()
            t0 = time.monotonic()
            tracer.attach({"sender": peer.pid if peer else me, "receiver": me})
            t1 = time.monotonic()
            time.sleep(0.2)           # let the probes fire
            tracer.read()
            t2 = time.monotonic()
            tracer.detach()
            t3 = time.monotonic()
            attach_s.append(round(t1 - t0, 3))
            detach_s.append(round(t3 - t2, 3))
    finally:
        if peer:
            peer.kill()
            peer.wait()
    logged = [line for line in dmesg()[before:] if any(k in line for k in KERNEL_TROUBLE)]
    print(json.dumps({"cycles": len(detach_s), "mode": mode, "attach_s": attach_s,
                      "detach_s": detach_s, "kernel_trouble": logged,
                      "kprobes_optimization": opt.read_text().strip() if opt.exists() else None,
                      "host": socket.gethostname()}))


if __name__ == "__main__":
    main()
