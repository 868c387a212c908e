"""Pure tests of the bpftrace backend: script text and parsing of captured -f json output."""

import json
from pathlib import Path

import pytest

from bench.errors import UsageError
from bench.tracing import bpftrace, catalog, kprobes
from bench.tracing.catalog import Probe

DATA = Path(__file__).with_name("data") / "bpftrace_6.1.json"
# the probes the capture was made with (inside the 6.1 lab VM, 23 UDP sends of 100..122 B)
CAPTURE_PROBES = [Probe("send_copy", "udp_sendmsg", "kprobe", "x", len_arg=2),
                  Probe("zc_receive", "tcp_zerocopy_receive", "kprobe", "x")]


def test_script_reads_catalog_argument_positions():
    text = bpftrace.script([catalog.by_symbol("_copy_to_iter"), catalog.by_symbol("rxe_mr_copy"),
                            catalog.by_symbol("skb_copy_ubufs")], pids={"sender": 7, "receiver": 8})
    assert "kprobe:_copy_to_iter" in text and "kretprobe:_copy_to_iter" in text
    assert "@a[tid, 0] = arg0; @l[tid, 0] = arg1;" in text
    assert "@a[tid, 1] = arg2; @l[tid, 1] = arg3;" in text          # rxe_mr_copy(mr, iova, addr, len)
    assert "((struct sk_buff *)arg0)->data_len" in text
    assert "@side[7] = 1; @side[8] = 2;" in text
    assert f"$s = {kprobes.ANY_SLOT + 1};" in text                     # rxe counts any task
    assert 'printf("copybench-ready\\n")' in text


def test_script_socket_syscalls_per_arch_and_optional():
    x86 = bpftrace.script([catalog.by_symbol("_copy_to_iter")], pids={"a": 1})
    arm = bpftrace.script([catalog.by_symbol("_copy_to_iter")], pids={"a": 1}, arch="aarch64")
    assert "args->id == 44" in x86 and "args->id == 206" in arm
    nosock = bpftrace.script([catalog.by_symbol("_copy_to_iter")], pids={"a": 1}, sockonly=False)
    assert "insock" not in nosock and "insys" not in nosock
    assert "args->id == 426" not in x86   # io_uring_enter also reads files: gates cover it


def test_script_follows_the_socket_entry_points():
    text = bpftrace.script([catalog.by_symbol("_copy_to_iter")], pids={"a": 1})
    gates = [g.symbol for g in catalog.SOCKET_GATES]
    opened = "{ @insock[tid] = @insock[tid] + 1; @gin = count(); }"
    # a unix socket's entry opens nothing: the family is read behind each kind of argument
    assert ("kprobe:sock_sendmsg,kprobe:__sock_sendmsg,kprobe:sock_recvmsg /@side[pid] && "
            "((struct socket *)arg0)->sk->__sk_common.skc_family != 1/ " + opened) in text
    assert ("kprobe:sock_write_iter,kprobe:sock_read_iter /@side[pid] && ((struct socket *)"
            "((struct kiocb *)arg0)->ki_filp->private_data)->sk->__sk_common.skc_family != 1/ "
            + opened) in text
    assert "kprobe:tcp_getsockopt /@side[pid]/ " + opened in text      # TCP's own socket
    assert ",".join(f"kretprobe:{g}" for g in gates) in text
    assert "if ($s && (@insock[tid] || @insys[tid]))" in text
    some = bpftrace.script([catalog.by_symbol("_copy_to_iter")], pids={"a": 1},
                           gates=["sock_recvmsg"])
    assert "kprobe:sock_recvmsg /" in some and "sock_sendmsg" not in some
    with pytest.raises(UsageError, match="socket entry function"):
        bpftrace.script([catalog.by_symbol("_copy_to_iter")], pids={"a": 1}, gates=[])


def test_gate_without_return_makes_socket_points_lossy():
    probes = [catalog.by_symbol("_copy_to_iter"), catalog.by_symbol("skb_copy_ubufs")]
    out = "\n".join(json.dumps(d) for d in (
        {"type": "map", "data": {"@gin": 10}}, {"type": "map", "data": {"@gout": 7}},
        {"type": "map", "data": {"@insock": {"55": 1}}},
        {"type": "map", "data": {"@calls": {"0,0": 4}}},
        {"type": "map", "data": {"@enter": {"0,0": 4}}}))
    report = bpftrace.parse(out, probes)
    assert (report.gate_in, report.gate_out, report.gate_open) == (10, 7, 1)
    by = {c.symbol: c for c in bpftrace.to_counts(report, probes, ["receiver"])}
    assert by["_copy_to_iter"].lost == {"gate_missed": 2}
    assert by["skb_copy_ubufs"].quality == "exact"
    clean = out.replace('"@gout": 7', '"@gout": 9')
    by = {c.symbol: c for c in bpftrace.to_counts(bpftrace.parse(clean, probes), probes,
                                                    ["receiver"])}
    assert by["_copy_to_iter"].quality == "exact"


