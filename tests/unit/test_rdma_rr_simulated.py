"""The RDMA request/response agents' protocol (workloads/rdma_rr.py) on a simulated RC QP pair,
without a device: both agents run as threads of this process over a real TCP control
connection, and a stand-in for workloads.rdma_verbs.Verbs moves each SEND into the peer's next
posted receive and each WRITE into the peer's registered memory (both in this address space),
completing them as RC does: in order, reliably. What it checks is ours, not the hardware's:
slots, poisoning, the checks, the send-queue accounting, the END, the counts and the faults.
The real verbs path runs in the lab (tests/lab/test_rdma_lab.py)."""

from __future__ import annotations

import ctypes
import itertools
import socket
import sys
import threading
import time
import types
from collections import deque

import pytest

from workloads import rdma_rr, rdma_verbs

ENUMS = dict(IBV_ACCESS_LOCAL_WRITE=1, IBV_ACCESS_REMOTE_WRITE=2, IBV_WR_RDMA_WRITE=0,
             IBV_WR_RDMA_WRITE_WITH_IMM=1, IBV_WR_SEND=2, IBV_WR_SEND_WITH_IMM=3,
             IBV_WC_SEND=0, IBV_WC_RDMA_WRITE=1, IBV_WC_RECV=128,
             IBV_WC_RECV_RDMA_WITH_IMM=129, IBV_WC_WITH_IMM=2, IBV_WC_SUCCESS=0)
_QPNS = itertools.count(0x100)
_QPS: dict[int, FakeVerbs] = {}


class SGE:
    def __init__(self, addr, length, lkey):
        self.addr, self.length, self.lkey = addr, length, lkey


class WC:
    def __init__(self, wr_id, opcode, byte_len=0, imm=None):
        self.wr_id, self.opcode, self.byte_len, self.status = wr_id, opcode, byte_len, 0
        self.wc_flags = ENUMS["IBV_WC_WITH_IMM"] if imm is not None else 0
        self.imm_data = socket.htonl(imm) if imm is not None else 0


class CQ:
    def __init__(self):
        self.q, self.lock = deque(), threading.Lock()

    def push(self, wc):
        with self.lock:
            self.q.append(wc)

    def poll(self, n):
        with self.lock:
            out = [self.q.popleft() for _ in range(min(n, len(self.q)))]
        return len(out), out


class MR:
    def __init__(self, buf):
        self.buf = ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))
        self.length, self.lkey, self.rkey = len(buf), 7, 9


