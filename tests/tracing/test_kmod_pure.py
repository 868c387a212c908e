"""Pure tests of the kmod backend: module parameters, /proc/copytrace parsing, error messages."""

from pathlib import Path

import pytest

from bench.errors import UsageError
from bench.tracing import catalog, kmod, kprobes

DATA = Path(__file__).with_name("data") / "copytrace_proc.txt"
PROBES = [catalog.by_symbol(s) for s in (
    "_copy_from_iter", "_copy_from_iter_nocache", "csum_and_copy_from_iter_full",
    "_copy_to_iter", "rxe_mr_copy", "skb_copy_ubufs")]


def test_symbol_spec_positions():
    assert kmod.symbol_spec(catalog.by_symbol("_copy_from_iter")) == "_copy_from_iter:0:1:0"
    assert kmod.symbol_spec(catalog.by_symbol("copy_page_to_iter")) == "copy_page_to_iter:0:2:0"
    assert kmod.symbol_spec(catalog.by_symbol("rxe_mr_copy")) == "rxe_mr_copy:2:3:1"
    assert kmod.symbol_spec(catalog.by_symbol("skb_copy_ubufs")) == "skb_copy_ubufs:0:-2:1"
    assert kmod.symbol_spec(catalog.by_symbol("tcp_zerocopy_receive")).endswith(":-1:-1:0")


def test_module_params_pids_and_comm():
    params = kmod.module_params(PROBES[:1], pids={"sender": 10, "receiver": 11})
    assert params == ["symbols=_copy_from_iter:0:1:0", "pids=10,11", "nsamples=256",
                      "sockonly=1", "gates=sock_sendmsg,__sock_sendmsg,sock_recvmsg,sock_write_iter,"
                      "sock_read_iter,tcp_getsockopt"]
    params = kmod.module_params(PROBES[:1], comm={"sender": "sender"}, nsamples=8,
                                sockonly=False)
    assert params[1:] == ["comm=sender", "nsamples=8", "sockonly=0"]   # no gates: all copies


def test_module_params_gates_follow_the_kernel():
    present = {"sock_sendmsg", "sock_recvmsg", "tcp_getsockopt"}
    params = kmod.module_params(PROBES[:1], pids={"a": 1},
                                gates=catalog.socket_gates(present))
    assert params[-1] == "gates=sock_sendmsg,sock_recvmsg,tcp_getsockopt"
    with pytest.raises(UsageError, match="socket entry function"):
        kmod.module_params(PROBES[:1], pids={"a": 1}, gates=[])
    # --all-copies needs no gate
    assert kmod.module_params(PROBES[:1], pids={"a": 1}, gates=[], sockonly=False)[-1] == \
        "sockonly=0"


@pytest.mark.parametrize("kw", [{}, {"comm": {"a": "bad,name"}},
                                {"pids": {str(i): i for i in range(9)}}])
def test_module_params_refuse_bad_filters(kw):
    with pytest.raises(UsageError) as e:
        kmod.module_params(PROBES[:1], **kw)
    assert e.value.fix


def test_parse_and_counts():
    report = kmod.parse(DATA.read_text())
    assert report.probes[2] == ("csum_and_copy_from_iter_full", "absent", 0)
    assert report.counts[(0, 0)] == (1000, 1000000, 412345)
    counts = kprobes.to_counts(report, PROBES, ["sender", "receiver"])
    by = {(c.symbol, c.side): c for c in counts}
    send = by[("_copy_from_iter", "sender")]
    assert (send.calls, send.bytes, send.ns_total, send.exact) == (1000, 1000000, 412345, True)
    assert send.ns_hist == {"[128, 256)": 12, "[256, 512)": 950, "[512, 1024)": 38}
    assert [s["addr"] for s in send.samples] == ["0xffff888112340050", "0xffff888112340850"]
    # a registered probe that saw nothing still reports zero: "no copy" is a result
    assert by[("_copy_from_iter_nocache", "receiver")].calls == 0
    recv = by[("_copy_to_iter", "receiver")]
    assert recv.exact is False and "missed" in recv.notes[0]
    assert not [c for c in counts if c.symbol in ("csum_and_copy_from_iter_full", "rxe_mr_copy")]
    assert by[("skb_copy_ubufs", "sender")].calls == 0


def test_gates_are_parsed_and_exact_when_clean():
    report = kmod.parse(DATA.read_text())
    assert report.gates[0] == ("sock_sendmsg", "ok", 0)
    assert len(report.gates) == 5
    assert len(catalog.SOCKET_GATES) <= kmod.MAX_GATES


