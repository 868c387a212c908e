"""Real UDP/TCP runs through the CLI over veth (root) and loopback, payload verified."""

from pathlib import Path

import pytest

pytestmark = pytest.mark.root


def case(doc, cid):
    return next(c for c in doc["cases"] if c["id"] == cid)


@pytest.mark.parametrize("workload,size,count,batch", [
    ("udp", 1000, 1000, 1), ("udp", 1472, 23, 1), ("udp", 1000, 1000, 32), ("udp", 1472, 23, 64),
    ("tcp", 65536, 1000, 1), ("tcp", 1000, 23, 1)])
def test_exact_message_counts_over_veth(run_bench, root_only, no_leftovers, workload, size, count,
                                        batch, request):
    if workload == "udp":
        request.getfixturevalue("roomy_socket_limits")
    rc, out, err, doc = run_bench("run", "--suite", "smoke", "--workload", workload,
                                  "--sizes", str(size), "--bytes", str(count * size),
                                  "--batch", str(batch), "--no-reference")
    assert rc == 0, err
    c = case(doc, f"{workload}-{size}-veth" + (f"-b{batch}" if batch > 1 else ""))
    assert c["status"] == "ok"
    s = c["samples"][0]
    # The kernel makes these exact: N messages of S bytes arrive as N*S verified bytes.
    assert s["messages_sent"] == count
    assert s["messages"] == count
    assert s["bytes"] == count * size
    assert s["payload_errors"] == 0
    if workload == "udp":      # every sequence number once, in order
        assert s["sequence"] == {"lost": 0, "duplicates": 0, "late": 0, "stale": 0,
                                 "highest_seq": count - 1}
    else:
        assert s["stream_gap_bytes"] == 0
    assert int(s["receiver"]["buffer_addr"], 16) > 0 and int(s["sender"]["buffer_addr"], 16) > 0
    assert c["network"]["tx_mtu"] == 1500


def test_optmem_raised_inside_our_namespaces_only(run_bench, root_only, no_leftovers):
    """MSG_ZEROCOPY notifications are charged to optmem: raised in our namespaces where the
    kernel keeps it per namespace (recorded), the host's value never touched."""
    host = int(open("/proc/sys/net/core/optmem_max").read())
    rc, out, err, doc = run_bench("run", "--suite", "smoke", "--workload", "tcp", "--sizes",
                                  "65536", "--bytes", str(1 << 20), "--no-reference")
    assert rc == 0, err
    net = doc["cases"][0]["network"]
    assert int(open("/proc/sys/net/core/optmem_max").read()) == host
    if "tx_optmem_note" in net:      # a kernel that keeps it global: left alone, and said so
        assert "global" in net["tx_optmem_note"], net
    else:
        assert net["tx_optmem_max"] == net["rx_optmem_max"] == 1 << 20, net


def test_smoke_suite_has_reference_ratios_and_cpu(run_bench, root_only, no_leftovers):
    rc, out, err, doc = run_bench("run", "--suite", "smoke", "--duration", "0.5")
    assert rc == 0, err
    assert doc["status"] == "complete" and doc["schema_version"] == 3
    ids = [c["id"] for c in doc["cases"]]
    assert ids == ["udp-1472-veth-b32", "udp-1472-veth", "tcp-65536-veth"]
    for c in doc["cases"]:
        warm, s = c["samples"][0], c["samples"][1]
        assert warm["warmup"] is True and "warmup" not in s       # discarded, but kept
        assert s["gbps"] > 0 and s["payload_errors"] == 0
        assert s["cpu_s_per_gb"]["sender"] > 0 and s["cpu_s_per_gb"]["receiver"] > 0
        assert s["clock"].startswith("receiver")
        if c["id"].endswith("-b32"):       # batched UDP: iperf3 is no peer, the row says so
            assert c["reference"] == [] and "no peer" in c["params"]["reference_note"]
            continue
        ref = c["reference"][1]
        assert ref["tool"] == "iperf3" and ref["gbps"] > 0, ref
        assert ref["cpu_s_per_gb"]["sender"] > 0 and ref["buffers"]["sndbuf"] > 0
        # ours and iperf3 alternate: B A in the warm-up, A B in the first measured repeat
        assert [s["order"] for s in c["samples"]] == [1, 0]
        assert [r["order"] for r in c["reference"]] == [0, 1]
    assert "| udp-1472-veth-b32 | ok |" in out and "ref Gbit/s" in out and "no peer" in out
    meta = doc["metadata"]
    assert meta["method"]["order"].startswith("ours and the reference alternate")
    assert meta["kernel"] and meta["cpu_count"] >= 1 and meta["libraries"]["pyroute2"] == "0.9.7"


