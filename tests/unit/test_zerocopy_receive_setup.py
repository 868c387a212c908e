"""TCP_ZEROCOPY_RECEIVE's documented set-up, pure parts: the KIND-mtuN topologies, the chunk,
the TLB flush count's arithmetic, and the report section's figures and reasons."""

from __future__ import annotations

import mmap
import os

import pytest

from bench import plan, suite
from bench.errors import UsageError
from bench.results import CaseResult, RunResult
from bench.topology import parse_kind, stale_namespaces
from reports import html as html_report
from reports import markdown as md_report
from reports import zerocopy_receive as zr
from workloads import tlb_flushes
from workloads.tcp_zerocopy_receive import CHUNK, chunk_for


def test_topology_kinds_with_an_mtu_parse_and_bad_ones_name_the_fix():
    assert parse_kind("veth") == ("veth", None)
    assert parse_kind("loopback-mtu61492") == ("loopback", 61492)
    assert parse_kind("veth-mtu61492") == ("veth", 61492)
    for bad in ("veth-mtu67", "veth-mtu70000", "vethx", "loopback-mtu", "link-mtu1500", ""):
        with pytest.raises(UsageError) as e:
            parse_kind(bad)
        assert "mtu61492" in e.value.fix


def test_ipv4_page_mtu_carries_fifteen_whole_pages():
    # 20 IPv4 + 20 TCP + 12 timestamp option bytes: the suite's MTU is 15 pages of payload
    # (the kernel's tcp_mmap example, 61512, is the same for IPv6's 40-byte header).
    assert 61492 - 20 - 20 - 12 == 15 * 4096


def test_the_suite_expands_with_its_topologies_in_the_case_ids():
    p = plan.expand(suite.load("zerocopy-receive"))
    ids = {c.id for c in p.cases}
    assert "tcp_zerocopy_receive-65536-loopback-mtu61492" in ids
    assert "tcp_zerocopy_receive_send-1048576-veth-mtu61492" in ids
    assert "tcp-65536-veth-mtu61492" in ids            # the row each one is held against
    assert {c.repeat for c in p.cases} == {5}
    with pytest.raises(UsageError):
        plan.expand(suite.load("zerocopy-receive"), plan.Overrides(topology="veth-mtu1"))


def test_namespaces_of_a_dead_runner_include_the_loopback_one():
    alive = {10}.__contains__
    assert stale_namespaces(["cb10lo", "cb11lo", "cb11tx", "other"], alive) == ["cb11lo", "cb11tx"]


def test_chunk_is_tcp_mmaps_default_or_the_message_in_whole_pages():
    assert CHUNK == 512 << 10
    assert chunk_for(65536) == CHUNK
    assert chunk_for(1 << 20) == 1 << 20
    assert chunk_for((1 << 20) + 1) == (1 << 20) + mmap.PAGESIZE


def test_tlb_flushes_counted_from_the_ring_buffer_stats(tmp_path, monkeypatch):
    if os.geteuid() != 0:
        pytest.skip("the counter only starts as root")
    root = tmp_path / "tracing"
    (root / "events/tlb/tlb_flush").mkdir(parents=True)
    (root / "instances").mkdir()
    monkeypatch.setattr(tlb_flushes, "ROOTS", (root,))

    def write(path, text):      # tracefs makes an instance's files itself; a tmp dir does not
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    monkeypatch.setattr(tlb_flushes, "_write", write)
    c = tlb_flushes.TlbFlushCounter().start()
    assert c.inst is not None and (c.inst / "set_event_pid").read_text()
    for cpu, stats in (("cpu0", "entries: 3\noverrun: 0\nread events: 2\n"),
                       ("cpu1", "entries: 1\noverrun: 0\nread events: 0\n")):
        (c.inst / "per_cpu" / cpu).mkdir(parents=True)
        (c.inst / "per_cpu" / cpu / "stats").write_text(stats)
    (c.inst / "trace").write_text(
        "# tracer: nop\n"
        "  receiver-1 [001] .....  1.0: tlb_flush: pages:16 reason:local MM shootdown (3)\n"
        "  receiver-1 [001] .....  1.1: tlb_flush: pages:16 reason:local MM shootdown (3)\n"
        "  receiver-1 [001] .....  1.2: tlb_flush: pages:-1 reason:flush on task switch (0)\n"
        "  receiver-1 [000] .....  1.3: tlb_flush: pages:1 reason:remote IPI send (4)\n")
    out = c.stop(2 << 20)
    # every event written: entries + overrun + read events, over both CPUs
    assert out["flushes"] == 6 and out["per_mb"] == 3.0
    assert out["by_reason"] == {"local MM shootdown": 2, "flush on task switch": 1,
                                "remote IPI send": 1}
    assert out["by_reason_complete"] is True


