from bench.copycount import summarize
from bench.tracing.base import PointCounts


def test_seed_picture_one_copy_per_message_each_side():
    pts = [
        PointCounts("send_copy", "sender", "_copy_from_iter", "kmod", True, calls=1000,
                    bytes=1_000_000, ns_total=2_000_000,
                    samples=[{"addr": "0xffff888112340050", "len": 1000, "pid": 7}]),
        PointCounts("recv_copy", "receiver", "_copy_to_iter", "kmod", True, calls=1000,
                    bytes=1_000_000, ns_total=1_000_000),
        PointCounts("zc_fallback", "sender", "skb_copy_ubufs", "kmod", True, calls=3, bytes=0),
    ]
    s = summarize(pts, {"sender": 1000, "receiver": 1000},
                  {"sender": 1_000_000, "receiver": 1_000_000})
    assert s["sender"]["calls"] == 1000 and s["sender"]["bytes"] == 1_000_000
    assert s["sender"]["copies_per_message"] == 1.0 and s["sender"]["bytes_per_payload_byte"] == 1.0
    assert s["sender"]["ns_per_copy"] == 2000.0 and s["receiver"]["ns_per_copy"] == 1000.0
    assert s["sender"]["other_points"] == {"zc_fallback": {"calls": 3, "bytes": 0,
                                                           "symbol": "skb_copy_ubufs"}}
    assert s["sender"]["samples"][0]["addr"] == "0xffff888112340050"
    assert s["receiver"]["exact"] is True and s["receiver"]["backends"] == ["kmod"]


def test_estimates_are_labelled_and_untimed_backends_give_no_ns():
    pts = [PointCounts("recv_copy", "receiver", "sock:sock_recv_length", "tracepoints", False,
                       calls=23, bytes=23 * 1472)]
    s = summarize(pts, {"receiver": 23}, {"receiver": 23 * 1472})
    assert s["receiver"]["exact"] is False and s["receiver"]["ns_per_copy"] is None
    assert s["receiver"]["copies_per_message"] == 1.0