class FakeVerbs:
    """What rdma_rr uses of Verbs, over memory of this process. `fault(kind, message)`:
    "corrupt" flips a byte of that message as delivered, "silent" stops delivering from it."""

    device, gid_index, wait = "fakerxe0", 1, "poll"
    faults: dict = {}

    def __init__(self, cfg, params):
        self.params, self.counters = params, rdma_verbs.new_counters()
        self.cq, self.recvs, self.pending = CQ(), deque(), deque()
        self.lock = threading.Lock()
        self.qpn, self.peer, self.sent = next(_QPNS), None, 0
        self.role = cfg["role"]
        _QPS[self.qpn] = self

    def register(self, buf, access):
        return MR(buf)

    def make_qp(self, recv_wrs):
        self.max_recv = recv_wrs

    def info(self, mr):
        return {"proto": rdma_verbs.PROTO, "qpn": self.qpn, "psn": 1, "gid": None, "lid": 1,
                "rkey": mr.rkey, "addr": mr.buf, "length": mr.length, "mtu": 1024}

    def connect(self, peer):
        self.peer = _QPS[peer["qpn"]]

    def post_recv(self, wr_id, sge=None):
        with self.lock:
            assert len(self.recvs) < self.max_recv, "receive queue overflow"
            self.recvs.append((wr_id, sge))
        self.counters["recvs_posted"] += 1
        self.peer_deliver_pending()

    def peer_deliver_pending(self):
        # a SEND that found no receive waits (RC's receiver-not-ready retry)
        while True:
            with self.lock:
                if not self.pending or not self.recvs:
                    return
                item = self.pending.popleft()
            self._land(*item)

    def post_send(self, wr_id, opcode, sge=None, signalled=False, imm=None, rdma=None):
        e = ENUMS
        n = self.sent
        self.sent += 1 if sge is not None else 0
        fault = self.faults.get(self.role)
        if fault and fault[0] == "silent" and n >= fault[1]:
            return                                # posted, never delivered nor completed
        data = ctypes.string_at(sge.addr, sge.length) if sge is not None else b""
        if fault and fault[0] == "corrupt" and n == fault[1] and data:
            data = bytes([data[0] ^ 1]) + data[1:]
        if opcode in (e["IBV_WR_SEND"], e["IBV_WR_SEND_WITH_IMM"]):
            self.peer.deliver(data, imm if opcode == e["IBV_WR_SEND_WITH_IMM"] else None)
        else:
            ctypes.memmove(rdma[1], data, len(data))
        self.counters["wrs_posted"] += 1
        if signalled:
            self.cq.push(WC(wr_id, e["IBV_WC_SEND"]))

    def deliver(self, data, imm):
        with self.lock:
            if not self.recvs:
                self.pending.append((data, imm))
                return
        self._land(data, imm)

    def _land(self, data, imm):
        with self.lock:
            wr_id, sge = self.recvs.popleft()
        if data:
            assert sge is not None and len(data) <= sge.length, "local length error"
            ctypes.memmove(sge.addr, data, len(data))
        self.cq.push(WC(wr_id, ENUMS["IBV_WC_RECV"], len(data), imm))

    def poll(self, ctrl, deadline, max_entries=16):
        """As Verbs.poll: completions, or the deadline, or a peer that failed or left."""
        next_check = 0.0
        while True:
            n, wcs = self.cq.poll(max_entries)
            if n:
                self.counters["completions"] += n
                return wcs
            t = time.monotonic()
            if t > deadline:
                raise rdma_verbs.VerbsError("no completion before the agent's deadline")
            if t > next_check:
                next_check = t + 0.01
                if rdma_verbs.control_closed(ctrl, 0.0)[1]:
                    raise rdma_verbs.peer_gone()
            time.sleep(0)

    def counters_start(self):
        pass

    def counters_stop(self):
        return None

    def close(self):
        _QPS.pop(self.qpn, None)
        return {"closed": 1, "errors": []}


class IO:
    def __init__(self):
        self.events, self.go = [], threading.Event()

    def emit(self, event, **fields):
        self.events.append({"event": event, **fields})

    def wait_cmd(self, expected):
        self.go.wait(10)

    def on_cmd(self, expected, callback):
        pass

    def ready(self, timeout=10):
        t = time.monotonic() + timeout
        while time.monotonic() < t:
            for ev in self.events:
                if ev["event"] == "ready":
                    return ev
            time.sleep(0.005)
        raise AssertionError("no ready")


@pytest.fixture
def fake(monkeypatch):
    pv = types.ModuleType("pyverbs")
    enums = types.ModuleType("pyverbs.enums")
    enums.__dict__.update(ENUMS)
    wr = types.ModuleType("pyverbs.wr")
    wr.SGE = SGE
    for name, mod in (("pyverbs", pv), ("pyverbs.enums", enums), ("pyverbs.wr", wr)):
        monkeypatch.setitem(sys.modules, name, mod)
    monkeypatch.setattr(rdma_rr, "Verbs", FakeVerbs)
    monkeypatch.setattr(FakeVerbs, "faults", {})
    # both agents spin (memory, CQ) as threads of one interpreter: hand the GIL over often
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    yield FakeVerbs
    sys.setswitchinterval(interval)