def test_tlb_counter_without_the_tracepoint_says_why(tmp_path, monkeypatch):
    monkeypatch.setattr(tlb_flushes, "ROOTS", (tmp_path,))
    out = tlb_flushes.TlbFlushCounter().start().stop(1 << 20)
    assert out["flushes"] is None and "tlb:tlb_flush" in out["note"]


# -- the report section ---------------------------------------------------------------------
MIB = 1 << 20


def _sample(rx_cpu_s: float, nbytes: int = 1000 * MIB, zc: dict | None = None, warmup=False):
    s = {"bytes": nbytes, "gbps": 10.0, "cpu": {"receiver": {"user_s": rx_cpu_s / 2,
                                                            "sys_s": rx_cpu_s / 2}}}
    if warmup:
        s["warmup"] = True
    if zc is not None:
        s["zerocopy_receive"] = zc
    return s


def _zc(sender="MSG_ZEROCOPY", mapped=100.0, mss=61440, **steps_s):
    return {"sender": sender, "mapped_pct": mapped, "chunk": CHUNK, "rcvlowat_effective": CHUNK,
            "segments": {"rcv_mss": mss, "page_multiple": mss % 4096 == 0},
            "breakdown": {"verify_calibrated_s_per_gb": 0.05, **steps_s},
            "tlb": {"flushes": 2000, "per_mb": 2.0, "by_reason_complete": True,
                    "by_reason": {"local MM shootdown": 2000}}}


def _result(*cases) -> RunResult:
    return RunResult(suite="zerocopy-receive", metadata={}, cases=list(cases))


def _case(workload, samples, topology="veth-mtu61492", size=65536):
    return CaseResult(id=f"{workload}-{size}-{topology}", workload=workload, size=size,
                      topology=topology, samples=samples, network={"mtu_set": 61492})


def test_report_holds_a_mapped_row_against_tcp_and_names_the_measured_cost():
    # tcp: 0.25 s per 1000 MiB = 250 µs/MiB; ours 0.35 s = 350 µs/MiB, 0.20 of it mapping
    tcp = _case("tcp", [_sample(9.0, warmup=True), _sample(0.25), _sample(0.26), _sample(0.24)])
    zc = _zc(getsockopt_s=0.15, madvise_s=0.05, verify_s=0.06, recv_s=0.0, poll_s=0.02)
    ours = _case("tcp_zerocopy_receive", [_sample(0.35, zc=zc) for _ in range(3)])
    [r] = zr.rows(_result(tcp, ours))
    assert r["rx_us_per_mib"] == pytest.approx(350.0)
    assert r["tcp_us_per_mib"] == pytest.approx(250.0)      # warm-up left out
    assert r["tcp_over_zc"] == pytest.approx(250 / 350)
    assert r["steps"]["getsockopt_s"] == pytest.approx(150.0)
    assert r["other"] == pytest.approx(350 - 150 - 50 - 60 - 20)
    assert r["verify_calibrated"] == pytest.approx(0.05 * 1048.576)
    assert r["tlb_per_mib"] == 2.0 and r["ipi_per_mib"] == 0.0
    assert "200 µs/MiB" in r["reason"] and "0.78 µs per 4 KiB page" in r["reason"]
    assert "against 250 µs/MiB for tcp" in r["reason"]
    md = md_report.zerocopy_receive_section(_result(tcp, ours))
    assert "202–251 µs/MB" in md and "107 µs/MB" in md and r["case"] in md
    assert "<table>" in html_report.zerocopy_receive_section(_result(tcp, ours))


def test_report_reasons_for_rows_that_do_not_map():
    tcp = _case("tcp", [_sample(0.25)])
    plain = _case("tcp_zerocopy_receive_send",
                  [_sample(0.27, zc=_zc(sender="send", mapped=0.0, recv_s=0.15))])
    small = _case("tcp_zerocopy_receive", [_sample(0.6, zc=_zc(mapped=93.7, mss=1448))],
                  topology="veth")
    by = {r["case"]: r["reason"] for r in zr.rows(_result(tcp, plain, small))}
    assert "compound (order-3) pages" in by[plain.id] and "61440 B" in by[plain.id]
    assert "1448 B, not whole pages" in by[small.id]


