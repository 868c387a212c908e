import pytest

from bench import metrics
from workloads import pattern


def test_cpu_line_and_delta():
    a = metrics.parse_cpu_line("cpu 100 0 50 1000 0 0 10 0 0 0".split(), 100)
    b = metrics.parse_cpu_line("cpu 200 0 70 1100 0 0 30 0 0 0".split(), 100)
    d = metrics.cpu_delta(a, b)
    assert d["user"] == 1.0 and d["system"] == 0.2 and d["softirq"] == 0.2 and d["idle"] == 1.0
    assert d["busy"] == pytest.approx(1.4)


def test_derive_throughput_and_cpu_per_gb():
    tx = {"messages": 1000, "t_start": 10.0, "cpu": {"user_s": 0.1, "sys_s": 0.4}}
    rx = {"messages": 990, "bytes": 990_000_000, "t_last": 12.0, "cpu": {"user_s": 0.2, "sys_s": 0.2}}
    s = metrics.derive(tx, rx, {"softirq": 0.3, "busy": 1.5}, 1_000_000)
    assert s["gbps"] == pytest.approx(990e6 * 8 / 2 / 1e9)
    assert s["loss_pct"] == 1.0
    assert s["cpu_s_per_gb"]["sender"] == pytest.approx(0.5 / 1.0)     # per byte *sent*
    assert s["cpu_s_per_gb"]["receiver"] == pytest.approx(0.4 / 0.99, rel=1e-4)  # per byte received
    assert s["cpu_s_per_gb"]["softirq"] == pytest.approx(0.3 / 0.99)
    assert s["clock"] == metrics.SAME_MACHINE_CLOCK      # no t_first: the one machine's clock


def test_the_window_is_on_the_receivers_clock_without_its_first_receive():
    tx = {"messages": 100, "t_start": 5.0, "cpu": {"user_s": 0, "sys_s": 0}}
    rx = {"messages": 100, "bytes": 100_000, "t_first": 1000.0, "t_last": 1001.0,
          "first_bytes": 1000, "cpu": {"user_s": 0, "sys_s": 0}}
    s = metrics.derive(tx, rx, {}, 1000, same_clock=False)
    assert s["clock"] == metrics.RECEIVER_CLOCK and s["window_s"] == 1.0
    assert s["window_bytes"] == 99_000 and s["gbps"] == pytest.approx(99_000 * 8 / 1e9)


def test_two_machines_never_mix_clocks():
    tx = {"messages": 1, "t_start": 5.0, "cpu": {"user_s": 0, "sys_s": 0}}
    rx = {"messages": 1, "bytes": 1000, "t_first": 900.0, "t_last": 900.0,
          "cpu": {"user_s": 0, "sys_s": 0}}
    s = metrics.derive(tx, rx, {}, 1000, same_clock=False)
    assert s["gbps"] is None and s["clock"] is None        # one receive, two clocks: no figure


def test_busy_excludes_steal_idle_and_iowait():
    a = metrics.parse_cpu_line("cpu 0 0 0 0 0 0 0 0".split(), 100)
    b = metrics.parse_cpu_line("cpu 100 10 50 500 40 5 20 300".split(), 100)
    assert metrics.cpu_delta(a, b)["busy"] == pytest.approx(1.85)   # user+nice+sys+irq+softirq


def test_irq_time_accounting_from_the_kernel_config(tmp_path):
    import gzip
    proc = tmp_path / "proc"
    proc.mkdir()
    (proc / "config.gz").write_bytes(gzip.compress(b"# CONFIG_IRQ_TIME_ACCOUNTING is not set\n"))
    assert metrics.irq_time_accounting(proc, tmp_path) is False
    (proc / "config.gz").write_bytes(gzip.compress(b"CONFIG_IRQ_TIME_ACCOUNTING=y\n"))
    assert metrics.irq_time_accounting(proc, tmp_path) is True
    assert metrics.irq_time_accounting(tmp_path / "none", tmp_path / "none") is None


def test_stream_verifier_catches_a_flipped_byte_and_a_shift():
    size = 1000
    stream = pattern.stream_bytes(size, 10)
    v = pattern.StreamVerifier(size)
    for off in range(0, len(stream), 333):
        assert v.check(memoryview(stream[off:off + 333]))
    assert v.bad_chunks == 0 and v.offset == len(stream)
    bad = bytearray(stream[:size])
    bad[500] ^= 1
    v2 = pattern.StreamVerifier(size)
    assert not v2.check(memoryview(bad)) and v2.bad_chunks == 1
    v3 = pattern.StreamVerifier(size)
    assert not v3.check(memoryview(stream[1:size + 1]))


