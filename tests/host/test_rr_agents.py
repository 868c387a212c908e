"""The request/response agents on loopback (no root): exact transaction counts, verified
payloads, the latency histogram, and the faults (a corrupted response, a slow reply, a
responder that stops answering).

The agents run as the runner starts them (python -m workloads.agent, the JSON-lines protocol);
the fault tests pair our real requester with a responder written here, which answers with the
pattern the requester expects except where the test breaks it."""

from __future__ import annotations

import socket
import threading
import time

import pytest

from bench import latency
from bench.agents import Agent
from tests.io_uring_skip import io_uring_unavailable
from workloads import tcp_rr, udp_rr
from workloads.pattern import block, datagram, phase
from workloads.rr import Stalled

pytestmark = pytest.mark.host



def _needs(workload: str) -> None:
    if workload.startswith("io_uring") and io_uring_unavailable():
        pytest.skip(io_uring_unavailable())


def run_agents(workload: str, size: int, count: int, duration: float = 30, **extra
               ) -> tuple[dict, dict]:
    common = {"workload": workload, "size": size, "max_seconds": 60, **extra}
    rx = Agent("receiver", {**common, "bind": "127.0.0.1"})
    tx = None
    try:
        ready = rx.expect("ready", 20)
        tx = Agent("sender", {**common, "target": ["127.0.0.1", ready["port"]],
                              "duration": duration, "count": count})
        tx.expect("ready", 20)
        tx.send({"cmd": "go"})
        tx_res = tx.expect("result", 60)
        rx.send({"cmd": "stop"}, required=False)
        rx_res = rx.expect("result", 20)
    finally:
        if tx is not None:
            tx.stop()
        rx.stop()
    return tx_res, rx_res


@pytest.mark.parametrize("workload,size,response,in_flight", [
    ("tcp_rr", 1, None, 1), ("tcp_rr", 64, None, 1), ("tcp_rr", 4096, 65536, 1),
    ("tcp_rr", 64, None, 4), ("udp_rr", 8, None, 1), ("udp_rr", 4096, 64, 1),
    ("udp_rr", 64, None, 4), ("io_uring_rr", 1, None, 1), ("io_uring_rr", 4096, 65536, 1),
])
def test_n_transactions_exactly_verified(workload, size, response, in_flight):
    _needs(workload)
    n = 1500
    extra = {"in_flight": in_flight, **({"response_size": response} if response else {})}
    tx, rx = run_agents(workload, size, n, **extra)
    r = response or size
    assert tx["rr"]["transactions"] == n and tx["rr"]["verified"] == n
    assert tx["rr"]["bad_responses"] == 0
    assert (tx["rr"]["request_size"], tx["rr"]["response_size"]) == (size, r)
    assert tx["rr"]["in_flight"] == in_flight
    assert rx["rr"]["requests"] == n and rx["rr"]["bad_requests"] == 0 and rx["bad"] == 0
    assert tx["messages"] == n and tx["bytes"] == n * size
    assert rx.get("bytes_seen") == (None if workload == "udp_rr" else n * size)
    if workload == "udp_rr":
        assert (tx["rr"]["lost"], tx["rr"]["late"], tx["rr"]["stray"]) == (0, 0, 0)
    lat = tx["latency"]
    assert lat["transactions"] == n
    assert latency.decode(lat["histogram"]).get_total_count() == n
    assert 0 < lat["min_ns"] <= lat["p50_ns"] <= lat["p90_ns"] <= lat["p99_ns"]
    assert lat["p99_ns"] <= lat["p99_9_ns"] <= lat["max_ns"] * 1.001 + 1
    assert lat["transactions_per_s"] > 0
    assert lat["cpu_us_per_transaction"] > 0 and rx["rr"]["cpu_us_per_transaction"] > 0
    assert "CLOCK_MONOTONIC" in lat["clock"]


def test_count_and_duration_bound_the_requester():
    tx, _ = run_agents("tcp_rr", 64, 10**9, duration=0.3)
    assert 0 < tx["rr"]["transactions"] == tx["rr"]["verified"]
    assert tx["t_end"] - tx["t_start"] < 2.0


@pytest.mark.parametrize("cfg,needle", [
    ({"size": 64, "in_flight": 0}, "in_flight 0"),
    ({"size": 64, "in_flight": 1025}, "in_flight 1025"),
    ({"size": 0}, "request size 0"),
    ({"size": 64, "count": 0}, "count 0"),
])
def test_bad_parameters_are_named(cfg, needle):
    from workloads.rr import params
    with pytest.raises(ValueError, match=needle):
        params(cfg)


def test_udp_sizes_carry_the_sequence_number():
    with pytest.raises(ValueError, match="request size 4: must be 8..65507"):
        udp_rr._params({"size": 4})
    with pytest.raises(ValueError, match="response size 65508"):
        udp_rr._params({"size": 64, "response_size": 65508})


def test_agent_reports_bad_parameters_as_an_error():
    rx = Agent("receiver", {"workload": "udp_rr", "size": 4, "bind": "127.0.0.1",
                            "max_seconds": 30})
    try:
        with pytest.raises(Exception, match="request size 4"):
            rx.expect("ready", 20)
    finally:
        rx.stop()