def test_loopback_needs_no_namespaces(run_bench, no_leftovers):
    rc, out, err, doc = run_bench("run", "--suite", "smoke", "--topology", "loopback",
                                  "--workload", "udp", "--sizes", "64", "--bytes", "6400",
                                  "--batch", "1", "--no-reference")
    assert rc == 0, err
    c = case(doc, "udp-64-loopback")
    assert c["samples"][0]["messages"] == 100 and c["samples"][0]["bytes"] == 6400


def test_report_renders_a_saved_result(run_bench, tmp_path):
    rc, out, err, doc = run_bench("run", "--suite", "smoke", "--topology", "loopback",
                                  "--workload", "tcp", "--bytes", "655360", "--no-reference")
    assert rc == 0, err
    path = next((tmp_path / "out").glob("*.json"))
    rc, out, err, _ = run_bench("report", str(path))
    assert rc == 0 and "# copybench: smoke" in out and "tcp-65536-loopback" in out


def test_msg_zerocopy_reports_every_completion_and_the_copy_fallback(run_bench, root_only,
                                                                    no_leftovers):
    rc, out, err, doc = run_bench("run", "--suite", "socket-vs-rdma", "--target", "local",
                                  "--workload", "msg_zerocopy",
                                  "--sizes", "65536", "--bytes", str(500 * 65536), "--no-reference")
    assert rc == 0, err
    s = case(doc, "msg_zerocopy-65536-veth")["samples"][0]
    assert s["messages"] == 500 and s["bytes"] == 500 * 65536 and s["payload_errors"] == 0
    z = s["zerocopy"]
    assert z["all_completed"] and z["completed"] == z["send_calls"] >= 500
    # veth delivers locally: the kernel must copy the pinned pages after all (skb_copy_ubufs),
    # and says so for every send; the sender knows each send's bytes, so copied bytes are exact.
    assert z["copied"] == z["completed"] and z["zerocopy"] == 0
    assert z["copied_bytes"] == 500 * 65536
    assert "MSG_ZEROCOPY: 0% of" in out
    # The copies table must not show this sender as copy-free: the moved copies count.
    cp = case(doc, "msg_zerocopy-65536-veth")["copies"]
    tx = cp["sides"]["sender"]
    assert tx["deferred"]["bytes"] == cp["traced_sample"]["messages_sent"] * 65536
    assert tx["total_copied_per_payload_byte"] == 1.0
    assert tx["bytes"] == 0 or tx["deferred"]["source"] == "probe"   # COPY#1 moved, not gone


def test_tcp_zerocopy_receive_maps_pages_and_verifies_every_byte(run_bench, root_only, no_leftovers):
    n, size = 400, 65536
    rc, out, err, doc = run_bench("run", "--suite", "socket-vs-rdma", "--target", "local",
                                  "--workload",
                                  "tcp_zerocopy_receive", "--sizes", str(size),
                                  "--bytes", str(n * size), "--no-reference")
    assert rc == 0, err
    s = case(doc, f"tcp_zerocopy_receive-{size}-veth")["samples"][0]
    assert s["messages"] == n and s["bytes"] == n * size and s["payload_errors"] == 0
    z = s["zerocopy_receive"]
    # Every byte the kernel took in (its TCP_INFO count, not our loop's) was either mapped or
    # copied, per the kernel's getsockopt/recv answers: never both, never neither.
    assert z["kernel_bytes_received"] == n * size
    assert z["mapped_bytes"] + z["copied_bytes"] == z["kernel_bytes_received"]
    # DESIGN.md: with the page-aligned MSG_ZEROCOPY sender most bytes map (≈94% over veth)
    assert z["mapped_bytes"] > 0.5 * n * size, z
    assert z["end_of_stream"] == "EIO"
    # Every byte the kernel copied for the receiver (recv or copybuf) is in its copy total.
    cp = case(doc, f"tcp_zerocopy_receive-{size}-veth")["copies"]
    traced = cp["traced_sample"]["zerocopy_receive"]
    rx = cp["sides"]["receiver"]
    assert rx["total_bytes_copied"] == traced["copied_bytes"]
    assert rx["total_copied_per_payload_byte"] < 0.5
    assert "TCP_ZEROCOPY_RECEIVE:" in out