def test_datagram_verifies_alone_from_its_sequence_number():
    ref = pattern.block(1472)
    for seq in (0, 1, 250, 251, 1000, 1 << 40):
        assert pattern.datagram_seq(ref, memoryview(pattern.datagram(1472, seq))) == seq
    broken = bytearray(pattern.datagram(1472, 7))
    broken[-1] ^= 0xFF
    assert pattern.datagram_seq(ref, memoryview(broken)) is None
    assert pattern.datagram_seq(ref, memoryview(b"")) is None


def test_long_chunks_are_checked_segment_by_segment_every_byte():
    size = 1 << 20                                        # several segments, the last a partial one
    stream = bytearray(pattern.stream_bytes(size, 3))
    v = pattern.StreamVerifier(size)
    assert v.check(memoryview(stream)[:size]) and v.check(memoryview(stream)[size:3 * size - 5])
    assert v.bad_chunks == 0
    for pos in (0, pattern.SEGMENT - 1, pattern.SEGMENT, 5 * pattern.SEGMENT + 7, size - 1):
        bad = bytearray(stream[:size])
        bad[pos] ^= 0x80
        w = pattern.StreamVerifier(size)
        assert not w.check(memoryview(bad)), pos          # a flip anywhere is caught


def test_the_schedule_has_no_period_a_run_can_reach():
    """Message i's phase comes from the schedule: no lag (a whole pattern period of messages,
    a schedule page, a multiple of either) keeps the phases of the messages after it."""
    ph = [pattern.phase(i) for i in range(4 << pattern.PAGE_BITS)]
    for lag in (1, 251, 502, 251 * 256, 1 << pattern.PAGE_BITS, 2 << pattern.PAGE_BITS,
                251 << pattern.PAGE_BITS):
        same = sum(pattern.phase(i) == pattern.phase(i + lag) for i in range(0, 200_000, 7))
        assert same < 200_000 / 7 / 251 * 2, lag            # chance level, about 1 in 251
    assert len(set(ph[:5000])) == pattern.PERIOD     # every phase is used


# -- order, loss and duplication: each FAILS with the old scheme (offset % 251) -------------------
def _verify_messages(size: int, messages: list[bytes]) -> int:
    """Bad chunks when the receiver gets these messages in this order as one stream."""
    from workloads.sockets import receive_stream
    chunks = iter(messages)

    def recv_into(buf):
        c = next(chunks, b"")
        buf[:len(c)] = c
        return len(c)
    v = pattern.StreamVerifier(size)
    receive_stream(recv_into, bytearray(size), v)
    return v.bad_chunks


def _sent(size: int, count: int) -> list[bytes]:
    data = pattern.stream_bytes(size, count)
    return [data[i * size:(i + 1) * size] for i in range(count)]


def test_a_stream_that_lost_exactly_251_messages_fails():
    size = 1000
    msgs = _sent(size, 600)
    assert _verify_messages(size, msgs) == 0
    assert _verify_messages(size, msgs[:100] + msgs[351:]) > 0    # 251 messages gone


def test_a_stream_with_one_duplicated_message_fails():
    size = 251 * 4                 # a size that is a multiple of the period: the old blind spot
    msgs = _sent(size, 300)
    assert _verify_messages(size, msgs[:50] + [msgs[49]] + msgs[50:]) > 0
    size = 1000
    msgs = _sent(size, 300)
    assert _verify_messages(size, msgs[:50] + [msgs[49]] + msgs[50:]) > 0


def test_a_stale_rdma_slot_fails_when_the_slots_span_whole_periods():
    """The RDMA receiver verifies slot received % slots as message `received`. With
    2 * depth * size a multiple of 251 (depth 251, size 4 KiB: 502 slots), a slot the sender
    never rewrote still holds message i - slots: caught."""
    size, slots = 4096, 502
    assert slots * size % 251 == 0
    msgs = _sent(size, 3 * slots)
    for i in (slots, slots + 1, 2 * slots + 17):
        got = msgs[:i] + [msgs[i - slots]] + msgs[i + 1:]  # slot i % slots not rewritten
        v = pattern.StreamVerifier(size)
        bad = [not v.check(memoryview(m)) for m in got]
        assert bad[i] and sum(bad) == 1, i
    # and over every message index: each stale slot caught, but for the 1 in 251 whose
    # scheduled phase equals that of the message it is stale from (the bytes are the same)
    caught = sum(pattern.phase(i) != pattern.phase(i - slots) for i in range(slots, 100_000))
    assert caught / (100_000 - slots) > 0.99


