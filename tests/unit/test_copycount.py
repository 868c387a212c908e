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
    assert s["sender"]["other_points"]["zc_fallback"]["calls"] == 3
    assert s["sender"]["deferred"]["calls"] == 3 and s["sender"]["total_bytes_copied"] == 1_000_000
    assert s["sender"]["quality"] == "exact"
    assert s["sender"]["samples"][0]["addr"] == "0xffff888112340050"
    assert s["receiver"]["exact"] is True and s["receiver"]["backends"] == ["kmod"]


def test_estimates_are_labelled_and_untimed_backends_give_no_ns():
    pts = [PointCounts("recv_copy", "receiver", "sock:sock_recv_length", "tracepoints", False,
                       calls=23, bytes=23 * 1472)]
    s = summarize(pts, {"receiver": 23}, {"receiver": 23 * 1472})
    assert s["receiver"]["exact"] is False and s["receiver"]["ns_per_copy"] is None
    assert s["receiver"]["copies_per_message"] == 1.0


def _zc_points(ubufs_sender, ubufs_other):
    return [
        PointCounts("send_copy", "sender", "_copy_from_iter", "kmod", True, calls=0, bytes=0),
        PointCounts("zc_fallback", "sender", "skb_copy_ubufs", "kmod", True, calls=10,
                    bytes=ubufs_sender),
        PointCounts("zc_fallback", "other", "skb_copy_ubufs", "kmod", True, calls=2,
                    bytes=ubufs_other),
        PointCounts("recv_copy", "receiver", "_copy_to_iter", "kmod", True, calls=40,
                    bytes=786432),
    ]


def test_moved_copies_count_for_the_sender_wherever_they_ran():
    """MSG_ZEROCOPY over veth: COPY#1 vanishes, skb_copy_ubufs copies every byte later."""
    s = summarize(_zc_points(655360, 131072), {"sender": 12, "receiver": 12},
                  {"sender": 786432, "receiver": 786432},
                  completions={"completed": 12, "copied": 12, "copied_bytes": 786432,
                               "all_completed": True})
    snd = s["sender"]
    assert snd["bytes_per_payload_byte"] == 0.0                  # COPY#1 alone looks copy-free
    assert snd["deferred"]["bytes"] == 786432 and snd["deferred"]["source"] == "probe"
    assert snd["deferred"]["ran_in"] == ["other", "sender"]
    assert snd["total_copied_per_payload_byte"] == 1.0           # ... but the total is not
    assert snd["completion_report"]["copied_bytes"] == 786432    # the kernel's word beside it
    assert s["receiver"]["total_copied_per_payload_byte"] == 1.0


def test_completion_reports_fill_in_where_no_probe_sees_deferred_copies():
    pts = [PointCounts("send_copy", "sender", "sock:sock_send_length", "tracepoints", False,
                       calls=0, bytes=0, bytes_exact=True),
           PointCounts("zc_send", "sender", "sock:sock_send_length+MSG_ZEROCOPY", "tracepoints",
                       False, calls=12, bytes=786432)]
    s = summarize(pts, {"sender": 12}, {"sender": 786432},
                  completions={"completed": 12, "copied": 12, "copied_bytes": 786432,
                               "all_completed": True})
    d = s["sender"]["deferred"]
    assert d["source"] == "completion report" and d["bytes"] == 786432
    assert s["sender"]["total_copied_per_payload_byte"] == 1.0


def test_a_zerocopy_row_nobody_could_see_has_no_total():
    pts = [PointCounts("zc_send", "sender", "sock:sock_send_length+MSG_ZEROCOPY", "tracepoints",
                       False, calls=12, bytes=786432)]
    s = summarize(pts, {"sender": 12}, {"sender": 786432})
    assert s["sender"]["total_copied_per_payload_byte"] is None
    assert "no total" in s["sender"]["total_note"]


def test_probe_cost_is_subtracted_and_both_figures_kept():
    pts = [PointCounts("recv_copy", "receiver", "_copy_to_iter", "kmod", True, calls=100,
                       bytes=100_000, ns_total=100 * 900, ns_probe_per_call=400.0)]
    r = summarize(pts, {"receiver": 100}, {"receiver": 100_000})["receiver"]
    assert (r["ns_per_copy_raw"], r["ns_probe_per_call"], r["ns_per_copy"]) == (900.0, 400.0, 500.0)


def test_loss_makes_the_side_lossy_and_is_shown():
    pc = PointCounts("recv_copy", "receiver", "_copy_to_iter", "kmod", True, calls=990,
                     bytes=990_000)
    pc.add_loss("kretprobe_missed", 10)
    r = summarize([pc], {"receiver": 1000}, {"receiver": 1_000_000})["receiver"]
    assert r["quality"] == "lossy" and r["exact"] is False
    assert r["lost"] == {"kretprobe_missed": 10}


