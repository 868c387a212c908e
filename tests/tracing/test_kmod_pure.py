"""Pure tests of the kmod backend: module parameters, /proc/copytrace parsing, error messages."""

from pathlib import Path

import pytest

from bench.errors import UsageError
from bench.tracing import catalog, kmod

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
                      "sockonly=1"]
    params = kmod.module_params(PROBES[:1], comm={"sender": "sender"}, nsamples=8,
                                sockonly=False)
    assert params[1:] == ["comm=sender", "nsamples=8", "sockonly=0"]


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
    counts = kmod.to_counts(report, PROBES, ["sender", "receiver"])
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


def test_parse_refuses_unknown_version():
    for text in ("version 1\nprobe 0 _copy_from_iter ok 0\n", "version 3\n",
                 "probe 0 _copy_from_iter ok 0 ftrace\n"):
        with pytest.raises(ValueError, match="reads version 2"):
            kmod.parse(text)


def test_calibration_is_parsed_per_mechanism():
    report = kmod.parse(DATA.read_text())
    assert report.calib == {"ftrace": (310.25, 10000), "breakpoint": (1204.731, 10000)}
    assert report.mech == {0: "breakpoint", 1: "breakpoint", 3: "optimized", 5: "ftrace"}
    # the calibration is no probe: it never shows up as a copy point
    assert {c.symbol for c in kmod.to_counts(report, PROBES, ["sender", "receiver"])} == {
        "_copy_from_iter", "_copy_from_iter_nocache", "_copy_to_iter", "skb_copy_ubufs"}


def test_to_counts_records_raw_time_and_the_matching_probe_cost():
    counts = kmod.to_counts(kmod.parse(DATA.read_text()), PROBES, ["sender", "receiver"])
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
    counts = kmod.to_counts(kmod.parse(text), PROBES, ["sender", "receiver"])
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
