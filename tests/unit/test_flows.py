"""Several flows per case, pure: --cpus lists, the plan's flow counts, the aggregate over one
clock, Jain's index, per-flow copies that add up, iperf3 -P."""

import pytest

from bench import cpulists, flows, plan, suite
from bench.errors import UsageError
from bench.references import iperf3


def test_cpu_lists_place_flows_round_robin_and_say_when_they_share():
    c = cpulists.parse("0-3,4-7")
    assert c.first == (0, 4) and c.sides() == ((0, 1, 2, 3), (4, 5, 6, 7))
    assert [c.for_flow(i) for i in range(5)] == [(0, 4), (1, 5), (2, 6), (3, 7), (0, 4)]
    assert c.shared(4) is None
    assert c.shared(6) == ("6 flows on 4 sender CPUs and 4 receiver CPUs: placed round robin, "
                           "so flows share CPUs")
    one = cpulists.parse("0,1,1")
    assert one.first == (0, 1, 1) and one.shared(1) is None
    assert "1 sender CPU and 1 receiver CPU" in one.shared(2)
    from bench.cli import parse_cpus
    assert parse_cpus("0-1,0-1") == (0, 0)


@pytest.mark.parametrize("text", ["0", "0-3", "3-1,4", "0,1,2-3", "a,1", "0,-1"])
def test_bad_cpu_lists_name_the_forms(text):
    with pytest.raises(UsageError) as e:
        cpulists.parse(text)
    assert "--cpus 0-3,4-7" in e.value.fix


def test_check_takes_every_listed_cpu():
    from bench.placement import check_cpus, softirq_cpu
    c = cpulists.parse("0-1,0-2,1")
    check_cpus(c.sides(), lambda side: {0, 1, 2})
    with pytest.raises(UsageError, match="CPU 2 is not available"):
        check_cpus(c.sides(), lambda side: {0, 1})
    assert softirq_cpu(c.sides()) == 1 and softirq_cpu((0, 1, 1)) == 1


SUITE = """
name = "f"
[defaults]
flows = 2
[[matrix]]
workloads = ["tcp", "udp"]
sizes = [8192]
[[matrix]]
workloads = ["io_uring"]
sizes = [65536]
flows = [1, 2, 4]
"""


def test_flows_are_cases_of_their_own():
    ids = [c.id for c in plan.expand(suite.parse(SUITE)).cases]
    assert ids == ["tcp-8192-veth-p2", "udp-8192-veth-p2", "io_uring-65536-veth",
                   "io_uring-65536-veth-p2", "io_uring-65536-veth-p4"]
    only = plan.expand(suite.parse(SUITE), plan.Overrides(flows=3, workloads=("tcp",)))
    assert [(c.id, c.flows) for c in only.cases] == [("tcp-8192-veth-p3", 3)]


@pytest.mark.parametrize("ov,needle", [
    (plan.Overrides(flows=0), "flows 0: must be between 1 and 64"),
    (plan.Overrides(flows=65), "flows 65"),
])
def test_bad_flow_counts(ov, needle):
    with pytest.raises(UsageError) as e:
        plan.expand(suite.parse(SUITE), ov)
    assert needle in e.value.message and "--flows 2" in e.value.fix


@pytest.mark.parametrize("workload", ["tcp_rr", "rdma_send_lat", "tcp_zerocopy_receive"])
def test_paths_without_flows_refuse_several(workload):
    text = f'name = "x"\n[defaults]\nflows = 2\n[[matrix]]\nworkloads = ["{workload}"]\n' \
           'sizes = [4096]\n'
    with pytest.raises(UsageError, match="one flow per case"):
        plan.expand(suite.parse(text))


def _agents(nbytes, t0, t1, first=0, msgs=None, cpu=(0.1, 0.2), wall=1.0):
    tx = {"bytes": nbytes, "messages": msgs or nbytes // 1000, "t_start": t0 - 0.01,
          "t_end": t1, "cpu": {"user_s": cpu[0], "sys_s": cpu[1], "wall_s": wall}}
    rx = {"bytes": nbytes, "messages": msgs or nbytes // 1000, "bytes_seen": nbytes,
          "t_first": t0, "t_last": t1, "first_bytes": first, "bad": 0,
          "cpu": {"user_s": cpu[0], "sys_s": cpu[1], "wall_s": wall}}
    return tx, rx


