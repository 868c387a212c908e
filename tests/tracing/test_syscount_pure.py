"""The syscall counter without a kernel: its program, parsing bpftrace's maps (a capture from
this 6.18 machine), loss, the per-side figures, the remote merge, and how reports show them."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from bench import results
from bench.errors import UsageError
from bench.plan import Plan
from bench.runner import Runner
from bench.tracing import remote, syscount
from bench.tracing.base import Availability
from bench.tracing.syscalls import SYSCALL_NAMES, socket_syscalls, syscall_name
from reports import markdown
from reports.tables import case_row

DATA = Path(__file__).parent / "data"
# bench run, udp 1472 B, batch 32, 2000 datagrams, --copies off (the counter's own sample):
# the sender made ceil(2000 / 32) = 63 sendmmsg calls; the receiver 726 recvmmsg.
CAPTURE = (DATA / "syscount_udp_b32_6.18.json").read_text()


def test_script_counts_every_syscall_of_both_pid_trees_in_one_map():
    text = syscount.script({"sender": 101, "receiver": 202})
    assert "@side[101] = 1; @side[202] = 2;" in text
    assert "tracepoint:raw_syscalls:sys_enter /@side[pid]/ { @sc[@side[pid] - 1, args->id] = " \
           "count(); }" in text
    assert "sched_process_fork" in text and "copybench-ready" in text
    assert "printf(\"%" not in text          # nothing streamed per event
    with pytest.raises(UsageError):
        syscount.script({})


def test_parse_the_captured_udp_batch_run():
    counts = syscount.parse(CAPTURE, ["sender", "receiver"], "x86_64")
    by = {(c.side, c.name): c for c in counts}
    assert by[("sender", "sendmmsg")].calls == 63 and by[("sender", "sendmmsg")].nr == 307
    assert by[("receiver", "recvmmsg")].calls == 726
    assert ("sender", "sendto") not in by          # batched: no per-datagram send
    assert by[("sender", "getdents64")].nr == 217
    assert all(c.quality == "exact" and not c.lost for c in counts)
    assert {c.side for c in counts} == {"sender", "receiver"}


def test_loss_makes_every_count_a_lower_bound():
    counts = syscount.parse(CAPTURE, ["sender", "receiver"], "x86_64",
                            lost={"bpf_recursion_misses": 3})
    assert counts and all(c.quality == "lossy" for c in counts)
    assert "3 bpf recursion misses" in counts[0].notes[0]
    full = CAPTURE.replace('{"@nside": 0}', '{"@nside": 70000}')
    assert all(c.lost == {"map_full": 1} for c in syscount.parse(full, ["sender", "receiver"],
                                                                  "x86_64"))


def test_summarize_per_gb_per_message_and_top():
    counts = syscount.parse(CAPTURE, ["sender", "receiver"], "x86_64")
    sides = syscount.summarize(counts, {"sender": 2000 * 1472, "receiver": 2000 * 1472},
                               {"sender": 2000, "receiver": 2000})
    tx, rx = sides["sender"], sides["receiver"]
    assert tx["top"][0] == {"name": "sendmmsg", "nr": 307, "calls": 63,
                            "per_gb": round(63 / (2000 * 1472 / 1e9), 3)}
    assert tx["calls"] == sum(tx["by_syscall"].values()) == 124
    assert tx["per_gb"] == round(124 / 2.944e-3, 3)
    assert tx["per_message"] == round(124 / 2000, 4)
    assert rx["top"][0]["name"] == "recvmmsg" and rx["quality"] == "exact"
    assert [t["calls"] for t in tx["top"]] == sorted((t["calls"] for t in tx["top"]), reverse=True)
    # nothing moved: no per-GB figure, never a division by zero
    none = syscount.summarize(counts, {"sender": 0, "receiver": 0})
    assert none["sender"]["per_gb"] is None and none["sender"]["per_message"] is None


def test_names_cover_the_socket_and_wait_calls_and_fall_back_to_numbers():
    for arch in SYSCALL_NAMES:
        named = {syscall_name(arch, nr) for nr in socket_syscalls(arch)}
        assert "syscall" not in " ".join(named)
        assert {"io_uring_enter", "sendmmsg", "recvmmsg", "epoll_pwait", "ppoll"} <= \
            set(SYSCALL_NAMES[arch].values())
    assert syscall_name("x86_64", 999) == "syscall 999"
    assert syscall_name("riscv64", 1) == "syscall 1"


@pytest.mark.parametrize("arch,header", [
    ("x86_64", "/usr/include/x86_64-linux-gnu/asm/unistd_64.h"),
    ("aarch64", "/usr/include/asm-generic/unistd.h")])
def test_names_agree_with_the_kernel_headers(arch, header):
    try:
        text = Path(header).read_text()
    except OSError:
        pytest.skip(f"{header} not installed (linux-libc-dev)")
    nums = {m[0]: int(m[1]) for m in re.findall(r"#define __NR(?:3264)?_(\w+)\s+(\d+)", text)}
    if arch == "aarch64":    # the 64-bit names of asm-generic's __NR3264_* entries
        nums.update(fstat=80, newfstatat=79, mmap=222, lseek=62, fcntl=25, sendfile=71)
    assert {nr: n for nr, n in SYSCALL_NAMES[arch].items() if nums.get(n) != nr} == {}


def test_unavailable_says_why_and_how():
    av = syscount.SyscallTracer(binary="/nonexistent/bpftrace").available()
    assert not av.ok and "not installed" in av.reason and av.fix


def test_remote_merge_keeps_syscall_counts_per_node():
    counts = syscount.parse(CAPTURE, ["sender", "receiver"], "x86_64")
    per_node = {"nodeA": [c.to_json() for c in counts if c.side == "sender"],
                "nodeB": [c.to_json() for c in counts if c.side == "receiver"]}
    merged = remote.merge(per_node, {"nodeA": ["sender"], "nodeB": ["receiver"]},
                          syscount.SyscallCount)
    assert all(isinstance(c, syscount.SyscallCount) for c in merged)
    sides = syscount.summarize(merged, {"sender": 1, "receiver": 1})
    assert sides["sender"]["counted_on"] == ["nodeA"] and sides["receiver"]["counted_on"] == ["nodeB"]
    assert sides["sender"]["by_syscall"]["sendmmsg"] == 63
    with pytest.raises(UsageError):      # a node may only report the agents that run there
        remote.merge({"nodeA": per_node["nodeB"]}, {"nodeA": ["sender"]}, syscount.SyscallCount)


def test_node_tracer_builds_the_syscall_counter_for_its_spec(monkeypatch):
    assert isinstance(remote._make_tracer(syscount.SPEC, None), syscount.SyscallTracer)


def _case(syscalls: dict) -> results.CaseResult:
    return results.CaseResult(id="udp-1472-veth", workload="udp", size=1472, topology="veth",
                              samples=[{"gbps": 1.0}], syscalls=syscalls)


def _ok(quality="exact", lost=None):
    side = {"calls": 100, "per_gb": 1234.5, "per_message": 1.0, "quality": quality,
            "lost": lost or {}, "top": [{"name": "sendto", "nr": 44, "calls": 99}]}
    return {"status": "ok", "sample": "copies", "sides": {"sender": side, "receiver": side}}


def test_table_column_exact_lossy_and_not_counted():
    assert case_row(_case(_ok())).tx_sys_gb == 1234.5
    assert case_row(_case(_ok("lossy", {"bpf_recursion_misses": 1}))).rx_sys_gb == "≥1234"
    assert case_row(_case({})).tx_sys_gb is None          # schema 2 files: not counted
    assert case_row(_case({"status": "off"})).rx_sys_gb is None
    r = results.RunResult(suite="s", metadata={})
    r.cases.append(_case(_ok()))
    text = markdown.render(r)
    assert "| sender syscalls/GB | receiver syscalls/GB |" in text
    assert "| 1234 | 1234 |" in text
    assert "| udp-1472-veth | sender | 100 | 1234 | 1.000 | sendto 99 | exact | copies |" in text


def test_older_results_render_the_columns_as_not_counted(data_dir):
    old = results.load(data_dir / "smoke-example.json")
    assert old.schema_version == 2
    table = markdown.table(old)
    assert "syscalls/GB" in table and markdown.syscalls_table(old) is None


def test_run_note_once_when_nothing_can_count(tmp_path):
    class NoBpf:
        def sysinfo(self):
            return {}

        def syscall_tracer(self, survey=False, reuse=False):
            return type("T", (), {"available": lambda self: Availability(
                False, "bpftrace is not installed", "apt-get install bpftrace")})()

    r = Runner(Plan("t", ()), tmp_path / "r.json", placement=NoBpf(), syscalls_spec="auto")
    assert r.counting.check_syscalls() == {"status": "unavailable", "reason": "see the run's "
                                   "syscalls_note", "run_note": True}
    assert r.result.metadata["syscalls_note"]["fix"] == "apt-get install bpftrace"
    r.result.cases.append(_case({"status": "unavailable", "run_note": True}))
    text = markdown.syscalls_table(r.result)
    assert text == ("- syscalls not counted in this run: bpftrace is not installed "
                    "(fix: apt-get install bpftrace)")
    off = Runner(Plan("t", ()), tmp_path / "r.json", placement=NoBpf())
    assert off.counting.check_syscalls()["status"] == "off"
    with pytest.raises(UsageError):
        Runner(Plan("t", ()), tmp_path / "r.json", placement=NoBpf(),
               syscalls_spec="bogus").counting.check_syscalls()


# == the hist trigger backend (kernels with CONFIG_HIST_TRIGGERS: the lab's 6.1) ==============
# Captured in the lab VM (Debian 12, 6.1): a receiver (tid 1389) got 500 datagrams with
# recvfrom, a sender (tid 1390) sent them with sendto, then started one thread (clone3).
HIST = (DATA / "syscount_hist_6.1.txt").read_text()
HIST_TIDS = {1389: "receiver", 1390: "sender"}


def test_hist_trigger_counts_by_thread_and_syscall_for_the_agents_threads_only():
    text = syscount.hist_trigger([7, 5, 7, 6])
    assert text.startswith("hist:keys=common_pid,id:vals=hitcount:")
    assert f"size={syscount.HIST_SIZE}" in text
    assert text.endswith(" if common_pid == 5 || common_pid == 6 || common_pid == 7")
    with pytest.raises(UsageError):
        syscount.hist_trigger([])


def test_parse_the_captured_hist_table():
    counts = syscount.parse_hist(HIST, HIST_TIDS, "x86_64")
    by = {(c.side, c.name): c for c in counts}
    assert by[("receiver", "recvfrom")].calls == 500
    assert by[("sender", "sendto")].calls == 500
    assert {c.backend for c in counts} == {"hist"}
    # The sender started a thread while counted: its calls were not followed, so that side is a
    # lower bound; the receiver started nothing and stays exact.
    assert by[("sender", "clone3")].calls == 1
    assert all(c.lost == {"tasks_not_followed": 1} and c.quality == "lossy"
               for c in counts if c.side == "sender")
    assert all(c.quality == "exact" and not c.notes for c in counts if c.side == "receiver")
    sides = syscount.summarize(counts, {"sender": 500_000, "receiver": 500_000})
    assert sides["sender"]["quality"] == "lossy" and sides["receiver"]["quality"] == "exact"
    assert sides["receiver"]["by_syscall"]["recvfrom"] == 500


def test_a_full_hist_table_makes_every_count_a_lower_bound():
    text = HIST.replace("Dropped: 0", "Dropped: 3")
    counts = syscount.parse_hist(text, HIST_TIDS, "x86_64")
    assert all(c.lost.get("hist_dropped") == 3 and c.quality == "lossy" for c in counts)
    assert "lower bound" in counts[0].notes[0]


def test_a_thread_nobody_named_is_reported_not_dropped():
    counts = syscount.parse_hist(HIST, {1390: "sender"}, "x86_64")
    assert {c.side for c in counts} == {"sender", "thread 1389"}


def test_counter_is_the_hist_trigger_where_the_kernel_has_one_else_bpftrace(tmp_path, monkeypatch):
    monkeypatch.setattr(syscount.os, "geteuid", lambda: 0)
    event = tmp_path / "events" / "raw_syscalls" / "sys_enter"
    event.mkdir(parents=True)
    (event / "trigger").write_text("")
    roots = (tmp_path,)
    none = syscount.HistSyscallTracer(roots=roots).available()
    assert not none.ok and "CONFIG_HIST_TRIGGERS" in none.reason and "bpftrace" in none.fix
    assert isinstance(syscount.counter(roots), syscount.SyscallTracer)
    (event / "hist").write_text("")
    assert syscount.HistSyscallTracer(roots=roots).available().ok
    assert isinstance(syscount.counter(roots), syscount.HistSyscallTracer)
