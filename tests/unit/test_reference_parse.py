import pytest

from bench.errors import UsageError
from bench.references import iperf3 as reference


def test_tcp_client_json(data_dir):
    r = reference.parse((data_dir / "iperf3_tcp_client.json").read_text())
    assert r["tool"] == "iperf3"
    assert r["bytes"] == 1698627584
    assert r["gbps"] == pytest.approx(13.554984106907557)
    assert r["sent_gbps"] == pytest.approx(13.575841135579018)
    assert "loss_pct" not in r


def test_udp_client_json_reports_received_rate_and_loss(data_dir):
    r = reference.parse((data_dir / "iperf3_udp_client.json").read_text())
    assert r["bytes"] == 103854016
    assert r["gbps"] == pytest.approx(0.8307008772613926)
    assert r["messages_sent"] == 175250
    assert r["loss_pct"] == pytest.approx(59.74151212553495)


def test_iperf3_error_document_is_an_error():
    with pytest.raises(ValueError, match="unable to connect"):
        reference.parse('{"start": {}, "error": "unable to connect to server"}')
    with pytest.raises(ValueError, match="did not print JSON"):
        reference.parse("iperf3: error - the server is busy")


def test_client_argv_matches_our_case():
    tcp = reference.client_argv("tcp", "198.18.0.2", 5201, 65536, 2.0)
    assert tcp[:4] == ["iperf3", "-c", "198.18.0.2", "-p"]
    assert "-u" not in tcp and ["-l", "65536"] == tcp[5:7] and "-t" in tcp
    udp = reference.client_argv("udp", "198.18.0.2", 5201, 1472, 0.5, count=1000)
    assert udp[-3:] == ["-u", "-b", "0"] and ["-n", str(1000 * 1472)] == udp[udp.index("-n"):udp.index("-n") + 2]


def test_reference_rows_carry_their_cpu_and_actual_buffers(data_dir):
    r = reference.parse((data_dir / "iperf3_tcp_client.json").read_text())
    assert r["buffers"] == {"requested": 0, "sndbuf": 16384, "rcvbuf": 131072}
    # client (sender) 40.98% of 1 s for 1.70 GB sent; server (receiver) 49.40% for what arrived
    seconds = 1.0002
    assert r["cpu_s_per_gb"]["sender"] == pytest.approx(0.4098 * seconds / 1.6976, rel=0.02)
    assert r["cpu_s_per_gb"]["receiver"] > r["cpu_s_per_gb"]["sender"]


def test_buffer_iperf3_can_get_is_capped_by_the_kernels_limits(tmp_path):
    (tmp_path / "rmem_max").write_text("212992\n")
    (tmp_path / "wmem_max").write_text("4194304\n")
    assert reference.socket_buffer(tmp_path) == 212992      # stock Debian: -w 4M would abort
    (tmp_path / "rmem_max").write_text("16777216\n")
    assert reference.socket_buffer(tmp_path) == 4 << 20
    argv = reference.client_argv("tcp", "198.18.0.2", 5201, 65536, 2.0, buffer=212992, cpu=1)
    assert argv[argv.index("-w") + 1] == "212992" and argv[-2:] == ["-A", "1"]


def test_only_like_for_like_peers():
    assert "-Z" not in reference.client_argv("tcp", "x", 1, 65536, 1.0)
    # iperf3's -Z is sendfile from a file: the peer of our sendfile path, of nothing else
    assert reference.client_argv("sendfile", "x", 1, 65536, 1.0)[-1] == "-Z"
    assert reference.peer_note("sendfile", 1) is None
    assert reference.peer_note("splice", 1) == "no like-for-like peer in iperf3"
    with pytest.raises(ValueError):
        reference.client_argv("msg_zerocopy", "x", 1, 65536, 1.0)
    assert reference.peer_note("udp", 32).startswith("batched (32 datagrams per call), no peer")
    assert reference.peer_note("udp", 1) is None and reference.peer_note("tcp", 1) is None
    assert reference.peer_note("io_uring", 1) == "no like-for-like peer in iperf3"


def test_sockbuf_auto_leaves_both_sides_to_autotuning():
    argv = reference.client_argv("tcp", "198.18.0.2", 5201, 65536, 2.0, buffer=reference.AUTO)
    assert "-w" not in argv
    assert reference.parse_sockbuf("auto") == reference.AUTO
    assert reference.parse_sockbuf("4M") == 4 << 20 and reference.parse_sockbuf("256k") == 262144
    assert "autotuning for ours and iperf3 alike" in reference.buffer_method(reference.AUTO)
    assert "switches TCP's buffer autotuning off" in reference.buffer_method(212992)
    for bad in ("12", "lots", "-4M"):
        with pytest.raises(UsageError):
            reference.parse_sockbuf(bad)


def _sysctls(tmp_path, rmem: int, wmem: int) -> dict:
    """A node's sysctls as `bench sysinfo` records them (its own reader on a fake /proc)."""
    from bench import sysinfo
    core = tmp_path / f"{rmem}-{wmem}" / "sys" / "net" / "core"
    core.mkdir(parents=True)
    (core / "rmem_max").write_text(f"{rmem}\n")
    (core / "wmem_max").write_text(f"{wmem}\n")
    return sysinfo.sysctls(core.parents[2])


def test_buffer_limits_are_the_measuring_nodes_not_the_runners(tmp_path):
    meta = {"sysctls": _sysctls(tmp_path, 212992, 212992),
            "nodes": {"lab0": {"sysctls": _sysctls(tmp_path, 212992, 212993)},
                      "lab1": {"sysctls": _sysctls(tmp_path, 131072, 16777216)}}}
    assert reference.node_buffer_limit({"sysctls": meta["sysctls"]}) == 212992
    limit = reference.node_buffer_limit(meta)
    assert limit == 131072
    assert reference.choose_buffer(None, limit) == 131072
    assert reference.choose_buffer(None, None) == 4 << 20
    assert reference.choose_buffer(reference.AUTO, limit) == reference.AUTO
    assert reference.choose_buffer(65536, limit) == 65536
    with pytest.raises(UsageError) as e:
        reference.choose_buffer(1 << 20, limit)
    assert "131072" in e.value.message and "--sockbuf auto" in e.value.fix