def test_aggregate_is_one_window_over_every_flow():
    a = _agents(1_000_000, 10.0, 11.0, first=1000)
    b = _agents(3_000_000, 10.5, 12.0, first=1000)
    s = flows.aggregate([a[0], b[0]], [a[1], b[1]], {"busy": 0.5, "softirq": 0.1}, 1000,
                        [(0, 1), (1, 0)])
    # from the first byte of any flow (10.0) to the last of any (12.0); only the opener's
    # first receive is outside the window
    assert s["window_s"] == 2.0 and s["window_bytes"] == 4_000_000 - 1000
    assert s["gbps"] == pytest.approx(3_999_000 * 8 / 2.0 / 1e9)
    assert s["bytes"] == 4_000_000 == sum(f["bytes"] for f in s["flows"])
    assert [f["cpus"] for f in s["flows"]] == [{"sender": 0, "receiver": 1},
                                              {"sender": 1, "receiver": 0}]
    assert s["cpu"]["sender"]["user_s"] == pytest.approx(0.2)
    assert s["cpu_s_per_gb"]["sender"] == pytest.approx(0.6 / 4e-3)   # 0.6 CPU-s per 4 MB
    # per flow: 1 MB in 1 s and 3 MB in 1.5 s -> 0.008 and 0.016 Gbit/s (less first bytes)
    g = [f["gbps"] for f in s["flows"]]
    assert s["fairness"]["jain"] == pytest.approx(sum(g) ** 2 / (2 * sum(x * x for x in g)),
                                                  abs=1e-6)
    assert s["payload_errors"] == 0 and s["stream_gap_bytes"] == 0


def test_jain_index():
    assert flows.jain([5.0, 5.0, 5.0]) == 1.0
    assert flows.jain([9.0, 0.0, 0.0]) == pytest.approx(1 / 3)
    assert flows.jain([]) is None and flows.jain([0.0]) is None


def test_a_flow_that_lost_bytes_is_a_payload_error_of_the_sample():
    a = _agents(1_000_000, 10.0, 11.0)
    b = _agents(1_000_000, 10.0, 11.0)
    b[1]["bytes_seen"] = 999_000
    s = flows.aggregate([a[0], b[0]], [a[1], b[1]], {}, 1000, [(None, None)] * 2)
    assert s["payload_errors"] == 1 and s["flows"][1]["stream_gap_bytes"] == -1000


def test_side_names_keep_flows_apart():
    assert [flows.flow_side("sender", i) for i in range(3)] == ["sender", "sender.1",
                                                               "sender.2"]
    assert flows.base_side("receiver.2") == ("receiver", 2)
    assert flows.base_side("other@lab0") == ("other@lab0", 0)


def test_per_flow_copies_add_up_to_the_case():
    from bench.counting import _merged_sides, _merged_syscalls, _per_flow_copies
    from bench.tracing.base import PointCounts
    from bench.tracing.syscount import SyscallCount
    pts = [PointCounts("send_copy", flows.flow_side("sender", i), "s", "kmod", True,
                       calls=10 * (i + 1), bytes=1000 * (i + 1)) for i in range(3)]
    sample = {"flows": [{"flow": i, "bytes": 1000 * (i + 1), "messages_sent": i + 1}
                        for i in range(3)]}
    per = _per_flow_copies(pts, sample, 1000)
    assert [f["sender"]["bytes"] for f in per] == [1000, 2000, 3000]
    assert all(f["sender"]["bytes_per_payload_byte"] == 1.0 for f in per)
    merged = _merged_sides(pts)
    assert {p.side for p in merged} == {"sender"} and sum(p.bytes for p in merged) == 6000
    sc = _merged_syscalls(_merged_sides([SyscallCount("sender", 44, "sendto", 5),
                                         SyscallCount("sender.1", 44, "sendto", 7),
                                         SyscallCount("receiver.1", 45, "recvfrom", 3)]))
    assert sorted((c.side, c.name, c.calls) for c in sc) == [("receiver", "recvfrom", 3),
                                                            ("sender", "sendto", 12)]