# -- the agents' hot loops -----------------------------------------------------------------------
def test_send_messages_sends_exactly_count_in_stream_order():
    """Blocks of BLOCK views, bound checked once per block: the count is still exact (a tail
    shorter than a block), and message i is the pattern from phase(i)."""
    from workloads.sockets import BLOCK, PatternSource, SendBound, send_messages
    size = 1000
    src = PatternSource(size)
    for count in (1, BLOCK - 1, BLOCK, 5 * BLOCK + 3, 600):
        out: list[bytes] = []
        sent, errors = send_messages(lambda v, out=out: out.append(bytes(v)), src.views,
                                     SendBound(duration=60, count=count))
        assert (sent, errors) == (count, 0) and len(out) == count
        assert b"".join(out) == pattern.stream_bytes(size, count)


def test_send_messages_crosses_a_schedule_page():
    from workloads.sockets import PatternSource, SendBound, send_messages
    size, count = 8, (1 << pattern.PAGE_BITS) + 40
    src = PatternSource(size)
    out: list[bytes] = []
    send_messages(lambda v: out.append(bytes(v)), src.views, SendBound(duration=60, count=count))
    assert b"".join(out[-50:]) == pattern.stream_bytes(size, 50, first=count - 50)


def test_send_messages_stops_at_the_deadline_and_counts_tolerated_errors():
    import errno

    from workloads.sockets import BLOCK, SendBound, send_messages
    calls = []

    def send(v):
        calls.append(v)
        if len(calls) % 7 == 0:
            raise OSError(errno.ENOBUFS, "full")
    sent, errors = send_messages(send, list(range(251)), SendBound(duration=0.05),
                                 tolerate=(errno.ENOBUFS,))
    assert errors > 0 and sent + errors <= len(calls) and sent > 0
    with pytest.raises(OSError):          # an error that is not tolerated ends the loop
        send_messages(send, list(range(251)), SendBound(duration=60, count=BLOCK * 3))


