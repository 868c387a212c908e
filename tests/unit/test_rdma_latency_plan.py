"""RDMA request/response cases, pure: what the plan makes of them, which peers mirror them
(perftest's ib_*_lat, qperf's rc_*), the peers' command lines and the agents' parameter checks.
The agents themselves run in the lab (tests/lab/test_rdma_lab.py)."""

import pytest

from bench import plan, suite
from bench.errors import UsageError
from bench.references import perftest_lat, qperf
from bench.references.rows import latency_notes, tool_for, tools_for
from workloads import rdma_rr

LAT = """
name = "l"
[defaults]
duration = 1.0
rdma_depth = 8
rdma_signal_every = 4
[[matrix]]
workloads = ["rdma_lat"]
sizes = [64]
rdma_wait = "poll"
[[matrix]]
workloads = ["rdma_send_lat"]
sizes = [64]
response_size = 4096
in_flight = 2
"""


def _cases(text=LAT, **ov):
    return {c.id: c for c in plan.expand(suite.parse(text), plan.Overrides(**ov)).cases}


def test_both_paths_are_request_response_rdma_cases_with_their_peers():
    cases = _cases()
    assert list(cases) == ["rdma_send_lat-64-veth-poll", "rdma_write_lat-64-veth-poll",
                           "rdma_send_lat-64-veth-r4096-f2"]
    send, write = cases["rdma_send_lat-64-veth-poll"], cases["rdma_write_lat-64-veth-poll"]
    for c in (send, write):
        assert c.rr and c.rdma is not None and (c.rdma.depth, c.rdma.wait) == (8, "poll")
        assert (c.response, c.in_flight) == (64, 1)
    # verbs paths get perftest, never sockperf (a socket tool); qperf's rc tests say why not
    assert tool_for(send) == "ib_send_lat" and tool_for(write) == "ib_write_lat"
    assert "RDMA CM" in latency_notes(send)["qperf"]
    # R != Q and two in flight: neither tool mirrors it, and each says why
    odd = cases["rdma_send_lat-64-veth-r4096-f2"]
    assert not odd.reference and set(latency_notes(odd)) == {"qperf", "ib_send_lat"}
    assert "same size both ways" in latency_notes(odd)["ib_send_lat"]


def test_a_case_bounded_by_a_count_keeps_perftest_which_counts_too():
    send = _cases(bytes=64 * 100)["rdma_send_lat-64-veth-poll"]
    assert send.count == 100
    assert tools_for(send) == ("ib_send_lat",)
    assert "runs for a time" in latency_notes(send)["qperf"]       # the first reason it gives


def test_perftest_latency_argv_mirrors_ours():
    a = perftest_lat.argv("rdma_send_lat", "cbrxe1", 1, 3, 64, 0, 500, 2.0, tcp_port=4000,
                          server="198.19.0.2")
    assert a == ["ib_send_lat", "-d", "cbrxe1", "-i", "1", "-s", "64", "-I", "0", "-F",
                 "-p", "4000", "-x", "3", "-n", "500", "198.19.0.2"]
    # no count known yet: duration mode, whole seconds
    d = perftest_lat.argv("rdma_write_lat", "cbrxe0", 1, None, 64, 0, None, 2.4)
    assert d[0] == "ib_write_lat" and d[-2:] == ["-D", "2"] and "-x" not in d
    # events: only ib_send_lat, only with -n; ib_write_lat has no event mode
    assert "-e" in perftest_lat.argv("rdma_send_lat", "x", 1, 0, 8, 0, 100, 1, wait="events")
    assert "-e" not in perftest_lat.argv("rdma_send_lat", "x", 1, 0, 8, 0, None, 1,
                                         wait="events")
    assert "-e" not in perftest_lat.argv("rdma_write_lat", "x", 1, 0, 8, 0, 100, 1,
                                         wait="events")
    assert "WRITE verb" in perftest_lat.unlike("rdma_write_lat", "events", 100)
    assert "Duration mode" in perftest_lat.unlike("rdma_send_lat", "events", None)
    assert perftest_lat.unlike("rdma_send_lat", "poll", None) is None
    # perftest's own floor on iterations
    assert perftest_lat.argv("rdma_send_lat", "x", 1, 0, 8, 0, 2, 1)[-2:] == ["-n", "5"]
    with pytest.raises(ValueError, match="no latency peer"):
        perftest_lat.argv("rdma_send", "x", 1, 0, 8, 0, 2, 1)


