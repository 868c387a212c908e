"""Two-node copy counting in the lab: a tracer on each node (kmod on Debian 6.1), the sender
agent on lab0 and the receiver on lab1, counts merged per side. Slow (TCG).

Brings up `bench lab up --nodes 2` (provisioning installs this tree's copybench on both nodes,
including `bench tracer`), and afterwards leaves the lab as it found it: one node again if one
was running, else down."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.lab import manager
from bench.lab.paths import lab_paths
from bench.lab.target import LabTarget
from tests.lab.conftest import _cannot_run_qemu

pytestmark = pytest.mark.lab

N, SIZE = 100, 65536
SUITE = f"""name = "two-node-copies"
description = "MSG_ZEROCOPY and TCP across the lab link, counted on both nodes"
[defaults]
bytes = {N * SIZE}
repeat = 1
topology = "veth"
reference = false
[[matrix]]
workloads = ["msg_zerocopy", "tcp"]
sizes = [{SIZE}]
"""


@pytest.fixture(scope="module")
def two_nodes():
    why = _cannot_run_qemu()
    if why:
        pytest.skip(f"QEMU cannot run here: {why}")
    paths = lab_paths()
    before = manager.status(paths)
    one_before = before["running"] and len(before["nodes"]) == 1
    if before["running"] and len(before["nodes"]) != 2:
        manager.down(paths)
    manager.up(paths, nodes=2)      # boots if needed; provisions (this tree's bench) either way
    target = LabTarget.from_lab(paths)
    yield target
    target.close()          # its shared SSH connections
    manager.down(paths)
    if one_before:
        manager.up(paths, nodes=1)


def _left_on_nodes(vm) -> list[str]:
    """Anything of ours still attached on a node: the module, kprobe events, tracer processes."""
    left = []
    for node in (0, 1):
        out = vm.run(node, ["sh", "-c", "lsmod | grep -w copytrace; "
                            "grep -h copybench /sys/kernel/tracing/kprobe_events; "
                            "pgrep -af 'bench tracer' | grep -v pgrep"], check=False,
                     timeout=60).stdout.strip()
        if out:
            left.append(f"lab{node}: {out}")
    return left


@pytest.fixture(scope="module")
def result(two_nodes, tmp_path_factory):
    out = tmp_path_factory.mktemp("two-node-out")
    suite = out / "two-node-copies.toml"
    suite.write_text(SUITE)
    p = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--suite", str(suite),
                        "--target", "lab", "--copies", "auto", "--no-reference", "--out", str(out)],
                       capture_output=True, text=True, timeout=1800)
    print(p.stdout[-4000:], p.stderr[-3000:])
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    doc = json.loads(next(Path(out).glob("two-node-copies-*.json")).read_text())
    return doc, p.stdout


def test_each_node_chose_its_own_backends(result):
    doc, _ = result
    assert doc["metadata"]["placement"]["hosts"] == ["lab0", "lab1"]
    by_node = {}
    for c in doc["metadata"]["copy_backends"]:
        by_node.setdefault((c["node"], c["role"]), {})[c["point"]] = c["backend"]
    assert set(by_node) == {("lab0", "sender"), ("lab1", "receiver")}
    for choice in by_node.values():   # Debian 6.1: _copy_*_iter are notrace -> kmod
        assert choice["send_copy"] == choice["recv_copy"] == "kmod", by_node
    bw = doc["metadata"]["memory_bandwidth"]
    assert bw["measured_on"] == "lab0" and set(bw["per_node"]) == {"lab0", "lab1"}


def test_msg_zerocopy_across_the_link_sends_without_copying(result):
    doc, stdout = result
    c = next(c for c in doc["cases"] if c["workload"] == "msg_zerocopy")
    assert c["id"] == f"msg_zerocopy-{SIZE}-link" and c["status"] == "ok", c
    cp = c["copies"]
    assert cp["status"] == "ok", cp
    payload = cp["traced_sample"]["bytes"]
    assert payload == N * SIZE and cp["traced_sample"]["payload_errors"] == 0
    sender = cp["sides"]["sender"]
    assert sender["backends"] == ["kmod"] and sender["exact"] is True
    send_pts = [p for p in cp["points"] if p["side"] == "sender" and p["point"] == "send_copy"]
    assert send_pts and all(p["quality"] == "exact" for p in send_pts)
    assert all("counted on lab0" in p["notes"] for p in send_pts)
    # The property: across a real link the kernel sends from the user's pages.
    assert sender["bytes"] < 0.25 * payload, sender
    # ... and the kernel's own completion counts are recorded beside the copy counts.
    zc = cp["traced_sample"]["zerocopy"]
    assert zc["completed"] == zc["send_calls"] > 0 and zc["all_completed"], zc
    assert zc["zerocopy"] > 0, zc
    # The receiver still copies every byte it receives (no TCP_ZEROCOPY_RECEIVE here).
    assert cp["sides"]["receiver"]["bytes"] == payload, cp["sides"]["receiver"]
    print(f"\nmsg_zerocopy {N}x{SIZE} across lab0->lab1: sender _copy_from_iter "
          f"{sender['calls']} calls / {sender['bytes']} B of {payload} B payload "
          f"({sender['bytes'] / payload:.4f}); completions {zc}; receiver "
          f"{cp['sides']['receiver']['bytes']} B; other: "
          f"{ {k: v.get('other_points') for k, v in cp['sides'].items() if k.startswith('other')} }")


def test_tcp_across_the_link_receive_bytes_copied_equal_bytes_received(result):
    doc, stdout = result
    c = next(c for c in doc["cases"] if c["workload"] == "tcp")
    cp = c["copies"]
    assert c["status"] == "ok" and cp["status"] == "ok", c
    received = cp["traced_sample"]["bytes"]
    assert received == N * SIZE
    rx, tx = cp["sides"]["receiver"], cp["sides"]["sender"]
    assert rx["bytes"] == received and rx["bytes_per_payload_byte"] == 1.0, rx
    assert rx["exact"] is True and rx["backends"] == ["kmod"] and rx["symbols"] == ["_copy_to_iter"]
    assert tx["bytes"] == N * SIZE and tx["symbols"] == ["_copy_from_iter"], tx
    recv_pts = [p for p in cp["points"] if p["side"] == "receiver" and p["point"] == "recv_copy"]
    assert all(p["quality"] == "exact" and "counted on lab1" in p["notes"] for p in recv_pts)
    assert f"| tcp-{SIZE}-link | receiver |" in stdout
    print(f"\ntcp {N}x{SIZE} across lab0->lab1: receiver _copy_to_iter {rx['calls']} calls / "
          f"{rx['bytes']} B of {received} B received; sender {tx['calls']} calls / {tx['bytes']} B")


def test_two_flows_across_the_link_each_verified_and_counted_on_its_node(two_nodes, tmp_path):
    """--flows 2 on two nodes: each flow's sender on lab0 and receiver on lab1, N messages
    each, verified; the copies of each flow's own processes counted on the node it ran on,
    adding up exactly to the sides' totals. The nodes have one vCPU each: an explicit --flows
    runs the flows sharing it (a suite's flow list would be capped at the CPUs)."""
    suite = tmp_path / "two-node-copies.toml"
    suite.write_text(SUITE)
    p = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--suite", str(suite),
                        "--target", "lab", "--workload", "tcp", "--flows", "2",
                        "--copies", "auto", "--no-reference", "--out", str(tmp_path)],
                       capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    doc = json.loads(next(tmp_path.glob("two-node-copies-*.json")).read_text())
    (c,) = doc["cases"]
    assert c["id"] == f"tcp-{SIZE}-link-p2" and c["status"] == "ok", c
    for s in c["samples"]:
        assert (s["bytes"], s["payload_errors"]) == (2 * N * SIZE, 0), s
        assert [f["bytes"] for f in s["flows"]] == [N * SIZE, N * SIZE]
        assert s["fairness"]["flows"] == 2 and s["fairness"]["jain"] > 0
    cp = c["copies"]
    assert cp["status"] == "ok" and cp["traced_sample"]["bytes"] == 2 * N * SIZE, cp
    rx = cp["sides"]["receiver"]
    assert rx["bytes"] == 2 * N * SIZE and rx["exact"] is True, rx
    per = cp["flows"]
    assert len(per) == 2
    for side in ("sender", "receiver"):
        assert sum(f[side]["bytes"] for f in per) == cp["sides"][side]["bytes"], per
    assert all(f["receiver"]["bytes"] == N * SIZE for f in per), per


