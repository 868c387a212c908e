"""TCP through io_uring (liburing): which copies remain with each io_uring mode, with a batch
of requests in flight as io_uring is meant to be used.

  io_uring        send through the ring, recv with one multishot recv into provided buffers:
                  the same copies as send()/recv() (COPY#1 + COPY#4); io_uring saves system
                  calls, not copies.
  io_uring_fixed  registered buffers on both sides (io_uring_register_buffers): WRITE_FIXED
                  on the socket from registered pattern buffers, READ_FIXED into registered
                  receive buffers. Still COPY#1 + COPY#4: a registered buffer saves the page
                  pinning/lookup per request, not the copy into or out of the skb.
  io_uring_zc     send_zc_fixed from a registered buffer; the kernel reports per send whether
                  it really avoided the copy (IORING_SEND_ZC_REPORT_USAGE) — on veth and
                  loopback it must copy after all, like MSG_ZEROCOPY. The receiver takes
                  provided buffers with one multishot recv; the receive still copies.

Queue depth N (cfg["queue_depth"], the suite's `queue_depth`, default 32): each submission
carries up to N requests, submitted and reaped with one io_uring_enter
(io_uring_submit_and_wait_timeout). The ring is set up with IORING_SETUP_SINGLE_ISSUER |
DEFER_TASKRUN where the kernel takes them (6.1+), else COOP_TASKRUN, else no flags; the result
says which (`io_uring.setup`).

Order on one TCP socket — why the requests are linked:
  * Two sends in flight on one socket are not ordered: each is tried non-blocking, and one that
    finds the send buffer full waits for POLLOUT and retries; a second send can slip its bytes
    in between (and a MSG_WAITALL send that retries after a partial send interleaves with
    it). So the N sends of a batch are one IOSQE_IO_LINK chain: each starts when the previous
    one completed. A chain ends with its submission (the kernel does not link across
    io_uring_enter calls), so the next batch is submitted when the previous one is reaped.
  * Sends carry MSG_WAITALL: without it a short send completes "successfully" and the chain
    goes on — a hole in the stream. With it the kernel retries a short send itself; a send
    that still ends short (error, signal) fails the link, every later request of the chain
    completes -ECANCELED having moved no byte, and the sender resubmits the remainder first,
    then the cancelled messages, in order.
  * WRITE_FIXED / READ_FIXED on a socket (not a regular file) complete short instead of being
    retried, and a short read or write fails the link the same way: the remainder (sender) or
    nothing (receiver: the cancelled reads read nothing) is resubmitted. A remainder of a
    fixed send goes out from the registered buffer whose pattern phase matches, so it stays a
    fixed-buffer write.
  * N recvs in flight on one socket into N buffers are not ordered either (each waits for
    POLLIN on its own; which one gets the next bytes is a race). The io_uring and io_uring_zc
    receivers therefore use one multishot recv with buffer selection: one request on the
    socket, its completions posted in stream order, each naming the provided buffer (bid) that
    holds its bytes, N buffers in the group. A group that runs dry ends the multishot with
    -ENOBUFS; the receiver gives the consumed buffers back and re-arms, and counts it
    (`enobufs_rearms`). The io_uring_fixed receiver links its N READ_FIXED (above); receiver
    mode "linked" does the same with N plain recvs (recv without MSG_WAITALL: a short recv is
    a success and the chain goes on), verified in chain order — it measured slower than
    multishot here, so no workload uses it by default.
  * Plain and fixed sends carry IOSQE_CQE_SKIP_SUCCESS (all but the last of a chain): a full
    success posts no CQE. A failing one posts its CQE and the kernel then skips the CQEs of the
    rest of the chain (REQ_F_SKIP_LINK_CQES) — they were cancelled. send_zc refuses the flag.

The binding (PyPI liburing 2024.5.3) lacks two things this needed, so the closest supported
path is taken: its io_uring_setup_buf_ring raises MemoryError even on success (and
io_uring_buf_reg has no fields), so the receiver's buffers are *provided buffers*
(IORING_OP_PROVIDE_BUFFERS, the kernel's classic provided-buffer group, used by multishot recv
the same way as a registered buffer ring) and `buffer_ring.kind` says so; its
io_uring_prep_write_fixed/read_fixed take a `bytes`/`bytearray` start, never a slice, so the
fixed sender registers one buffer per pattern phase (251 x size bytes, hence the size cap of
io_uring_fixed, like tcp_zerocopy_receive's aligned source). No plain send/recv with a fixed
buffer (IORING_RECVSEND_FIXED_BUF on IORING_OP_SEND): the binding cannot set it.

No unbounded wait: every wait has a timeout from the agent's deadline (cfg["max_seconds"]);
rings, registered buffers and provided buffers are released on every path (try/finally), and
requests still in flight are cancelled and reaped before their memory can go.
"""

