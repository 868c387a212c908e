"""TCP_ZEROCOPY_RECEIVE set up as the kernel documents it, on this machine's kernel (root: the
set-up lives in namespaces we create): whole-page segments map every byte, every byte is still
verified, and the set-up goes with the namespaces, the host's lo untouched."""

from __future__ import annotations

import pytest

from tests.conftest import our_netns
from workloads.tcp_zerocopy_receive import CHUNK, supported

SUITE = """name = "zc-host"
[defaults]
repeat = 1
reference = false
[[matrix]]
workloads = ["{workload}"]
sizes = [65536]
topologies = ["{topology}"]
"""
N, SIZE = 2000, 65536


@pytest.fixture
def zc_kernel():
    why = supported()
    if why:
        pytest.skip(f"this kernel has no TCP_ZEROCOPY_RECEIVE: {why}")


def _run(run_bench, tmp_path, suite: str):
    """The suite's one case, run locally without tracing: (the case, the terminal report)."""
    path = tmp_path / "zc.toml"
    path.write_text(suite)
    rc, out, err, doc = run_bench("run", "--suite", str(path), "--target", "local",
                                  "--bytes", str(N * SIZE), "--copies", "off",
                                  "--syscalls", "off", "--cpus", "0,1")
    assert rc == 0, err
    [c] = doc["cases"]
    assert c["status"] == "ok", c
    return c, out


def _lo_mtu() -> str:
    return open("/sys/class/net/lo/mtu").read()


@pytest.mark.parametrize("topology", ["loopback-mtu61492", "veth-mtu61492"])
def test_whole_page_segments_map_every_byte_at_64k_and_every_byte_is_verified(
        run_bench, root_only, no_leftovers, zc_kernel, tmp_path, topology):
    lo_before = _lo_mtu()
    c, out = _run(run_bench, tmp_path,
                  SUITE.format(workload="tcp_zerocopy_receive", topology=topology))
    net = c["network"]
    assert net["mtu_set"] == 61492
    if topology.startswith("loopback"):
        assert net["mtu"] == 61492 and net["netns"].startswith("cb")
    else:
        assert net["tx_mtu"] == net["rx_mtu"] == 61492
    for s in c["samples"]:           # the warm-up too: every sample delivers
        z = s["zerocopy_receive"]
        assert s["payload_errors"] == 0 and s["bytes"] == N * SIZE
        # the kernel's own count: every byte mapped or copied, never both, never neither
        assert z["kernel_bytes_received"] == N * SIZE == z["mapped_bytes"] + z["copied_bytes"]
        assert z["mapped_pct"] >= 99, z
        assert z["segments"]["rcv_mss"] == 15 * 4096 and z["segments"]["page_multiple"]
        # SO_RCVLOWAT = the chunk, as the kernel caps it: at half the receive buffer
        assert z["chunk"] == z["rcvlowat"] == CHUNK
        assert z["rcvlowat_effective"] == min(CHUNK, s["receiver"]["rcvbuf"] // 2)
        assert z["sender"] == "MSG_ZEROCOPY"
        b = z["breakdown"]
        assert b["getsockopt_s"] > 0 and b["madvise_calls"] > 0 and b["verify_s"] > 0
        assert z["tlb"]["flushes"] is None or z["tlb"]["flushes"] >= b["madvise_calls"]
    assert "202–251 µs/MB" in out and "no tcp row" in out   # the report section, held against nothing
    # the set-up went with the namespaces (no_leftovers: none of a finished run is left; other
    # runs may make their own meanwhile); the host's own lo was never touched
    if topology.startswith("loopback"):
        assert net["netns"] not in our_netns()
    assert _lo_mtu() == lo_before


def test_plain_send_sender_is_verified_whatever_maps(run_bench, root_only, no_leftovers, zc_kernel,
                                                     tmp_path):
    c, _ = _run(run_bench, tmp_path,
                SUITE.format(workload="tcp_zerocopy_receive_send", topology="veth-mtu61492"))
    for s in c["samples"]:
        z = s["zerocopy_receive"]
        assert s["payload_errors"] == 0 and s["bytes"] == N * SIZE
        assert z["kernel_bytes_received"] == z["mapped_bytes"] + z["copied_bytes"] == N * SIZE
        assert z["sender"] == "send" and z["segments"]["page_multiple"]
        # Compound page fragments never map (the kernel's can_map_frag, 6.8 on); where this
        # kernel maps none, every byte went through recv().
        if z["mapped_bytes"] == 0:
            assert z["breakdown"]["recv_calls"] > 0 and z["breakdown"]["madvise_calls"] == 0


CHUNKED = """name = "zc-chunk"
[defaults]
repeat = 1
reference = false
zc_chunk = 65536
zc_rcvlowat = 67108864
[[matrix]]
workloads = ["tcp_zerocopy_receive"]
sizes = [65536]
topologies = ["loopback-mtu61492"]
"""


def test_a_suites_chunk_and_rcvlowat_are_used_and_recorded(run_bench, root_only, no_leftovers,
                                                            zc_kernel, tmp_path):
    c, _ = _run(run_bench, tmp_path, CHUNKED)
    assert c["id"] == "tcp_zerocopy_receive-65536-loopback-mtu61492-c65536-l67108864"
    assert c["params"]["zc_chunk"] == 65536 and c["params"]["zc_rcvlowat"] == 1 << 26
    for s in c["samples"]:
        z = s["zerocopy_receive"]
        assert s["payload_errors"] == 0
        assert z["kernel_bytes_received"] == N * SIZE == z["mapped_bytes"] + z["copied_bytes"]
        assert z["chunk"] == z["window"] == 65536 and z["rcvlowat"] == 1 << 26
        # the kernel kept at most half the receive buffer of the 64 MiB asked for: read back
        assert z["rcvlowat_effective"] == s["receiver"]["rcvbuf"] // 2 < 1 << 26
        # no call maps more than the 64 KiB chunk (the default, 512 KiB, needs 8x fewer)
        assert z["breakdown"]["madvise_calls"] >= z["mapped_bytes"] // 65536 > 0