def test_nothing_stays_attached_after_the_run(result, two_nodes):
    assert _left_on_nodes(two_nodes) == []


def test_a_dead_runner_leaves_no_tracer_on_the_nodes(two_nodes):
    """The runner (here: its SSH clients) dies while both nodes' tracers are attached: each
    node sees end of input and unloads its module on its own."""
    from bench.placement import LinkPlacement
    t = LinkPlacement(two_nodes).tracer("kmod")
    t.attach({"sender": 1, "receiver": 1})       # init exists on both nodes
    try:
        assert all("copytrace" in two_nodes.run(i, ["lsmod"], timeout=60).stdout for i in (0, 1))
        for n in t.nodes:
            n.proc.proc.kill()                  # SIGKILL: no detach command, no goodbye
        deadline = time.monotonic() + 120
        while _left_on_nodes(two_nodes) and time.monotonic() < deadline:
            time.sleep(2)
        assert _left_on_nodes(two_nodes) == []
    finally:
        for n in t.nodes:
            if n.proc is not None:
                n.proc.close(grace=1)
                n.proc = None


def test_rdma_write_across_the_link_on_each_nodes_own_soft_roce(two_nodes, tmp_path):
    """The main suite's RDMA row across two kernels: each side on its own node's rxe0 (on the
    link's eth1, RoCE v2 GID of its link address), perftest beside it on the same devices,
    zero socket copies on the data path and soft-RoCE's own copies counted on both nodes."""
    n = 64
    p = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--suite", "socket-vs-rdma",
                        "--target", "lab", "--workload", "rdma_write", "--sizes", str(SIZE),
                        "--bytes", str(n * SIZE), "--repeat", "1", "--no-warmup",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=1800)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    doc = json.loads(next(Path(tmp_path).glob("socket-vs-rdma-*.json")).read_text())
    (c,) = doc["cases"]
    assert c["id"] == f"rdma_write-{SIZE}-link" and c["status"] == "ok", c
    devs = c["network"]["rdma"]
    for side, addr_hex in (("tx", "c612:0001"), ("rx", "c612:0002")):   # 198.18.0.1 / .2
        d = devs[side]
        assert d["soft"] and not d["created"] and d["netdev"] == "eth1", d
        assert d["gid"].endswith(addr_hex), d
    s = c["samples"][0]
    assert (s["messages"], s["bytes"], s["payload_errors"]) == (n, n * SIZE, 0), s
    ref = c["reference"][0]
    assert ref["tool"] == "ib_write_bw" and "error" not in ref and ref["gbps"] > 0, ref
    cp = c["copies"]
    assert cp["status"] == "ok", cp
    for side in ("sender", "receiver"):
        assert (cp["sides"][side]["calls"], cp["sides"][side]["bytes"]) == (0, 0), cp["sides"]
    sr = cp["sides"]["soft-RoCE"]
    assert "rxe_mr_copy" in sr["symbols"] and sr["bytes"] >= 2 * n * SIZE, sr