def test_report_names_what_copying_the_same_segments_cost_in_the_plain_send_row():
    tcp = _case("tcp", [_sample(0.25)])
    ours = _case("tcp_zerocopy_receive", [_sample(0.35, zc=_zc(getsockopt_s=0.15, madvise_s=0.05))])
    plain = _case("tcp_zerocopy_receive_send",
                  [_sample(0.27, zc=_zc(sender="send", mapped=0.0, recv_s=0.12))])
    by = {r["case"]: r["reason"] for r in zr.rows(_result(tcp, ours, plain))}
    assert "recv() copied the same segments for 120 µs/MiB" in by[ours.id]


def test_report_says_when_the_kernels_two_fold_holds_and_when_tcp_is_missing():
    tcp = _case("tcp", [_sample(0.25)])
    fast = _case("tcp_zerocopy_receive", [_sample(0.1, zc=_zc(getsockopt_s=0.05))])
    [r] = zr.rows(_result(tcp, fast))
    assert r["reason"].startswith("2.50x cheaper than tcp") and "holds here" in r["reason"]
    [alone] = zr.rows(_result(fast))
    assert "no tcp row" in alone["reason"]
    assert md_report.zerocopy_receive_section(_result(tcp)) is None
    assert html_report.zerocopy_receive_section(_result(tcp)) == ""


def test_a_kernel_without_tcp_zerocopy_receive_skips_both_paths_naming_it(monkeypatch):
    from bench import doctor
    from workloads import tcp_zerocopy_receive
    monkeypatch.setattr(tcp_zerocopy_receive, "supported",
                        lambda: "getsockopt(TCP_ZEROCOPY_RECEIVE) refused (Protocol not available)")
    check = doctor.check_tcp_zerocopy_receive()
    assert not check.ok and "TCP_ZEROCOPY_RECEIVE" in check.detail and "5.11" in check.fix
    caps = {"tcp_zerocopy_receive": (check.ok, check.detail, check.fix),
            "so_zerocopy": (True, "SO_ZEROCOPY accepted", "")}
    p = plan.require(plan.expand(suite.load("zerocopy-receive")), caps)
    skipped = {c.workload: c.skip_reason for c in p.cases if c.skip_reason}
    assert set(skipped) == {"tcp_zerocopy_receive", "tcp_zerocopy_receive_send"}
    assert all("TCP_ZEROCOPY_RECEIVE" in why for why in skipped.values())
    assert all(c.skip_reason is None for c in p.cases if c.workload == "tcp")


def test_every_topology_that_makes_namespaces_needs_root_up_front(monkeypatch):
    from bench import placement, topology
    assert placement.namespace_topologies({"loopback", "link", "veth", "veth-mtu61492",
                                           "loopback-mtu61492"}) == [
        "loopback-mtu61492", "veth", "veth-mtu61492"]
    monkeypatch.setattr(topology.os, "geteuid", lambda: 1000)
    for kind in ("veth-mtu61492", "loopback-mtu61492"):
        with pytest.raises(UsageError, match=f"the {kind} topology .* needs root") as e:
            placement.LocalPlacement().check(set(), {"loopback", kind}, None)
        assert "run as root" in e.value.fix
    placement.LocalPlacement().check(set(), {"loopback"}, None)


def test_a_node_refuses_the_mtu_topologies_without_root():
    from bench.placement import NodePlacement
    from tests.unit.test_remote_model import FakeTarget
    with pytest.raises(UsageError, match="veth-mtu61492 topology .* on n0 and needs root") as e:
        NodePlacement(FakeTarget(1, {0: {"uid": 1000}})).check(set(), {"veth-mtu61492"}, None)
    assert "--topology loopback" in e.value.fix
    NodePlacement(FakeTarget(1, {0: {"uid": 0}})).check(set(), {"loopback-mtu61492"}, None)


def test_run_topology_option_takes_the_mtu_kinds_suites_can_name(capsys):
    from bench.cli import build_parser
    ap = build_parser()
    for kind in ("loopback", "veth", "veth-mtu61492", "loopback-mtu61492"):
        assert ap.parse_args(["run", "--suite", "s", "--topology", kind]).topology == kind
    for bad in ("veth-mtu1", "link", "lo"):
        with pytest.raises(SystemExit) as e:
            ap.parse_args(["run", "--suite", "s", "--topology", bad])
        assert e.value.code == 2
        err = capsys.readouterr().err
        assert "argument --topology" in err, err
        assert "fix: use loopback or veth" in err or "fix: give an MTU between" in err, err
    with pytest.raises(SystemExit):
        ap.parse_args(["run", "--help"])
    assert "KIND-mtuN" in capsys.readouterr().out


