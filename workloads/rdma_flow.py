"""The two RDMA cases' agents: WRITE with immediate (`rdma_write`) and SEND/RECV (`rdma_send`).

See workloads/rdma_verbs.py for the connection and the credit protocol. Both report, like the
socket workloads, verified bytes on the receiver's clock (t_first / t_last / first_bytes) and
their CPU, plus WRs posted, completions and credits under "rdma".
"""

from __future__ import annotations

import os
import socket
import time

from workloads.agent import AgentIO, CpuWindow, buffer_address, now
from workloads.pattern import PERIOD, StreamVerifier, phase
from workloads.rdma_verbs import (
    COUNT_MASK,
    END,
    SPIN_S,
    Params,
    Verbs,
    decode,
    encode,
    imm_of,
    pattern_map,
    plan_slots,
    read_line,
    region,
    send_error,
)
from workloads.sockets import bound_from, listen_stream

EXCHANGE_TIMEOUT = 30.0
CREDIT_WR = 1 << 40          # wr_id of credit SENDs (receiver) / credit RECVs (sender)
# Where the TCP control connection's socket copies are: all before "ready" (one JSON line each
# way), so a tracer attached after both agents are ready never counts them on the data path.
# Written over a slot's first byte once its message is verified, before the slot goes back to
# the sender: no pattern byte is 255 (PERIOD is 251), so a slot the sender did not rewrite
# fails for certain, even where its stale message has the expected message's phase.
POISON = 0xFF


def wait_record(verbs) -> dict:
    """How this agent waited for completions: `wait` and the limit of one spin (None when it
    busy-polls: it spins until a completion comes)."""
    return {"wait": verbs.wait, "spin_limit_s": SPIN_S if verbs.wait == "events" else None}


def take_slot(verify, mv: memoryview, k: int, size: int, n: int) -> bool:
    """Verify the `n` bytes in slot k as the stream's next message, then poison the slot."""
    ok = verify.check(mv[k * size:k * size + n])
    mv[k * size] = POISON
    return ok


def poison_slots(mv: memoryview, slots: int, size: int) -> None:
    """Before the first receive: a slot nothing was written to fails like a stale one."""
    for k in range(slots):
        mv[k * size] = POISON


CONTROL_NOTE = ("TCP control connection: QPN/PSN/GID/rkey/address exchanged before 'ready', "
                "outside the traced window; during the run only select()ed (no data)")


def receiver(cfg: dict, io: AgentIO, mode: str) -> dict:
    params = Params.from_cfg(cfg)
    size = params.size
    slots, window = plan_slots(size, params.depth, params.signal_every)
    ctrl = verbs = lsock = None
    try:
        # Device, PD, MR, CQ, QP and receives first: a device problem is this agent's error,
        # reported before the runner starts the sender.
        verbs = Verbs(cfg, params)
        e = _enums()
        buf = region(slots * size)
        poison_slots(memoryview(buf), slots, size)
        mr = verbs.register(buf, e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE)
        # WRITE: one (empty) receive per window in flight, the immediate consumes it;
        # SEND: one per slot, into that slot.
        verbs.make_qp(recv_wrs=slots)
        from pyverbs.wr import SGE
        sges = [SGE(mr.buf + k * size, size, mr.lkey) for k in range(slots)]
        for k in range(slots):
            verbs.post_recv(k, sges[k] if mode == "send" else None)
        lsock, _ = listen_stream(cfg)
        io.emit("ready", pid=os.getpid(), port=lsock.getsockname()[1], rdma_slots=slots,
                rdma_window=window, rdma_device=verbs.device, gid_index=verbs.gid_index)
        lsock.settimeout(float(cfg.get("max_seconds", 600)))
        ctrl, _ = lsock.accept()
        ctrl.settimeout(None)
        lsock.close()
        lsock = None
        verbs.connect(decode(read_line(ctrl, EXCHANGE_TIMEOUT)))
        ctrl.sendall(encode(verbs.info(mr)))
        return _receive(cfg, verbs, ctrl, mode, buf, sges, slots, window, size) | \
            {"rdma_device": verbs.device, "gid_index": verbs.gid_index}
    except BaseException as exc:
        send_error(ctrl, f"receiver: {type(exc).__name__}: {exc}")
        raise
    finally:
        teardown = verbs.close() if verbs is not None else None
        if teardown and teardown["errors"]:
            raise RuntimeError(f"verbs teardown: {'; '.join(teardown['errors'])}")
        for s in (ctrl, lsock):
            if s is not None:
                s.close()