def test_calls_and_bytes_quality_are_separate():
    pc = PointCounts("recv_copy", "receiver", "sock:sock_recv_length", "tracepoints", False,
                     calls=30, bytes=1_000_000, bytes_exact=True)
    r = summarize([pc], {"receiver": 15}, {"receiver": 1_000_000})["receiver"]
    assert (r["calls_exact"], r["bytes_exact"], r["quality"]) == (False, True, "estimate")


def test_zerocopy_receive_copybuf_bytes_fill_in_for_the_recv_tracepoint():
    pts = [PointCounts("recv_copy", "receiver", "sock:sock_recv_length", "tracepoints", False,
                       calls=10, bytes=40_000, bytes_exact=True)]
    report = {"mapped_bytes": 900_000, "copied_bytes": 100_000, "copybuf_bytes": 60_000}
    r = summarize(pts, {"receiver": 10}, {"receiver": 1_000_000}, receive_report=report)["receiver"]
    assert r["deferred"]["bytes"] == 60_000 and r["total_copied_per_payload_byte"] == 0.1
    # a kprobe backend sees those copies in _copy_to_iter already: never added twice
    kp = [PointCounts("recv_copy", "receiver", "_copy_to_iter", "kmod", True, calls=30,
                      bytes=100_000)]
    r = summarize(kp, {"receiver": 10}, {"receiver": 1_000_000}, receive_report=report)["receiver"]
    assert r["deferred"] is None and r["total_copied_per_payload_byte"] == 0.1


def test_kernel_reported_copies_nobody_probed_keep_the_row_from_looking_copy_free():
    """Two lab nodes: the kernel flagged 32 of 100 sends copied, yet neither _copy_from_iter
    nor skb_copy_ubufs ran: the copies happened elsewhere. The row must not read 0.0 exact."""
    pts = [PointCounts("send_copy", "sender", "_copy_from_iter", "kmod", True, calls=0, bytes=0),
           PointCounts("zc_fallback", "sender", "skb_copy_ubufs", "kmod", True, calls=0, bytes=0)]
    comp = {"completed": 100, "copied": 32, "copied_bytes": 2097152, "all_completed": True}
    tx = summarize(pts, {"sender": 100}, {"sender": 6553600}, completions=comp)["sender"]
    assert tx["total_copied_per_payload_byte"] == 0.0
    assert tx["total_quality"] == "estimate" and tx["total_upper_bound"] == 2097152
    assert "outside the catalog" in tx["total_note"]


def test_a_mixed_completion_report_is_an_upper_bound():
    pts = [PointCounts("send_copy", "sender", "sock:sock_send_length", "tracepoints", False,
                       calls=0, bytes=0, bytes_exact=True)]
    comp = {"completed": 100, "copied": 32, "copied_bytes": 2097152, "all_completed": True}
    tx = summarize(pts, {"sender": 100}, {"sender": 6553600}, completions=comp)["sender"]
    assert tx["deferred"]["source"] == "completion report"
    assert tx["deferred"]["quality"] == "estimate"      # ranges flag more than was copied


def test_copies_outside_the_flows_tasks_stay_in_the_total_as_an_upper_bound():
    """skb_copy_ubufs in ksoftirqd ("other") is not proven to be this flow's: the total keeps
    it (never cleaner than the kernel), labelled an estimate with the unproven share."""
    s = summarize(_zc_points(655360, 131072), {"sender": 12, "receiver": 12},
                  {"sender": 786432, "receiver": 786432})
    dfr = s["sender"]["deferred"]
    assert dfr["unattributed"] == {"calls": 2, "bytes": 131072}
    assert dfr["quality"] == "estimate" and s["sender"]["total_quality"] == "estimate"
    assert s["sender"]["total_bytes_copied"] == 786432
    assert "131072 B" in dfr["attribution_note"]
    only_own = summarize(_zc_points(786432, 0), {"sender": 12, "receiver": 12},
                         {"sender": 786432, "receiver": 786432})
    assert "unattributed" not in only_own["sender"]["deferred"]
    assert only_own["sender"]["total_quality"] == "exact"


def test_soft_roce_copies_outside_the_agents_make_the_rows_copies_an_estimate():
    pts = [PointCounts("send_copy", "sender", "_copy_from_iter", "kmod", True, calls=0, bytes=0),
           PointCounts("recv_copy", "receiver", "_copy_to_iter", "kmod", True, calls=0, bytes=0),
           PointCounts("rxe_copy", "sender", "rxe_mr_copy", "kmod", True, calls=8, bytes=8192),
           PointCounts("rxe_copy", "other", "rxe_mr_copy", "kmod", True, calls=8, bytes=8192)]
    s = summarize(pts, {"sender": 4, "receiver": 4}, {"sender": 16384, "receiver": 16384},
                  rdma={"soft": True})
    rxe = s["soft-RoCE"]
    assert (rxe["bytes"], rxe["quality"]) == (16384, "estimate")
    assert rxe["unattributed"] == {"calls": 8, "bytes": 8192}
    assert "8192 B of soft-RoCE's copies" in s["sender"]["total_note"]
