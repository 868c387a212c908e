"""The seed's copy-cost model: how long should the counted copies take, and what share of the
measured CPU time is that?

    memory traffic of a copy = read + write = 2 x bytes copied
    model copy time          = bytes copied x 2 / memory bandwidth

The bandwidth is measured on the target the same way: memcpy of a buffer larger than the
caches (a memoryview slice assignment is one memcpy), best of several repeats, counted as
memory traffic (2 x bytes per copy) so the formula above applies unchanged.

That DRAM figure overstates the cost of copying a reused message buffer of <= 64 KiB, which
stays in cache. So each case also gets the bandwidth at its working-set size (the message
size): the same memcpy of a cache-hot buffer of that size, timed in batches, with the
interpreter's per-call cost (a 1-byte copy, same loop) subtracted. The report shows both.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Bandwidth:
    buffer_bytes: int
    repeats: int
    best_seconds: float          # fastest single copy of buffer_bytes

    @property
    def memcpy_bytes_per_s(self) -> float:
        """Payload copied per second (what `memcpy about 12 GB/s` means)."""
        return self.buffer_bytes / self.best_seconds

    @property
    def memory_bytes_per_s(self) -> float:
        """Memory traffic per second: read + write, the seed's "memory bandwidth"."""
        return 2 * self.buffer_bytes / self.best_seconds

    def to_json(self) -> dict:
        return {"buffer_bytes": self.buffer_bytes, "repeats": self.repeats,
                "best_seconds": self.best_seconds,
                "memcpy_bytes_per_s": self.memcpy_bytes_per_s,
                "memory_bytes_per_s": self.memory_bytes_per_s}


def measure_bandwidth(buffer_bytes: int = 256 << 20, repeats: int = 5,
                      clock: Callable[[], float] = time.perf_counter) -> Bandwidth:
    """Best-of-`repeats` memcpy of `buffer_bytes` (default 256 MiB: far beyond any cache)."""
    if buffer_bytes <= 0 or repeats <= 0:
        raise ValueError("buffer_bytes and repeats must be positive")
    src = bytearray(b"\x5a") * buffer_bytes    # written, so its pages really exist
    dst = bytearray(buffer_bytes)
    s, d = memoryview(src), memoryview(dst)
    d[:] = s                                   # fault dst's pages in before timing
    best = float("inf")
    for _ in range(repeats):
        t0 = clock()
        d[:] = s
        best = min(best, clock() - t0)
    return Bandwidth(buffer_bytes, repeats, max(best, 1e-12))


WORKING_SET_FLOOR = 32 << 10   # below this, one Python-level copy is mostly call overhead


def working_set_bytes(size: int, batch: int = 1) -> int:
    """Bytes a workload touches per system call: message size x datagrams per call, with a
    floor so the measurement is of memcpy, not of the interpreter (still cache-resident)."""
    return max(size * max(batch, 1), WORKING_SET_FLOOR)


def measure_working_set(size: int, batch_seconds: float = 0.002, batches: int = 5,
                        clock: Callable[[], float] = time.perf_counter) -> Bandwidth:
    """memcpy bandwidth of a cache-hot `size`-byte buffer (the workload's message size)."""
    if size <= 0:
        raise ValueError("size must be positive")
    src, dst = memoryview(bytearray(b"\x5a") * size), memoryview(bytearray(size))
    one_s, one_d = memoryview(bytearray(1)), memoryview(bytearray(1))

    def per_copy(s, d, n: int) -> float:
        best = float("inf")
        for _ in range(batches):
            t0 = clock()
            for _ in range(n):
                d[:] = s
            best = min(best, clock() - t0)
        return best / n

    n = 1
    while True:                                  # size a batch to about batch_seconds
        t0 = clock()
        for _ in range(n):
            dst[:] = src
        if clock() - t0 >= batch_seconds / 4 or n >= 1 << 22:
            break
        n *= 4
    raw = per_copy(src, dst, n)
    seconds = raw - per_copy(one_s, one_d, n)
    # Where the interpreter's cost dominates (tiny buffers), the difference is noise: keep raw,
    # an underestimate of the bandwidth rather than an absurd one.
    return Bandwidth(size, batches * n, seconds if seconds > raw / 2 else raw)


def model_copy_seconds(bytes_copied: int, memory_bytes_per_s: float) -> float:
    """The seed's exercise: bytes x 2 (read + write) / memory bandwidth."""
    if memory_bytes_per_s <= 0:
        raise ValueError("bandwidth must be positive")
    return bytes_copied * 2 / memory_bytes_per_s


def copy_share(model_seconds: float, cpu_seconds: float) -> float | None:
    """Share of the measured CPU time the model attributes to copying (None without CPU)."""
    return model_seconds / cpu_seconds if cpu_seconds > 0 else None


@dataclass(frozen=True)
class CopyCost:
    bytes_copied: int
    model_seconds: float                  # at DRAM bandwidth (the seed's figure)
    measured_copy_seconds: float | None   # sum of the tracer's per-copy durations, if timed
    cpu_seconds: float | None
    share_of_cpu: float | None            # model / CPU
    model_seconds_cached: float | None = None     # at the working-set (cache-hot) bandwidth
    share_of_cpu_cached: float | None = None
    working_set_bytes: int | None = None

    def to_json(self) -> dict:
        return dict(self.__dict__)


def cost(bytes_copied: int, bandwidth: Bandwidth, ns_total: int | None = None,
         cpu_seconds: float | None = None, cached: Bandwidth | None = None) -> CopyCost:
    """Model next to measurement, for one side or one whole case. `cached`: the bandwidth at
    the workload's working-set size; the honest lower bound of what the copies cost."""
    model = model_copy_seconds(bytes_copied, bandwidth.memory_bytes_per_s)
    hot = model_copy_seconds(bytes_copied, cached.memory_bytes_per_s) if cached else None
    return CopyCost(bytes_copied, model,
                    None if ns_total is None else ns_total / 1e9,
                    cpu_seconds,
                    copy_share(model, cpu_seconds) if cpu_seconds else None,
                    hot, copy_share(hot, cpu_seconds) if hot is not None and cpu_seconds else None,
                    cached.buffer_bytes if cached else None)
