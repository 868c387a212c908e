"""perftest's output as captured in the lab (tests/data/perftest/README.md): its --out_json is
not JSON in 4.5-0.17, so parse() repairs it, and falls back to the text table."""

from __future__ import annotations

import json
import os

import pytest

from bench.references import perftest


@pytest.fixture(scope="module")
def cap(request):
    from pathlib import Path
    root = Path(__file__).resolve().parents[1] / "data" / "perftest"
    return lambda name: (root / name).read_text()


def test_captured_json_is_not_json_and_is_repaired(cap):
    with pytest.raises(json.JSONDecodeError):
        json.loads(cap("write_n.client.json"))
    r = perftest.parse(cap("write_n.client.txt"), cap("write_n.client.json"), "ib_write_bw")
    assert r["source"] == "json repaired"
    assert (r["size"], r["iterations"], r["gbps"], r["mpps"]) == (65536, 100, 0.15, 0.000277)
    assert r["bytes"] == 6_553_600 and r["window_s"] == pytest.approx(6_553_600 * 8 / 0.15e9)


def test_table_alone_gives_the_same_numbers(cap):
    a = perftest.parse(cap("write_n.client.txt"), cap("write_n.client.json"))
    b = perftest.parse(cap("write_n.client.txt"))
    assert b["source"] == "table"
    assert {k: a[k] for k in ("gbps", "peak_gbps", "size", "iterations", "mpps")} == \
        {k: b[k] for k in ("gbps", "peak_gbps", "size", "iterations", "mpps")}


@pytest.mark.parametrize("broken", ["", "{", "{results: {}}", "garbage", '{"results": {"x": 1,}}'])
def test_broken_json_falls_back_to_the_table(cap, broken):
    r = perftest.parse(cap("send_n.server.txt"), broken, "ib_send_bw")
    assert r["source"] == "table" and r["gbps"] == pytest.approx(0.06506)


def test_valid_json_with_trailing_commas_is_read(cap):
    doc = '{"results": {"MsgSize": 4096, "n_iterations": 10, "BW_peak": 1.5, "BW_average": 1.25,' \
          ' "MsgRate": 0.03,},}'
    r = perftest.parse("", doc)
    assert r["source"] == "json" and r["gbps"] == 1.25 and r["bytes"] == 40960


def test_duration_mode_has_cpu_and_no_invented_byte_count(cap):
    r = perftest.parse(cap("write_d.client.txt"), cap("write_d.client.json"), duration_mode=True)
    assert r["cpu_pct"] == 100.0 and r["gbps"] == 0.13
    assert r["peak_gbps"] is None                 # perftest prints 0 peak in duration mode
    assert "bytes" not in r and "window_s" not in r and r["mode"] == "duration"
    s = perftest.parse(cap("send_d.server.txt"), None, "ib_send_bw", duration_mode=True)
    assert s["cpu_pct"] == 100.0 and s["gbps"] == pytest.approx(0.091665)


def test_mb_per_second_is_mebibytes_converted_to_gbit(cap):
    r = perftest.parse(cap("write_mb.client.txt"))
    assert r["gbps"] == pytest.approx(23.02 * 1048576 * 8 / 1e9, rel=1e-5)
    assert r["peak_gbps"] == pytest.approx(24.81 * 1048576 * 8 / 1e9, rel=1e-5)


def test_send_row_takes_the_receivers_figure_and_cpu_per_gb(cap):
    c = perftest.parse(cap("send_n.client.txt"), None, "ib_send_bw")
    s = perftest.parse(cap("send_n.server.txt"), cap("send_n.server.json"), "ib_send_bw")
    row = perftest.combine(c, s, "rdma_send")
    assert row["measured_by"] == "server (receiver)" and row["gbps"] == pytest.approx(0.06506)
    assert row["sent_gbps"] == pytest.approx(0.063961)
    d = perftest.combine(perftest.parse(cap("write_d.client.txt"), duration_mode=True), None,
                         "rdma_write")
    # perftest's CPU_util is the whole machine's user share (/proc/stat), not its own CPU: kept
    # as stated, never a per-side CPU per GB beside our agents' rusage.
    assert d["machine_user_pct"] == {"client": 100.0, "server": None}
    assert "whole machine" in d["machine_user_pct_meaning"]
    assert d["cpu_s_per_gb"] == {"sender": None, "receiver": None}
    assert "cpu_pct" not in d


def test_no_results_is_an_error_naming_perftests_message():
    with pytest.raises(ValueError, match="Couldn't read remote address"):
        perftest.parse(" ethernet_read_keys: Couldn't read remote address\n Failed to exchange")