# -- the receiver's chunk and SO_RCVLOWAT as suite keys ----------------------------------------
ZC_KEYS = """
name = "zc-keys"
[defaults]
zc_chunk = 65536
[[matrix]]
workloads = ["tcp", "tcp_zerocopy_receive"]
sizes = [65536]
topologies = ["veth-mtu61492"]
[[matrix]]
workloads = ["tcp_zerocopy_receive_send"]
sizes = [65536]
topologies = ["veth-mtu61492"]
zc_rcvlowat = 16384
"""


def test_chunk_and_rcvlowat_default_to_tcp_mmaps_rule_and_keep_todays_ids():
    got = {c.id: c for c in plan.expand(suite.load("zerocopy-receive")).cases}
    c = got["tcp_zerocopy_receive-65536-loopback-mtu61492"]
    assert (c.zc_chunk, c.zc_rcvlowat) == (CHUNK, CHUNK)
    c = got["tcp_zerocopy_receive_send-1048576-veth-mtu61492"]
    assert (c.zc_chunk, c.zc_rcvlowat) == (1 << 20, 1 << 20)
    assert got["tcp-65536-veth-mtu61492"].zc_chunk is None      # only the mapped receivers


def test_chunk_and_rcvlowat_from_the_suite_reach_the_case_and_its_id():
    got = {c.id: c for c in plan.expand(suite.parse(ZC_KEYS)).cases}
    assert set(got) == {"tcp-65536-veth-mtu61492",
                        "tcp_zerocopy_receive-65536-veth-mtu61492-c65536",
                        "tcp_zerocopy_receive_send-65536-veth-mtu61492-c65536-l16384"}
    c = got["tcp_zerocopy_receive-65536-veth-mtu61492-c65536"]
    assert (c.zc_chunk, c.zc_rcvlowat) == (65536, 65536)        # SO_RCVLOWAT = the chunk
    c = got["tcp_zerocopy_receive_send-65536-veth-mtu61492-c65536-l16384"]
    assert (c.zc_chunk, c.zc_rcvlowat) == (65536, 16384)
    assert got["tcp-65536-veth-mtu61492"].zc_rcvlowat is None


def test_the_receive_chunk_reaches_the_receiver_agent():
    from bench.sample import Sampler

    class Placement:
        remote, machines = False, 1

        def start_agent(self, role, side, config):
            raise RuntimeError(config)          # the receiver's config, then stop
    case = next(c for c in plan.expand(suite.parse(ZC_KEYS)).cases if c.zc_rcvlowat == 16384)
    with pytest.raises(RuntimeError) as e:
        Sampler(Placement(), None, None).run(case, plan_endpoints())
    cfg = e.value.args[0]
    assert (cfg["zc_chunk"], cfg["zc_rcvlowat"]) == (65536, 16384)


def plan_endpoints():
    from bench.topology import Endpoints
    return Endpoints("veth-mtu61492", "cb1tx", "cb1rx", "198.18.0.1", "198.18.0.2")


@pytest.mark.parametrize("key,value,needle", [
    ("zc_chunk", "0", "zc_chunk 0: must be a multiple of the page size"),
    ("zc_chunk", "1000", "zc_chunk 1000: must be a multiple of the page size"),
    ("zc_chunk", "4097", "zc_chunk 4097"),
    ("zc_chunk", str(128 << 20), "between 4096 and 67108864 bytes"),
    ("zc_rcvlowat", "0", "zc_rcvlowat 0: must be between 1 and 67108864 bytes"),
    ("zc_rcvlowat", "-4096", "zc_rcvlowat -4096"),
    ("zc_chunk", '"64k"', "zc_chunk = '64k' has the wrong type"),
])
def test_bad_chunk_or_rcvlowat_is_one_message_naming_the_fix(key, value, needle):
    for where in ("[defaults]\n", "sizes = [65536]\n"):      # the suite's or one entry's
        text = ZC_KEYS.replace("zc_chunk = 65536\n", "").replace(where, f"{where}{key} = {value}\n", 1)
        with pytest.raises(UsageError) as e:
            plan.expand(suite.parse(text))
        assert needle in e.value.message
        assert key in e.value.fix or "suite format" in e.value.fix
