"""Pure tests of the kprobe_events backend: definitions and pairing of captured trace lines."""

from pathlib import Path

from bench.tracing import catalog, kprobe_events
from bench.tracing.catalog import Probe

DATA = Path(__file__).with_name("data") / "kprobe_events_6.1.txt"
# the probes of the capture (6.1 lab VM, 3 UDP datagrams of 100 B; udp_recvmsg's len = buffer)
CAPTURE_PROBES = [Probe("send_copy", "udp_sendmsg", "kprobe", "x", addr_arg=0, len_arg=2),
                  Probe("recv_copy", "udp_recvmsg", "kprobe", "x", addr_arg=0, len_arg=2)]


def _side(name):
    text = DATA.read_text().split(f"# side {name}")[1]
    return text.split("# side")[0].splitlines()[1:]


def test_definitions_use_arch_registers_and_own_group():
    probes = [catalog.by_symbol("_copy_from_iter"), catalog.by_symbol("rxe_mr_copy")]
    assert kprobe_events.definitions(probes, "copybench_42") == [
        "p:copybench_42/p0 _copy_from_iter addr=%di:x64 len=%si:u64",
        "r:copybench_42/r0 _copy_from_iter",
        "p:copybench_42/p1 rxe_mr_copy addr=%dx:x64 len=%cx:u64",
        "r:copybench_42/r1 rxe_mr_copy"]
    arm = kprobe_events.definitions(probes[:1], "g", arch="aarch64")
    assert arm[0] == "p:g/p0 _copy_from_iter addr=%x0:x64 len=%x1:u64"


def test_parse_entry_and_return_lines():
    lines = _side("sender")
    e = kprobe_events.parse_line(lines[1])
    assert (e.kind, e.idx, e.tid, e.addr, e.length) == ("p", 0, 628, "0xff146e420a75ad00", 100)
    assert kprobe_events.parse_line(lines[2]).kind == "r"
    assert kprobe_events.parse_line(lines[0]).kind == "enter"


def test_count_pairs_entries_with_returns():
    r = kprobe_events.count(_side("sender"), CAPTURE_PROBES, slot=0)
    calls, nbytes, ns = r.counts[(0, 0)]
    assert (calls, nbytes) == (3, 300)
    assert ns == (786491 - 786133 + 786627 - 786585 + 786662 - 786644) * 1000
    assert sum(r.hist[(0, 0)].values()) == 3
    recv = kprobe_events.count(_side("receiver"), CAPTURE_PROBES, slot=1)
    assert recv.counts[(1, 1)][:2] == (3, 303)


def test_copies_outside_socket_syscalls_are_dropped():
    outside = [line for line in _side("sender") if "sys_e" not in line]   # e.g. a pipe write
    assert kprobe_events.count(outside, CAPTURE_PROBES, slot=0).counts == {}
    r = kprobe_events.count(outside, CAPTURE_PROBES, slot=0, sockonly=False)
    assert r.counts[(0, 0)][:2] == (3, 300)
