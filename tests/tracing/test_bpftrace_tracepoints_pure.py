"""Pure tests of in-kernel counting on tracepoints (bpftrace maps), on output captured on this
kernel (6.18, no kprobes): 23 UDP datagrams of 1000 B, 23 TCP messages of 64 KiB."""

from pathlib import Path

from bench.tracing import bpftrace, catalog
from bench.tracing.tracepoints import present

DATA = Path(__file__).with_name("data")
TPS = [p for p in catalog.probes(kind="tracepoint")]   # the capture's probe order
SIDES = ["sender", "receiver"]


def _counts(name, lost=None):
    report = bpftrace.parse((DATA / name).read_text(), TPS)
    return {(c.point, c.side): c for c in bpftrace.to_counts(report, TPS, SIDES, lost=lost)}


def test_script_counts_in_kernel_maps_and_streams_only_samples():
    text = bpftrace.script(TPS, pids={"sender": 7, "receiver": 8}, nsamples=5)
    assert "kprobe:" not in text and "kretprobe:" not in text
    # one map update per event: count and total together, tagged UDP or not
    assert "@st[1, $k, args->protocol == 17] = stats(args->ret);" in text
    assert "if (@n1 < 5)" in text                         # only samples go through printf
    # MSG_ZEROCOPY sends are known by the syscall's flags, not the tracepoint's (always 0)
    assert "args->id == 44 && (args->args[3] & 67108864)" in text
    assert "args->id == 46 && (args->args[2] & 67108864)" in text
    assert "@st[0, $k, 2] = stats(args->ret)" in text      # MSG_ZEROCOPY sends tagged apart


def test_write_and_writev_on_a_socket_are_plain_sends():
    """os.write on a TCP socket read "estimate (io_uring or a kernel worker)" before: write and
    writev carry no flags, so their bytes are copied like a plain send's."""
    x86 = bpftrace.script(TPS, pids={"a": 7})
    assert "if (args->id == 44 || args->id == 46 || args->id == 307 || args->id == 1 || " \
        "args->id == 20) { @sflag[tid] = 1;" in x86
    arm = bpftrace.script(TPS, pids={"a": 7}, arch="aarch64")
    assert "args->id == 64 || args->id == 66) { @sflag[tid] = 1;" in arm
    assert "(args->id == 1 &&" not in x86       # never read as MSG_ZEROCOPY


def test_udp_receive_bytes_exact_calls_a_lower_bound_send_calls_estimated():
    c = _counts("bpftrace_tp_udp_6.18.json")
    recv = c[("recv_copy", "receiver")]
    # one linear datagram per recvmsg here, yet never "exact": a datagram with an unverified
    # checksum is copied once per IP fragment (csum_and_copy_to_iter), which no tracepoint sees
    assert (recv.calls, recv.bytes, recv.quality) == (23, 23000, "estimate")
    assert recv.bytes_exact is True and recv.calls_exact is False and recv.exact is False
    assert any("lower bound" in n and "csum_and_copy_to_iter" in n for n in recv.notes)
    send = c[("send_copy", "sender")]
    assert (send.calls, send.bytes) == (23, 23000)
    assert send.bytes_exact is True and send.calls_exact is False and send.quality == "estimate"
    assert c[("recv_copy", "sender")].calls == 0          # nothing leaks across sides
    assert recv.ns_total is None                          # tracepoints do not time copies


def test_tcp_receive_calls_are_not_copies_but_bytes_are():
    c = _counts("bpftrace_tp_tcp_6.18.json")
    recv = c[("recv_copy", "receiver")]
    assert recv.bytes == 23 * 65536 and recv.bytes_exact is True
    assert recv.calls_exact is False and recv.quality == "estimate"
    assert c[("recv_skb", "receiver")].calls == 30


def test_any_kernel_loss_makes_every_point_lossy():
    c = _counts("bpftrace_tp_udp_6.18.json", lost={"bpf_recursion_misses": 3})
    recv = c[("recv_copy", "receiver")]
    assert recv.quality == "lossy" and recv.lost == {"bpf_recursion_misses": 3}
    assert recv.exact is False and any("lower bound" in n for n in recv.notes)


def test_kprobe_entries_without_return_are_reported_as_loss():
    probes = [catalog.by_symbol("_copy_to_iter")]
    text = ('{"type": "map", "data": {"@enter": {"0,0": 10}}}\n'
            '{"type": "map", "data": {"@calls": {"0,0": 7}}}\n'
            '{"type": "map", "data": {"@bytes": {"0,0": 7000}}}\n')
    [pc] = bpftrace.to_counts(bpftrace.parse(text, probes), probes, ["receiver"])
    assert (pc.calls, pc.bytes) == (7, 7000)
    assert pc.lost == {"entries_without_return": 3} and pc.quality == "lossy"