@pytest.mark.parametrize("workload", ["io_uring", "io_uring_fixed", "io_uring_zc"])
def test_io_uring_paths_deliver_exact_verified_streams(run_bench, root_only, no_leftovers, workload):
    pytest.importorskip("liburing", reason="liburing not installed: python3 -m bench.bootstrap")
    n, size = 300, 65536
    rc, out, err, doc = run_bench("run", "--suite", "socket-vs-rdma", "--target", "local",
                                  "--workload", workload,
                                  "--sizes", str(size), "--bytes", str(n * size), "--no-reference",
                                  "--queue-depth", "16")
    assert rc == 0, err
    c = case(doc, f"{workload}-{size}-veth-q16")
    assert c["params"]["queue_depth"] == 16
    s = c["samples"][0]
    assert s["messages"] == n and s["bytes"] == n * size and s["payload_errors"] == 0
    for side in ("sender", "receiver"):       # what the ring was: recorded per sample
        ring = s["io_uring"][side]
        assert ring["queue_depth"] == 16 and ring["setup"], ring
    assert s["io_uring"]["sender"]["enter_calls"] < n      # batches, not one call per send
    if workload == "io_uring_zc":
        z = s["zerocopy"]
        assert z["all_completed"] and z["completed"] == z["send_calls"] >= n
        assert z["copied"] == z["completed"] and z["copied_bytes"] == n * size   # veth copies
        assert "io_uring send_zc_fixed:" in out
        tx = c["copies"]["sides"]["sender"]
        # Not 0 (moved), not 2 (counted twice). On tracepoints a send_zc that io_uring retries
        # outside the submitting syscall cannot be told from a copy: then the figure is a
        # labelled estimate within a send or two of 1.0.
        total = tx["total_copied_per_payload_byte"]
        assert total == 1.0 or (abs(total - 1.0) < 0.01 and tx["total_quality"] != "exact"), tx


def test_udp_receive_copies_are_counted_exactly_on_this_kernel(run_bench, root_only, no_leftovers):
    """Without kprobes, the sock_recv_length tracepoint is 1:1 with UDP's receive copy:
    23 datagrams of 1000 B -> exactly 23 receive copies of 23,000 B, attributed to the receiver."""
    rc, out, err, doc = run_bench("run", "--suite", "smoke", "--workload", "udp", "--sizes", "1000",
                                  "--bytes", "23000", "--batch", "1", "--no-reference")
    assert rc == 0, err
    c = case(doc, "udp-1000-veth")
    cp = c["copies"]
    if cp.get("status") != "ok":
        pytest.skip(f"no tracer here: {cp.get('reason')}")
    rx = cp["sides"]["receiver"]
    assert (rx["calls"], rx["bytes"]) == (23, 23000)
    assert rx["copies_per_message"] == 1.0 and rx["bytes_per_payload_byte"] == 1.0
    tx = cp["sides"]["sender"]
    assert (tx["calls"], tx["bytes"]) == (23, 23000)
    assert cp["traced_sample"]["messages"] == 23
    assert "| udp-1000-veth | receiver | 23 | 1.000 | 23000 |" in out


def _umount_tracefs() -> None:
    """As on a freshly booted machine of ours: nothing mounts tracefs until a tool does."""
    import subprocess
    for mnt in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing"):
        subprocess.run(["umount", "-l", mnt], capture_output=True)


def test_udp_full_rate_receive_counted_from_unmounted_tracefs(run_bench, root_only,
                                                             no_leftovers):
    """Full rate (sendmmsg batches of 32 over loopback for 2 s, hundreds of thousands of
    datagrams/s): every datagram received is one counted receive, counted in the kernel, no
    loss, its bytes exact; the calls are labelled a lower bound of copies, never exact (the
    checksum-copy path has no tracepoint); and the tracer mounts tracefs itself."""
    _umount_tracefs()
    rc, out, err, doc = run_bench("run", "--suite", "smoke", "--workload", "udp", "--sizes", "1472",
                                  "--topology", "loopback", "--duration", "2", "--no-reference",
                                  timeout=300)
    assert rc == 0, err
    cp = case(doc, "udp-1472-loopback-b32")["copies"]
    assert cp["status"] == "ok", cp
    traced = cp["traced_sample"]
    rx = cp["sides"]["receiver"]
    assert traced["messages"] > 50_000, "not a high-rate sample"
    assert (rx["calls"], rx["bytes"]) == (traced["messages"], traced["bytes"])
    assert rx["quality"] != "exact" and rx["bytes_exact"] is True and rx["lost"] == {}
    tx = cp["sides"]["sender"]
    assert tx["bytes"] == traced["messages_sent"] * 1472 and tx["bytes_exact"] is True


