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
    assert s["cpu_s_per_gb"]["sender"] == pytest.approx(0.5 / 0.99)
    assert s["cpu_s_per_gb"]["softirq"] == pytest.approx(0.3 / 0.99)


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