def test_zerocopy_sends_are_a_point_of_their_own():
    text = ('{"type": "stats", "data": {"@st": {"0,0,2": {"count": 5, "average": 65536, '
            '"total": 327680}}}}\n')
    counts = bpftrace.to_counts(bpftrace.parse(text, TPS), TPS, SIDES)
    zc = [c for c in counts if c.point == bpftrace.ZC_SEND]
    assert [(c.side, c.calls, c.bytes, c.quality) for c in zc] == [("sender", 5, 327680, "estimate")]


def test_recursion_misses_from_fdinfo(tmp_path):
    fdinfo = tmp_path / "42" / "fdinfo"
    fdinfo.mkdir(parents=True)
    (fdinfo / "3").write_text("pos:\t0\nflags:\t02000002\nprog_type:\t5\nprog_id:\t17\n"
                              "run_cnt:\t0\nrecursion_misses:\t4\n")
    (fdinfo / "4").write_text("pos:\t0\nmap_type:\t1\nmap_id:\t9\n")
    (fdinfo / "5").write_text("prog_type:\t5\nprog_id:\t18\nrecursion_misses:\t1\n")
    assert bpftrace.recursion_misses(42, proc_root=tmp_path) == 5
    assert bpftrace.recursion_misses(43, proc_root=tmp_path) == 0


def test_lost_sample_lines_are_parsed():
    assert bpftrace._lost_samples("Lost 12 events\nfoo\nLost 3 events\n") == 15


def test_present_tracepoints_from_a_fixture_tree(tmp_path):
    fmt = tmp_path / "events/sock/sock_recv_length"
    fmt.mkdir(parents=True)
    (fmt / "format").write_text("name: sock_recv_length\n")
    assert [p.symbol for p in present(tmp_path)] == ["sock:sock_recv_length"]


def test_a_full_pid_map_makes_counts_lossy():
    text = ('{"type": "stats", "data": {"@st": {"1,1,1": {"count": 5, "average": 1000, '
            '"total": 5000}}}}\n'
            f'{{"type": "map", "data": {{"@nside": {bpftrace.MAP_KEYS_MAX}}}}}\n')
    counts = bpftrace.to_counts(bpftrace.parse(text, TPS), TPS, SIDES)
    recv = next(c for c in counts if c.point == "recv_copy" and c.side == "receiver")
    assert recv.quality == "lossy" and recv.lost == {"map_full": 1}


def test_io_uring_sends_outside_a_syscall_take_the_class_of_the_last_submission():
    """io-wq and task-work sends run outside any send syscall: a send_zc must not read as a
    copy (io_uring_zc at 64 KiB read 1.165 copied per byte before this)."""
    text = bpftrace.script(TPS, pids={"sender": 7, "receiver": 8}, io_uring=True)
    assert "@sflag[tid] = 3; @uzc[pid] = 1;" in text          # SEND_ZC / SENDMSG_ZC submitted
    assert "args->opcode == 26" in text and "delete(@uzc[pid])" in text   # a plain SEND resets
    assert "if ($f == 0 && @uzc[pid]) { $f = 3; }" in text


def test_sends_inside_sendfile_and_splice_are_page_references_not_copies():
    """sendfile and splice reach sock_sendmsg with MSG_SPLICE_PAGES: the send tracepoint fires
    with bytes that were never copied from user memory; tagged apart by the syscall (sendfile
    40 / splice 275 on x86_64, 71 / 76 on aarch64) and reported as their own point."""
    x86 = bpftrace.script(TPS, pids={"sender": 7, "receiver": 8})
    assert "if (args->id == 40 || args->id == 275) { @sflag[tid] = 4; }" in x86
    assert "if ($f == 4) { @st[0, $k, 3] = stats(args->ret); }" in x86
    assert "if ($f == 0 || $f == 3) { @uring[$k] = count(); }" in x86    # not "outside"
    arm = bpftrace.script(TPS, pids={"a": 7}, arch="aarch64")
    assert "args->id == 71 || args->id == 76) { @sflag[tid] = 4; }" in arm
    text = ('{"type": "stats", "data": {"@st": {"0,0,3": {"count": 7, "average": 65536, '
            '"total": 458752}}}}\n')
    counts = bpftrace.to_counts(bpftrace.parse(text, TPS), TPS, SIDES)
    sp = [c for c in counts if c.point == bpftrace.SPLICED]
    assert [(c.side, c.calls, c.bytes, c.bytes_exact) for c in sp] == [("sender", 7, 458752,
                                                                          True)]
    assert not any(c.point == "send_copy" and c.bytes for c in counts)
    from bench.copycount import summarize
    tx = summarize(counts, {"sender": 7, "receiver": 7},
                   {"sender": 458752, "receiver": 458752})["sender"]
    assert tx["bytes"] == 0 and tx["spliced"] == {"calls": 7, "bytes": 458752, "symbols": [
        "sock:sock_send_length+splice"]}
    assert tx["total_quality"] == "estimate" and "page references" in tx["total_note"]
