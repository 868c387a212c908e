"""Export a result as a pyperf BenchmarkSuite, so `python -m pyperf compare_to old.json new.json`
(significance tests included) works on copybench results.

pyperf treats lower as better, so we export costs: wall seconds per GB of verified payload, and
CPU-seconds per GB of the sender agent, the receiver agent and the system softirq, each its own
benchmark: never summed, since per-side CPU already holds some softirq work (tick accounting
charges a softirq to the interrupted task too); request/response cases export their p50 and
p99 round trips and the time per transaction instead. One pyperf run per measured repeat;
warm-up samples stay out, as from every other statistic."""

from __future__ import annotations

from pathlib import Path

from bench.results import RunResult

METRICS = {
    "time_per_gb": lambda s: (8.0 / s["gbps"]) if s.get("gbps") else None,
    "sender_cpu_per_gb": lambda s: (s.get("cpu_s_per_gb") or {}).get("sender"),
    "receiver_cpu_per_gb": lambda s: (s.get("cpu_s_per_gb") or {}).get("receiver"),
    "softirq_cpu_per_gb": lambda s: (s.get("cpu_s_per_gb") or {}).get("softirq"),
}
# Request/response cases: their round trips (seconds, lower is better, as pyperf wants).
LATENCY_METRICS = {
    "p50_round_trip": lambda s: _ns((s.get("latency") or {}).get("p50_ns")),
    "p99_round_trip": lambda s: _ns((s.get("latency") or {}).get("p99_ns")),
    "time_per_transaction": lambda s: (1.0 / s["latency"]["transactions_per_s"])
    if (s.get("latency") or {}).get("transactions_per_s") else None,
}


def _ns(v):
    return v / 1e9 if v else None


def build_suite(result: RunResult):
    import pyperf
    benchmarks = []
    for case in result.cases:
        if case.status != "ok":
            continue
        for metric, fn in (LATENCY_METRICS if case.is_latency else METRICS).items():
            values = [v for v in (fn(s) for s in case.measured()) if v and v > 0]
            if not values:
                continue
            meta = {"name": f"{case.id}:{metric}", "unit": "second",
                    "description": f"copybench {metric} for {case.id}"}
            for key in ("kernel", "cpu_model", "cpu_count", "hostname"):
                if result.metadata.get(key) is not None:
                    meta[key if key != "cpu_model" else "cpu_model_name"] = result.metadata[key]
            runs = [pyperf.Run([v], metadata=meta, collect_metadata=False) for v in values]
            benchmarks.append(pyperf.Benchmark(runs))
    return pyperf.BenchmarkSuite(benchmarks) if benchmarks else None


def export(result: RunResult, path: Path) -> Path | None:
    suite = build_suite(result)
    if suite is None:
        return None
    suite.dump(str(path), replace=True)
    return path
