"""A row says when our agent, not the path, was the limit: >= 90% of one CPU in its window."""

from bench.metrics import agent_busy
from bench.results import CaseResult
from reports.tables import case_row
from workloads.agent import CpuWindow


def _sample(tx_cpu, rx_cpu, wall=1.0, warmup=False):
    side = lambda c: {"user_s": c * 0.25, "sys_s": c * 0.75, "wall_s": wall}  # noqa: E731
    return {"warmup": warmup, "gbps": 1.0, "msgs_per_s": 1.0,
            "cpu": {"sender": side(tx_cpu), "receiver": side(rx_cpu)}}


def _case(samples):
    return CaseResult(id="udp-1472-veth", workload="udp", size=1472, topology="veth",
                      samples=samples)


def test_a_busy_sender_agent_is_named_in_the_row_note():
    note = case_row(_case([_sample(0.95, 0.4), _sample(0.93, 0.5)])).note
    assert "limited by the sender agent (94% of one CPU)" in note
    assert "receiver agent" not in note


def test_the_threshold_is_over_the_measured_samples_only():
    # 0.89 + 0.89 over 2 s is below 90%; the warm-up's busy second does not count
    assert "limited" not in case_row(_case([_sample(0.89, 0.1), _sample(0.89, 0.1),
                                            _sample(1.0, 1.0, warmup=True)])).note
    note = case_row(_case([_sample(0.5, 0.9), _sample(0.5, 0.9)])).note
    assert "limited by the receiver agent (90% of one CPU)" in note


def test_results_without_wall_time_get_no_note():
    s = _sample(1.0, 1.0)
    for side in ("sender", "receiver"):
        del s["cpu"][side]["wall_s"]
    assert agent_busy([s], "sender") is None
    assert "limited" not in case_row(_case([s])).note


def test_the_agents_cpu_window_records_its_wall_time():
    w = CpuWindow().start()
    t = 0
    for i in range(200_000):   # a busy loop: user time close to the wall time
        t += i
    c = w.stop()
    assert c["wall_s"] > 0 and c["user_s"] + c["sys_s"] <= c["wall_s"] * 1.05 + 0.01