def run_pair(mode, size, count, response=None, in_flight=1, depth=8, timeout=None):
    common = {"workload": f"rdma_{mode}_lat", "size": size, "max_seconds": 20,
              "rdma_depth": depth, "rdma_signal_every": 2, "in_flight": in_flight,
              **({"response_size": response} if response else {}),
              **({"rr_timeout_s": timeout} if timeout else {})}
    out: dict = {}

    def side(role, cfg, io):
        try:
            out[role] = (rdma_rr.receiver if role == "receiver" else rdma_rr.sender)(
                cfg, io, mode)
        except BaseException as exc:       # noqa: BLE001 - the test reads it
            out[role] = exc

    rx_io, tx_io = IO(), IO()
    rx = threading.Thread(target=side, args=("receiver", {**common, "role": "receiver",
                                                          "bind": "127.0.0.1"}, rx_io))
    rx.start()
    port = rx_io.ready()["port"]
    tx = threading.Thread(target=side, args=("sender", {**common, "role": "sender",
                                                        "target": ["127.0.0.1", port],
                                                        "count": count, "duration": 10},
                                             tx_io))
    tx.start()
    tx_io.ready()
    tx_io.go.set()
    tx.join(30)
    rx.join(30)
    assert not tx.is_alive() and not rx.is_alive(), "an agent did not end"
    return out["sender"], out["receiver"]


@pytest.mark.parametrize("mode", ["send", "write"])
@pytest.mark.parametrize("size,response,in_flight", [(1, None, 1), (64, None, 1),
                                                      (64, 4096, 1), (4096, 64, 3)])
def test_n_transactions_exactly_verified_both_ways(fake, mode, size, response, in_flight):
    n = 300
    tx, rx = run_pair(mode, size, n, response, in_flight)
    assert not isinstance(tx, BaseException), tx
    assert not isinstance(rx, BaseException), rx
    r = response or size
    assert (tx["rr"]["transactions"], tx["rr"]["verified"], tx["rr"]["bad_responses"]) == \
        (n, n, 0)
    assert (rx["rr"]["requests"], rx["rr"]["bad_requests"]) == (n, 0)
    assert rx["rr"]["ended_by"] == "the requester's END"
    assert (tx["bytes"], rx["bytes_seen"]) == (n * size, n * size)
    lat = tx["latency"]
    assert lat["transactions"] == n and 0 < lat["min_ns"] <= lat["p50_ns"] <= lat["max_ns"]
    # every WR's completion accounted: the requester ended with nothing in its send queue
    assert tx["rdma"]["slots"] == in_flight and tx["rdma"]["slot_bytes"] == r
    assert tx["rdma"]["opcode"] == ("SEND" if mode == "send" else "RDMA_WRITE")


@pytest.mark.parametrize("mode", ["send", "write"])
def test_a_corrupted_response_is_counted_bad_and_the_rest_verify(fake, mode):
    fake.faults["receiver"] = ("corrupt", 17)
    tx, rx = run_pair(mode, 64, 100)
    assert (tx["rr"]["transactions"], tx["rr"]["bad_responses"]) == (100, 1), tx["rr"]
    assert tx["messages"] == 99 and rx["rr"]["bad_requests"] == 0


@pytest.mark.parametrize("mode", ["send", "write"])
def test_a_corrupted_request_is_counted_bad_by_the_responder(fake, mode):
    fake.faults["sender"] = ("corrupt", 5)
    tx, rx = run_pair(mode, 64, 50)
    assert rx["rr"]["bad_requests"] == 1 and tx["rr"]["bad_responses"] == 0


@pytest.mark.parametrize("mode", ["send", "write"])
def test_a_responder_that_stops_answering_fails_the_requester_with_why(fake, mode):
    fake.faults["receiver"] = ("silent", 10)
    tx, rx = run_pair(mode, 64, 100, timeout=0.3)
    assert isinstance(tx, rdma_rr.Stalled), tx
    assert "no response within 0.3 s in transaction 10" in str(tx)
    # the requester's failure reaches the responder over the control connection
    assert isinstance(rx, rdma_verbs.PeerGone) and "requester: Stalled" in str(rx), rx