def test_tcp_bytes_copied_equal_bytes_moved_both_sides(run_bench, root_only, no_leftovers):
    rc, out, err, doc = run_bench("run", "--suite", "smoke", "--workload", "tcp", "--sizes", "65536",
                                  "--duration", "2", "--no-reference", timeout=300)
    assert rc == 0, err
    cp = case(doc, "tcp-65536-veth")["copies"]
    t = cp["traced_sample"]
    assert cp["sides"]["receiver"]["bytes"] == t["bytes"]
    assert cp["sides"]["sender"]["bytes"] == t["messages_sent"] * 65536
    assert cp["sides"]["receiver"]["bytes_exact"] is True
    assert cp["sides"]["receiver"]["lost"] == {} and cp["sides"]["sender"]["lost"] == {}


def test_copies_off_records_why(run_bench, root_only, no_leftovers):
    rc, out, err, doc = run_bench("run", "--suite", "smoke", "--workload", "tcp", "--bytes", "655360",
                                  "--no-reference", "--copies", "off")
    assert rc == 0, err
    assert doc["cases"][0]["copies"]["status"] == "off"


def test_io_uring_disabled_by_sysctl_is_a_skip_that_names_it(run_bench, root_only, no_leftovers):
    """kernel.io_uring_disabled=2 (set for the few seconds of the plan, then restored): the
    io_uring cases are skipped with a reason naming the sysctl, the rest of the suite runs."""
    knob = Path("/proc/sys/kernel/io_uring_disabled")
    if not knob.exists():
        pytest.skip("this kernel has no kernel.io_uring_disabled (Linux < 6.6)")
    before = knob.read_text().strip()
    try:
        knob.write_text("2")
        rc, out, err, doc = run_bench("run", "--suite", "socket-vs-rdma", "--target", "local",
                                      "--workload", "io_uring",
                                      "--workload", "io_uring_zc", "--sizes", "4096",
                                      "--no-reference", "--copies", "off", "--duration", "0.2",
                                      timeout=60)
    finally:
        knob.write_text(before)
    assert rc == 0, err
    for w in ("io_uring", "io_uring_zc"):
        c = case(doc, f"{w}-4096-veth")
        assert c["status"] == "skipped", c
        assert "kernel.io_uring_disabled=2" in c["reason"], c["reason"]
        assert "io_uring_disabled=0" in c["fix"]


def _softnet() -> list[list[int]]:
    """/proc/net/softnet_stat: one row per CPU of hex counters; column 9 is received_rps
    (backlogs this CPU was sent by RPS from another CPU)."""
    return [[int(x, 16) for x in line.split()] for line in open("/proc/net/softnet_stat")]


def test_a_third_cpu_steers_the_receive_softirq_there(run_bench, root_only, no_leftovers):
    """--cpus 0,1,1: RPS on the receiving veth end puts the receive softirq on CPU 1, which
    the kernel counts as backlog work sent to CPU 1 by another CPU (received_rps)."""
    import os
    if not {0, 1} <= os.sched_getaffinity(0):
        pytest.skip("needs CPUs 0 and 1 (this process may not use both)")
    before = _softnet()
    rc, out, err, doc = run_bench("run", "--suite", "smoke", "--workload", "tcp", "--sizes",
                                  "65536", "--bytes", str(64 << 20), "--no-reference",
                                  "--repeat", "1", "--no-warmup", "--copies", "off",
                                  "--syscalls", "off", "--cpus", "0,1,1")
    after = _softnet()
    assert rc == 0, err
    net = doc["cases"][0]["network"]
    assert net["rx_rps_cpu"] == 1 and int(net["rx_rps_cpus"].replace(",", ""), 16) == 0b10, net
    assert doc["metadata"]["method"]["cpus"] == {"sender": 0, "receiver": 1, "softirq": 1}
    assert after[1][9] > before[1][9], "no receive work was steered to CPU 1"
