"""Pure tests of the kprobe_events backend: definitions and pairing of captured trace lines."""

import struct
from pathlib import Path

import pytest

from bench.tracing import btf, catalog, kprobe_events, tracefs
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


def test_gate_definitions_mark_socket_entry_and_return():
    gates = catalog.socket_gates({"sock_sendmsg", "sock_write_iter"})
    assert kprobe_events.gate_definitions(gates, "copybench_42") == [
        "p:copybench_42/g0 sock_sendmsg", "r:copybench_42/h0 sock_sendmsg",
        "p:copybench_42/g1 sock_write_iter", "r:copybench_42/h1 sock_write_iter"]


def _gated(lines):
    """The sender capture as a write() on a socket: no socket syscall, a gate around it
    (sock_write_iter -> sock_sendmsg nested), then a pipe write outside any gate."""
    copies = [line for line in lines if "sys_e" not in line]
    head = "          sender-628     (    628) [000] .....   142.78{:04d}: {}: (sock_x+0x0/0x1)"
    out = [head.format(1, "g1"), head.format(2, "g0")] + copies[:2] + [head.format(3000, "h0")]
    out += [head.format(3001, "h1")] + copies[2:4]   # outside: a pipe write
    return out


def test_copies_inside_socket_entry_functions_count_whatever_the_syscall():
    lines = _gated(_side("sender"))
    r = kprobe_events.count(lines, CAPTURE_PROBES, slot=0)
    assert r.counts[(0, 0)][:2] == (1, 100)          # the one inside the nested gates
    e = kprobe_events.parse_line(lines[0])
    assert (e.kind, e.idx, e.tid) == ("g", 1, 628)
    assert kprobe_events.count(lines, CAPTURE_PROBES, slot=0, sockonly=False) \
        .counts[(0, 0)][:2] == (2, 200)


def test_a_unix_socket_gate_opens_nothing_but_its_return_still_closes_it():
    """A node launcher's agents write their control lines on a unix socket (write ->
    sock_write_iter -> sock_sendmsg): those gate entries carry fam=1 and admit no copy; a
    network socket's gate (fam=2) around the same copies does."""
    copies = [line for line in _side("sender") if "sys_e" not in line]
    head = "          sender-628     (    628) [000] .....   142.78{:04d}: {}: (sock_x+0x0/0x1)"
    unix = [head.format(1, "g1") + " fam=1", head.format(2, "g0") + " fam=1"] + copies[:2] + [
        head.format(3000, "h0"), head.format(3001, "h1")]
    assert kprobe_events.count(unix, CAPTURE_PROBES, slot=0).counts == {}
    inet = [head.format(1, "g1") + " fam=2"] + copies[:2] + [head.format(3000, "h1")]
    assert kprobe_events.count(unix + inet, CAPTURE_PROBES, slot=0).counts[(0, 0)][:2] == (1, 100)
    # a unix gate nested inside a network one closes only itself
    nested = [head.format(1, "g0") + " fam=2", head.format(2, "g1") + " fam=1",
              head.format(3, "h1")] + copies[:2] + [head.format(3000, "h0")]
    assert kprobe_events.count(nested, CAPTURE_PROBES, slot=0).counts[(0, 0)][:2] == (1, 100)
    assert kprobe_events.parse_line(unix[0]).family == 1
    assert kprobe_events.parse_line(head.format(1, "g0") + " fam=(fault)").family == -1


def test_gate_definitions_fetch_the_socket_family_by_first_argument():
    gates = catalog.socket_gates({"sock_sendmsg", "sock_read_iter", "tcp_getsockopt"})
    family = {"socket": "fam=+16(+24(%di)):u16", "kiocb": "fam=+16(+24(+200(+64(%di)))):u16"}
    assert kprobe_events.gate_definitions(gates, "g", family) == [
        "p:g/g0 sock_sendmsg fam=+16(+24(%di)):u16", "r:g/h0 sock_sendmsg",
        "p:g/g1 sock_read_iter fam=+16(+24(+200(+64(%di)))):u16", "r:g/h1 sock_read_iter",
        "p:g/g2 tcp_getsockopt", "r:g/h2 tcp_getsockopt"]
    assert [g.first_arg for g in gates] == ["socket", "kiocb", "sock"]


def test_family_fetch_walks_the_running_kernels_structs():
    types, why = btf.load()
    if types is None:
        pytest.skip(f"no kernel BTF here: {why}")
    sk = types.member("socket", "sk", pointer=True)[0]
    fam = types.member("sock_common", "skc_family")
    assert fam[1] == 2                                   # unsigned short skc_family
    assert kprobe_events.family_fetch(types, "socket") == f"fam=+{fam[0]}(+{sk}(%di)):u16"
    kiocb = kprobe_events.family_fetch(types, "kiocb")
    filp = types.member("kiocb", "ki_filp", pointer=True)[0]
    priv = types.member("file", "private_data", pointer=True)[0]
    assert kiocb == f"fam=+{fam[0]}(+{sk}(+{priv}(+{filp}(%di)))):u16"
    assert kprobe_events.family_fetch(types, "sock") is None