def _receive(cfg, verbs: Verbs, ctrl, mode, buf, sges, slots, window, size) -> dict:
    e = _enums()
    mv = memoryview(buf)
    verify = StreamVerifier(size)
    verbs.counters_start()
    cpu = CpuWindow().start()
    deadline = time.monotonic() + float(cfg.get("max_seconds", 600))
    received = 0                 # messages verified
    t_first = t_last = None
    first = 0
    credits_sent = unsignalled = 0
    pending = 0                  # messages verified since the last credit
    done = False
    while not done:
        for wc in verbs.poll(ctrl, deadline):
            if wc.wr_id == CREDIT_WR:          # our credit SENDs completing
                continue
            t = now()
            if wc.opcode == e.IBV_WC_RECV_RDMA_WITH_IMM:       # a WRITE window landed
                imm = imm_of(wc)
                n = imm & COUNT_MASK
                for _ in range(n):
                    take_slot(verify, mv, received % slots, size, size)
                    received += 1
                verbs.post_recv(wc.wr_id)
                pending += n
                last = bool(imm & END)
                got = n * size
            elif wc.opcode == e.IBV_WC_RECV:                    # one SEND landed in a slot
                k = wc.wr_id
                if wc.byte_len:
                    take_slot(verify, mv, k, size, wc.byte_len)
                    received += 1
                    pending += 1
                last = bool(wc.wc_flags & e.IBV_WC_WITH_IMM) and bool(imm_of(wc) & END)
                verbs.post_recv(k, sges[k])
                got = wc.byte_len
            else:
                continue
            if t_first is None:
                t_first, first = t, got    # those bytes arrived at the window's start
            t_last = t
            if last:
                done = True
            elif pending >= window or (mode == "write" and pending):
                # Return the slots: a zero-length SEND_WITH_IMM carrying the count.
                unsignalled += 1
                sig = unsignalled >= max(1, verbs.params.depth // 2)
                if sig:
                    unsignalled = 0
                verbs.post_send(CREDIT_WR, e.IBV_WR_SEND_WITH_IMM, signalled=sig, imm=pending)
                credits_sent += 1
                pending = 0
    cpu_used = cpu.stop()
    hw = verbs.counters_stop()
    good = verify.offset if verify.bad_chunks == 0 else 0
    return {"messages": good // size, "bytes": good, "bytes_seen": verify.offset,
            "bad": verify.bad_chunks, "t_first": t_first, "t_last": t_last, "first_bytes": first,
            "cpu": cpu_used, "buffer_addr": buffer_address(buf), "recv_calls": None,
            "rdma": {**verbs.counters, "credits_sent": credits_sent, "slots": slots,
                     **wait_record(verbs), "spin_s": round(verbs.counters["spin_s"], 6),
                     "device_counters": hw,
                     "mr_bytes": len(buf), "verified_in": "the registered receive region",
                     "control": CONTROL_NOTE}}


def sender(cfg: dict, io: AgentIO, mode: str) -> dict:
    params = Params.from_cfg(cfg)
    size = params.size
    slots, window = plan_slots(size, params.depth, params.signal_every)
    ctrl = verbs = None
    try:
        verbs = Verbs(cfg, params)
        e = _enums()
        src = pattern_map(size)
        mr = verbs.register(src, e.IBV_ACCESS_LOCAL_WRITE)
        ncredit = slots + 1
        verbs.make_qp(recv_wrs=ncredit)
        for _ in range(ncredit):
            verbs.post_recv(CREDIT_WR)
        ctrl = socket.create_connection(tuple(cfg["target"]), timeout=EXCHANGE_TIMEOUT)
        ctrl.settimeout(None)
        ctrl.sendall(encode(verbs.info(mr)))
        peer = decode(read_line(ctrl, EXCHANGE_TIMEOUT))
        verbs.connect(peer)
        if mode == "write" and peer["length"] < slots * size:
            raise ValueError(f"receiver offers {peer['length']} B, {slots} slots of {size} B "
                             "need more")
        io.emit("ready", pid=os.getpid(), buffer_addr=buffer_address(src),
                rdma_device=verbs.device, gid_index=verbs.gid_index)
        io.wait_cmd("go")
        return _send(cfg, verbs, ctrl, mode, src, mr, peer, slots, window, size) | \
            {"rdma_device": verbs.device, "gid_index": verbs.gid_index}
    except BaseException as exc:
        send_error(ctrl, f"sender: {type(exc).__name__}: {exc}")
        raise
    finally:
        teardown = verbs.close() if verbs is not None else None
        if ctrl is not None:
            ctrl.close()
        if teardown and teardown["errors"]:
            raise RuntimeError(f"verbs teardown: {'; '.join(teardown['errors'])}")


def _send(cfg, verbs: Verbs, ctrl, mode, src, mr, peer, slots, window, size) -> dict:
    from pyverbs.wr import SGE
    e = _enums()
    sges = [SGE(mr.buf + k, size, mr.lkey) for k in range(PERIOD)]
    bound = bound_from(cfg)
    deadline = time.monotonic() + float(cfg.get("max_seconds", 600))
    verbs.counters_start()
    cpu = CpuWindow().start()
    posted = credited = 0        # messages posted / slots the receiver returned
    in_sq = 0                    # WRs in the send queue not yet known complete
    since_signal = 0
    last_sent = False
    imm_op = e.IBV_WR_RDMA_WRITE_WITH_IMM if mode == "write" else e.IBV_WR_SEND_WITH_IMM
    plain_op = e.IBV_WR_RDMA_WRITE if mode == "write" else e.IBV_WR_SEND
    credits = 0

    def absorb(wcs) -> None:
        nonlocal credited, in_sq, credits
        for wc in wcs:
            if wc.opcode in (e.IBV_WC_RECV, e.IBV_WC_RECV_RDMA_WITH_IMM):
                credited += imm_of(wc) & COUNT_MASK
                credits += 1
                verbs.post_recv(CREDIT_WR)
            else:                      # a signalled WR: it and all before it are done
                in_sq -= wc.wr_id & 0xFFFF

    while not last_sent:
        n = 0
        while n < window and not last_sent:
            while posted - credited >= slots or in_sq >= verbs.params.depth:
                absorb(verbs.poll(ctrl, deadline))
            k = posted % slots
            last_sent = bound.done(posted + 1)
            end = n == window - 1 or last_sent
            since_signal += 1
            signalled = end or since_signal >= verbs.params.signal_every
            wr_id = since_signal if signalled else 0
            verbs.post_send(wr_id, imm_op if end else plain_op,
                            sges[phase(posted)], signalled=signalled,
                            imm=((n + 1) | (END if last_sent else 0)) if end else None,
                            rdma=(peer["rkey"], peer["addr"] + k * size) if mode == "write"
                            else None)
            in_sq += 1
            if signalled:
                since_signal = 0
            posted += 1
            n += 1
    while in_sq > 0:                   # every WR acknowledged: the data is in the peer's MR
        absorb(verbs.poll(ctrl, deadline))
    t_end = now()
    cpu_used = cpu.stop()
    return {"messages": posted, "bytes": posted * size, "t_start": bound.t_start, "t_end": t_end,
            "cpu": cpu_used, "buffer_addr": buffer_address(src),
            "rdma": {**verbs.counters, "credits_received": credits, "slots": slots,
                     **wait_record(verbs), "spin_s": round(verbs.counters["spin_s"], 6),
                     "device_counters": verbs.counters_stop(),
                     "window": window, "depth": verbs.params.depth,
                     "signal_every": verbs.params.signal_every, "inline": verbs.params.inline,
                     "inline_used": bool(verbs.params.inline and size <= verbs.params.inline),
                     "opcode": "RDMA_WRITE(+IMM per window)" if mode == "write"
                     else "SEND(+IMM per window)", "control": CONTROL_NOTE}}


def _enums():
    import pyverbs.enums as e
    return e