def test_qperf_rdma_tests_go_through_the_connection_manager():
    a = qperf.client_argv("rdma_write_lat", "198.19.0.2", 64, 1.0)
    assert a[-2:] == ["-cm1", "rc_rdma_write_lat"]
    assert qperf.client_argv("tcp_rr", "h", 64, 1.0)[-2:] == ["-v", "tcp_lat"]


@pytest.mark.parametrize("cfg,match", [
    ({"size": 64, "in_flight": 9, "rdma_depth": 8}, "at most rdma_depth"),
    ({"size": 1 << 20, "in_flight": 128}, "registered slots"),
    ({"size": 0}, "request size 0"),
    ({"size": 64, "response_size": (64 << 20) + 1}, "response size"),
])
def test_agent_parameters_name_what_is_wrong(cfg, match):
    with pytest.raises(ValueError, match=match):
        rdma_rr.rr_params(cfg)


def test_agent_defaults_and_signalling():
    p, v = rdma_rr.rr_params({"size": 64, "rdma_depth": 8, "rdma_signal_every": 16})
    assert (p.request, p.response, p.in_flight, p.timeout) == (64, 64, 1, rdma_rr.TIMEOUT_S)
    assert rdma_rr.signal_every(v) == 4            # at most half the send queue
    p, _ = rdma_rr.rr_params({"size": 64, "rr_timeout_s": 0.5})
    assert p.timeout == 0.5


def test_rr_options_out_of_range_are_usage_errors():
    with pytest.raises(UsageError, match="response size"):
        _cases(response_size=(1 << 20) + 1)
    # one send WR per transaction in flight: beyond the send queue is a plan error, not a
    # failed case
    with pytest.raises(UsageError, match="rdma_depth"):
        _cases(in_flight=9)


def _text(data_dir, *parts):
    return data_dir.joinpath(*parts).read_text()


def test_perftest_latency_iterations_are_round_trips_doubled(data_dir):
    r = perftest_lat.parse(_text(data_dir, "perftest", "send_lat_n.client.txt"), "ib_send_lat")
    # printed one-way: t_min 1992.94, t_typical 3997.10, t_avg 3842.01, 99% 4244.72 usec
    assert (r["mode"], r["size"], r["iterations"]) == ("iterations", 64, 200)
    assert (r["min_ns"], r["p50_ns"], r["mean_ns"], r["p99_ns"], r["max_ns"]) == (
        3_985_880, 7_994_200, 7_684_020, 8_489_440, 10_029_980)
    assert r["transactions"] == 197              # N - 1 intervals, the 2 largest dropped
    assert r["transactions_per_s"] == round(1e9 / 7_684_020, 3)
    assert r["version"] is None            # 4.5-0.17's latency tests print no version
    w = perftest_lat.parse(_text(data_dir, "perftest", "write_lat_n.client.txt"),
                           "ib_write_lat")
    assert w["p50_ns"] == 7_995_220 and w["wait"] == "poll"


def test_perftest_latency_duration_mode_has_a_mean_and_a_rate(data_dir):
    r = perftest_lat.parse(_text(data_dir, "perftest", "send_lat_d.client.txt"), "ib_send_lat")
    assert (r["mode"], r["iterations"], r["mean_ns"]) == ("duration", 258, 7_766_100)
    assert r["transactions_per_s"] == 128.76 and "p50_ns" not in r


def test_perftest_latency_without_results_names_the_error():
    with pytest.raises(ValueError, match="printed no results: Couldn't connect"):
        perftest_lat.parse(" Couldn't connect to 198.19.0.2:18515\nUnable to open file descriptor"
                           " for socket connection", "ib_send_lat")


def test_qperf_rc_tests_through_the_cm(data_dir):
    r = qperf.parse(_text(data_dir, "qperf", "rc_lat_64.txt"))
    assert r["rc_lat"]["round_trip_ns"] == 220_000 and r["rc_lat"]["msg_size"] == 64
    assert r["rc_rdma_write_lat"]["latency_ns"] == 112_000
