"""The copy-cost model: the seed's arithmetic, and a real (small) bandwidth measurement."""

import pytest

from bench import costmodel


def test_seed_exercise_1gb_each_way_at_50_gb_s():
    # 1 GB sent + 1 GB received, each copy reads and writes: 4 GB of traffic at 50 GB/s = 80 ms
    seconds = costmodel.model_copy_seconds(2 * 10**9, 50 * 10**9)
    assert seconds == pytest.approx(0.080)


def test_share_of_cpu_and_missing_cpu():
    assert costmodel.copy_share(0.02, 0.05) == pytest.approx(0.4)   # the seed's nc example
    assert costmodel.copy_share(0.02, 0) is None


def test_bandwidth_with_a_fake_clock_is_best_of_repeats():
    ticks = iter([0.0, 0.004, 1.0, 1.002, 2.0, 2.003])             # 4 ms, 2 ms, 3 ms
    bw = costmodel.measure_bandwidth(1 << 20, repeats=3, clock=lambda: next(ticks))
    assert bw.best_seconds == pytest.approx(0.002)
    assert bw.memcpy_bytes_per_s == pytest.approx((1 << 20) / 0.002)
    assert bw.memory_bytes_per_s == pytest.approx(2 * (1 << 20) / 0.002)


def test_cost_puts_model_beside_measurement():
    bw = costmodel.Bandwidth(buffer_bytes=10**9, repeats=1, best_seconds=0.1)   # 20 GB/s traffic
    c = costmodel.cost(10**6, bw, ns_total=250_000, cpu_seconds=0.001)
    assert c.model_seconds == pytest.approx(2 * 10**6 / (20 * 10**9))
    assert c.measured_copy_seconds == pytest.approx(0.00025)
    assert c.share_of_cpu == pytest.approx(c.model_seconds / 0.001)


def test_real_measurement_is_plausible():
    bw = costmodel.measure_bandwidth(8 << 20, repeats=3)
    assert 100e6 < bw.memcpy_bytes_per_s < 1e12


@pytest.mark.parametrize("args", [(0, 1), (1, 0)])
def test_bad_sizes_are_refused(args):
    with pytest.raises(ValueError):
        costmodel.measure_bandwidth(*args)


def test_working_set_is_message_times_batch_with_a_floor():
    assert costmodel.working_set_bytes(1472, 32) == 1472 * 32
    assert costmodel.working_set_bytes(1472, 1) == costmodel.WORKING_SET_FLOOR
    assert costmodel.working_set_bytes(1 << 20) == 1 << 20


def test_cache_hot_bandwidth_is_plausible_and_recorded_beside_dram():
    hot = costmodel.measure_working_set(64 << 10, batch_seconds=0.001, batches=3)
    assert 100e6 < hot.memcpy_bytes_per_s < 1e12 and hot.buffer_bytes == 64 << 10
    dram = costmodel.Bandwidth(buffer_bytes=10**9, repeats=1, best_seconds=0.1)
    c = costmodel.cost(10**6, dram, cpu_seconds=0.001, cached=hot)
    assert c.model_seconds_cached == pytest.approx(2 * 10**6 / hot.memory_bytes_per_s)
    assert c.share_of_cpu_cached == pytest.approx(c.model_seconds_cached / 0.001)
    assert c.working_set_bytes == 64 << 10
