"""reports/latency.py: the latency table and the percentile plots from result-shaped dicts
(ours: latency blocks recorded by workloads/rr_stats.py; peers: captured sockperf and qperf
output parsed by bench/references)."""

from __future__ import annotations

import pytest

from bench.references import qperf, sockperf
from reports import latency as rl
from reports.plots import png
from workloads.rr_stats import Recorder


def _block(values):
    rec = Recorder()
    for v in values:
        rec.append(v)
    return rec.summary(sum(values))


def _case(workload, size, reference, warm=None, **extra):
    samples = [{"warmup": True, "latency": _block(warm or [9_000_000] * 10)},
               {"latency": _block([20_000] * 980 + [60_000] * 20)},
               {"latency": _block([22_000] * 1000)}]
    return {"id": f"{workload}-{size}-veth", "workload": workload, "size": size,
            "topology": "veth", "status": "ok", "samples": samples, "reference": reference,
            **extra}


@pytest.fixture
def result(data_dir):
    sp = sockperf.parse((data_dir / "sockperf" / "tcp_64.txt").read_text())
    qp = qperf.parse((data_dir / "qperf" / "lat_64.txt").read_text())["udp_lat"]
    points = [{"side": s, "point": p, "calls": 2000, "ns_total": 2000 * 600,
               "ns_probe_per_call": 100.0, "backend": "kmod", "quality": "exact"}
              for s in ("sender", "receiver") for p in ("send_copy", "recv_copy")]
    return {"cases": [
        _case("tcp_rr", 64, [sp, {"tool": "sockperf", "error": "timed out"}],
              copies={"status": "ok", "points": points,
                      "traced_sample": {"latency": {"transactions": 2000}}}),
        _case("udp_rr", 64, [qp]),
        {"id": "tcp-64-veth", "workload": "tcp", "size": 64, "status": "ok",
         "samples": [{"gbps": 1.0}]},
        {"id": "tcp_rr-4096-veth", "workload": "tcp_rr", "status": "failed", "samples": []},
    ]}


def test_rows_merge_ours_and_take_the_peers_median(result):
    rows = rl.rows(result)
    assert [r["id"] for r in rows] == ["tcp_rr-64-veth", "udp_rr-64-veth"]
    tcp = rows[0]
    assert tcp["ours"]["transactions"] == 2000              # warm-up left out
    assert tcp["ours"]["max_ns"] == 60_000 and tcp["ours"]["min_ns"] == 20_000
    assert tcp["peer"]["tool"] == "sockperf" and tcp["peer"]["repeats"] == 1
    assert tcp["peer"]["p50_ns"] == 13641
    assert tcp["ratio_p50"] == pytest.approx(tcp["ours"]["p50_ns"] / 13641, abs=1e-3)
    assert tcp["copy_share"]["status"] == "ok"
    assert tcp["copy_share_text"].startswith("4 copies, 2.0 µs of a")
    udp = rows[1]
    # qperf: a mean only; ours (980 x 20 µs, 20 x 60 µs, 1000 x 22 µs) has mean 21.4 µs
    assert "ratio_p50" not in udp and udp["ratio_mean"] == pytest.approx(21_400 / 10620,
                                                                          rel=0.002)
    assert udp["ratio_tps"] == pytest.approx(udp["ours"]["transactions_per_s"] / 94_000,
                                             abs=1e-3)


def test_markdown_table(result):
    md = rl.markdown(result)
    lines = md.splitlines()
    assert lines[0] == rl.HEADER and len(lines) == 4
    # merged: the 1000th of 2000 values is 22 µs, so is the 1980th; the 20 of 60 µs are p99.9
    assert "| tcp_rr | 64 | veth | 22.0 | 22.0 | 60.0 |" in lines[2]
    assert "| 13.6 (sockperf) | 32.8 | 1.61 | — | — |" in lines[2]
    # qperf: its mean round trip and ours' mean, no percentiles of its own
    # (transactions/s: the fixture's window less its real fold time, so not a fixed figure)
    assert "| — | — | — | — | 10.6 | 2.02 | " in lines[3]
    assert lines[3].endswith(" (qperf) | not counted |")
    assert rl.markdown({"cases": []}) == ""


def test_percentile_plot_per_path(result):
    data = rl.plot_data(result)
    assert set(data) == {"tcp_rr", "udp_rr"}
    ours = data["tcp_rr"]["ours 64 B veth"]
    assert ours[0][0] == 0 and ours[-1][0] > 99.9            # 2000 values: 3.3 nines
    assert all(a[1] <= b[1] for a, b in zip(ours, ours[1:], strict=False))
    assert data["tcp_rr"]["sockperf 64 B veth"][1] == (50.0, 13.641)
    assert list(data["udp_rr"]) == ["ours 64 B veth"]       # qperf prints no percentiles
    figs = rl.plots(result)
    assert [k for k, _, _ in figs] == ["latency-tcp_rr", "latency-udp_rr",
                                       "latency-copy-share"]
    # tcp_rr's copies were timed (kmod): 4 x 500 ns of its 22 µs p50; udp_rr's were not
    [(case, copy_us, rest_us)] = rl.share_data(result)
    assert case == "tcp_rr-64-veth" and copy_us == pytest.approx(2.0)
    assert copy_us + rest_us == pytest.approx(22.0, rel=0.002)
    assert png(figs[0][2])[:8] == b"\x89PNG\r\n\x1a\n"
    assert rl.plots({"cases": []}) == []
