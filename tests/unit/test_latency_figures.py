"""bench/latency.py and workloads/rr_stats.py: histograms, percentiles, merging across
repeats, the copies' share of a round trip (and its refusal without calibration)."""

from __future__ import annotations

import pytest

from bench import latency
from workloads.rr_stats import Recorder


def _block(values: list[int], window_ns: int = 10**9) -> dict:
    rec = Recorder()
    for v in values:
        rec.append(v)
    return rec.summary(window_ns, {"user_s": 0.5, "sys_s": 0.5})


def test_summary_exact_min_max_and_percentiles_within_a_bucket():
    values = [10_000 + i for i in range(990)] + [500_000] * 10
    b = _block(values)
    assert b["transactions"] == 1000
    assert (b["min_ns"], b["max_ns"]) == (10_000, 500_000)     # raw, not bucket ends
    # 3 significant figures: a percentile is within 0.1% above the true value
    assert 10_495 <= b["p50_ns"] <= 10_495 * 1.001 + 1
    assert b["p99_ns"] <= 11_000 and b["p99_9_ns"] >= 500_000
    assert b["cpu_us_per_transaction"] == 1000.0            # 1 s of CPU over 1000
    assert b["transactions_per_s"] == pytest.approx(1000, rel=0.01)   # 1 s window less fold
    assert latency.decode(b["histogram"]).get_total_count() == 1000


def test_fold_in_steps_keeps_every_value(monkeypatch):
    import workloads.rr_stats as rs
    monkeypatch.setattr(rs, "FOLD_EVERY", 100)
    rec = Recorder()
    for i in range(1, 351):
        rec.append(i * 1000)
        if rec.due():
            rec.fold()
    b = rec.summary(10**9)
    assert b["transactions"] == 350 and b["min_ns"] == 1000 and b["max_ns"] == 350_000
    assert b["cpu_us_per_transaction"] is None               # no CPU reading given


def test_clamped_values_are_counted():
    import workloads.rr_stats as rs
    b = _block([1000, rs.HIGHEST_NS * 2])
    assert b["clamped"] == 1 and b["max_ns"] == rs.HIGHEST_NS * 2


def test_merge_across_repeats_is_the_histogram_of_all_values():
    a = _block([20_000] * 50)
    b = _block([40_000] * 50, window_ns=2 * 10**9)
    m = latency.merged([a, b, {"transactions": 0}, None])
    assert m["transactions"] == 100 and m["samples"] == 2
    assert 20_000 <= m["p50_ns"] <= 20_020 and 40_000 <= m["p99_ns"] <= 40_040
    assert (m["min_ns"], m["max_ns"]) == (20_000, 40_000)
    assert m["transactions_per_s"] == pytest.approx(100 / 3, rel=0.01)
    assert latency.merged([]) == {"transactions": 0}


def _point(side, point, calls, ns_total, probe=100.0, backend="kmod", quality="exact"):
    return {"side": side, "point": point, "calls": calls, "ns_total": ns_total,
            "ns_probe_per_call": probe, "backend": backend, "quality": quality}


def test_copy_share_four_copies_of_a_round_trip():
    n = 1000
    points = [_point("sender", "send_copy", n, n * 575), _point("sender", "recv_copy", n, n * 575),
              _point("receiver", "send_copy", n, n * 575),
              _point("receiver", "recv_copy", n, n * 575),
              _point("receiver", "zc_fallback", 0, 0)]
    parts = latency.copy_parts(points, n)
    assert len(parts) == 4 and all(p["ns_per_copy"] == 475.0 for p in parts)
    share = latency.copy_share(72_000, parts)
    assert share["status"] == "ok" and share["copies_per_transaction"] == 4
    assert share["copy_ns"] == 1900.0 and share["rest_ns"] == 70_100.0
    assert latency.share_text(share) == "4 copies, 1.9 µs of a 72 µs (p50) round trip"


def test_copy_share_refused_without_calibration():
    points = [_point("sender", "send_copy", 10, None, None, "tracepoints"),
              _point("receiver", "recv_copy", 10, 5000)]
    share = latency.copy_share(72_000, latency.copy_parts(points, 10))
    assert share["status"] == "not calibrated" and "copy_ns" not in share
    assert "sender send_copy (tracepoints)" in share["reason"]
    assert latency.share_text(share) == ("2 copies; no share: ns per copy not calibrated "
                                         "(tracepoints; only kmod times copies)")
    assert latency.copy_share(None, [])["status"] == "no round trip"
    with pytest.raises(ValueError):
        latency.copy_parts(points, 0)


def test_only_copy_points_count_as_copies():
    """The TCP receive tracepoints see each copy twice (sock_recv_length as recv_copy, the
    skb handed to the copy as recv_skb): a correlation point is not a second copy, and an
    estimate stays labelled as one."""
    n = 50
    points = [_point(s, p, n, None, None, "tracepoints", "estimate")
              for s in ("sender", "receiver") for p in ("send_copy", "recv_copy", "recv_skb")]
    share = latency.copy_share(30_000, latency.copy_parts(points, n))
    assert share["copies_per_transaction"] == 4 and share["copies_quality"] == "estimate"
    assert latency.share_text(share).startswith("4 copies (estimate); no share")


def test_round_trips_of_a_case_and_pythons_share_of_its_cpu():
    from bench.results import CaseResult
    from workloads.rr_stats import Recorder

    def sample(values, user_s, sys_s, warm=False):
        rec = Recorder()
        for v in values:
            rec.append(v)
        lat = rec.summary(10**9, {"user_s": user_s, "sys_s": sys_s})
        return {"latency": lat, "warmup": warm,
                "cpu": {"sender": {"user_s": user_s, "sys_s": sys_s},
                        "receiver": {"user_s": user_s / 2, "sys_s": sys_s}},
                "rr": {"responder": {"cpu_us_per_transaction": 7.0}}}

    cr = CaseResult(id="tcp_rr-64-veth", workload="tcp_rr", size=64, topology="veth",
                    params={"in_flight": 1},
                    samples=[sample([10**6] * 100, 1.0, 1.0, warm=True),
                             sample([20_000] * 1000, 0.004, 0.006),
                             sample([30_000] * 1000, 0.006, 0.006)])
    out = latency.round_trips(cr)
    assert out["transactions"] == 2000 and out["samples"] == 2      # warm-up left out
    assert out["min_ns"] == 20_000 and out["max_ns"] == 30_000
    assert out["cpu_us_per_transaction"] == {"requester": 11.0, "responder": 7.0}
    # user time per transaction: 4 and 6 µs (requester), half that (responder)
    assert out["user_us_per_transaction"] == {"requester": 5.0, "responder": 2.5}
    assert out["copy_share"]["status"] == "not counted"
    assert out["syscalls_per_transaction"] is None