# -- the kernel's loss figures, ANY points, skb_copy_ubufs bytes ------------------------------
GROUP = "copybench_42"
EVENTS = ("p:copybench_42/p0 udp_sendmsg addr=%di:x64 len=%dx:u64\n"
          "r:copybench_42/r0 udp_sendmsg\n"
          "p:copybench_42/p1 udp_recvmsg addr=%di:x64 len=%dx:u64\n"
          "r:copybench_42/r1 udp_recvmsg\n")
# kprobe_profile: event name (no group), hits, misses; one line per kprobe_events line
PROFILE = ("  p0                                                        3               0\n"
           "  r0                                                        3               0\n"
           "  p1                                                        3               0\n"
           "  r1                                                        3               0\n")
STATS = ("entries: 0\noverrun: 0\ncommit overrun: 0\nbytes: 0\n"
         "oldest event ts:     0.000000\nnow ts:   142.790000\ndropped events: 0\n"
         "read events: 12\n")


def test_profile_misses_reads_the_third_column_of_our_events():
    profile = PROFILE.replace("  r0" + " " * 56 + "3               0",
                              "  r0" + " " * 56 + "3               7")
    assert kprobe_events.profile_misses(profile, EVENTS, GROUP, ["p0", "r0", "p1", "r1"]) == {
        "p0": 0, "r0": 7, "p1": 0, "r1": 0}


def test_profile_misses_tells_our_events_from_another_groups_same_names():
    events = EVENTS + "p:other_tool/r0 tcp_sendmsg\n"
    profile = PROFILE + "  r0                                                       40              99\n"
    got = kprobe_events.profile_misses(profile, events, GROUP, ["r0"])
    assert got == {"r0": 0}
    # newer kernels may print group/event: then the group decides directly
    profile = (f"  {GROUP}/r0       3       2\n  other_tool/r0      40      99\n")
    assert kprobe_events.profile_misses(profile, "", GROUP, ["r0"]) == {"r0": 2}
    # not alignable (a line appeared between the two reads): count every same-named line
    assert kprobe_events.profile_misses(PROFILE + "  r0   1   5\n", EVENTS, GROUP, ["r0"]) == {
        "r0": 5}


def test_ring_losses_sum_every_cpu_and_kind():
    cpu1 = STATS.replace("overrun: 0\ncommit", "overrun: 11\ncommit").replace(
        "commit overrun: 0", "commit overrun: 2").replace("dropped events: 0", "dropped events: 5")
    assert kprobe_events.ring_losses([STATS, cpu1]) == {
        "ring_overrun": 11, "ring_commit_overrun": 2, "events_dropped": 5}
    assert not any(kprobe_events.ring_losses([STATS]).values())


def _fake_tracer(tmp_path, probes, sides, profile=PROFILE, stats=None, other=None, pids=None,
                 comm=None):
    """A tracer as attach() leaves it, over a fake tracefs holding captured text."""
    (tmp_path / "kprobe_profile").write_text(profile)
    (tmp_path / "kprobe_events").write_text(EVENTS)
    t = kprobe_events.KprobeEventsTracer(probes=probes, roots=(tmp_path,), comm=comm)
    t.root, t.group = tmp_path, GROUP
    t.status = {p.symbol: "ok" for p in probes}
    t.pids = pids or {}

    def inst(tag, lines):
        i = tracefs.Instance(tmp_path, tag)
        (i.path / "per_cpu/cpu0").mkdir(parents=True)
        (i.path / "per_cpu/cpu0/stats").write_text((stats or {}).get(tag, STATS))
        i.lines = lines
        return i
    t.sides = {side: inst(side, lines) for side, lines in sides.items()}
    if other is not None:
        t.other = inst("others", other)
    return t


def test_read_without_loss_is_exact(tmp_path):
    t = _fake_tracer(tmp_path, CAPTURE_PROBES, {"sender": _side("sender"),
                                                 "receiver": _side("receiver")})
    by = {(c.point, c.side): c for c in t.read()}
    send = by[("send_copy", "sender")]
    assert (send.calls, send.bytes, send.quality, send.lost) == (3, 300, "exact", {})