def _report(gate_line: str, probe_line: str = "probe 0 _copy_from_iter ok 0 breakpoint") -> str:
    return (f"version 3\n{probe_line}\ncount 0 0 23 23000 1000\n"
            "probe 1 _copy_from_iter_nocache ok 0 breakpoint\n"
            "probe 2 skb_copy_ubufs ok 0 ftrace\n" + gate_line)


SMALL = [catalog.by_symbol(s) for s in ("_copy_from_iter", "_copy_from_iter_nocache",
                                        "skb_copy_ubufs")]


def _send(text):
    counts = kprobes.to_counts(kmod.parse(text), SMALL, ["sender"])
    return {c.symbol: c for c in counts}


def test_clean_gates_keep_exact():
    by = _send(_report("gate 0 sock_sendmsg ok 0\ngate 1 sock_recvmsg ok 0\n"))
    assert by["_copy_from_iter"].quality == "exact"
    assert (by["_copy_from_iter"].calls, by["_copy_from_iter"].bytes) == (23, 23000)


def test_gate_miss_or_failure_demotes_socket_points_not_any_points():
    by = _send(_report("gate 0 sock_sendmsg ok 3\ngate 1 sock_recvmsg ok 0\n"))
    assert by["_copy_from_iter"].quality == "lossy"
    assert by["_copy_from_iter"].lost == {"gate_missed": 3}
    assert by["skb_copy_ubufs"].quality == "exact"      # ANY point: counted in any context
    by = _send(_report("gate 0 sock_sendmsg error:-22 0\n"))
    assert by["_copy_from_iter"].lost == {"gate_not_registered": 1}
    assert any("sock_sendmsg (error:-22)" in n for n in by["_copy_from_iter"].notes)


def test_kprobe_misses_make_a_point_lossy():
    # copytrace prints kretprobe nmissed + kprobe nmissed in one figure
    by = _send(_report("", probe_line="probe 0 _copy_from_iter ok 5 breakpoint"))
    assert by["_copy_from_iter"].quality == "lossy"
    assert by["_copy_from_iter"].lost == {"kretprobe_missed": 5}


def test_failed_registration_demotes_its_point_absent_does_not():
    text = _report("").replace("probe 1 _copy_from_iter_nocache ok 0 breakpoint",
                               "probe 1 _copy_from_iter_nocache error:-22 0 -")
    by = _send(text)
    assert "_copy_from_iter_nocache" not in by
    assert by["_copy_from_iter"].quality == "lossy"
    assert by["_copy_from_iter"].lost == {"probe_not_registered": 1}
    assert any("_copy_from_iter_nocache (error:-22)" in n for n in by["_copy_from_iter"].notes)
    absent = _send(_report("").replace("probe 1 _copy_from_iter_nocache ok 0 breakpoint",
                                       "probe 1 _copy_from_iter_nocache absent 0 -"))
    assert absent["_copy_from_iter"].quality == "exact"


def test_copytrace_source_watches_kprobe_misses_and_gates():
    """The C side of the contract above: both miss counters printed, gates registered first."""
    src = (kmod.SRC / "copytrace.c").read_text()
    assert "p->rp.nmissed + p->rp.kp.nmissed" in src
    assert "g->rp.nmissed + g->rp.kp.nmissed" in src
    assert src.index("err = register_gates();") < src.index("p->status = register_kretprobe")
    assert "__NR_io_uring_enter" not in src and "PF_IO_WORKER" not in src
    assert f"#define OUTPUT_VERSION {kprobes.OUTPUT_VERSION}" in src
    assert f"#define MAX_GATES {kmod.MAX_GATES}" in src
    # A unix socket (a node launcher's stdin/stdout for the agents) opens no gate: the agents'
    # control lines are not the flow's copies (the lab's exact N x size check fails otherwise).
    assert "sk->sk_family == AF_UNIX" in src and "gate_sock(container_of(rp" in src
    # Deferred zerocopy copies outside the flow's tasks are tied to it by the sending socket.
    assert "sock_slot(zerocopy_owner(" in src and "remember_sock(slot, sk)" in src


def test_parse_refuses_unknown_version():
    for text in ("version 1\nprobe 0 _copy_from_iter ok 0\n", "version 4\n",
                 "probe 0 _copy_from_iter ok 0 ftrace\n"):
        with pytest.raises(ValueError, match="reads version 3"):
            kmod.parse(text)


def test_calibration_is_parsed_per_mechanism():
    report = kmod.parse(DATA.read_text())
    assert report.calib == {"ftrace": (310.25, 10000), "breakpoint": (1204.731, 10000)}
    assert report.mech == {0: "breakpoint", 1: "breakpoint", 3: "optimized", 5: "ftrace"}
    # the calibration is no probe: it never shows up as a copy point
    assert {c.symbol for c in kprobes.to_counts(report, PROBES, ["sender", "receiver"])} == {
        "_copy_from_iter", "_copy_from_iter_nocache", "_copy_to_iter", "skb_copy_ubufs"}