def test_script_comm_filter():
    text = bpftrace.script([catalog.by_symbol("_copy_from_iter")], comm={"sender": "sender"})
    assert 'if (comm == "sender") { $s = 1; }' in text and "@side" not in text
    with pytest.raises(UsageError):
        bpftrace.script([catalog.by_symbol("_copy_from_iter")], comm={"x": 'a"; system("id'})


def test_parse_captured_output():
    report = bpftrace.parse(DATA.read_text(), CAPTURE_PROBES)
    assert report.counts[(0, 0)] == (23, 2553, 1061010)
    assert sum(report.hist[(0, 0)].values()) == 23
    assert len(report.samples) == 3 and report.samples[0] == (0, 0, 1674, "0x0", 100, 312856)
    counts = kprobes.to_counts(report, CAPTURE_PROBES, ["sender"], backend="bpftrace")
    send = next(c for c in counts if c.symbol == "udp_sendmsg")
    assert (send.backend, send.calls, send.bytes) == ("bpftrace", 23, 2553)
    assert send.ns_hist["[16384, 32768)"] == 18 and "[65536, 131072)" not in send.ns_hist
    zc = next(c for c in counts if c.symbol == "tcp_zerocopy_receive")
    assert zc.calls == 0


# A stand-in for bpftrace -f json: announces the READY printf, then acts on the Nth SIGINT
# (prints the @sc map and exits) -- bpftrace 0.17 can sleep through the first one.
FAKE_BPFTRACE = """#!{python}
import json, signal, sys, time
need = {need}
got = []
signal.signal(signal.SIGINT, lambda *_: got.append(1))
if {ready}:
    print(json.dumps({{"type": "printf", "data": "copybench-ready\\n"}}), flush=True)
while len(got) < need:
    time.sleep(0.05)
if {stall}:      # starts printing, then takes its time, as a large map under TCG would
    print(json.dumps({{"type": "printf", "data": "printing"}}), flush=True)
    time.sleep({stall})
print(json.dumps({{"type": "map", "data": {{"@sc": {{"0,44": 7}}}}}}), flush=True)
print(len(got), file=sys.stderr)
"""


def _fake_bpftrace(tmp_path, need: int, ready: bool = True, stall: float = 0) -> str:
    import sys
    path = tmp_path / "bpftrace"
    path.write_text(FAKE_BPFTRACE.format(python=sys.executable, need=need, ready=ready,
                                         stall=stall))
    path.chmod(0o755)
    (tmp_path / "tracefs" / "events").mkdir(parents=True)
    return str(path)


def test_a_sigint_bpftrace_slept_through_is_sent_again(tmp_path, monkeypatch):
    from bench.tracing import syscount
    monkeypatch.setattr(bpftrace, "SIGINT_RETRY_S", 0.3)
    tr = syscount.SyscallTracer(binary=_fake_bpftrace(tmp_path, need=2),
                                roots=(tmp_path / "tracefs",), arch="x86_64")
    tr.attach({"sender": 1})
    (count,) = tr.read()
    assert (count.side, count.name, count.calls) == ("sender", "sendto", 7)
    assert tr._stderr().strip() == "2"          # exactly one more SIGINT than bpftrace needed
    tr.detach()


def test_no_second_sigint_once_bpftrace_has_started_printing(tmp_path, monkeypatch):
    from bench.tracing import syscount
    monkeypatch.setattr(bpftrace, "SIGINT_RETRY_S", 0.2)
    tr = syscount.SyscallTracer(binary=_fake_bpftrace(tmp_path, need=1, stall=1.0),
                                roots=(tmp_path / "tracefs",), arch="x86_64")
    tr.attach({"sender": 1})
    (count,) = tr.read()
    assert count.calls == 7
    assert tr._stderr().strip() == "1"          # a slow print is never interrupted again
    tr.detach()


def test_a_bpftrace_that_never_stops_is_an_error_and_is_killed(tmp_path, monkeypatch):
    from bench.tracing import syscount
    monkeypatch.setattr(bpftrace, "SIGINT_RETRY_S", 0.2)
    monkeypatch.setattr(bpftrace, "STOP_TIMEOUT", 1.0)
    tr = syscount.SyscallTracer(binary=_fake_bpftrace(tmp_path, need=10**6),
                                roots=(tmp_path / "tracefs",), arch="x86_64")
    tr.attach({"sender": 1})
    with pytest.raises(UsageError, match="did not exit after SIGINT"):
        tr.read()
    assert tr.proc.poll() is not None


def test_a_bpftrace_silent_while_attaching_times_out(tmp_path, monkeypatch):
    from bench.tracing import syscount
    monkeypatch.setattr(bpftrace, "ATTACH_TIMEOUT", 0.5)
    tr = syscount.SyscallTracer(binary=_fake_bpftrace(tmp_path, need=1, ready=False),
                                roots=(tmp_path / "tracefs",), arch="x86_64")
    with pytest.raises(UsageError, match="timed out attaching"):
        tr.attach({"sender": 1})
    assert tr.proc.poll() is not None
