"""Request/response cases through `bench run` over veth: exact transaction counts, every
request and response verified, round trips merged per case, sockperf and qperf rows beside
ours, the latency table in the report, bad input refused."""

import json
import os
import signal
import subprocess
import time

import pytest

from bench import latency
from tests.conftest import REPO, bench_cmd, wait_for_agent

pytestmark = pytest.mark.root

N = 400


def _case(doc, cid):
    return next(c for c in doc["cases"] if c["id"] == cid)


@pytest.mark.parametrize("workload,size", [("tcp_rr", 64), ("udp_rr", 8),
                                           ("io_uring_rr", 4096)])
def test_n_transactions_per_sample_exactly(run_bench, root_only, no_leftovers, workload,
                                            size):
    from tests.io_uring_skip import io_uring_unavailable
    if workload.startswith("io_uring") and io_uring_unavailable():
        pytest.skip(io_uring_unavailable())
    rc, out, err, doc = run_bench("run", "--suite", "latency", "--workload", workload,
                                  "--sizes", str(size), "--bytes", str(N * size),
                                  "--repeat", "2", "--copies", "off", "--syscalls", "off")
    assert rc == 0, err
    c = _case(doc, f"{workload}-{size}-veth")
    assert c["status"] == "ok", c.get("reason")
    assert c["params"]["in_flight"] == 1 and c["params"]["response_size"] == size
    # --bytes bounds ours by a count: the time-bounded tools cannot mirror it, and say so
    assert c["params"]["reference"] is None and "not a count" in c["params"]["reference_note"]
    for s in c["samples"]:              # the warm-up too: every sample is N transactions
        rr = s["rr"]
        assert (rr["requester"]["transactions"], rr["requester"]["verified"]) == (N, N)
        assert rr["requester"]["bad_responses"] == 0 == rr["responder"]["bad_requests"]
        assert rr["responder"]["requests"] == N
        assert (s["messages"], s["bytes"], s["payload_errors"]) == (N, N * size, 0)
        assert s["latency"]["transactions"] == N
        assert latency.decode(s["latency"]["histogram"]).get_total_count() == N
    lat = c["latency"]
    assert lat["transactions"] == 2 * N and lat["samples"] == 2     # warm-up left out
    assert 0 < lat["min_ns"] <= lat["p50_ns"] <= lat["p99_ns"] <= lat["max_ns"] * 1.001 + 1
    assert lat["cpu_us_per_transaction"]["requester"] > 0
    assert lat["copy_share"]["status"] == "not counted"          # --copies off


def test_sockperf_and_qperf_rows_alternate_with_ours(run_bench, root_only, no_leftovers,
                                                     tmp_path):
    rc, out, err, doc = run_bench("run", "--suite", "latency", "--workload", "tcp_rr",
                                  "--sizes", "64", "--duration", "0.5", "--repeat", "2",
                                  "--cpus", "0,1", timeout=300)
    assert rc == 0, err
    c = _case(doc, "tcp_rr-64-veth")
    assert c["status"] == "ok" and c["params"]["reference"] == "sockperf+qperf"
    rows = [r for r in c["reference"] if not r.get("warmup")]
    assert [(r["tool"], r["repeat"]) for r in rows] == [("sockperf", 0), ("qperf", 0),
                                                        ("sockperf", 1), ("qperf", 1)]
    for r in rows:
        assert "error" not in r, r
        assert r["transactions_per_s"] > 0 and r["mean_ns"] > 0
        assert r["method"]["cpus"] == {"client": 0, "server": 1}
    assert all(r["p50_ns"] > 0 and r["dropped"] == 0 for r in rows if r["tool"] == "sockperf")
    # A B, B A: the reference first in the second repeat
    assert [s["order"] for s in c["samples"] if not s.get("warmup")] == [0, 1]
    # the copies of a round trip: send and receive on both sides, 4 per transaction
    share = c["latency"]["copy_share"]
    assert share["copies_per_transaction"] == pytest.approx(4, abs=0.05), share
    md = next(tmp_path.glob("out/*.md")).read_text()
    assert "## Latency (request/response round trips)" in md
    assert "| tcp_rr | 64 | veth |" in md and "(sockperf) /" in md
    assert "tcp_rr-64-veth" not in md.split("## Latency")[0]    # not in the bandwidth table
    json.dumps(doc)


@pytest.mark.parametrize("args,needle", [
    (("--in-flight", "0"), "in_flight 0"),
    (("--in-flight", "2000"), "in_flight 2000"),
    (("--response-size", "0"), "response size 0"),
    (("--workload", "udp_rr", "--sizes", "4"), "message size 4 for udp_rr"),
])
def test_bad_request_response_input_is_one_message(run_bench, no_leftovers, args, needle):
    rc, out, err, doc = run_bench("run", "--suite", "latency", "--topology", "loopback", *args)
    assert rc == 2 and needle in err and "fix:" in err.lower(), err
    assert "Traceback" not in err and doc is None


def test_a_responder_killed_mid_run_fails_its_case_with_the_requesters_word(tmp_path,
                                                                              root_only,
                                                                              no_leftovers):
    p = subprocess.Popen(bench_cmd("run", "--suite", "latency", "--workload", "tcp_rr",
                                   "--sizes", "64,4096", "--duration", "3", "--no-reference",
                                   "--copies", "off", "--syscalls", "off", "--out",
                                   str(tmp_path)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    pid = wait_for_agent(p.pid, "receiver")
    wait_for_agent(p.pid, "sender")
    time.sleep(1.0)                      # inside the first sample's transactions
    os.kill(pid, signal.SIGKILL)
    out, err = p.communicate(timeout=180)
    assert p.returncode == 1, err
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    first, second = doc["cases"]
    assert first["status"] == "failed", first
    # an agent's own word: the requester's (the responder went away mid-transaction, or
    # refused its connection on a slow start) or the responder's exit
    assert "agent" in first["reason"], first["reason"]
    assert second["status"] == "ok" and second["latency"]["transactions"] > 0


def test_a_missing_latency_tool_names_its_package(tmp_path, no_leftovers):
    """sockperf and qperf missing from PATH: one message naming the Debian package, exit 2,
    before anything starts (the run uses loopback: no namespaces to leave behind)."""
    env = dict(os.environ, PATH=f"{tmp_path}/empty")
    p = subprocess.run(bench_cmd("run", "--suite", "latency", "--workload", "tcp_rr",
                                 "--sizes", "64", "--topology", "loopback", "--duration", "0.5",
                                 "--out", str(tmp_path / "out")),
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert p.returncode == 2, p.stderr
    assert "qperf is not installed" in p.stderr and "apt-get install qperf" in p.stderr
    assert "Traceback" not in p.stderr and not list(tmp_path.glob("out/*.json"))