from __future__ import annotations

import errno
import fcntl
import os
import socket
import sys
import time

from workloads.agent import AgentIO, CpuWindow, buffer_address, now
from workloads.pattern import PERIOD, StreamVerifier, block
from workloads.pattern import phase as msg_phase
from workloads.sockets import PatternSource, bound_from, connect_sender, listen_stream, stream_result

MSG_WAITALL = socket.MSG_WAITALL
DEFAULT_QUEUE_DEPTH = 32
# The kernel's IORING_MAX_ENTRIES (io_uring/io_uring.h): io_uring_setup refuses larger rings.
MAX_QUEUE_DEPTH = 32768
# Receive buffers of the provided-buffer group: at most this many bytes in all.
MAX_POOL_BYTES = 64 << 20
# ... and about this many, when buffers are large: the kernel copies into whichever buffer it
# picks next, so a pool far beyond the cache makes every copy and check a cache miss (32 x 64 KiB
# = 2 MiB measured slower than tcp's one hot buffer).
CACHE_POOL_BYTES = 512 << 10
MIN_POOL_BUFFERS = 4


def pool_buffers(depth: int, bs: int) -> int:
    """How many provided buffers of `bs` bytes: the queue depth, capped near the cache (never
    below MIN_POOL_BUFFERS unless the queue depth itself is smaller)."""
    return min(depth, max(MIN_POOL_BUFFERS, CACHE_POOL_BYTES // bs))
IOVEC_MAX = 60       # the binding's iovec() refuses more buffers (its SC_IOV_MAX)
WAIT_SLICE = 0.5     # seconds one io_uring_enter may block (see Ring.submit_wait)
RECV_BATCH_WAIT = 0.001   # a receiver waits this long at most for a fuller batch of CQEs
BGID = 0             # the provided-buffer group: prep helpers set sqe->buf_index (= buf_group) to 0
TAG_RECV = 1 << 40   # user_data of the multishot recv (slots are 1..N, so never 0)
TAG_PROVIDE = 1 << 41


def binding():
    """The liburing module. Its first import in a process runs dynamic_import's importer, which
    rewrites a name cache in liburing/__pycache__ in place (open "w+b") and removes one it
    cannot read: two processes importing it at once fail with FileNotFoundError (both remove
    it) or read a half-written cache. So the import holds a lock on the package directory
    (between our processes) and is retried (against an importer that does not take it)."""
    import importlib
    import importlib.util
    if "liburing" in sys.modules:
        return sys.modules["liburing"]
    spec = importlib.util.find_spec("liburing")     # locates, does not import
    if spec is None or not spec.submodule_search_locations:
        return importlib.import_module("liburing")  # ModuleNotFoundError, as before
    fd = os.open(list(spec.submodule_search_locations)[0], os.O_RDONLY | os.O_DIRECTORY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        for attempt in range(3):
            try:
                return importlib.import_module("liburing")
            except OSError:
                if attempt == 2:
                    raise
                time.sleep(0.05)
    finally:
        os.close(fd)                                 # releases the lock


def constants():
    """The uapi constants, from the binding's enums (its top-level module does not export them);
    the values are those of include/uapi/linux/io_uring.h."""
    binding()
    from liburing.common import __common_define__ as C
    from liburing.queue import __queue_define__ as Q
    from liburing.syscall import __syscall_define__ as S
    return {
        "IOSQE_IO_LINK": int(Q.IOSQE_IO_LINK),                     # 1 << 2
        "IOSQE_BUFFER_SELECT": int(Q.IOSQE_BUFFER_SELECT),         # 1 << 5
        "IOSQE_CQE_SKIP_SUCCESS": int(Q.IOSQE_CQE_SKIP_SUCCESS),   # 1 << 6
        "SINGLE_ISSUER": int(S.IORING_SETUP_SINGLE_ISSUER),        # 1 << 12
        "DEFER_TASKRUN": int(S.IORING_SETUP_DEFER_TASKRUN),        # 1 << 13
        "COOP_TASKRUN": int(S.IORING_SETUP_COOP_TASKRUN),          # 1 << 8
        "CQE_F_BUFFER": int(C.IORING_CQE_F_BUFFER),                # 1 << 0
        "CQE_F_MORE": int(C.IORING_CQE_F_MORE),                    # 1 << 1
        "CQE_F_NOTIF": int(C.IORING_CQE_F_NOTIF),                  # 1 << 3
        "CQE_BUFFER_SHIFT": int(C.IORING_CQE_BUFFER_SHIFT),        # 16
        "SEND_ZC_REPORT_USAGE": int(C.IORING_SEND_ZC_REPORT_USAGE),    # 1 << 3
        "NOTIF_USAGE_ZC_COPIED": int(C.IORING_NOTIF_USAGE_ZC_COPIED),  # 1 << 31
        "ASYNC_CANCEL_ALL": int(C.IORING_ASYNC_CANCEL_ALL),        # 1 << 0
    }


def queue_depth(cfg: dict) -> int:
    n = int(cfg.get("queue_depth") or DEFAULT_QUEUE_DEPTH)
    if not 1 <= n <= MAX_QUEUE_DEPTH:
        raise ValueError(f"queue depth {n}: must be between 1 and {MAX_QUEUE_DEPTH}")
    return n


def _pow2(n: int) -> int:
    return 1 << max(0, (n - 1).bit_length())


class Ring:
    """One io_uring with batches of requests in flight, every wait bounded by `deadline`.

    Owns what it registers: close() cancels and reaps what is still in flight, then
    unregisters buffers and leaves the ring — call it in a finally."""

    SETUPS = (("SINGLE_ISSUER|DEFER_TASKRUN", ("SINGLE_ISSUER", "DEFER_TASKRUN")),
              ("COOP_TASKRUN", ("COOP_TASKRUN",)), ("none", ()))

    def __init__(self, entries: int, deadline: float):
        self.L = L = binding()
        self.K = constants()
        self.deadline = deadline
        self.entries = min(MAX_QUEUE_DEPTH, _pow2(entries))
        self.active = False
        last = None
        for name, flags in self.SETUPS:
            ring = L.io_uring()     # a failed init leaves the object marked active: new one
            try:
                L.io_uring_queue_init(self.entries, ring, sum(self.K[f] for f in flags))
            except OSError as exc:
                last = exc
                if exc.errno == errno.EINVAL:
                    continue        # this kernel lacks the flags: try the next set
                raise OSError(exc.errno, f"io_uring_setup({self.entries}): {exc.strerror}"
                              + (" (kernel.io_uring_disabled?)" if exc.errno == errno.EPERM
                                 else "")) from None
            self.ring, self.setup, self.active = ring, name, True
            break
        else:
            raise OSError(last.errno, f"io_uring_setup: {last.strerror}")
        self.cqes = L.io_uring_cqe()
        self.registered = False
        self.provided: tuple[int, int] | None = None   # (buffers, size) given to the kernel
        self.inflight = 0        # requests submitted whose final CQE was not reaped
        self.enters = 0          # io_uring_enter calls that submitted and/or waited
        self.fd = -1             # the socket: shut down on close() if requests are in flight

    # -- registration ----------------------------------------------------------------------
    def register(self, buffers: list) -> None:
        L = self.L
        try:
            if len(buffers) <= IOVEC_MAX:
                L.io_uring_register_buffers(self.ring, L.iovec(buffers), len(buffers))
            else:
                # The binding's iovec holds at most IOVEC_MAX: a sparse table, filled one by one
                L.io_uring_register_buffers_sparse(self.ring, len(buffers))
                self.registered = True
                for k, b in enumerate(buffers):
                    L.io_uring_register_buffers_update_tag(self.ring, k, L.iovec(b), 0, 1)
        except OSError as exc:
            hint = ""
            if exc.errno in (errno.ENOMEM, errno.EPERM, errno.EFAULT):
                import resource
                soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
                total = sum(len(b) for b in buffers)
                hint = (f": {total} bytes to pin, RLIMIT_MEMLOCK is "
                        f"{'unlimited' if soft == resource.RLIM_INFINITY else soft} bytes "
                        "(raise it with `ulimit -l`, or run as root: CAP_IPC_LOCK)")
            raise OSError(exc.errno, f"io_uring_register_buffers: {exc.strerror}{hint}") from None
        self.registered = True

    # -- submission and completion ---------------------------------------------------------
    def sqe(self):
        s = self.L.io_uring_get_sqe(self.ring)
        if not s:                      # SQ full: hand what is there to the kernel first
            self.enters += 1
            self.L.io_uring_submit(self.ring)
            s = self.L.io_uring_get_sqe(self.ring)
            if not s:
                raise RuntimeError("io_uring submission queue stays full")
        return s

    def submit_wait(self, wait_nr: int, slice_s: float = WAIT_SLICE) -> list[tuple[int, int, int]]:
        """Submit what is queued, wait (bounded) for at least `wait_nr` CQEs, return every CQE
        ready as (user_data, res, flags). A wait that times out with fewer returns what is
        there (at least one): `slice_s` bounds how long fewer than `wait_nr` may be held back.

        The binding holds the GIL while io_uring_enter blocks, so one wait lasts at most
        WAIT_SLICE: the agent's other threads (runner commands, watchdog) get to run."""
        L = self.L
        while True:
            left = self.deadline - now()
            if left <= 0:
                raise TimeoutError("io_uring: no completion before the agent's deadline "
                                   "(max_seconds) with requests in flight")
            self.enters += 1
            try:
                L.io_uring_submit_and_wait_timeout(self.ring, self.cqes, wait_nr,
                                                   L.timespec(min(left, slice_s)))
            except OSError as exc:
                if exc.errno not in (errno.ETIME, errno.EINTR):
                    raise
            out = self.reap()
            if out:
                return out

    def reap(self) -> list[tuple[int, int, int]]:
        """Every CQE ready. One at a time: the binding's io_uring_peek_batch_cqe writes `count`
        pointers into a single-pointer slot (memory corruption for count > 1)."""
        L, cqe, ring, out = self.L, self.cqes, self.ring, []
        peek, seen = L.io_uring_peek_cqe, L.io_uring_cqe_seen
        while peek(ring, cqe) == 0:
            out.append((cqe.user_data, cqe.res, cqe.flags))
            seen(ring, cqe)
        return out

    # -- teardown --------------------------------------------------------------------------
    def close(self) -> None:
        """Cancel what is in flight and reap it (bounded), then release registrations and the
        ring. Safe to call twice and after a failed set-up."""
        if not self.active:
            return
        L = self.L
        try:
            if self.inflight > 0:
                if self.fd >= 0:      # wakes every request waiting on the socket
                    try:
                        with socket.socket(fileno=os.dup(self.fd)) as dup:
                            dup.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                s = L.io_uring_get_sqe(self.ring)
                if s and self.fd >= 0:
                    L.io_uring_prep_cancel_fd(s, self.fd, self.K["ASYNC_CANCEL_ALL"])
                    L.io_uring_sqe_set_data64(s, 1 << 42)
                end = now() + 2.0
                while now() < end:        # reap until nothing more comes (bounded)
                    try:
                        L.io_uring_submit_and_wait_timeout(self.ring, self.cqes, 1,
                                                           L.timespec(0.2))
                    except OSError as exc:
                        if exc.errno == errno.ETIME:
                            break
                    self.reap()
                self.inflight = 0
            if self.provided:
                s = L.io_uring_get_sqe(self.ring)
                if s:
                    L.io_uring_prep_remove_buffers(s, self.provided[0], BGID)
                    L.io_uring_sqe_set_data64(s, 1 << 43)
                    try:
                        L.io_uring_submit_and_wait_timeout(self.ring, self.cqes, 1,
                                                           L.timespec(1.0))
                    except OSError:
                        pass
                    self.reap()
                self.provided = None
            if self.registered:
                try:
                    L.io_uring_unregister_buffers(self.ring)
                except OSError:
                    pass
                self.registered = False
        finally:
            self.active = False
            L.io_uring_queue_exit(self.ring)   # also drops whatever was left registered

    def describe(self, depth: int) -> dict:
        return {"setup": self.setup, "queue_depth": depth, "ring_entries": self.entries,
                "enter_calls": self.enters}


def _deadline(cfg: dict) -> float:
    # A little before the agent's watchdog, so a stuck ring is an error message, not a kill.
    return now() + max(1.0, float(cfg.get("max_seconds", 600)) - 5.0)


# == receiving ================================================================================
def receiver(cfg: dict, io: AgentIO, mode: str = "multishot") -> dict:
    """mode: multishot (recv multishot into provided buffers: io_uring, io_uring_zc), linked
    (N linked recvs), fixed (N linked READ_FIXED into registered buffers: io_uring_fixed)."""
    size = int(cfg["size"])
    depth = queue_depth(cfg)
    lsock, bufs = listen_stream(cfg)
    conn = None
    ring = None
    try:
        ring = Ring(depth + 2, _deadline(cfg))
        if mode == "multishot":
            bs = max(1, min(size, MAX_POOL_BYTES // depth))
            nbufs = pool_buffers(depth, bs)
            pool = bytearray(bs * nbufs)
            slots = None
            addr = buffer_address(pool)
        else:
            slots = [bytearray(size) for _ in range(depth)]
            if mode == "fixed":
                ring.register(slots)
            addr = buffer_address(slots[0])
        io.emit("ready", pid=os.getpid(), port=lsock.getsockname()[1], buffer_addr=addr,
                **bufs)
        conn, _ = lsock.accept()
        lsock.close()
        ring.fd = conn.fileno()
        verify = StreamVerifier(size)
        cpu = CpuWindow().start()
        if mode == "multishot":
            stats = _recv_multishot(ring, conn.fileno(), pool, bs, nbufs, verify)
        else:
            stats = _recv_linked(ring, conn.fileno(), slots, size, verify, fixed=mode == "fixed")
        cpu_used = cpu.stop()
        stats["io_uring"] = {**ring.describe(depth), **stats.pop("io_uring")}
    finally:
        if ring is not None:
            ring.close()
        if conn is not None:
            conn.close()
        lsock.close()
    return stream_result(verify, size, cpu=cpu_used, buffer_addr=addr, **stats)


def _recv_linked(ring: Ring, fd: int, slots: list, size: int, verify, fixed: bool) -> dict:
    """N linked recv (or READ_FIXED) requests per submission, one buffer each, verified in
    chain order; stops at end of stream."""
    L, link = ring.L, ring.K["IOSQE_IO_LINK"]
    views = [memoryview(b) for b in slots]
    n = len(slots)
    recvs = canceled = short = 0
    t_first = t_last = None
    first = 0
    res_by_slot = [0] * n
    prep_recv, prep_read_fixed = L.io_uring_prep_recv, L.io_uring_prep_read_fixed
    set_flags, set_data = L.io_uring_sqe_set_flags, L.io_uring_sqe_set_data64
    check = verify.check
    eof = False
    while not eof:
        for i in range(n):
            s = ring.sqe()
            if fixed:
                prep_read_fixed(s, fd, slots[i], size, 0, i)
            else:
                prep_recv(s, fd, views[i], size, 0)
            if i < n - 1:
                set_flags(s, link)
            set_data(s, i + 1)
        ring.inflight = n
        got = 0
        while got < n:
            for data, res, _flags in ring.submit_wait(n - got):
                res_by_slot[data - 1] = res
                got += 1
        ring.inflight = 0
        t = now()
        for i in range(n):
            res = res_by_slot[i]
            if res > 0:
                if t_first is None:
                    t_first, first = t, res
                t_last = t
                recvs += 1
                if res < size:
                    short += 1
                check(views[i][:res])
            elif res == 0:
                eof = True
                break
            elif res == -errno.ECANCELED:
                canceled += 1     # after a short READ_FIXED ended the chain: read nothing
            else:
                raise OSError(-res, f"io_uring {'read_fixed' if fixed else 'recv'}: "
                              f"{os.strerror(-res)}")
    return {"recv_calls": recvs, "t_first": t_first, "t_last": t_last, "first_bytes": first,
            "io_uring": {"op": "read_fixed" if fixed else "recv", "linked": True,
                         "short": short, "canceled": canceled,
                         "registered_buffers": n if fixed else 0}}


def _recv_multishot(ring: Ring, fd: int, pool: bytearray, bs: int, nbufs: int, verify) -> dict:
    """One multishot recv selecting from a group of `nbufs` provided buffers of `bs` bytes;
    buffers go back to the kernel after verification; -ENOBUFS (group dry) re-arms."""
    L, K = ring.L, ring.K
    mv = memoryview(pool)
    dummy = bytearray(1)     # the binding wants a buffer; with buffer selection it is unused
    skip = K["IOSQE_CQE_SKIP_SUCCESS"]
    f_more, f_buffer, shift = K["CQE_F_MORE"], K["CQE_F_BUFFER"], K["CQE_BUFFER_SHIFT"]
    provide, set_flags, set_data = (L.io_uring_prep_provide_buffers, L.io_uring_sqe_set_flags,
                                    L.io_uring_sqe_set_data64)

    s = ring.sqe()
    provide(s, mv, bs, nbufs, BGID, 0)
    set_data(s, TAG_PROVIDE)
    for _, res, _ in ring.submit_wait(1):
        if res < 0:
            raise OSError(-res, f"io_uring provide_buffers: {os.strerror(-res)}")
    ring.provided = (nbufs, bs)

    def arm():
        s = ring.sqe()
        L.io_uring_prep_recv_multishot(s, fd, dummy, 0, 0)
        set_flags(s, K["IOSQE_BUFFER_SELECT"])
        set_data(s, TAG_RECV)
        ring.inflight = 1

    arm()
    recvs = rearms = enobufs = 0
    t_first = t_last = None
    first = 0
    check = verify.check
    eof = False
    # Reap completions in batches (one io_uring_enter for several), but never hold one back
    # longer than RECV_BATCH_WAIT: the window's clock reads the time of the reap.
    batch = max(1, nbufs // 4)
    while not eof:
        cqes = ring.submit_wait(batch, RECV_BATCH_WAIT)
        t = now()
        armed = True
        back: list[int] = []
        for data, res, flags in cqes:
            if data != TAG_RECV:
                if res < 0:
                    raise OSError(-res, f"io_uring provide_buffers: {os.strerror(-res)}")
                continue
            if res > 0:
                if not flags & f_buffer:
                    raise RuntimeError("multishot recv completed without a provided buffer")
                bid = flags >> shift
                if t_first is None:
                    t_first, first = t, res
                t_last = t
                recvs += 1
                check(mv[bid * bs:bid * bs + res])
                back.append(bid)
            elif res == 0:
                eof = True
            elif res == -errno.ENOBUFS:
                enobufs += 1      # every buffer of the group was full: give back, re-arm
            else:
                raise OSError(-res, f"io_uring recv multishot: {os.strerror(-res)}")
            if not flags & f_more:
                armed = False
        if not armed:
            ring.inflight = 0
        # Consumed buffers go back, queued before a re-arm so the group has buffers first; the
        # kernel hands them out in the order given (FIFO), so they come back in runs of
        # consecutive ids: one PROVIDE_BUFFERS per run.
        i, nb = 0, len(back)
        while i < nb:
            start = j = back[i]
            i += 1
            while i < nb and back[i] == j + 1:
                j = back[i]
                i += 1
            s = ring.sqe()
            provide(s, mv[start * bs:(j + 1) * bs], bs, j - start + 1, BGID, start)
            set_flags(s, skip)
            set_data(s, TAG_PROVIDE)
        if not armed and not eof:
            rearms += 1
            arm()
    return {"recv_calls": recvs, "t_first": t_first, "t_last": t_last, "first_bytes": first,
            "io_uring": {"op": "recv_multishot", "linked": False, "rearms": rearms,
                         "buffer_ring": {"kind": "provided buffers (IORING_OP_PROVIDE_BUFFERS; "
                                                 "the binding's io_uring_setup_buf_ring is broken)",
                                         "buffers": nbufs, "buffer_size": bs,
                                         "enobufs_rearms": enobufs}}}


class NotifTally:
    """send_zc notifications mapped back to their request's bytes (IORING_NOTIF_USAGE_ZC_COPIED
    per notification: copied after all, or really zerocopy)."""

    def __init__(self, copied_bit: int):
        self.copied_bit = copied_bit
        self.pending: dict[int, int] = {}   # request user_data -> bytes it sent
        self.count = self.done = self.copied = self.copied_bytes = 0

    def add(self, data: int, res: int) -> None:
        self.count += 1
        nbytes = self.pending.pop(data, 0)
        if nbytes > 0:
            self.done += 1
            if (res & 0xFFFFFFFF) & self.copied_bit:
                self.copied += 1
                self.copied_bytes += nbytes


# == sending ==================================================================================
class PhaseBuffers:
    """One bytearray per pattern phase: buffer k holds the stream's bytes from phase k, so any
    piece of the stream (a message, or the rest of one after a short write) starts at the start
    of a registered buffer (the binding's write_fixed takes no offset). PERIOD x size bytes."""

    def __init__(self, size: int):
        pattern = block(size)
        self.bufs = [bytearray(pattern[k:k + size]) for k in range(PERIOD)]
        self.buf = self.bufs[0]


def sender(cfg: dict, io: AgentIO, mode: str = "plain") -> dict:
    """mode: plain (send), fixed (write_fixed), zc (send_zc_fixed)."""
    size = int(cfg["size"])
    depth = queue_depth(cfg)
    src = PhaseBuffers(size) if mode == "fixed" else PatternSource(size)
    sock, ready = connect_sender(cfg, socket.SOCK_STREAM, src)
    ring = None
    try:
        # A zerocopy send's notification needs a CQE slot too: CQ is 2 x SQ.
        ring = Ring(depth, _deadline(cfg))
        ring.fd = sock.fileno()
        if mode == "fixed":
            ring.register(src.bufs)
        elif mode == "zc":
            ring.register([src.buf])     # the pattern store: every view lies inside it
        io.emit("ready", **ready)
        io.wait_cmd("go")
        cpu = CpuWindow().start()
        bound = bound_from(cfg)
        out = _send_linked(ring, sock.fileno(), src, size, depth, bound, mode)
        t_end = out.pop("t_end")
        cpu_used = cpu.stop()
        out["io_uring"] = {**ring.describe(depth), **out["io_uring"]}
    finally:
        if ring is not None:
            ring.close()
    sock.shutdown(socket.SHUT_WR)
    sock.close()
    return {**out, "bytes": out["messages"] * size, "t_start": bound.t_start, "t_end": t_end,
            "cpu": cpu_used, "buffer_addr": buffer_address(src.buf)}


def _send_linked(ring: Ring, fd: int, src, size: int, depth: int, bound, mode: str) -> dict:
    """Batches of up to `depth` linked sends; a short one ends its chain (the rest complete
    -ECANCELED, having sent nothing) and goes first into the next batch with what is left."""
    L, K = ring.L, ring.K
    link = K["IOSQE_IO_LINK"]
    f_more, f_notif = K["CQE_F_MORE"], K["CQE_F_NOTIF"]
    report, copied_bit = K["SEND_ZC_REPORT_USAGE"], K["NOTIF_USAGE_ZC_COPIED"]
    set_flags, set_data = L.io_uring_sqe_set_flags, L.io_uring_sqe_set_data64
    prep_send, prep_zc, prep_wf = (L.io_uring_prep_send, L.io_uring_prep_send_zc_fixed,
                                   L.io_uring_prep_write_fixed)
    get_sqe, r = L.io_uring_get_sqe, ring.ring
    zc = mode == "zc"
    # send_zc refuses IOSQE_CQE_SKIP_SUCCESS (its CQE says whether a notification follows)
    link_flags = link if zc else link | K["IOSQE_CQE_SKIP_SUCCESS"]
    views = getattr(src, "views", None)
    bufs = getattr(src, "bufs", None)
    sent = 0              # whole messages handed to the ring (the stream's next message)
    requests = short = canceled = 0
    # zerocopy accounting: request -> bytes it sent; notifications reaped
    tally = NotifTally(copied_bit)
    zc_sends = notif_expected = 0
    carry: list[tuple[int, int]] = []   # (phase, length) to send before new messages
    batch: list[tuple[int, int]] = []
    req_base = 0
    done_sending = False
    t_end = now()
    while True:
        batch.clear()
        batch.extend(carry)
        carry.clear()
        while len(batch) < depth and not done_sending:
            if bound.done(sent):
                done_sending = True
                t_end = now()
                break
            # Message i is the pattern from its scheduled phase (workloads.pattern.phase).
            batch.append((msg_phase(sent), size))
            sent += 1
        if not batch:
            break
        n = len(batch)
        last = n - 1
        for i, (phase, length) in enumerate(batch):
            sqe = get_sqe(r)             # never full: a batch is at most `depth` <= SQ entries
            if mode == "fixed":
                prep_wf(sqe, fd, bufs[phase], length, 0, phase)
            else:
                view = views[phase] if length == size else views[phase][:length]
                if zc:
                    prep_zc(sqe, fd, view, length, 0, MSG_WAITALL, report)
                else:
                    prep_send(sqe, fd, view, length, MSG_WAITALL)
            if i < last:
                set_flags(sqe, link_flags)
            set_data(sqe, req_base + i + 1)
        ring.inflight = n
        # Plain and fixed sends skip the CQE of a full success: what comes back is the failures
        # (short, error, cancelled) and the last request's CQE, which ends the chain.
        results = [length for _, length in batch]
        last_data = req_base + n
        got = 0
        seen_last = False
        while (got < n) if zc else not seen_last:
            for data, res, flags in ring.submit_wait(n - got if zc else 1):
                if flags & f_notif:
                    tally.add(data, res)
                    continue
                idx = data - req_base - 1
                if idx < 0:
                    continue           # a late CQE of an earlier batch's cancelled request
                results[idx] = res
                got += 1
                if data == last_data:
                    seen_last = True
                elif not zc and res != batch[idx][1]:
                    # A request with CQE_SKIP_SUCCESS that fails posts its CQE, and the kernel
                    # then skips the CQEs of the rest of its chain (REQ_F_SKIP_LINK_CQES): they
                    # were cancelled without running.
                    for j in range(idx + 1, n):
                        results[j] = -errno.ECANCELED
                    seen_last = True
                if flags & f_more:     # send_zc: a notification follows this CQE
                    notif_expected += 1
                    tally.pending[data] = max(res, 0)
                    if res > 0:
                        zc_sends += 1
        ring.inflight = 0
        requests += n
        req_base += n
        broken = False
        for (phase, length), res in zip(batch, results, strict=True):
            if broken or res == -errno.ECANCELED:
                canceled += res == -errno.ECANCELED
                carry.append((phase, length))       # sent nothing: again, in order
                broken = True
            elif res < 0:
                raise OSError(-res, f"io_uring {mode} send: {os.strerror(-res)}")
            elif res < length:
                short += 1
                carry.append(((phase + res) % PERIOD, length - res))
                broken = True
        if done_sending and not carry:
            break
    # send_zc: every notification, bounded by the deadline (submit_wait raises past it)
    while tally.count < notif_expected:
        for data, res, flags in ring.submit_wait(1):
            if flags & f_notif:
                tally.add(data, res)
    if carry:
        raise RuntimeError("io_uring send: stream left incomplete")
    out = {"messages": sent, "t_end": t_end, "requests": requests,
           "io_uring": {"op": {"plain": "send", "zc": "send_zc_fixed",
                               "fixed": "write_fixed"}[mode],
                        "linked": True, "requests": requests, "short": short,
                        "canceled": canceled,
                        "registered_buffers": {"plain": 0, "zc": 1, "fixed": PERIOD}[mode]}}
    if mode == "zc":
        completed = tally.done    # notifications of the sends that moved bytes
        out["zerocopy"] = {"send_calls": zc_sends, "completed": completed,
                           "copied": tally.copied, "copied_bytes": tally.copied_bytes,
                           "zerocopy": completed - tally.copied, "notifications": tally.count,
                           "enobufs_retries": 0, "all_completed": completed >= zc_sends,
                           "api": "io_uring send_zc_fixed"}
    return out
