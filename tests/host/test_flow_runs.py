"""--flows N over veth: each flow its own processes, exact per-flow and aggregate counts, the
copies of each flow adding up, iperf3 -P beside, a killed flow failing its case, bad input."""

import json
import os
import signal
import subprocess
import time

import pytest

from tests.conftest import REPO, agent_pids, bench_cmd

pytestmark = pytest.mark.root

M = 200


@pytest.mark.parametrize("suite,workload,size,batch", [
    ("smoke", "tcp", 65536, 1), ("smoke", "udp", 1472, 1),
    ("sendfile-splice", "msg_zerocopy", 65536, 1), ("sendfile-splice", "sendfile", 65536, 1)])
def test_n_flows_of_m_messages_are_n_m_s_verified_bytes(run_bench, root_only, no_leftovers,
                                                       suite, workload, size, batch, request):
    if workload == "udp":
        request.getfixturevalue("roomy_socket_limits")
    rc, out, err, doc = run_bench("run", "--suite", suite, "--workload", workload,
                                  "--sizes", str(size), "--bytes", str(M * size),
                                  "--batch", str(batch), "--flows", "2", "--cpus", "0-1,0-1",
                                  "--no-reference", "--repeat", "1")
    assert rc == 0, err
    c = doc["cases"][0]
    assert c["id"] == f"{workload}-{size}-veth-p2" and c["status"] == "ok", c.get("reason")
    assert c["params"]["flows"] == 2
    for s in c["samples"]:
        assert (s["messages_sent"], s["messages"], s["bytes"]) == (2 * M, 2 * M, 2 * M * size)
        assert [(f["messages"], f["bytes"]) for f in s["flows"]] == [(M, M * size)] * 2
        assert [f["cpus"] for f in s["flows"]] == [{"sender": 0, "receiver": 0},
                                                  {"sender": 1, "receiver": 1}]
        assert len({f["sender_pid"] for f in s["flows"]}) == 2      # no shared interpreter
        assert s["payload_errors"] == 0 and 0.5 <= s["fairness"]["jain"] <= 1.0
    copies = c["copies"]
    assert copies["status"] == "ok", copies
    per = copies["flows"]
    rx_total = copies["sides"]["receiver"]["bytes"]
    assert rx_total == 2 * M * size
    assert sum(f["receiver"]["bytes"] for f in per) == rx_total       # flows add up exactly
    assert [f["receiver"]["bytes"] for f in per] == [M * size] * 2
    assert sum(f["sender"]["bytes"] for f in per) == copies["sides"]["sender"]["bytes"]


def test_tcp_flows_beside_iperf3_with_as_many_streams(run_bench, root_only, no_leftovers):
    rc, out, err, doc = run_bench("run", "--suite", "smoke", "--workload", "tcp", "--sizes",
                                  "65536", "--duration", "0.5", "--flows", "2", "--cpus", "0,1",
                                  "--repeat", "1", "--copies", "off", "--syscalls", "off")
    assert rc == 0, err
    c = doc["cases"][0]
    ref = [r for r in c["reference"] if not r.get("warmup")][0]
    assert "error" not in ref and ref["gbps"] > 0 and ref["parallel"]["streams"] == 2
    s = [s for s in c["samples"] if not s.get("warmup")][0]
    # one CPU per side for two flows: they share, and the sample says so
    assert "placed round robin, so flows share CPUs" in s["cpu_placement_note"]
    assert doc["metadata"]["method"]["cpus"]["sender"] == 0


def test_one_flows_agent_dying_fails_the_case_and_leaves_nothing(tmp_path, root_only,
                                                                 no_leftovers):
    p = subprocess.Popen(bench_cmd("run", "--suite", "smoke", "--workload", "tcp", "--sizes",
                                   "65536", "--duration", "3", "--flows", "3", "--no-reference",
                                   "--copies", "off", "--syscalls", "off", "--repeat", "1",
                                   "--out", str(tmp_path)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    deadline = time.monotonic() + 30
    senders: list[int] = []
    while time.monotonic() < deadline and len(senders) < 3:
        senders = [pid for pid in agent_pids() if _comm(pid) == "sender"
                   and _ppid(pid) == p.pid]
        time.sleep(0.05)
    assert len(senders) == 3, senders
    time.sleep(1.0)
    os.kill(senders[1], signal.SIGKILL)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1, err
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    c = doc["cases"][0]
    assert c["status"] == "failed" and "sender agent exited" in c["reason"], c["reason"]


def _comm(pid):
    try:
        return open(f"/proc/{pid}/comm").read().strip()
    except OSError:
        return None


def _ppid(pid):
    try:
        return int(open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()[1])
    except (OSError, ValueError, IndexError):
        return None


@pytest.mark.parametrize("args,needle", [
    (("--flows", "0"), "flows 0: must be between 1 and 64"),
    (("--workload", "tcp", "--flows", "2", "--cpus", "0-1,0-4096"), "CPU 2"),
    (("--cpus", "3-1,0"), "is not a CPU number or range"),
])
def test_bad_flow_input_is_one_message(run_bench, no_leftovers, args, needle):
    rc, out, err, doc = run_bench("run", "--suite", "smoke", "--topology", "loopback", *args)
    assert rc == 2 and needle in err and "fix:" in err.lower(), err
    assert "Traceback" not in err and doc is None
