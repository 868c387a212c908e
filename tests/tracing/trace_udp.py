"""Run the UDP pair under one tracer backend and print the counts as JSON (used by lab tests,
which run it inside the VM, and handy by hand: `python3 trace_udp.py kmod 1000 1000`)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[2]))

from peers import udp_pair  # noqa: E402

from bench.tracing.catalog import Probe  # noqa: E402
from bench.tracing.select import make_tracer, select_tracer  # noqa: E402


def _probe(spec: str) -> Probe:
    point, symbol, addr, length = spec.split(":")
    return Probe(point, symbol, "kprobe", "ad-hoc test probe",
                 addr_arg=None if addr == "-" else int(addr),
                 len_arg=None if length == "-" else int(length))


def main() -> None:
    backend, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    comm = {"sender": "sender", "receiver": "receiver"} if "--comm" in sys.argv else None
    kw = {"comm": comm} if comm else {}
    for arg in sys.argv[4:]:
        if arg.startswith("--probes="):   # ad-hoc probes: point:symbol:addr_arg:len_arg,...
            kw["probes"] = [_probe(spec) for spec in arg.split("=", 1)[1].split(",")]
    if "probes" in kw:
        tracer = make_tracer(backend, **kw)
    else:   # the real selection, discovery included
        tracer = select_tracer(backend, points=["send_copy", "recv_copy"], comm=comm)
    proto = "tcp" if "--tcp" in sys.argv else "udp"
    with udp_pair(count, size, proto) as (pids, go):
        try:
            tracer.attach(pids)
            received = go()
            counts = tracer.read()
        finally:
            tracer.detach()
    choices = [c.to_json() for c in getattr(tracer, "choices", [])]
    print(json.dumps({"pids": pids, "received": received, "choices": choices,
                      "counts": [c.to_json() for c in counts]}))


if __name__ == "__main__":
    main()
