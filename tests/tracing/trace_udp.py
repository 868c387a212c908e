"""Run the UDP pair under one tracer backend and print the counts as JSON (used by lab tests,
which run it inside the VM, and handy by hand: `python3 trace_udp.py kmod 1000 1000`)."""

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[2]))

from peers import udp_pair  # noqa: E402

from bench.tracing.select import make_tracer  # noqa: E402


def main() -> None:
    backend, count, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    comm = {"sender": "sender", "receiver": "receiver"} if "--comm" in sys.argv else None
    tracer = make_tracer(backend, comm=comm)
    with udp_pair(count, size) as (pids, go):
        try:
            tracer.attach(pids)
            received = go()
            counts = tracer.read()
        finally:
            tracer.detach()
    print(json.dumps({"pids": pids, "received": received,
                      "counts": [c.to_json() for c in counts]}))


if __name__ == "__main__":
    main()
