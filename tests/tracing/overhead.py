"""A tracer's cost: transfer throughput with counting vs without, interleaved, best of N.

usage: overhead.py BACKEND [udp|tcp] [ROUNDS]   -> one JSON line with both rates and the ratio.
The same pair of processes is used as in the exactness tests, so the traced path is real.
"""

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
sys.path.insert(0, str(Path(__file__).parents[2]))

from peers import udp_pair  # noqa: E402

from bench.tracing.select import select_tracer  # noqa: E402

SHAPE = {"udp": (20000, 1000), "tcp": (2000, 65536)}   # messages, bytes each


def rate(proto: str, backend: str | None) -> float:
    count, size = SHAPE[proto]
    tracer = select_tracer(backend, points=["send_copy", "recv_copy"]) if backend else None
    with udp_pair(count, size, proto) as (pids, go):
        try:
            if tracer:
                tracer.attach(pids)
            t0 = time.perf_counter()
            received = go()
            elapsed = time.perf_counter() - t0
            if tracer:
                tracer.read()
        finally:
            if tracer:
                tracer.detach()
    return received / elapsed


def main() -> None:
    backend = sys.argv[1]
    proto = sys.argv[2] if len(sys.argv) > 2 else "udp"
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    plain, traced = [], []
    for _ in range(rounds):          # interleaved, so drift hits both alike
        plain.append(rate(proto, None))
        traced.append(rate(proto, backend))
    print(json.dumps({"backend": backend, "proto": proto, "bytes_per_s_plain": max(plain),
                      "bytes_per_s_traced": max(traced), "ratio": max(traced) / max(plain)}))


if __name__ == "__main__":
    main()
