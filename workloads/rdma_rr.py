"""RDMA request/response on one RC QP (pyverbs): `rdma_send_lat` and `rdma_write_lat`.

The transaction is netperf's RR as in workloads/rr.py: a request of Q bytes, its response of R
bytes, `in_flight` outstanding (default 1), bounded by `count` and `duration`, each wait by the
RR timeout. The requester is the `sender` role and times each round trip on its one clock
(workloads/rr_stats.py); the responder is the `receiver` role. Transaction i's request is the
pattern from phase(i), Q bytes, its response the pattern from the same phase, R bytes
(workloads/pattern.py); each side compares what landed in its registered memory with one memcmp.

- send (ib_send_lat's ping-pong): each side keeps `in_flight` receives posted, one slot each;
  a request (SEND) lands in the responder's next slot, the RECV completion says so, and the
  responder re-posts that slot and SENDs the response into the requester's next slot.
- write (ib_write_lat's): each side RDMA WRITEs into the peer's slot of the transaction and
  polls its own slot's last byte in memory until it changes (RC places a WRITE's bytes in
  order, as perftest relies on); then checks the whole slot. Slots start, and go back after
  each check, with POISON in their first and last byte: no pattern byte is 255, so a stale
  slot never passes, a torn one (first byte not yet written) fails.

Sends are signalled every `signal_every` WRs (at most half the send queue); a WR's completion
frees the WRs before it. The requester ends the run with a zero-length SEND_WITH_IMM carrying
END and the transaction count, consumed by one receive the responder keeps posted for it (in
the send mode, any of its slots): no socket byte moves during the run. The TCP control
connection carries the exchange before "ready" (workloads/rdma_verbs.py) and is only
select()ed afterwards to notice a peer that is gone.

Waiting: in the send mode as the case's rdma_wait says (Verbs.poll: events or busy-poll); in
the write mode both sides busy-poll their memory, as ib_write_lat does (it has no event mode),
and check the CQ every SPIN_CQ_EVERY empty reads.
"""

from __future__ import annotations

import os
import socket
import time

from workloads.agent import AgentIO, CpuWindow, buffer_address, now
from workloads.pattern import PERIOD, block
from workloads.rdma_flow import CONTROL_NOTE, EXCHANGE_TIMEOUT, POISON, wait_record
from workloads.rdma_verbs import (
    CONTROL_CHECK_S,
    COUNT_MASK,
    END,
    REGION_CAP,
    Params,
    PeerGone,
    Verbs,
    VerbsError,
    control_closed,
    decode,
    encode,
    imm_of,
    pattern_map,
    peer_gone,
    peer_grace,
    read_line,
    region,
    send_error,
)
from workloads.rr import RRParams, Stalled, params, phases, requester_result, responder_result
from workloads.rr_stats import Recorder
from workloads.sockets import listen_stream

TIMEOUT_S = 10.0            # one response's wait: soft-RoCE under emulation retransmits in 100s of ms
SEND_WR = 1 << 40           # wr_id flag of our SENDs/WRITEs; the low 16 bits: WRs it completes
END_WR = SEND_WR | (1 << 39)
SPIN_CQ_EVERY = 64          # write mode: empty memory reads between CQ polls
SPIN_CLOCK_EVERY = 1024     # ... and between clock reads (deadline, control socket)


def rr_params(cfg: dict) -> tuple[RRParams, Params]:
    """The transaction's shape and the verbs parameters; a ValueError names what is wrong."""
    p = params({"rr_timeout_s": TIMEOUT_S, **cfg}, max_size=REGION_CAP)
    v = Params.from_cfg(cfg)
    if p.in_flight > v.depth:
        raise ValueError(f"in_flight {p.in_flight}: at most rdma_depth ({v.depth}) "
                         "transactions, one send WR each")
    biggest = max(p.request, p.response) * p.in_flight
    if biggest > REGION_CAP:
        raise ValueError(f"{p.in_flight} transactions of {max(p.request, p.response)} B need "
                         f"{biggest} B of registered slots per side; at most {REGION_CAP}")
    return p, v


