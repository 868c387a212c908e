"""Per-transaction latencies of a request/response agent, into an HDR histogram.

Clock: CLOCK_MONOTONIC (time.monotonic_ns), the requester's one clock, read just before a
request's send and just after its response's last byte arrived. The histogram is the PyPI
`hdrhistogram` package's (1 ns .. 60 s, 3 significant figures: a percentile is the upper end
of its bucket, within 0.1% of the value); min and max are the exact raw values.

Recording one value in that package costs ~0.9 us of Python, as much as 1% of a loopback
round trip: the loop appends to an array (C speed) and `Recorder.fold()` moves the values into
the histogram outside any timed transaction, every FOLD_EVERY values and at the end. The fold
time is measured and left out of the transactions/s window.
"""

from __future__ import annotations

import time
from array import array

LOWEST_NS = 1
HIGHEST_NS = 60 * 10**9
SIGNIFICANT_FIGURES = 3
FOLD_EVERY = 1 << 18          # 2 MiB of raw values, ~0.25 s to fold
CLOCK = ("CLOCK_MONOTONIC (time.monotonic_ns) on the requester: from just before a request's "
         "send to just after its response's last byte was received")
PERCENTILES = (("p50_ns", 50.0), ("p90_ns", 90.0), ("p99_ns", 99.0), ("p99_9_ns", 99.9))


def new_histogram():
    from hdrh.histogram import HdrHistogram
    return HdrHistogram(LOWEST_NS, HIGHEST_NS, SIGNIFICANT_FIGURES)


def histogram_format() -> dict:
    """How the encoded histogram is to be read back (bench/latency.py decodes it)."""
    try:
        from importlib.metadata import version
        lib = f"hdrhistogram {version('hdrhistogram')}"
    except Exception:          # noqa: BLE001 - the version is a label, not a requirement
        lib = "hdrhistogram"
    return {"library": lib, "encoding": "HdrHistogram.encode() (compressed V2, base64)",
            "unit": "ns", "lowest": LOWEST_NS, "highest": HIGHEST_NS,
            "significant_figures": SIGNIFICANT_FIGURES}


class Recorder:
    """Raw latencies (ns) appended by the loop; folded into one HDR histogram."""

    def __init__(self):
        self.hist = new_histogram()
        self.values = array("q")
        self.append = self.values.append       # the loop's one call per transaction
        self.count = 0
        self.min_ns: int | None = None
        self.max_ns: int | None = None
        self.clamped = 0
        self.fold_ns = 0

    def due(self) -> bool:
        return len(self.values) >= FOLD_EVERY

    def fold(self) -> None:
        t0 = time.monotonic_ns()
        vals = self.values
        if vals:
            lo, hi = min(vals), max(vals)
            self.min_ns = lo if self.min_ns is None else min(self.min_ns, lo)
            self.max_ns = hi if self.max_ns is None else max(self.max_ns, hi)
            record = self.hist.record_value
            for v in vals:
                if v > HIGHEST_NS:
                    self.clamped += 1
                    v = HIGHEST_NS
                record(v)
            self.count += len(vals)
            del vals[:]
        self.fold_ns += time.monotonic_ns() - t0

    def summary(self, window_ns: int, cpu: dict | None = None) -> dict:
        """The result's `latency` block: transactions, transactions/s over `window_ns` less
        the fold time, min/percentiles/max, the encoded histogram, and the side's CPU per
        transaction (its own process user+sys, as CpuWindow measures every agent)."""
        self.fold()
        n = self.count
        window = max(window_ns - self.fold_ns, 0)
        out = {"clock": CLOCK, "unit": "ns", "transactions": n,
               "window_s": round(window / 1e9, 9),
               "transactions_per_s": round(n / (window / 1e9), 3) if window and n else None,
               "min_ns": self.min_ns, "max_ns": self.max_ns,
               "mean_ns": round(self.hist.get_mean_value(), 1) if n else None,
               "fold_s": round(self.fold_ns / 1e9, 6), "clamped": self.clamped,
               "histogram": self.hist.encode().decode("ascii") if n else None,
               "histogram_format": histogram_format()}
        for key, pct in PERCENTILES:
            out[key] = self.hist.get_value_at_percentile(pct) if n else None
        out["cpu_us_per_transaction"] = cpu_per_transaction(cpu, n)
        return out


def cpu_per_transaction(cpu: dict | None, transactions: int) -> float | None:
    """µs of this process's user+sys CPU per transaction (CpuWindow's reading)."""
    if not cpu or not transactions:
        return None
    return round((cpu["user_s"] + cpu["sys_s"]) / transactions * 1e6, 3)