def test_to_counts_records_raw_time_and_the_matching_probe_cost():
    counts = kprobes.to_counts(kmod.parse(DATA.read_text()), PROBES, ["sender", "receiver"])
    by = {(c.symbol, c.side): c for c in counts}
    send = by[("_copy_from_iter", "sender")]
    assert send.ns_total == 412345                      # raw: nothing subtracted here
    assert send.ns_probe_per_call == 1204.731           # the breakpoint calibration
    assert by[("skb_copy_ubufs", "other")].ns_probe_per_call == 310.25
    # an optimized probe must not get a breakpoint probe's (larger) cost subtracted
    recv = by[("_copy_to_iter", "receiver")]
    assert recv.ns_probe_per_call is None
    assert any("not calibrated" in n for n in recv.notes)


def test_no_calibration_lines_leave_probe_cost_unknown():
    text = "\n".join(line for line in DATA.read_text().splitlines()
                     if not line.startswith("calib"))
    counts = kprobes.to_counts(kmod.parse(text), PROBES, ["sender", "receiver"])
    assert counts and all(c.ns_probe_per_call is None for c in counts)


def test_module_params_calibration_bounds():
    assert not any(p.startswith("calib=") for p in kmod.module_params(PROBES[:1], pids={"a": 1}))
    assert kmod.module_params(PROBES[:1], pids={"a": 1}, calib=0)[-1] == "calib=0"
    with pytest.raises(UsageError):
        kmod.module_params(PROBES[:1], pids={"a": 1}, calib=100_001)


@pytest.mark.parametrize("stderr, words", [
    ("insmod: ERROR: could not insert module x.ko: Key was rejected by service", "signature"),
    ("insmod: ERROR: could not insert module x.ko: Operation not permitted", "lockdown"),
    ("insmod: ERROR: could not insert module x.ko: File exists", "already loaded"),
    ("insmod: ERROR: could not insert module x.ko: Invalid module format", "another kernel"),
])
def test_load_errors_name_a_fix(stderr, words):
    err = kmod.load_error(stderr, "6.1.0-56-amd64")
    assert words in err.message and err.fix


def test_missing_headers_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError) as e:
        kmod.build("9.9.9-none", modules_root=tmp_path, cache=tmp_path / "cache")
    assert "linux-headers-9.9.9-none" in e.value.fix


def _fake_root(tmp_path, lockdown=None, kprobes=True):
    proc, sys = tmp_path / "proc", tmp_path / "sys"
    (proc / "sys/kernel").mkdir(parents=True)
    (proc / "sys/kernel/osrelease").write_text("6.1.0-test\n")
    (proc / "modules").write_text("")
    syms = "ffffffff81000000 T _copy_from_iter\n"
    if kprobes:
        syms += "ffffffff81000100 T register_kretprobe\n"
    (proc / "kallsyms").write_text(syms)
    if lockdown:
        (sys / "kernel/security").mkdir(parents=True)
        (sys / "kernel/security/lockdown").write_text(lockdown)
    mods = tmp_path / "lib/modules/6.1.0-test/build"
    mods.mkdir(parents=True)
    return dict(proc_root=proc, sys_root=sys, modules_root=tmp_path / "lib/modules",
                cache=tmp_path / "cache")


def test_available_reports_lockdown_and_missing_kprobes(tmp_path):
    t = kmod.KmodTracer(**_fake_root(tmp_path / "a", lockdown="none [integrity] confidentiality"))
    av = t.available()
    assert not av.ok and "integrity" in av.reason
    t = kmod.KmodTracer(**_fake_root(tmp_path / "b", kprobes=False))
    assert "CONFIG_KPROBES" in t.available().reason


def _debian_headers():
    found = sorted(Path("/usr/src").glob("linux-headers-*-amd64"))
    return found[-1] if found else None


def test_module_compiles_against_debian_headers(tmp_path):
    """Catches C/API mistakes without the lab VM (needs Debian's linux-headers-*-amd64)."""
    headers = _debian_headers()
    if headers is None:
        pytest.skip("no /usr/src/linux-headers-*-amd64: apt-get install linux-headers-amd64")
    release = headers.name.removeprefix("linux-headers-")
    (tmp_path / "modules" / release).mkdir(parents=True)
    (tmp_path / "modules" / release / "build").symlink_to(headers)
    ko = kmod.build(release, modules_root=tmp_path / "modules", cache=tmp_path / "cache")
    assert ko.exists() and ko.stat().st_size > 0
    assert kmod.build(release, modules_root=tmp_path / "modules",
                      cache=tmp_path / "cache") == ko   # cached: no rebuild