def signal_every(v: Params) -> int:
    """Signal a send WR at least every half send queue: its completion frees the rest."""
    return max(1, min(v.signal_every, v.depth // 2))


class Link:
    """One side's verbs objects for a request/response run: its receive slots (`slot` bytes
    each, REMOTE_WRITE for the write mode), its send pattern (`send_size` bytes from any
    phase), the QP, and the send-queue accounting."""

    def __init__(self, cfg: dict, v: Params, mode: str, slots: int, slot: int, send_size: int):
        import pyverbs.enums as e
        from pyverbs.wr import SGE
        self.e, self.mode = e, mode
        self.verbs = Verbs(cfg, v)
        self.slots, self.slot = slots, slot
        self.buf = region(slots * slot)
        self.mv = memoryview(self.buf)
        for k in range(slots):
            self.poison(k)
        self.mr = self.verbs.register(self.buf, e.IBV_ACCESS_LOCAL_WRITE
                                      | e.IBV_ACCESS_REMOTE_WRITE)
        self.src = pattern_map(send_size)
        smr = self.verbs.register(self.src, e.IBV_ACCESS_LOCAL_WRITE)
        self.send_sges = [SGE(smr.buf + k, send_size, smr.lkey) for k in range(PERIOD)]
        self.recv_sges = [SGE(self.mr.buf + k * slot, slot, self.mr.lkey) for k in range(slots)]
        self.views = [self.mv[k * slot:(k + 1) * slot] for k in range(slots)]
        # send: a receive per slot (the END consumes one of them); write: one for the END
        self.verbs.make_qp(recv_wrs=slots + 1)
        if mode == "send":
            for k in range(slots):
                self.verbs.post_recv(k, self.recv_sges[k])
        else:
            self.verbs.post_recv(0)
        self.sig = signal_every(v)
        self.depth = v.depth
        self.in_sq = self.since = 0
        self.backlog: list = []       # receive completions met while making room
        self.peer: dict | None = None

    def poison(self, k: int) -> None:
        self.mv[k * self.slot] = POISON
        self.mv[(k + 1) * self.slot - 1] = POISON

    def exchange(self, ctrl: socket.socket, first: bool) -> None:
        """Connection info both ways (`first`: we send first), then RTS."""
        if first:
            ctrl.sendall(encode(self.verbs.info(self.mr)))
        self.peer = decode(read_line(ctrl, EXCHANGE_TIMEOUT))
        self.verbs.connect(self.peer)
        if not first:
            ctrl.sendall(encode(self.verbs.info(self.mr)))

    def check_peer(self, size: int) -> None:
        """write: the peer's slots must hold our messages."""
        if self.mode == "write" and self.peer["length"] < self.slots * size:
            raise ValueError(f"peer offers {self.peer['length']} B of slots, {self.slots} of "
                             f"{size} B need more")

    def absorb(self, wcs) -> None:
        """Send completions free send-queue entries; receive completions wait in the backlog."""
        for wc in wcs:
            if wc.wr_id & SEND_WR:
                self.in_sq -= wc.wr_id & COUNT_MASK
            else:
                self.backlog.append(wc)

    def post(self, k: int, phase: int, size: int, wait) -> None:
        """Message of `phase` into the peer's slot k (SEND into its next receive, or WRITE at
        slot k): signalled every `sig` WRs, after room in the send queue."""
        while self.in_sq >= self.depth:
            self.absorb(wait())
        self.since += 1
        signalled = self.since >= self.sig
        e = self.e
        self.verbs.post_send(SEND_WR | self.since if signalled else 0,
                             e.IBV_WR_SEND if self.mode == "send" else e.IBV_WR_RDMA_WRITE,
                             self.send_sges[phase], signalled=signalled,
                             rdma=(self.peer["rkey"], self.peer["addr"] + k * size)
                             if self.mode == "write" else None)
        self.in_sq += 1
        if signalled:
            self.since = 0

    def post_end(self, transactions: int, wait) -> None:
        """The zero-length SEND_WITH_IMM that ends the responder, and every WR acknowledged."""
        while self.in_sq >= self.depth:
            self.absorb(wait())
        self.verbs.post_send(END_WR | (self.since + 1), self.e.IBV_WR_SEND_WITH_IMM,
                             signalled=True, imm=END | (transactions & COUNT_MASK))
        self.in_sq += 1
        self.since = 0
        while self.in_sq > 0:
            self.absorb(wait())

    def is_end(self, wc) -> bool:
        return bool(wc.wc_flags & self.e.IBV_WC_WITH_IMM) and bool(imm_of(wc) & END)

    def close(self) -> None:
        teardown = self.verbs.close()
        if teardown["errors"]:
            raise RuntimeError(f"verbs teardown: {'; '.join(teardown['errors'])}")

    @property
    def opcode(self) -> str:
        return "SEND" if self.mode == "send" else "RDMA_WRITE"

    def record(self) -> dict:
        v = self.verbs
        return {**v.counters, **(wait_record(v) if self.mode == "send" else
                                 {"wait": "poll", "polls": "its own memory (the slot's last "
                                  f"byte), the CQ every {SPIN_CQ_EVERY} empty reads"}),
                "spin_s": round(v.counters["spin_s"], 6), "slots": self.slots,
                "slot_bytes": self.slot, "signal_every": self.sig, "depth": self.depth,
                "inline": v.params.inline,
                "opcode": self.opcode,
                "end": "zero-length SEND_WITH_IMM (END)", "control": CONTROL_NOTE,
                "rdma_device": v.device, "gid_index": v.gid_index}


class MemoryWait:
    """The write mode's wait: spin on a slot's last byte; every SPIN_CQ_EVERY empty reads poll
    the CQ (send completions, the END), every SPIN_CLOCK_EVERY read the clock for the wait's
    limit and, every CONTROL_CHECK_S, whether the peer is gone (select, no data)."""

    def __init__(self, link: Link, ctrl: socket.socket, on_timeout):
        self.link, self.ctrl, self.on_timeout = link, ctrl, on_timeout
        self.cq = link.verbs.cq
        self.counters = link.verbs.counters

    def until_written(self, idx: int, limit: float) -> bool:
        """Spin until byte `idx` of our slots is no longer POISON (True), or an END arrived
        (False). Past `limit` (monotonic s): on_timeout() raises."""
        mv, link, cq = self.link.mv, self.link, self.cq
        spins = 0
        spin_from = time.monotonic()
        next_check = spin_from + CONTROL_CHECK_S
        closed_at = None
        try:
            while mv[idx] == POISON:
                spins += 1
                if spins % SPIN_CQ_EVERY:
                    continue
                n, wcs = cq.poll(16)
                if n:
                    self.counters["completions"] += n
                    link.absorb(_ok(wcs))
                # the END may have come while we made room in the send queue, too
                if link.backlog and any(link.is_end(wc) for wc in link.backlog):
                    return False
                if spins % SPIN_CLOCK_EVERY:
                    continue
                t = time.monotonic()
                if t > limit:
                    self.on_timeout()
                if t >= next_check:
                    next_check = t + CONTROL_CHECK_S
                    if closed_at is None:
                        if control_closed(self.ctrl, 0.0)[1]:
                            closed_at = t
                    elif peer_grace(closed_at, t):
                        raise peer_gone()
            return True
        finally:
            self.counters["spin_s"] += time.monotonic() - spin_from

    def completions(self, limit: float) -> list:
        """Completions (for room in the send queue), spinning on the CQ."""
        cq = self.cq
        while True:
            n, wcs = cq.poll(16)
            if n:
                self.counters["completions"] += n
                return _ok(wcs)
            if time.monotonic() > limit:
                self.on_timeout()


def _ok(wcs):
    from workloads.rdma_verbs import _succeeded  # failed completions raise, as in poll()
    return _succeeded(wcs)


def _rdma_fields(link: Link, hw, verified_in: str) -> dict:
    """A side's result fields beside the rr ones: its verbs record and device counters."""
    return {"rdma": {**link.record(), "device_counters": hw, "verified_in": verified_in},
            "rdma_device": link.verbs.device, "gid_index": link.verbs.gid_index}


def _release(link: Link | None, *socks) -> None:
    """The verbs objects (newest first), then the sockets, on every path."""
    try:
        if link is not None:
            link.close()
    finally:
        for s in socks:
            if s is not None:
                s.close()


def receiver(cfg: dict, io: AgentIO, mode: str) -> dict:
    """The responder: answers every request with its response until the requester's END."""
    p, v = rr_params(cfg)
    ctrl = lsock = link = None
    try:
        # Verbs objects and receives first: a device problem is this agent's error, reported
        # before the runner starts the requester.
        link = Link(cfg, v, mode, p.in_flight, p.request, p.response)
        lsock, _ = listen_stream(cfg)
        io.emit("ready", pid=os.getpid(), port=lsock.getsockname()[1],
                buffer_addr=buffer_address(link.buf), rdma_slots=p.in_flight,
                rdma_device=link.verbs.device, gid_index=link.verbs.gid_index)
        lsock.settimeout(float(cfg.get("max_seconds", 600)))
        ctrl, _ = lsock.accept()
        ctrl.settimeout(None)
        lsock.close()
        lsock = None
        link.exchange(ctrl, first=False)
        link.check_peer(p.response)
        cpu = CpuWindow().start()
        link.verbs.counters_start()
        deadline = time.monotonic() + float(cfg.get("max_seconds", 600))
        served = _serve(mode, p, link, ctrl, deadline)
        requests, bad, t_first, t_last, ended = served
        hw = link.verbs.counters_stop()
        return responder_result(p, requests, bad, t_first, t_last, cpu.stop(),
                                buffer_address(link.buf), stream=True, ended_by=ended) | \
            _rdma_fields(link, hw, "the registered receive slots")
    except BaseException as exc:
        send_error(ctrl, f"responder: {type(exc).__name__}: {exc}")
        raise
    finally:
        _release(link, ctrl, lsock)


def _serve(mode: str, p: RRParams, link: Link, ctrl, deadline: float) -> tuple:
    """Requests until the requester's END: send, from RECV completions (the slot re-posted
    once checked); write, written into our next slot (its last byte polled). Each checked in
    its slot, poisoned again, answered with the response of the same phase.
    (requests, bad, first and last request's arrival, what ended it)."""
    verbs, views, sges = link.verbs, link.views, link.recv_sges
    n, q, r = p.in_flight, p.request, p.response
    startswith = block(q).startswith
    phase_of = phases()
    j = bad = 0
    t_first = t_last = None

    def gone():
        raise VerbsError("no request and no END before the agent's deadline")
    mem = MemoryWait(link, ctrl, gone)

    def wait():
        return mem.completions(deadline) if mode == "write" else verbs.poll(ctrl, deadline)

    def request() -> tuple[int, bool] | None:
        """The next request's slot and whether its length is right; None at the END."""
        if mode == "write":
            k = j % n
            return (k, True) if mem.until_written(k * q + q - 1, deadline) else None
        while not link.backlog:
            link.absorb(wait())
        wc = link.backlog.pop(0)
        if wc.byte_len == 0 and link.is_end(wc):
            return None
        return wc.wr_id, wc.byte_len == q

    while True:
        got = request()
        if got is None:
            return j, bad, t_first, t_last, "the requester's END"
        k, whole = got
        t_last = now()
        if t_first is None:
            t_first = t_last
        ph = phase_of(j)
        if not whole or not startswith(views[k], ph):
            bad += 1
        link.poison(k)
        if mode == "send":
            verbs.post_recv(k, sges[k])
        link.post(k, ph, r, wait)
        j += 1


def sender(cfg: dict, io: AgentIO, mode: str) -> dict:
    """The requester: up to `in_flight` requests outstanding, each response verified in our
    registered slots and timed on this process's one clock."""
    p, v = rr_params(cfg)
    ctrl = link = None
    try:
        link = Link(cfg, v, mode, p.in_flight, p.response, p.request)
        ctrl = socket.create_connection(tuple(cfg["target"]), timeout=EXCHANGE_TIMEOUT)
        ctrl.settimeout(None)
        link.exchange(ctrl, first=True)
        link.check_peer(p.request)
        io.emit("ready", pid=os.getpid(), buffer_addr=buffer_address(link.src),
                rdma_device=link.verbs.device, gid_index=link.verbs.gid_index)
        io.wait_cmd("go")
        cpu, rec, t_start = CpuWindow().start(), Recorder(), now()
        link.verbs.counters_start()
        try:
            done, bad = _request(mode, p, link, ctrl, rec, t_start)
        finally:
            t_end = now()
        cpu_used = cpu.stop()
        hw = link.verbs.counters_stop()
        return requester_result(p, rec, done, done - bad, bad, t_start, t_end, cpu_used,
                                buffer_address(link.src), opcode=link.opcode) | \
            _rdma_fields(link, hw, "the registered response slots")
    except BaseException as exc:
        send_error(ctrl, f"requester: {type(exc).__name__}: {exc}")
        raise
    finally:
        _release(link, ctrl)


def _stalled(p: RRParams, done: list):
    def raise_stalled():
        raise Stalled(f"no response within {p.timeout:g} s in transaction {done[0]}: the "
                      "responder stopped answering")
    return raise_stalled


def _request(mode: str, p: RRParams, link: Link, ctrl, rec: Recorder, t_start: float) -> tuple:
    """Transactions until the count or the deadline: (done, bad responses). Send: a response
    is the next RECV completion (its slot re-posted once checked); write: the next slot's last
    byte, polled in memory. Either way it is checked in its slot, timed, and its slot
    poisoned again."""
    verbs, views, sges = link.verbs, link.views, link.recv_sges
    n, r, q = p.in_flight, p.response, p.request
    startswith = block(r).startswith
    clock, append = time.monotonic_ns, rec.append
    limit, deadline = p.bounds(t_start)
    t_sent = [0] * n
    sent = done = bad = 0
    phase_q, phase_r = phases(), phases()
    where = [0]
    stalled = _stalled(p, where)
    mem = MemoryWait(link, ctrl, stalled)

    def wait():
        if mode == "write":
            return mem.completions(time.monotonic() + p.timeout)
        try:
            return verbs.poll(ctrl, time.monotonic() + p.timeout)
        except VerbsError as exc:
            if "deadline" in str(exc):
                stalled()
            raise

    def response() -> tuple[int, bool]:
        """The next response's slot, and whether its length is right."""
        if mode == "write":
            k = done % n
            if not mem.until_written(k * r + r - 1, time.monotonic() + p.timeout):
                raise PeerGone("the responder sent END in the middle of the run")
            return k, True
        while not link.backlog:
            link.absorb(wait())
        wc = link.backlog.pop(0)
        return wc.wr_id, wc.byte_len == r

    def request() -> None:
        nonlocal sent
        t_sent[sent % n] = clock()
        link.post(sent % n, phase_q(sent), q, wait)
        sent += 1

    while sent < n and sent < limit and clock() < deadline:
        request()
    while done < sent:
        where[0] = done
        k, whole = response()
        t1 = clock()
        if not whole or not startswith(views[k], phase_r(done)):
            bad += 1
        append(t1 - t_sent[done % n])
        link.poison(k)
        if mode == "send":
            verbs.post_recv(k, sges[k])
        done += 1
        if rec.due() and done == sent:
            rec.fold()        # nothing outstanding: no transaction's time includes it
        if sent < limit and t1 < deadline:
            request()
    link.post_end(done, wait)
    return done, bad