def test_iperf3_runs_as_many_streams():
    argv = iperf3.client_argv("tcp", "h", 5201, 65536, 2.0, count=100, parallel=4)
    assert argv[argv.index("-P") + 1] == "4"
    assert argv[argv.index("-n") + 1] == str(100 * 65536 * 4)     # -n counts every stream
    assert "-P" not in iperf3.client_argv("tcp", "h", 5201, 65536, 2.0)


def test_rdma_flows_are_qps_of_their_own_beside_perftest_with_as_many():
    from bench.references import perftest
    text = 'name = "x"\n[defaults]\nflows = 3\n[[matrix]]\nworkloads = ["rdma_write"]\n' \
           'sizes = [65536]\n'
    (case,) = plan.expand(suite.parse(text)).cases
    assert (case.id, case.flows, case.rdma is not None) == ("rdma_write-65536-veth-p3", 3, True)
    argv = perftest.argv("rdma_write", "rxe0", 1, 1, 65536, 128, 0, 16, 2.0, 100, qps=3)
    # -q QPs in one process; -n is per QP, as our count is per flow
    assert argv[argv.index("-q") + 1] == "3" and argv[argv.index("-n") + 1] == "100"
    assert "-q" not in perftest.argv("rdma_write", "rxe0", 1, 1, 65536, 128, 0, 16, 2.0, 100)
    # each flow's own QP counts beside the aggregate
    a, b = _agents(1_000_000, 10.0, 11.0), _agents(1_000_000, 10.0, 11.0)
    a[0]["rdma"], b[0]["rdma"] = {"wrs_posted": 7}, {"wrs_posted": 9}
    s = flows.aggregate([a[0], b[0]], [a[1], b[1]], {}, 1000, [(0, 1), (0, 1)])
    assert [f["rdma"]["sender"]["wrs_posted"] for f in s["flows"]] == [7, 9]
    scaling = {c.id for c in plan.expand(suite.load("scaling")).cases}
    assert {"rdma_write-65536-veth", "rdma_write-65536-veth-p8"} <= scaling


def test_cases_beyond_the_machines_cpus_are_skipped_saying_so():
    p = plan.cap_flows(plan.expand(suite.load("scaling")), 2)
    by = {c.id: c for c in p.cases}
    assert by["tcp-65536-veth"].skip_reason is None
    assert by["tcp-65536-veth-p2"].skip_reason is None
    four = by["io_uring-65536-veth-p4"]
    assert four.skip_reason == ("4 flows, but the sending machine has 2 CPUs: each flow needs "
                                "one of its own to scale") and "--flows 2" in four.skip_fix


def test_scaling_plots_need_two_flow_counts_of_a_path():
    from bench.results import CaseResult, RunResult
    from reports import flows as rf
    from reports.plots import png
    r = RunResult(suite="scaling", metadata={})
    for n, g in ((1, 10.0), (2, 18.0), (4, 30.0)):
        r.cases.append(CaseResult(id=f"tcp-65536-veth-p{n}", workload="tcp", size=65536,
                                  topology="veth", params={"flows": n} if n > 1 else {},
                                  samples=[{"gbps": g, "cpu_s_per_gb": {"sender": 0.1 * n}}]))
    r.cases.append(CaseResult(id="udp-1472-veth", workload="udp", size=1472, topology="veth",
                              samples=[{"gbps": 1.0}]))
    assert rf.scaling_data([r], "gbps") == {"tcp 65536 B veth": [(1, 10.0), (2, 18.0),
                                                                 (4, 30.0)]}
    figs = rf.plots([r])
    assert [k for k, _, _ in figs] == ["scaling-throughput", "scaling-cpu"]
    assert png(figs[0][2])[:4] == b"\x89PNG"

