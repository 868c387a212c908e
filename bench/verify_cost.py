"""Micro benchmark: CPU seconds per GB that the receivers' payload verification costs.

`python -m bench.verify_cost`: the TCP receive loop (workloads.sockets.receive_stream) and the
UDP one (workloads.udp.receive_one_by_one) are fed from memory by a fake recv_into that copies
each chunk in (memcpy, as the kernel would); the same loop over the same chunks without any
check is timed too, and the difference per GB is the verification's cost. Best of 5 runs, in
this process's CPU time."""

from __future__ import annotations

import sys
import time

from workloads import pattern

TOTAL = 64 << 20          # bytes per timed pass


def _stream_bytes(size: int, count: int) -> bytes:
    make = getattr(pattern, "stream_bytes", None)
    if make is not None:
        return make(size, count)
    return pattern.block(size * count)[:size * count]      # the scheme before sequence phases


def _datagrams(size: int, count: int) -> list[bytes]:
    make = getattr(pattern, "datagram", None)
    if make is not None:
        return [make(size, i) for i in range(count)]
    ref = pattern.block(size)
    return [ref[i % pattern.PERIOD:i % pattern.PERIOD + size] for i in range(count)]


class _Feed:
    """recv_into from a list of chunks, cycled `rounds` times, then 0 (end of stream)."""

    def __init__(self, chunks: list, rounds: int):
        self.chunks, self.rounds = chunks, rounds

    def run(self):
        it = iter(self.chunks * self.rounds)

        def recv_into(buf, _it=it):
            c = next(_it, None)
            if c is None:
                return 0
            n = len(c)
            buf[:n] = c
            return n
        return recv_into


def _best(fn, reps: int = 5) -> float:
    best = float("inf")
    for _ in range(reps):
        t = time.process_time()          # this process's CPU time: others' load stays out
        fn()
        best = min(best, time.process_time() - t)
    return best


def tcp_cost(size: int) -> dict:
    from workloads.sockets import receive_stream
    count = max(1, (8 << 20) // size)
    data = _stream_bytes(size, count)
    chunks = [data[i:i + size] for i in range(0, len(data), size)]
    rounds = max(1, TOTAL // len(data))
    nbytes = len(data) * rounds

    def verified():
        receive_stream(_Feed(chunks, rounds).run(), bytearray(size), pattern.StreamVerifier(size))

    def bare():
        recv_into, buf = _Feed(chunks, rounds).run(), bytearray(size)
        while recv_into(buf):
            pass
    return _result("tcp", size, nbytes, _best(verified), _best(bare))


def udp_cost(size: int) -> dict:
    from workloads import udp
    grams = _datagrams(size, 4 * pattern.PERIOD)
    rounds = max(1, TOTAL // (size * len(grams)))
    nbytes = size * len(grams) * rounds

    class Sock:
        def __init__(self):
            self.recv_into = _Feed(grams, rounds).run()

    def verified():
        out = udp.receive_one_by_one(Sock(), bytearray(size), pattern.block(size))
        assert out["bad"] == 0, out

    def bare():
        recv_into, buf = _Feed(grams, rounds).run(), bytearray(size)
        while recv_into(buf):
            pass
    return _result("udp", size, nbytes, _best(verified), _best(bare))


def _result(kind, size, nbytes, verified, bare) -> dict:
    gb = nbytes / 1e9
    return {"path": kind, "size": size, "verify_s_per_gb": round((verified - bare) / gb, 4),
            "loop_s_per_gb": round(verified / gb, 4)}


def main() -> int:
    for r in [tcp_cost(s) for s in (1024, 4096, 65536)] + [udp_cost(s) for s in (1472, 8972)]:
        print(f"{r['path']:4} {r['size']:>6} B: verification {r['verify_s_per_gb']:.4f} s/GB "
              f"(loop with it {r['loop_s_per_gb']:.4f} s/GB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
