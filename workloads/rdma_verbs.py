"""RDMA verbs plumbing shared by `rdma_write` and `rdma_send` (Debian's python3-pyverbs).

One RC QP per agent, brought to RTS after an out-of-band exchange over a TCP control
connection, as perftest does: each side sends one JSON line (QPN, PSN, GID, LID, rkey, address,
length, MTU) and reads the other's. The exchange ends before the agent says "ready", so the
tracer (attached after both are ready) sees no socket copy of it; during the data path the
control socket is only select()ed (no data moves) to notice a peer that is gone, and carries one
line only if an agent fails ({"error": ...}), so the peer reports why.

Flow (both cases): the receiver offers `slots` message slots; the sender keeps at most that many
messages un-credited and at most `depth` WRs in its send queue, signals every `signal_every`-th
WR (and the last of each window), and closes each window of `signal_every` messages with
immediate data (WRITE_WITH_IMM / SEND_WITH_IMM: count, END flag on the last). The receiver
verifies every message in its registered memory (workloads/pattern.py), re-posts receives and
returns a credit per window with a zero-length SEND_WITH_IMM.

Every verbs object is closed in reverse order of creation on every path (`Verbs.close`).
"""

from __future__ import annotations

import json
import mmap
import os
import random
import select
import socket
import time
from dataclasses import dataclass

PROTO = 1
END = 1 << 31                   # immediate data: this window is the last one
COUNT_MASK = 0xFFFF
REGION_CAP = 64 << 20           # the receiver's slots: at most this many bytes
SPIN_POLLS = 16                 # empty polls between clock reads while spinning
SPIN_MAX_S = 0.002              # how long an agent spins on an empty CQ (see spin_seconds)
SLEEP_S = 0.0001                # without a channel: first sleep, doubles up to SLEEP_MAX_S
SLEEP_MAX_S = 0.004
EVENT_WAIT_MAX_S = 0.25         # with a channel: wake at least this often to check the deadline
# How an agent waits for completions (the suite's rdma_wait): "events" spins up to SPIN_S, then
# sleeps on the CQ's completion channel; "poll" busy-polls without ever sleeping, as perftest
# does without -e.
WAITS = ("events", "poll")
CONTROL_CHECK_S = 0.01          # "poll": the deadline and the control socket checked this often
CHANNEL_LINK = "anon_inode:[infinibandevent]"
SYSFS_IB = "/sys/class/infiniband"
PEER_GRACE_S = 2.0
FIELDS = {"proto": int, "qpn": int, "psn": int, "gid": (str, type(None)), "lid": int,
          "rkey": int, "addr": int, "length": int, "mtu": int}


class PeerGone(RuntimeError):
    """The other agent closed the control connection (died, or failed and said why)."""


class VerbsError(RuntimeError):
    """A verbs call or completion failed; the message names the object and the fix."""


# -- out-of-band exchange (pure: tested without RDMA) --------------------------------------

def encode(info: dict) -> bytes:
    missing = [k for k in FIELDS if k not in info]
    if missing:
        raise ValueError(f"connection info lacks {', '.join(missing)}")
    return (json.dumps({k: info[k] for k in FIELDS}, separators=(",", ":")) + "\n").encode()