def test_read_records_kprobe_misses_for_every_side_of_that_symbol(tmp_path):
    profile = PROFILE.replace("  r0" + " " * 56 + "3               0",
                              "  r0" + " " * 56 + "3               4")
    t = _fake_tracer(tmp_path, CAPTURE_PROBES, {"sender": _side("sender"),
                                                 "receiver": _side("receiver")}, profile)
    by = {(c.point, c.side): c for c in t.read()}
    for side in ("sender", "receiver"):
        c = by[("send_copy", side)]
        assert c.quality == "lossy" and c.lost == {"kprobe_missed": 4}
    assert by[("recv_copy", "receiver")].quality == "exact"


def test_read_records_ring_loss_of_that_side_only(tmp_path):
    lossy = STATS.replace("dropped events: 0", "dropped events: 9")
    t = _fake_tracer(tmp_path, CAPTURE_PROBES, {"sender": _side("sender"),
                                                 "receiver": _side("receiver")},
                     stats={"receiver": lossy})
    by = {(c.point, c.side): c for c in t.read()}
    assert by[("recv_copy", "receiver")].lost == {"events_dropped": 9}
    assert by[("recv_copy", "receiver")].quality == "lossy"
    assert by[("send_copy", "sender")].quality == "exact"


def test_read_refuses_to_call_unknown_misses_exact(tmp_path):
    t = _fake_tracer(tmp_path, CAPTURE_PROBES, {"sender": _side("sender")})
    (tmp_path / "kprobe_profile").unlink()
    assert all(c.quality != "exact" for c in t.read())


# ANY points: skb_copy_ubufs (zc_fallback) in the sender outside a socket syscall, in
# ksoftirqd (another task: side "other"), and in the sender as seen by the "others" instance
# of a kernel without set_event_notrace_pid (must not count twice).
ZC_PROBES = [catalog.by_symbol("_copy_from_iter"), catalog.by_symbol("skb_copy_ubufs")]
ZC_SENDER = [
    "  sender-700  (  700) [001] .....   10.000100: p1: (skb_copy_ubufs+0x0/0x4a0) "
    "addr=0xff146e420a75ad00 len=65536",
    "  sender-700  (  700) [001] .....   10.000180: r1: (skb_clone+0x5a/0xd0 <- skb_copy_ubufs)",
    "  sender-700  (  700) [001] .....   10.000200: p0: (_copy_from_iter+0x0/0x3c0) "
    "addr=0xff146e420a75b000 len=100",         # outside a socket syscall: a pipe, not ours
    "  sender-700  (  700) [001] .....   10.000210: r0: (copy_page_from_iter+0x8b/0x100 <- "
    "_copy_from_iter)",
]
ZC_OTHERS = [
    "  ksoftirqd/1-21  (   21) [001] ..s..   10.000300: p1: (skb_copy_ubufs+0x0/0x4a0) "
    "addr=0xff146e420a75c000 len=4096",
    "  ksoftirqd/1-21  (   21) [001] ..s..   10.000304: r1: (skb_clone+0x5a/0xd0 <- "
    "skb_copy_ubufs)",
    ZC_SENDER[0], ZC_SENDER[1],
]


def test_any_points_ignore_the_socket_filter_and_count_other_tasks_as_other(tmp_path):
    t = _fake_tracer(tmp_path, ZC_PROBES, {"sender": ZC_SENDER}, other=ZC_OTHERS,
                     pids={"sender": 700})
    by = {(c.point, c.side): c for c in t.read()}
    assert (by[("zc_fallback", "sender")].calls, by[("zc_fallback", "sender")].bytes) == (
        1, 65536)
    assert (by[("zc_fallback", "other")].calls, by[("zc_fallback", "other")].bytes) == (1, 4096)
    assert by[("send_copy", "sender")].calls == 0         # the pipe copy stays out
    assert ("send_copy", "other") not in by                # only ANY points have "other"


def test_definitions_fetch_skb_data_len_at_the_btf_offset():
    probes = [catalog.by_symbol("skb_copy_ubufs")]
    assert kprobe_events.definitions(probes, "g", skb_len=(116, 4))[0] == (
        "p:g/p0 skb_copy_ubufs addr=%di:x64 len=+116(%di):u32")


def test_without_btf_skb_copy_ubufs_is_refused_not_counted_as_zero_bytes(tmp_path):
    probe = catalog.by_symbol("skb_copy_ubufs")
    why = kprobe_events.refusal(probe, btf=tmp_path / "vmlinux")
    assert why and "BTF" in why
    assert kprobe_events.refusal(catalog.by_symbol("_copy_from_iter"), tmp_path / "x") is None
    (tmp_path / "kprobe_events").write_text("")
    t = kprobe_events.KprobeEventsTracer(probes=[catalog.by_symbol("_copy_from_iter"), probe],
                                         btf=tmp_path / "vmlinux")
    t.define(tmp_path)
    assert t.status["skb_copy_ubufs"].startswith("refused: ") and "BTF" in t.status[
        "skb_copy_ubufs"]
    assert "skb_copy_ubufs" not in (tmp_path / "kprobe_events").read_text()


