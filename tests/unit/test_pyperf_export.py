import subprocess
import sys

import pyperf

from bench.results import CaseResult, RunResult
from reports import pyperf_export


def result(gbps_values, warmup_gbps=None):
    r = RunResult(suite="s", metadata={"kernel": "6.1.0", "hostname": "h", "cpu_count": 2})
    samples = [{"gbps": g, "cpu_s_per_gb": {"sender": 0.5 + i, "receiver": 0.25 + i,
                                            "softirq": 0.125 + i}}
               for i, g in enumerate(gbps_values)]
    if warmup_gbps is not None:       # a slow first sample, as warm-ups are: never exported
        samples.insert(0, {"gbps": warmup_gbps, "warmup": True,
                           "cpu_s_per_gb": {"sender": 99.0, "receiver": 99.0, "softirq": 99.0}})
    r.cases.append(CaseResult(id="tcp-65536-veth", workload="tcp", size=65536, topology="veth",
                              samples=samples))
    r.cases.append(CaseResult(id="rdma-4096-veth", workload="rdma", size=4096, topology="veth",
                              status="skipped"))
    return r


def test_export_is_per_side_from_measured_repeats_only(tmp_path):
    path = pyperf_export.export(result([8.0, 16.0, 8.0], warmup_gbps=1.0), tmp_path / "a.json")
    suite = pyperf.BenchmarkSuite.load(str(path))
    names = sorted(b.get_name() for b in suite.get_benchmarks())
    assert names == ["tcp-65536-veth:receiver_cpu_per_gb", "tcp-65536-veth:sender_cpu_per_gb",
                     "tcp-65536-veth:softirq_cpu_per_gb", "tcp-65536-veth:time_per_gb"]
    t = suite.get_benchmark("tcp-65536-veth:time_per_gb")
    assert sorted(t.get_values()) == [0.5, 1.0, 1.0]  # 8 / Gbit/s = seconds per GB; no warm-up 8.0
    # each side its own benchmark with its own values: never sender + receiver + softirq
    assert suite.get_benchmark("tcp-65536-veth:sender_cpu_per_gb").get_values() == (0.5, 1.5, 2.5)
    assert suite.get_benchmark("tcp-65536-veth:receiver_cpu_per_gb").get_values() == \
        (0.25, 1.25, 2.25)
    assert suite.get_benchmark("tcp-65536-veth:softirq_cpu_per_gb").get_values() == \
        (0.125, 1.125, 2.125)


def test_pyperf_compare_to_runs_on_two_exports(tmp_path):
    a = pyperf_export.export(result([8.0, 8.1, 7.9, 8.0]), tmp_path / "a.json")
    b = pyperf_export.export(result([16.0, 16.2, 15.8, 16.0]), tmp_path / "b.json")
    p = subprocess.run([sys.executable, "-m", "pyperf", "compare_to", str(a), str(b)],
                       capture_output=True, text=True)
    assert p.returncode == 0, p.stderr
    assert "tcp-65536-veth:time_per_gb" in p.stdout and "2.00x faster" in p.stdout


def test_nothing_to_export_for_skipped_only():
    r = result([])
    assert pyperf_export.build_suite(r) is None


def test_a_latency_case_exports_its_round_trips(tmp_path):
    r = RunResult(suite="latency", metadata={"hostname": "h"})
    r.cases.append(CaseResult(
        id="tcp_rr-64-veth", workload="tcp_rr", size=64, topology="veth",
        params={"in_flight": 1},
        samples=[{"gbps": 0.01, "latency": {"p50_ns": 20_000 + i, "p99_ns": 50_000,
                                            "transactions_per_s": 40_000.0}}
                 for i in range(3)]))
    suite = pyperf.BenchmarkSuite.load(str(pyperf_export.export(r, tmp_path / "l.json")))
    names = sorted(b.get_name() for b in suite.get_benchmarks())
    assert names == ["tcp_rr-64-veth:p50_round_trip", "tcp_rr-64-veth:p99_round_trip",
                     "tcp_rr-64-veth:time_per_transaction"]
    assert suite.get_benchmark("tcp_rr-64-veth:p50_round_trip").get_values() == (
        20e-6, 20.001e-6, 20.002e-6)