def decode(line: bytes) -> dict:
    """One peer's connection info, checked: a wrong or foreign peer is one clear error."""
    try:
        doc = json.loads(line.decode())
    except (UnicodeDecodeError, ValueError):
        raise ValueError(f"peer sent no connection info: {line[:80]!r}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"peer sent no connection info: {line[:80]!r}")
    if "error" in doc:
        raise PeerGone(f"peer failed: {doc['error']}")
    for k, t in FIELDS.items():
        if k not in doc or not isinstance(doc[k], t) or isinstance(doc[k], bool):
            raise ValueError(f"peer connection info: field {k!r} missing or not {t}")
    if doc["proto"] != PROTO:
        raise ValueError(f"peer speaks exchange protocol {doc['proto']}, we speak {PROTO}")
    if not 0 < doc["qpn"] < 1 << 24 or not 0 <= doc["psn"] < 1 << 24:
        raise ValueError(f"peer QPN/PSN out of range: {doc['qpn']}/{doc['psn']}")
    if doc["gid"] is not None:
        parts = doc["gid"].split(":")
        if len(parts) != 8 or not all(len(p) == 4 for p in parts):
            raise ValueError(f"peer GID {doc['gid']!r} is not a GID")
        int(doc["gid"].replace(":", ""), 16)
    return doc


def read_line(sock: socket.socket, timeout: float, limit: int = 4096) -> bytes:
    """One line from the control connection, bounded in size and time."""
    sock.settimeout(timeout)
    buf = b""
    try:
        while not buf.endswith(b"\n"):
            chunk = sock.recv(limit - len(buf))
            if not chunk:
                raise PeerGone("peer closed the control connection"
                               + (f" after {buf[:80]!r}" if buf else ""))
            buf += chunk
            if len(buf) >= limit:
                raise ValueError("peer's connection info is too long")
    except TimeoutError:
        raise PeerGone(f"peer sent nothing on the control connection within {timeout:.0f} s") \
            from None
    finally:
        sock.settimeout(None)
    return buf


def send_error(sock: socket.socket | None, message: str) -> None:
    """Tell the peer why we stop (best effort): it then fails with our reason, not a timeout."""
    if sock is None:
        return
    try:
        sock.sendall((json.dumps({"error": message[:300]}) + "\n").encode())
    except OSError:
        pass


def check_control(sock: socket.socket, timeout: float, also: tuple = ()) -> list:
    """Sleep up to `timeout` on the control socket (and the fds in `also`); raise PeerGone if
    the peer closed it or failed, else return which of `also` are readable. No data moves on
    the control socket in the normal case (select only)."""
    r, _, _ = select.select([sock, *also], [], [], timeout)
    if sock not in r:
        return r
    try:
        data = sock.recv(4096)
    except OSError as exc:           # reset by a killed peer
        raise PeerGone(f"peer agent is gone (control connection: {exc})") from None
    if not data:
        raise PeerGone("peer agent is gone (control connection closed)")
    try:
        msg = json.loads(data.decode().splitlines()[0])
    except (ValueError, IndexError, UnicodeDecodeError):
        msg = {}
    raise PeerGone(f"peer failed: {msg.get('error', data[:120])}")


def control_closed(sock: socket.socket, timeout: float, also: tuple = ()) -> tuple[list, bool]:
    """check_control for a CQ wait: (readable fds of `also`, whether the peer closed the
    control connection). A closed peer is not yet an error: what it sent may still be on its
    way into our CQ (see peer_grace). A failed peer raises."""
    try:
        return check_control(sock, timeout, also), False
    except PeerGone as exc:
        if "failed" in str(exc):
            raise
        return [], True


def peer_grace(closed_at: float, t: float) -> bool:
    """Whether the grace after the peer closed is over (the caller then raises peer_gone())."""
    return t - closed_at > PEER_GRACE_S


def peer_gone() -> PeerGone:
    return PeerGone("peer agent is gone (control connection closed) and no completion came "
                    f"within {PEER_GRACE_S:.0f} s")


def plan_slots(size: int, depth: int, signal_every: int) -> tuple[int, int]:
    """(slots, window): the receiver's message slots (2 x depth, at most REGION_CAP bytes, at
    least 2) and messages per window (signal_every, at most half the slots)."""
    slots = max(2, min(2 * depth, REGION_CAP // max(size, 1)))
    return slots, max(1, min(signal_every, slots // 2, depth))


# -- verbs objects ----------------------------------------------------------------------------

def _e():
    import pyverbs.enums as e
    return e


def spin_seconds(cpus: int | None) -> float:
    """How long to spin on an empty CQ before sleeping on its channel. perftest busy-polls
    without end; a sleep per message costs a wake-up and three system calls (select,
    get_cq_event, req_notify), and under the lab's TCG a 64 KiB soft-RoCE message takes
    ~1.7 ms. On a one-CPU machine the spin would take that CPU from soft-RoCE's own transport
    work, so there the agent only polls a few times and sleeps."""
    return SPIN_MAX_S if (cpus or 1) > 1 else 0.0


SPIN_S = spin_seconds(os.cpu_count())


def new_counters() -> dict:
    """An agent's verbs counters. `spin_s` and `sleeps` are measured in poll(): seconds spent
    polling an empty CQ (every spin, up to SPIN_S each) and waits in select() or a nap."""
    return {"wrs_posted": 0, "recvs_posted": 0, "completions": 0, "signalled": 0,
            "credits": 0, "spin_s": 0.0, "sleeps": 0}


@dataclass
class Params:
    size: int
    depth: int = 128
    signal_every: int = 16
    inline: int = 0
    wait: str = "events"

    @classmethod
    def from_cfg(cls, cfg: dict) -> Params:
        p = cls(int(cfg["size"]), int(cfg.get("rdma_depth") or 128),
                int(cfg.get("rdma_signal_every") or 16), int(cfg.get("rdma_inline") or 0),
                str(cfg.get("rdma_wait") or "events"))
        if p.depth < 1 or p.signal_every < 1 or p.inline < 0:
            raise ValueError(f"rdma depth {p.depth}, signal_every {p.signal_every}, inline "
                             f"{p.inline}: depth and signal_every must be >= 1, inline >= 0")
        if p.wait not in WAITS:
            raise ValueError(f"rdma_wait {p.wait!r}: must be one of {', '.join(WAITS)}")
        return p


class Verbs:
    """Device context, PD, MRs, one CQ (with its completion channel) and one RC QP; `close()`
    releases all, newest first."""

    channel = None
    channel_fd = None           # None: no channel found, poll() naps instead
    wait = "events"             # Params.wait: how poll() waits

    def __init__(self, cfg: dict, params: Params):
        from pyverbs.device import Context, get_device_list
        from pyverbs.pd import PD
        e = _e()
        self._objs: list = []
        self._wrs: dict[int, object] = {}      # SendWR per SGE (post_send), reused
        self._recv_wrs: dict[tuple[int, int], object] = {}
        self._keep_sges: list = []
        self.params = params
        self.wait = params.wait
        self.counters = new_counters()
        names = [d.name.decode() for d in get_device_list()]
        if not names:
            raise VerbsError("no RDMA device (ibv_get_device_list is empty)")
        want = cfg.get("rdma_device")
        self.port = int(cfg.get("rdma_port") or 1)
        if want and want not in names:
            raise VerbsError(f"RDMA device {want} not in ibv_get_device_list ({', '.join(names)})")
        self.device = want or self._first_active(names)
        self.ctx = self._keep(Context(name=self.device))
        pattr = self.ctx.query_port(self.port)
        if pattr.state != e.IBV_PORT_ACTIVE:
            raise VerbsError(f"{self.device} port {self.port} is not ACTIVE (state {pattr.state})")
        self.mtu = int(pattr.active_mtu)
        self.lid = int(pattr.lid)
        self.ethernet = pattr.link_layer == e.IBV_LINK_LAYER_ETHERNET
        gi = cfg.get("rdma_gid_index")
        self.gid_index = int(gi) if gi is not None else (self._roce_v2_gid(pattr.gid_tbl_len)
                                                         if self.ethernet else 0)
        self.gid = str(self.ctx.query_gid(self.port, self.gid_index).gid) if self.ethernet \
            else None
        self.pd = self._keep(PD(self.ctx))
        self.psn = random.randrange(1 << 24)

    def _keep(self, obj):
        self._objs.append(obj)
        return obj

    def _first_active(self, names: list[str]) -> str:
        from pyverbs.device import Context
        e = _e()
        for n in names:
            ctx = Context(name=n)
            try:
                if ctx.query_port(self.port).state == e.IBV_PORT_ACTIVE:
                    return n
            finally:
                ctx.close()
        raise VerbsError(f"no RDMA device has an ACTIVE port {self.port} ({', '.join(names)})")

    def _roce_v2_gid(self, table_len: int) -> int:
        """First IPv4-mapped RoCE v2 GID (else first RoCE v2): never a hard-coded index."""
        e = _e()
        v2 = []
        for i in range(table_len):
            try:
                entry = self.ctx.query_gid_ex(self.port, i)     # ibv_gid_type, not sysfs's
                if entry.gid_type != e.IBV_GID_TYPE_ROCE_V2:
                    continue
                g = str(self.ctx.query_gid(self.port, i).gid)
            except Exception:      # noqa: BLE001 - empty slots fail to query
                continue
            if g.replace(":", "").strip("0"):
                v2.append((i, g))
        for i, g in v2:
            if g.startswith("0000:0000:0000:0000:0000:ffff:"):
                return i
        if v2:
            return v2[0][0]
        raise VerbsError(f"{self.device} port {self.port} has no RoCE v2 GID (does its netdev "
                         "have an address?)")

    def register(self, buf, access: int):
        """An MR on our own buffer (an mmap): the pattern buffer or the receive slots."""
        import ctypes

        from pyverbs.mr import MR
        from pyverbs.pyverbs_error import PyverbsRDMAError
        addr = ctypes.addressof((ctypes.c_char * len(buf)).from_buffer(buf))
        try:
            return self._keep(MR(self.pd, len(buf), access, address=addr))
        except PyverbsRDMAError as exc:
            import resource
            soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
            limit = "unlimited" if soft == resource.RLIM_INFINITY else f"{soft} B"
            raise VerbsError(f"MR registration of {len(buf)} B failed: {exc} (RLIMIT_MEMLOCK "
                             f"{limit}; fix: `ulimit -l unlimited` or memlock in limits.d)") \
                from None

    def make_qp(self, recv_wrs: int) -> None:
        from pyverbs.cq import CQ, CompChannel
        from pyverbs.qp import QP, QPCap, QPInitAttr
        e = _e()
        p = self.params
        # A completion channel lets an idle agent sleep until its CQ has work instead of
        # polling: where the kernel does the transport (soft-RoCE) a polling peer takes CPU
        # from it. pyverbs does not expose the channel's fd: it is the one new fd the channel
        # opened (an "infinibandevent" anon inode). Not found: we poll and nap as before.
        before = _event_fds()
        self.channel = self._keep(CompChannel(self.ctx))
        new = _event_fds() - before
        self.channel_fd = new.pop() if len(new) == 1 else None
        self.cq = self._keep(CQ(self.ctx, p.depth + recv_wrs + 16, None,
                                self.channel if self.channel_fd is not None else None, 0))
        cap = QPCap(max_send_wr=p.depth, max_recv_wr=recv_wrs, max_send_sge=1, max_recv_sge=1,
                    max_inline_data=p.inline)
        try:
            self.qp = self._keep(QP(self.pd, QPInitAttr(qp_type=e.IBV_QPT_RC, scq=self.cq,
                                                        rcq=self.cq, cap=cap, sq_sig_all=0)))
        except Exception as exc:   # noqa: BLE001 - pyverbs raises its own error types
            raise VerbsError(f"creating an RC QP (send {p.depth}, recv {recv_wrs}, inline "
                             f"{p.inline}) failed: {exc}") from None
        # RESET -> INIT now: receives may be posted only from INIT on (before the exchange).
        self.attr = self._attr()
        try:
            self.qp.to_init(self.attr)
        except Exception as exc:   # noqa: BLE001
            raise VerbsError(f"moving the QP to INIT failed: {exc}") from None

    def _attr(self):
        from pyverbs.qp import QPAttr
        e = _e()
        attr = QPAttr(qp_state=e.IBV_QPS_INIT, cur_qp_state=e.IBV_QPS_RESET)
        attr.pkey_index = 0
        attr.port_num = self.port
        attr.qp_access_flags = (e.IBV_ACCESS_LOCAL_WRITE | e.IBV_ACCESS_REMOTE_WRITE)
        return attr

    def info(self, mr=None) -> dict:
        return {"proto": PROTO, "qpn": self.qp.qp_num, "psn": self.psn, "gid": self.gid,
                "lid": self.lid, "rkey": mr.rkey if mr else 0, "addr": mr.buf if mr else 0,
                "length": mr.length if mr else 0, "mtu": self.mtu}

    def connect(self, peer: dict) -> None:
        """INIT -> RTR -> RTS with the peer's QPN, PSN and GID (or LID)."""
        from pyverbs.addr import GID, AHAttr, GlobalRoute
        attr = self.attr
        attr.path_mtu = min(self.mtu, int(peer["mtu"]))
        attr.dest_qp_num = peer["qpn"]
        attr.rq_psn = peer["psn"]
        attr.max_dest_rd_atomic = 1
        attr.min_rnr_timer = 1
        if self.ethernet:
            gr = GlobalRoute(dgid=GID(peer["gid"]), sgid_index=self.gid_index, hop_limit=64)
            attr.ah_attr = AHAttr(gr=gr, is_global=1, port_num=self.port)
        else:
            attr.ah_attr = AHAttr(dlid=peer["lid"], is_global=0, port_num=self.port)
        attr.timeout = 14
        attr.retry_cnt = 7
        attr.rnr_retry = 7
        attr.sq_psn = self.psn
        attr.max_rd_atomic = 1
        try:
            self.qp.to_rtr(attr)
            self.qp.to_rts(attr)
        except Exception as exc:   # noqa: BLE001
            raise VerbsError(f"bringing the QP to RTS failed: {exc}") from None

    # -- data path helpers ---------------------------------------------------------------
    def post_recv(self, wr_id: int, sge=None) -> None:
        """Like post_send, one RecvWR per (wr_id, SGE) is built once and posted again."""
        key = (wr_id, id(sge))
        wr = self._recv_wrs.get(key)
        if wr is None:
            from pyverbs.wr import RecvWR
            wr = RecvWR(wr_id=wr_id, num_sge=1, sg=[sge or _no_sge()])
            if sge is None:
                wr.num_sge = 0      # pyverbs wants an SGE object; a zero-length WR has none
            self._recv_wrs[key] = wr
            self._keep_sges.append(sge)
        self.qp.post_recv(wr)
        self.counters["recvs_posted"] += 1

    def post_send(self, wr_id: int, opcode: int, sge=None, signalled: bool = False,
                  imm: int | None = None, rdma: tuple[int, int] | None = None) -> None:
        """One WR per ibv_post_send, as perftest posts by default. The SendWR for each SGE
        is built once and its fields set per post (the provider copies the WR into the send
        queue at post time): building one per message cost more than the post itself under
        the lab's emulation at 4 KiB."""
        e = _e()
        flags = e.IBV_SEND_SIGNALED if signalled else 0
        if sge is not None and self.params.inline and sge.length <= self.params.inline:
            flags |= e.IBV_SEND_INLINE
        wr = self._wrs.get(id(sge))
        if wr is None:
            from pyverbs.wr import SendWR
            wr = SendWR(wr_id=0, opcode=opcode, num_sge=1, sg=[sge or _no_sge()], send_flags=0)
            if sge is None:
                wr.num_sge = 0
            self._wrs[id(sge)] = wr
            self._keep_sges.append(sge)        # its id() stays this SGE's while we hold it
        wr.wr_id = wr_id
        wr.opcode = opcode
        wr.send_flags = flags
        wr.imm_data = socket.htonl(imm) if imm is not None else 0
        if rdma:
            wr.set_wr_rdma(rdma[0], rdma[1])
        self.qp.post_send(wr)
        self.counters["wrs_posted"] += 1
        self.counters["signalled"] += int(signalled)

    def poll(self, ctrl: socket.socket, deadline: float, max_entries: int = 16) -> list:
        """Completions, waiting for at least one: spin SPIN_S, then sleep until the CQ's
        completion channel fires (or, without one, in growing naps), in select() together
        with the control socket, so a peer that is gone or failed ends the wait. Failed
        completions raise. With wait "poll": busy_poll()."""
        if self.wait == "poll":
            return self.busy_poll(ctrl, deadline, max_entries)
        spinning, spins, spin_from, spin_until = True, 0, 0.0, 0.0
        counters = self.counters
        nap = SLEEP_S
        closed_at = None
        armed = False
        while True:
            n, wcs = self.cq.poll(max_entries)
            if n:
                counters["completions"] += n
                if spinning and spins:   # the spin that ended here, measured
                    counters["spin_s"] += time.monotonic() - spin_from
                return _succeeded(wcs)
            if spinning:        # the clock every SPIN_POLLS empty polls, for SPIN_S
                spins += 1
                if spins == 1:  # the spin's start: its measured length goes in spin_s
                    spin_from = time.monotonic()
                    spin_until = spin_from + SPIN_S
                if spins % SPIN_POLLS:
                    continue
                t = time.monotonic()
                if t < spin_until:
                    continue
                spinning = False
                counters["spin_s"] += t - spin_from
            t = time.monotonic()
            if t > deadline:
                raise VerbsError("no completion before the agent's deadline")
            if closed_at is not None:
                if peer_grace(closed_at, t):
                    raise peer_gone()
                counters["sleeps"] += 1
                time.sleep(SLEEP_S)
                continue
            if self.channel_fd is not None and not armed:
                # Arm, then poll once more: a completion that came before the arming
                # raises no event.
                self.cq.req_notify()
                armed = True
                continue
            counters["sleeps"] += 1     # one wait in select(), however it ends
            if self.channel_fd is None:
                _, closed = control_closed(ctrl, nap)
                if not closed:
                    nap = min(nap * 2, SLEEP_MAX_S)
            else:
                ready, closed = control_closed(
                    ctrl, min(EVENT_WAIT_MAX_S, max(deadline - t, 0.0)), (self.channel_fd,))
                if ready:
                    self.channel.get_cq_event(self.cq)      # readable: does not block
                    self.cq.ack_events(1)                   # every event acked: destroy waits
                    self.counters["cq_events"] = self.counters.get("cq_events", 0) + 1
                    armed = False
            if closed:
                closed_at = t

    def busy_poll(self, ctrl: socket.socket, deadline: float, max_entries: int = 16) -> list:
        """Completions, polling the CQ until one comes and never sleeping (perftest without
        -e): no arming, no event, no nap. Still bounded: every CONTROL_CHECK_S (the clock read
        every SPIN_POLLS empty polls) the deadline is checked and the control socket select()ed
        with a zero timeout, so a peer that is gone or failed ends the wait. `spin_s` counts
        all of it; `control_checks` the selects (system calls perftest does not make)."""
        counters = self.counters
        spins, spin_from, next_check = 0, 0.0, 0.0
        closed_at = None
        while True:
            n, wcs = self.cq.poll(max_entries)
            if n:
                counters["completions"] += n
                if spins:
                    counters["spin_s"] += time.monotonic() - spin_from
                return _succeeded(wcs)
            spins += 1
            if spins == 1:
                spin_from = time.monotonic()
                next_check = spin_from + CONTROL_CHECK_S
            if spins % SPIN_POLLS:
                continue
            t = time.monotonic()
            if t < next_check:
                continue
            next_check = t + CONTROL_CHECK_S
            if t > deadline:
                counters["spin_s"] += t - spin_from
                raise VerbsError("no completion before the agent's deadline")
            if closed_at is not None:
                if peer_grace(closed_at, t):
                    counters["spin_s"] += t - spin_from
                    raise peer_gone()
                continue
            counters["control_checks"] = counters.get("control_checks", 0) + 1
            if control_closed(ctrl, 0.0)[1]:
                closed_at = t

    def counters_start(self) -> None:
        self._hw0 = device_counters(self.device, self.port)

    def counters_stop(self) -> dict | None:
        return counters_delta(getattr(self, "_hw0", None),
                              device_counters(self.device, self.port), self.device, self.port)

    def close(self) -> dict:
        """Every verbs object we created, newest first (QP, CQ, MRs, PD, context)."""
        closed, errors = 0, []
        while self._objs:
            obj = self._objs.pop()
            try:
                obj.close()
                closed += 1
            except Exception as exc:   # noqa: BLE001 - keep closing the rest
                errors.append(f"{type(obj).__name__}: {exc}")
        return {"closed": closed, "errors": errors}


def device_counters(device: str, port: int, root: str = SYSFS_IB) -> dict[str, int] | None:
    """The port's hw_counters (rxe and most NICs have them), or None where there are none."""
    d = f"{root}/{device}/ports/{port}/hw_counters"
    try:
        names = os.listdir(d)
    except OSError:
        return None
    out = {}
    for name in names:
        try:
            with open(f"{d}/{name}") as f:
                out[name] = int(f.read().split()[0])
        except (OSError, ValueError, IndexError):     # unreadable or not one number
            continue
    return out


def counters_delta(before: dict | None, after: dict | None, device: str, port: int,
                   over: str = "this agent's data path") -> dict | None:
    """What changed on the port `over` a window; device-wide, so on one node it includes the
    peer agent's QP (and anything else using the device). `retransmits`: timeouts that resent
    a window (completer_retry_err); `duplicates`: what the responder then saw twice."""
    if before is None or after is None:
        return None
    delta = {k: after[k] - before[k] for k in sorted(after) if k in before
             and after[k] != before[k]}
    return {"scope": f"{device} port {port}, every QP on it, over {over}",
            "delta": delta,
            "retransmits": delta.get("completer_retry_err", 0),
            "duplicates": delta.get("duplicate_request", 0)}


def _event_fds() -> set[int]:
    """This process's open completion-channel fds (anon inodes named CHANNEL_LINK)."""
    found = set()
    for name in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{name}") == CHANNEL_LINK:
                found.add(int(name))
        except OSError:          # closed since listdir (the listing's own fd among them)
            pass
    return found


def _succeeded(wcs: list) -> list:
    """The completions, or VerbsError at the first that failed (the QP is then unusable)."""
    ok = _e().IBV_WC_SUCCESS
    for wc in wcs:
        if wc.status != ok:
            raise VerbsError(f"completion error: status {wc.status} ({_wc_status(wc.status)}), "
                             f"opcode {wc.opcode}, wr {wc.wr_id}: the QP is in the error state")
    return wcs


def _no_sge():
    from pyverbs.wr import SGE
    return SGE(0, 0, 0)


def _wc_status(status: int) -> str:
    try:
        from pyverbs.enums import ibv_wc_status
        return ibv_wc_status(status).name
    except Exception:   # noqa: BLE001
        return "?"


def imm_of(wc) -> int:
    return socket.ntohl(wc.imm_data)


def pattern_map(size: int):
    """The sender's pattern buffer in page-aligned memory (registered as one MR): message i
    starts at offset (i * size) % PERIOD of it."""
    from workloads.pattern import block
    data = block(size)
    m = mmap.mmap(-1, len(data))
    m[:] = data
    return m


def region(nbytes: int):
    return mmap.mmap(-1, max(nbytes, mmap.PAGESIZE))


def pid() -> int:
    return os.getpid()