def _btf(types: list[bytes], strings: bytes) -> bytes:
    body = b"".join(types)
    return struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(body), len(body),
                       len(strings)) + body + strings


def _t(name, kind, vlen, size_or_type, kflag=0, trailer=b""):
    return struct.pack("<III", name, (kflag << 31) | (kind << 24) | vlen, size_or_type) + trailer


def test_btf_member_offsets_through_anonymous_unions_and_typedefs():
    names = b"\0unsigned int\0u32\0next\0x\0sk_buff\0len\0data_len\0bits\0"
    off = {n: names.index(n.encode() + b"\0") for n in
           ("unsigned int", "u32", "next", "x", "sk_buff", "len", "data_len", "bits")}
    m = lambda n, t, o: struct.pack("<III", off[n] if n else 0, t, o)   # noqa: E731
    types = [
        _t(off["unsigned int"], 1, 0, 4, trailer=struct.pack("<I", 32)),        # 1 INT
        _t(off["u32"], 8, 0, 1),                                                # 2 TYPEDEF
        _t(0, 2, 0, 0),                                                         # 3 PTR
        _t(0, 5, 2, 8, trailer=m("next", 3, 0) + m("x", 1, 0)),                 # 4 anon UNION
        _t(0, 4, 2, 8, trailer=m("len", 1, 0) + m("data_len", 2, 32)),          # 5 anon STRUCT
        _t(off["sk_buff"], 4, 3, 24, kflag=1,                                   # 6 sk_buff
           trailer=m(None, 4, 0) + m(None, 5, 64) + m("bits", 1, (3 << 24) | 128)),
    ]
    data = _btf(types, names)
    assert btf.member(data, "sk_buff", "data_len") == (12, 4)
    assert btf.member(data, "sk_buff", "len") == (8, 4)
    with pytest.raises(ValueError, match="plain integer"):
        btf.member(data, "sk_buff", "bits")          # a bitfield
    with pytest.raises(ValueError, match="plain integer"):
        btf.member(data, "sk_buff", "next")          # a pointer
    assert btf.member(data, "sk_buff", "next", pointer=True) == (0, 8)
    with pytest.raises(ValueError, match="not a pointer"):
        btf.member(data, "sk_buff", "len", pointer=True)
    with pytest.raises(ValueError, match="no member"):
        btf.member(data, "sk_buff", "nope")
    with pytest.raises(ValueError, match="unknown BTF type kind"):
        btf.member(_btf([_t(0, 31, 0, 0)], b"\0"), "sk_buff", "len")


def test_btf_of_the_running_kernel_puts_data_len_after_len():
    path = btf.VMLINUX
    if not path.exists():
        pytest.skip(f"{path} absent (kernel without CONFIG_DEBUG_INFO_BTF)")
    data = path.read_bytes()
    length = btf.member(data, "sk_buff", "len")
    # struct sk_buff { ... unsigned int len, data_len; ... } on every kernel since 2.6
    assert btf.member(data, "sk_buff", "data_len") == (length[0] + 4, 4)
    assert kprobe_events.skb_data_len(path)[0] == (length[0] + 4, 4)



def _captured(section: str) -> str:
    text = (Path(__file__).with_name("data") / "kprobe_loss_6.1.txt").read_text()
    return text.split(f"# {section}\n")[1].split("\n# ")[0]


def test_captured_overrun_and_profile_of_the_lab_kernel():
    """Real 6.1 text: an unread 4 KiB instance overwrote 5800 of 6000 events; no misses."""
    assert kprobe_events.ring_losses([_captured("stats cpu0")])["ring_overrun"] == 5800
    misses = kprobe_events.profile_misses(_captured("kprobe_profile"),
                                          _captured("kprobe_events"), "copybench_capture",
                                          ["p0", "r0"])
    assert misses == {"p0": 0, "r0": 0}
    assert kprobe_events.kprobe_events_order(_captured("kprobe_events")) == [
        ("copybench_capture", "p0"), ("copybench_capture", "r0")]   # "r10:" = maxactive


def test_captured_overrun_makes_the_side_lossy(tmp_path):
    t = _fake_tracer(tmp_path, CAPTURE_PROBES, {"sender": _side("sender")},
                     stats={"sender": _captured("stats cpu0")})
    send = next(c for c in t.read() if c.point == "send_copy")
    assert send.lost == {"ring_overrun": 5800} and send.quality == "lossy"
    assert send.calls == 3          # what was seen is still reported, as a lower bound
