"""sockperf and qperf as latency references: argv builders, and parse() on output captured
on loopback (tests/data/sockperf, tests/data/qperf; their READMEs say how)."""

from __future__ import annotations

import pytest

from bench.errors import UsageError
from bench.references import qperf, sockperf


def _read(data_dir, tool, name):
    return (data_dir / tool / name).read_text()


def test_sockperf_udp_round_trip_percentiles(data_dir):
    r = sockperf.parse(_read(data_dir, "sockperf", "udp_64.txt"))
    assert r["version"] == "3.7" and r["measure"] == "round trip (--full-rtt)"
    assert (r["transactions"], r["window_s"]) == (72943, 0.832)
    assert r["transactions_per_s"] == pytest.approx(72943 / 0.832)
    assert (r["min_ns"], r["p50_ns"], r["p90_ns"], r["p99_ns"]) == (10175, 10706, 11336, 30565)
    assert (r["p99_9_ns"], r["p99_999_ns"], r["max_ns"]) == (61101, 1645726, 3479061)
    assert (r["mean_ns"], r["stddev_ns"]) == (11366, 15536)
    assert (r["dropped"], r["duplicated"], r["out_of_order"]) == (0, 0, 0)
    assert r["total_run"] == {"run_s": 2.001, "warmup_ms": 400, "sent": 170000,
                              "received": 169999}


def test_sockperf_tcp_and_data_integrity_runs(data_dir):
    r = sockperf.parse(_read(data_dir, "sockperf", "tcp_64.txt"))
    assert (r["p50_ns"], r["p99_ns"], r["transactions"]) == (13641, 32779, 46715)
    r = sockperf.parse(_read(data_dir, "sockperf", "tcp_4096.txt"))
    assert (r["min_ns"], r["p50_ns"], r["max_ns"]) == (12589, 13751, 5418375)


def test_sockperf_one_way_output_is_doubled():
    text = ("sockperf: Summary: Latency is 5.500 usec\n"
            "sockperf: ---> percentile 50.000 =    5.250\n")
    r = sockperf.parse(text)
    assert r["mean_ns"] == 11000 and r["p50_ns"] == 10500 and "2 x" in r["measure"]


@pytest.mark.parametrize("name,needle", [
    ("udp_1_refused.txt", "Invalid message size: 1 (min: 14)"),
    ("tcp_no_server.txt", "Connection refused"),
])
def test_sockperf_errors_exit_0_but_parse_refuses(data_dir, name, needle):
    with pytest.raises(ValueError, match="no results") as e:
        sockperf.parse(_read(data_dir, "sockperf", name))
    assert needle in str(e.value)


def test_sockperf_argv():
    assert sockperf.client_argv("tcp_rr", "198.18.0.2", 11111, 64, 2.5) == [
        "sockperf", "ping-pong", "-i", "198.18.0.2", "-p", "11111", "-m", "64", "-t", "4",
        "--full-rtt", "--no-rdtsc", "--data-integrity", "--tcp"]
    assert sockperf.server_argv("udp_rr", "198.18.0.2", 11111) == [
        "sockperf", "server", "-i", "198.18.0.2", "-p", "11111"]
    # its valid window drops ~1.2 s of the run: -t 1 gives no observations at all
    assert sockperf.client_argv("udp_rr", "h", 1, 64, 1.0)[9] == "3"
    assert sockperf.pinned(["sockperf"], 1) == ["taskset", "-c", "1", "sockperf"]
    with pytest.raises(ValueError, match="at least 14"):
        sockperf.client_argv("udp_rr", "127.0.0.1", 1, 1, 1)
    assert sockperf.peer_note("tcp_rr", 64, response=128).startswith("sockperf answers")
    assert sockperf.peer_note("tcp_rr", 64, in_flight=4).endswith("one message in flight")
    assert sockperf.peer_note("tcp", 64) == "no like-for-like peer in sockperf"
    assert sockperf.peer_note("udp_rr", 4096) is None


def test_qperf_one_way_latency_becomes_a_round_trip(data_dir):
    r = qperf.parse(_read(data_dir, "qperf", "lat_64.txt"))
    tcp, udp = r["tcp_lat"], r["udp_lat"]
    assert tcp["latency_ns"] == 8880 and tcp["round_trip_ns"] == 17760
    assert tcp["msg_rate"] == 113_000 and tcp["transactions_per_s"] == 56_500
    assert (tcp["msg_size"], tcp["time_s"]) == (64, 2.0)
    assert (tcp["loc_cpus_used_pct"], tcp["rem_cpus_used_pct"]) == (150, 150)
    assert udp["round_trip_ns"] == 10620 and udp["transactions_per_s"] == 94_000


def test_qperf_sizes_and_one_byte(data_dir):
    r = qperf.parse(_read(data_dir, "qperf", "lat_4096.txt"))
    assert r["tcp_lat"]["msg_size"] == 4096 and r["udp_lat"]["latency_ns"] == 5700
    r = qperf.parse(_read(data_dir, "qperf", "lat_1.txt"))
    assert r["udp_lat"]["msg_size"] == 1 and r["udp_lat"]["round_trip_ns"] == 44800


def test_qperf_rc_lat_without_a_device(data_dir):
    with pytest.raises(ValueError, match="failed to find any InfiniBand devices"):
        qperf.parse(_read(data_dir, "qperf", "rc_lat_no_device.txt"))


def test_qperf_argv():
    assert qperf.client_argv("tcp_rr", "198.18.0.2", 1, 1.2, cpus=(0, 1)) == [
        "qperf", "198.18.0.2", "--listen_port", "19765", "-to", "5", "-m", "1", "-t", "2",
        "-v", "-lca", "1", "-rca", "2", "tcp_lat"]       # qperf's CPUs count from 1
    # RoCE needs a GID, which qperf's own exchange lacks: rc_lat through the RDMA CM
    assert qperf.client_argv("rdma_send_lat", "h", 64, 1)[-2:] == ["-cm1", "rc_lat"]
    assert qperf.peer_note("udp_rr", 64, response=32).endswith("no peer for R != Q")
    assert qperf.peer_note("tcp_rr", 64, in_flight=2).endswith("one message in flight")
    with pytest.raises(ValueError, match="no like-for-like peer"):
        qperf.client_argv("tcp", "h", 64, 1)
    assert qperf.server_argv(23411) == ["qperf", "--listen_port", "23411"]


def test_missing_tools_name_the_package(monkeypatch):
    import shutil
    monkeypatch.setattr(shutil, "which", lambda _: None)
    for mod, pkg in ((sockperf, "sockperf"), (qperf, "qperf")):
        with pytest.raises(UsageError) as e:
            mod.check()
        assert f"apt-get install {pkg}" in e.value.fix