def test_argv_matches_our_case():
    a = perftest.argv("rdma_send", "cbrxe7", 1, 1, 65536, 128, 0, 16, 2.0, 256,
                      server="198.18.0.2", json_file="/tmp/x.json")
    assert a[0] == "ib_send_bw" and a[-1] == "198.18.0.2"
    for flag, value in (("-d", "cbrxe7"), ("-x", "1"), ("-s", "65536"), ("-t", "128"),
                        ("-I", "0"), ("-Q", "16"), ("-r", "256"), ("-n", "256")):
        assert a[a.index(flag) + 1] == value, flag
    w = perftest.argv("rdma_write", "mlx5_0", 1, None, 4096, 64, 0, 8, 2.4, None)
    assert "-x" not in w and w[w.index("-D") + 1] == "2" and "--cpu_util" in w
    assert "-r" not in w and w[-1] != "198.18.0.2"
    with pytest.raises(ValueError):
        perftest.argv("tcp", "x", 1, 0, 1, 1, 0, 1, 1, None)


def test_the_table_labels_perftest_cpu_as_the_whole_machines_user_share(cap):
    from bench.results import CaseResult
    from reports.tables import case_row
    ref = perftest.combine(perftest.parse(cap("write_d.client.txt"), duration_mode=True), None,
                           "rdma_write")
    cr = CaseResult(id="rdma_write-65536-veth", workload="rdma_write", size=65536,
                    topology="veth", status="ok",
                    samples=[{"gbps": 0.1, "cpu_s_per_gb": {"sender": 5.0, "receiver": 4.0}}],
                    reference=[ref])
    row = case_row(cr)
    assert row.ref_cpu_gb is None            # no per-side CPU per GB for perftest
    assert "ib_write_bw CPU_util (whole machine, user time only, not its own CPU): client 100%" \
        in row.note


def test_perftest_runs_wrapped_with_its_ports_counters_and_dies_with_the_wrapper(tmp_path, cap):
    import signal
    import subprocess
    import time
    d = tmp_path / "rxe0" / "ports" / "1" / "hw_counters"
    d.mkdir(parents=True)
    (d / "completer_retry_err").write_text("5\n")
    (d / "duplicate_request").write_text("7\n")
    table = tmp_path / "table.txt"
    table.write_text(cap("write_n.client.txt"))
    # a stand-in for ib_write_bw: retransmits twice, prints its table
    fake = ["sh", "-c", f"echo 7 > {d}/completer_retry_err; cat {table}"]
    out = subprocess.run(perftest.with_counters(fake, "rxe0", 1, str(tmp_path)),
                         capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    hw = perftest.counters_from(out.stdout, "rxe0", 1)
    assert (hw["retransmits"], hw["duplicates"]) == (2, 0) and "whole run" in hw["scope"]
    # the counter lines do not disturb the table parser
    assert perftest.parse(out.stdout)["gbps"] == perftest.parse(cap("write_n.client.txt"))["gbps"]
    assert perftest.counters_from(cap("write_n.client.txt"), "rxe0", 1) is None
    # stopping the wrapper stops perftest (a server waiting for a client would otherwise stay)
    p = subprocess.Popen(perftest.with_counters(["sleep", "30"], "rxe0", 1, str(tmp_path)),
                         stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        kids: list[str] = []
        while not kids and time.monotonic() < deadline:
            kids = subprocess.run(["pgrep", "-P", str(p.pid)], capture_output=True,
                                  text=True).stdout.split()
            time.sleep(0.05)
        assert kids
        p.send_signal(signal.SIGTERM)
        assert p.wait(10) == 143
        time.sleep(0.2)
        for k in kids:
            state = open(f"/proc/{k}/stat").read().split()[2] if os.path.exists(f"/proc/{k}") \
                else "gone"
            assert state in ("gone", "Z"), state
    finally:
        p.kill()
        p.wait()


def test_the_row_names_reference_runs_that_retransmitted():
    from bench.results import CaseResult
    from reports.tables import case_row
    hw = {"sender": {"device_counters": {"retransmits": 3, "duplicates": 50}},
          "receiver": {"device_counters": {"retransmits": 3, "duplicates": 50}}}
    cr = CaseResult(id="rdma_write-65536-veth", workload="rdma_write", size=65536,
                    topology="veth", status="ok", samples=[{"gbps": 0.1}],
                    reference=[{"tool": "ib_write_bw", "gbps": 0.2, "rdma": hw},
                               {"tool": "ib_write_bw", "gbps": 0.2},
                               {"tool": "ib_write_bw", "gbps": 0.2, "rdma": hw, "warmup": True}])
    assert "RDMA retransmitted: ib_write_bw in 1 of 1 samples (3 timeouts, 50 duplicate " \
        "packets)" in case_row(cr).note


def test_perftest_is_pinned_where_our_agents_are():
    from bench.references import perftest
    a = perftest.argv("rdma_write", "rxe0", 1, 1, 65536, 16, 0, 16, 2.0, None, server="10.0.0.2")
    assert perftest.pinned(a, None) == a
    p = perftest.pinned(a, 3)
    assert p[:3] == ["taskset", "-c", "3"] and p[3:] == a
    wrapped = perftest.with_counters(p, "rxe0", 1)
    assert wrapped[-len(p):] == p            # the counters' wrapper runs the pinned command
