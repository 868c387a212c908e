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
    stream = pattern.block(10 * size)[:10 * size]
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


def test_datagram_verifies_alone_from_its_first_byte():
    ref = pattern.block(1472)
    for seq in (0, 1, 250, 251, 1000):
        k = seq % pattern.PERIOD
        assert pattern.datagram_ok(ref, memoryview(ref[k:k + 1472]))
    broken = bytearray(ref[7:7 + 1472])
    broken[-1] ^= 0xFF
    assert not pattern.datagram_ok(ref, memoryview(broken))
    assert not pattern.datagram_ok(ref, memoryview(b""))


def test_long_chunks_are_checked_segment_by_segment_every_byte():
    size = 1 << 20                                        # several segments, the last a partial one
    stream = bytearray(pattern.block(3 * size)[:3 * size])
    v = pattern.StreamVerifier(size)
    assert v.check(memoryview(stream)[:size]) and v.check(memoryview(stream)[size:3 * size - 5])
    assert v.bad_chunks == 0
    for pos in (0, pattern.SEGMENT - 1, pattern.SEGMENT, 5 * pattern.SEGMENT + 7, size - 1):
        bad = bytearray(stream[:size])
        bad[pos] ^= 0x80
        w = pattern.StreamVerifier(size)
        assert not w.check(memoryview(bad)), pos          # a flip anywhere is caught


# -- the agents' hot loops -----------------------------------------------------------------------
def _stream(total: int) -> bytes:
    return bytes(i % pattern.PERIOD for i in range(total))


def test_send_messages_sends_exactly_count_in_stream_order():
    """Blocks of BLOCK views, bound checked once per block: the count is still exact (a tail
    shorter than a block), and message i is the pattern at phase (i*size) % 251."""
    from workloads.sockets import BLOCK, PatternSource, SendBound, send_messages
    size = 1000
    src = PatternSource(size)
    order = [src.views[(i * size) % pattern.PERIOD] for i in range(pattern.PERIOD)]
    for count in (1, BLOCK - 1, BLOCK, 5 * BLOCK + 3, 600):
        out: list[bytes] = []
        sent, errors = send_messages(lambda v, out=out: out.append(bytes(v)), order,
                                     SendBound(duration=60, count=count))
        assert (sent, errors) == (count, 0) and len(out) == count
        assert b"".join(out) == _stream(count * size)


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
        data = bytearray(_stream(20 * size + 5))
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