# -- a responder of our own: the expected answers, except where a test breaks them ----------
class StubIO:
    def emit(self, event, **fields):
        pass

    def wait_cmd(self, expected):
        pass


def tcp_responder(q: int, r: int, corrupt: int | None = None, delay_every: int | None = None,
                  delay_s: float = 0.0, answer: int | None = None):
    """A listening socket and its thread: answers request j with the response of phase(j)."""
    lsock = socket.socket()
    lsock.bind(("127.0.0.1", 0))
    lsock.listen(1)
    ref = block(r)

    def serve():
        conn, _ = lsock.accept()
        with conn:
            j = 0
            while True:
                data = conn.recv(q, socket.MSG_WAITALL)
                if len(data) < q:
                    return
                if answer is not None and j >= answer:
                    continue                      # silent from here on, connection open
                resp = bytearray(ref[phase(j):phase(j) + r])
                if j == corrupt:
                    resp[-1] ^= 0x40
                if delay_every and j % delay_every == delay_every - 1:
                    time.sleep(delay_s)
                conn.sendall(resp)
                j += 1

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return lsock, t


def udp_responder(q: int, r: int, corrupt: int | None = None, answer: int | None = None):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(10)

    def serve():
        j = 0
        while True:
            try:
                data, addr = sock.recvfrom(65535)
            except OSError:
                return
            seq = int.from_bytes(data[:8], "little")
            if answer is not None and j >= answer:
                continue
            resp = bytearray(datagram(r, seq))
            if j == corrupt:
                resp[-1] ^= 0x40
            sock.sendto(resp, addr)
            j += 1

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    return sock, t


def requester(mod, port: int, size: int, count: int, **extra) -> dict:
    cfg = {"size": size, "target": ["127.0.0.1", port], "duration": 30, "count": count,
           **extra}
    return mod.sender(cfg, StubIO())


def test_tcp_corrupted_response_is_caught():
    lsock, t = tcp_responder(64, 64, corrupt=7)
    with lsock:
        tx = requester(tcp_rr, lsock.getsockname()[1], 64, 200)
    t.join(5)
    assert tx["rr"]["transactions"] == 200
    assert tx["rr"]["bad_responses"] == 1 and tx["rr"]["verified"] == 199


def test_udp_corrupted_response_is_caught():
    sock, t = udp_responder(64, 64, corrupt=7)
    with sock:
        tx = requester(udp_rr, sock.getsockname()[1], 64, 200)
    assert tx["rr"]["transactions"] == 200
    assert tx["rr"]["bad_responses"] == 1 and tx["rr"]["verified"] == 199


def test_slow_replies_show_in_p99_not_p50():
    """One reply in 50 held 20 ms: 2% of transactions, above p99's 1%, far below p50."""
    lsock, t = tcp_responder(64, 64, delay_every=50, delay_s=0.02)
    with lsock:
        tx = requester(tcp_rr, lsock.getsockname()[1], 64, 500)
    lat = tx["latency"]
    assert tx["rr"]["verified"] == 500
    assert lat["p99_ns"] >= 20_000_000 and lat["max_ns"] >= 20_000_000
    assert lat["p50_ns"] < 5_000_000


@pytest.mark.parametrize("mod,make", [(tcp_rr, tcp_responder), (udp_rr, udp_responder)])
def test_a_responder_that_stops_answering_fails_the_requester(mod, make):
    sock, t = make(64, 64, answer=5)
    t0 = time.monotonic()
    with sock, pytest.raises(Stalled, match="stopped answering"):
        requester(mod, sock.getsockname()[1], 64, 100, rr_timeout_s=0.2)
    assert time.monotonic() - t0 < 5


# -- io_uring_rr: its binding holds the GIL while it waits, so the requester runs as an agent
# process against the responder thread here.
def agent_requester(workload: str, port: int, size: int, count: int, **extra) -> dict:
    tx = Agent("sender", {"workload": workload, "size": size, "max_seconds": 60,
                          "target": ["127.0.0.1", port], "duration": 30, "count": count,
                          **extra})
    try:
        tx.expect("ready", 20)
        tx.send({"cmd": "go"})
        return tx.expect("result", 60)
    finally:
        tx.stop()


def test_io_uring_rr_one_enter_per_transaction_and_a_corrupted_response():
    _needs("io_uring_rr")
    lsock, t = tcp_responder(64, 64, corrupt=7)
    with lsock:
        tx = agent_requester("io_uring_rr", lsock.getsockname()[1], 64, 200)
    assert tx["rr"]["transactions"] == 200
    assert tx["rr"]["bad_responses"] == 1 and tx["rr"]["verified"] == 199
    assert tx["rr"]["io_uring"]["enter_calls"] == 200


def test_io_uring_rr_stalled_responder_fails_the_requester():
    _needs("io_uring_rr")
    lsock, t = tcp_responder(64, 64, answer=5)
    with lsock, pytest.raises(Exception, match="stopped answering"):
        agent_requester("io_uring_rr", lsock.getsockname()[1], 64, 100, rr_timeout_s=0.3)


def test_io_uring_rr_keeps_one_in_flight():
    from workloads import io_uring_rr
    with pytest.raises(ValueError, match="in_flight 2: io_uring_rr keeps one"):
        io_uring_rr._params({"size": 64, "in_flight": 2})
