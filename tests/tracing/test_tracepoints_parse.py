"""Pure tests of the tracepoints backend's parser and counting, on captured trace_pipe text."""

from pathlib import Path

from bench.tracing.tracepoints import Event, aggregate, parse_line

DATA = Path(__file__).with_name("data") / "trace_pipe_6.18.txt"


def events():
    return [e for e in map(parse_line, DATA.read_text().splitlines()) if e]


def test_parse_fields():
    evs = events()
    assert evs[0] == Event("sock_send_length", 6275, 1000, "0xffff8881084c9f80", 17)
    assert evs[4] == Event("skb_copy_datagram_iovec", 10916, 32741, "0xffff88810b9450e0")
    tcp = evs[6]
    assert (tcp.pid, tcp.proto, tcp.length) == (777, 6, 65483)   # comm with space and dash


def test_comments_and_headers_are_skipped():
    assert parse_line("# tracer: nop") is None
    assert parse_line("#           TASK-PID     CPU#  |||||  TIMESTAMP  FUNCTION") is None


def test_udp_receive_is_exact_peek_not_counted():
    recv = [e for e in events() if e.pid == 6234]
    (pc,) = aggregate(recv, "receiver")
    assert (pc.point, pc.calls, pc.bytes, pc.exact) == ("recv_copy", 2, 2000, True)
    assert pc.samples[0] == {"addr": "0xffff8881084c9500", "len": 1000, "pid": 6234,
                             "addr_kind": "sk"}


def test_tcp_or_lost_events_make_an_estimate():
    evs = [e for e in events() if e.pid in (6234, 777)]
    (pc,) = aggregate(evs, "receiver")
    assert pc.exact is False and pc.bytes == 2000 + 65483
    udp_only = [e for e in events() if e.pid == 6234]
    (lossy,) = aggregate(udp_only, "receiver", lost=3)
    assert lossy.exact is False and any("dropped 3" in n for n in lossy.notes)


def test_send_is_an_estimate_and_samples_are_bounded():
    send = [e for e in events() if e.pid == 6275] * 50
    (pc,) = aggregate(send, "sender", max_samples=5)
    assert (pc.point, pc.calls, pc.bytes, pc.exact) == ("send_copy", 100, 100000, False)
    assert len(pc.samples) == 5