def test_receive_stream_checks_every_byte_of_odd_sized_chunks():
    """Chunks of any length (1 byte, a full buffer, longer than SEGMENT): a stream that is
    right verifies whole; one flipped byte anywhere is caught."""
    from workloads.sockets import receive_stream
    for size in (4096, 3 * pattern.SEGMENT + 17):
        data = bytearray(pattern.stream_bytes(size, 20) + pattern.stream_bytes(size, 1, 20)[:5])
        for flip in (None, 0, len(data) // 2, len(data) - 1):
            stream = bytearray(data)
            if flip is not None:
                stream[flip] ^= 1
            pos = 0
            cuts = [1, size, size - 3, 7, size, size]

            def recv_into(buf, _c=iter(cuts * 1000), stream=stream):
                nonlocal pos
                n = min(next(_c), len(buf), len(stream) - pos)
                buf[:n] = stream[pos:pos + n]
                pos += n
                return n
            v = pattern.StreamVerifier(size)
            w = receive_stream(recv_into, bytearray(size), v)
            assert v.offset == len(data) and w["first_bytes"] == 1 and w["recv_calls"] > 20
            assert (v.bad_chunks == 0) == (flip is None), (size, flip)


# -- datagrams: a sequence number each ---------------------------------------------------------
class _Sock:
    def __init__(self, grams):
        it = iter(grams)

        def recv_into(buf):
            g = next(it, b"")
            buf[:len(g)] = g
            return len(g)
        self.recv_into = recv_into


def _udp(grams, size=1472):
    from workloads import udp
    return udp.receive_one_by_one(_Sock(grams), bytearray(size), pattern.block(size))


def _grams(seqs, size=1472):
    return [pattern.datagram(size, s) for s in seqs]


def test_udp_counts_a_loss_of_exactly_251_datagrams_as_loss():
    r = _udp(_grams(list(range(100)) + list(range(351, 600))))
    assert r["bad"] == 0 and r["messages"] == 349
    assert r["sequence"]["lost"] == 251 and r["sequence"]["duplicates"] == 0


def test_udp_reports_a_duplicate_and_does_not_count_it_delivered():
    r = _udp(_grams([0, 1, 2, 2, 3]))
    assert r["messages"] == 4 and r["bad"] == 0
    assert r["sequence"] == {"lost": 0, "duplicates": 1, "late": 0, "stale": 0, "highest_seq": 3}
    # 251 apart: same body phase, the old scheme's blind spot
    r = _udp(_grams([0, 1, 2, 3, 252, 4]))   # 252: its body is 1's (phase 252 % 251)
    assert r["sequence"]["lost"] == 247 and r["bad"] == 0


def test_udp_reorder_is_late_not_lost():
    r = _udp(_grams([0, 2, 1, 3, 5]))
    assert r["messages"] == 5
    assert r["sequence"] == {"lost": 1, "duplicates": 0, "late": 1, "stale": 0, "highest_seq": 5}


def test_udp_batches_track_sequence_too():
    from workloads import udp

    class Batcher:
        def __init__(self, batches, size):
            self.buf = bytearray(size * 4)
            self.size, self._it = size, iter(batches)

        def recv(self):
            grams = next(self._it, [])
            for i, g in enumerate(grams):
                self.buf[i * self.size:(i + 1) * self.size] = g
            return [len(g) for g in grams]
    size = 1472
    b = Batcher([_grams([0, 1, 1, 3]), _grams([2, 4])], size)
    r = udp.receive_batches(b, size, pattern.block(size))
    assert r["messages"] == 5 and r["bad"] == 0
    assert r["sequence"]["duplicates"] == 1 and r["sequence"]["late"] == 1
    assert r["sequence"]["lost"] == 0


def test_udp_sender_stamps_every_datagram_and_retries_a_tolerated_error():
    import errno

    from workloads import udp
    from workloads.sockets import SendBound
    src = udp.DatagramSource(64, batch=300)
    assert src.nbufs == 502
    out, calls = [], [0]

    def send(v):
        calls[0] += 1
        if calls[0] == 5:
            raise OSError(errno.ENOBUFS, "full")
        out.append(bytes(v))
    sent, errors = udp.send_datagrams(send, src, SendBound(duration=60, count=1000))
    assert (sent, errors) == (1000, 1)
    assert out == _grams(range(1000), 64)
    with pytest.raises(ValueError, match="sequence number"):
        udp.DatagramSource(4)


def test_a_stream_short_or_long_at_its_end_is_a_gap():
    """A message lost or duplicated last leaves no later message to fail: the byte count does."""
    cpu = {"user_s": 0, "sys_s": 0}
    tx = {"messages": 10, "bytes": 10_000, "t_start": 0.0, "cpu": cpu}
    for seen, gap in ((10_000, 0), (9_000, -1000), (11_000, 1000)):
        rx = {"messages": 10, "bytes": seen, "bytes_seen": seen, "t_last": 1.0, "cpu": cpu}
        assert metrics.derive(tx, rx, {}, 1000)["stream_gap_bytes"] == gap
    rx = {"messages": 9, "bytes": 9000, "sequence": {"lost": 1}, "t_last": 1.0, "cpu": cpu}
    assert "stream_gap_bytes" not in metrics.derive(tx, rx, {}, 1000)     # UDP may lose


def test_one_remote_machine_window_runs_from_the_senders_start_to_the_receivers_end():
    """The UDP receiver's window opens when it is ready, before the sender is configured: the
    node's system CPU must not start there."""
    from bench import metrics
    rx = {"machine": {"softirq": 9.0, "busy": 20.0},
          "machine_at": {"start": {"softirq": 100.0, "busy": 1000.0, "steal": 0.0},
                         "end": {"softirq": 109.0, "busy": 1020.0, "steal": 0.0}}}
    tx = {"machine": {"softirq": 5.0, "busy": 12.0},
          "machine_at": {"start": {"softirq": 103.0, "busy": 1006.0, "steal": 0.0},
                         "end": {"softirq": 108.0, "busy": 1018.0, "steal": 0.0}}}
    assert metrics.one_machine(tx, rx) == {"softirq": 6.0, "busy": 14.0, "steal": 0.0}
    old_agent = {"machine": {"softirq": 9.0, "busy": 20.0}}
    assert metrics.one_machine(old_agent, rx) == rx["machine"]
    assert metrics.one_machine(tx, old_agent) == old_agent["machine"]
