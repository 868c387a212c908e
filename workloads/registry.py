"""Every copy path copybench knows, whether it is built, and what it needs to run.

A workload that is not built yet, or cannot run on this machine, is still planned: the runner
records it as *skipped* with the reason and the fix, never silently drops or fakes it.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Workload:
    name: str
    description: str
    transport: str                 # "dgram" | "stream" | "rdma"
    max_size: int                  # largest message the path can carry in one message
    built: bool = True
    needs: tuple[str, ...] = ()    # capability names from bench.doctor
    reference: str | None = None   # the field's standard tool for the same path
    expected_copies: str = ""
    not_built_fix: str = ""        # what a user can do meanwhile, for workloads not built yet
    python_module: str | None = None   # an optional Python dependency the agents import
    queue_depth: bool = False      # takes the plan's queue_depth (io_uring requests in flight)
    receive_chunk: bool = False    # takes the plan's zc_chunk and zc_rcvlowat (mapped receive)
    rr: bool = False               # request/response: takes response_size and in_flight
    splices: bool = False          # the sender hands page references, not bytes (sendfile, splice)
    file_source: bool = False      # sends from a file: takes the plan's sendfile_dir
    min_size: int = 1              # udp: the 8-byte sequence number header (workloads.pattern)

    @property
    def flows(self) -> bool:
        """Several independent flows per case (--flows): every socket path and RDMA (N QPs),
        each flow its own sender and receiver processes (and QP). Request/response and the
        mapped receive (its per-flow report): not built yet."""
        return not self.rr and not self.receive_chunk

    @property
    def capabilities(self) -> tuple[str, ...]:
        """`needs` plus the Python module its agents import, as a capability the machine that
        runs them (here or a node) is asked about: "python:liburing"."""
        return self.needs + ((f"python:{self.python_module}",) if self.python_module else ())

    def size_error(self, size: int) -> str | None:
        if size <= 0:
            return f"message size {size} for {self.name}: must be at least 1 byte"
        if size < self.min_size:
            return (f"message size {size} for {self.name}: must be at least {self.min_size} "
                    "bytes (each datagram carries an 8-byte sequence number)")
        if size > self.max_size:
            return (f"message size {size} for {self.name}: the largest is {self.max_size} bytes"
                    + (" (65535 - 20 IPv4 - 8 UDP)" if self.transport == "dgram" else ""))
        return None


WORKLOADS: dict[str, Workload] = {w.name: w for w in (
    Workload("udp", "UDP datagrams, send()/recv_into()", "dgram", 65507, reference="iperf3",
             min_size=8,
             expected_copies="COPY#1 + COPY#4 per datagram, bytes = payload"),
    Workload("tcp", "TCP stream, sendall()/recv_into()", "stream", 64 << 20, reference="iperf3",
             expected_copies="COPY#1 + COPY#4, bytes = payload"),
    Workload("msg_zerocopy", "TCP send(MSG_ZEROCOPY) + error-queue completions", "stream", 64 << 20,
             needs=("so_zerocopy",), reference="iperf3",
             expected_copies="send copies vanish when the kernel really does zerocopy",
             not_built_fix="until it lands, count the fallback yourself: `bench trace -- CMD` on a "
             "MSG_ZEROCOPY program, and watch SO_EE_CODE_ZEROCOPY_COPIED completions"),
    Workload("tcp_zerocopy_receive", "mmap + getsockopt(TCP_ZEROCOPY_RECEIVE), MSG_ZEROCOPY sender",
             "stream", 1 << 20, needs=("so_zerocopy", "tcp_zerocopy_receive"), receive_chunk=True,
             expected_copies="receive copies vanish for page-aligned chunks",
             not_built_fix="until it lands, compare the tcp case's receive copies (`bench trace`)"),
    Workload("tcp_zerocopy_receive_send", "mmap + getsockopt(TCP_ZEROCOPY_RECEIVE), plain "
             "send() sender", "stream", 1 << 20, needs=("tcp_zerocopy_receive",),
             receive_chunk=True,
             expected_copies="the send copy stays; receive copies vanish only for whole, "
             "non-compound pages (a plain send's page fragments are compound)"),
    Workload("sendfile", "TCP os.sendfile() from a file in the page cache (an unlinked temporary "
             "file, `sendfile_dir`)", "stream", 64 << 20, reference="iperf3", splices=True,
             file_source=True,
             expected_copies="COPY#4 on receive; the send side splices page-cache pages "
             "(MSG_SPLICE_PAGES, >= 6.5): the kprobe count says whether anything was copied"),
    Workload("splice", "TCP vmsplice() of user pages into a pipe, splice() into the socket",
             "stream", 1 << 20, splices=True,
             expected_copies="COPY#4 on receive; the send side hands the user pages by "
             "reference: the kprobe count says whether anything was copied"),
    Workload("io_uring", "TCP io_uring send, N linked per submission; multishot recv",
             "stream", 64 << 20, needs=("io_uring",), python_module="liburing", queue_depth=True,
             expected_copies="the same COPY#1 + COPY#4: io_uring saves syscalls, not copies"),
    Workload("io_uring_fixed", "TCP io_uring WRITE_FIXED/READ_FIXED, registered buffers both "
             "sides", "stream", 1 << 20, needs=("io_uring", "io_uring_fixed_rw"),
             python_module="liburing", queue_depth=True,
             expected_copies="the same COPY#1 + COPY#4: registered buffers save page pinning, "
             "not copies"),
    Workload("io_uring_zc", "TCP io_uring send_zc_fixed from a registered buffer, multishot recv "
             "into provided buffers", "stream", 64 << 20,
             needs=("io_uring", "io_uring_send_zc", "io_uring_recv_multishot"),
             python_module="liburing", queue_depth=True,
             expected_copies="send copy vanishes when the kernel reports real zerocopy; recv copies"),
    Workload("rdma_write", "RDMA WRITE on an RC QP, WRITE_WITH_IMM per window (pyverbs)", "rdma",
             64 << 20, needs=("rdma_device", "pyverbs"), reference="ib_write_bw",
             expected_copies="no _copy_*_iter on the data path; soft-RoCE's own copies "
             "(rxe_mr_copy) counted apart as copied by soft-RoCE in the kernel"),
    Workload("rdma_send", "RDMA SEND/RECV on an RC QP into posted receives (pyverbs)", "rdma",
             64 << 20, needs=("rdma_device", "pyverbs"), reference="ib_send_bw",
             expected_copies="no _copy_*_iter on the data path; soft-RoCE's own copies "
             "(copy_data -> rxe_mr_copy) counted apart"),
    # Request/response (netperf RR): round trips on the requester's clock, every request and
    # response verified (workloads/rr.py); the latency rows beside sockperf and qperf.
    Workload("tcp_rr", "TCP request/response, Q-byte requests, R-byte responses, N in flight",
             "stream", 1 << 20, reference="sockperf", rr=True,
             expected_copies="COPY#1 + COPY#4 per request and per response"),
    Workload("udp_rr", "UDP request/response datagrams, each with its sequence number",
             "dgram", 65507, reference="sockperf", min_size=8, rr=True,
             expected_copies="COPY#1 + COPY#4 per request and per response datagram"),
    Workload("io_uring_rr", "TCP request/response through io_uring: send linked to recv, one "
             "enter per transaction", "stream", 1 << 20, needs=("io_uring",),
             python_module="liburing", reference="sockperf", rr=True,
             expected_copies="COPY#1 + COPY#4 per request and per response: io_uring saves "
             "system calls, not copies"),
    # RDMA ping-pong as perftest's latency tests (workloads/rdma_rr.py)
    Workload("rdma_send_lat", "RDMA SEND/RECV request/response on an RC QP into posted "
             "receives (pyverbs)", "rdma", 1 << 20, needs=("rdma_device", "pyverbs"),
             reference="ib_send_lat", rr=True,
             expected_copies="no _copy_*_iter on the data path; soft-RoCE's own copies "
             "(rxe_mr_copy) per request and per response counted apart"),
    Workload("rdma_write_lat", "RDMA WRITE request/response on an RC QP, each side polling its "
             "memory for the peer's last byte (pyverbs)", "rdma", 1 << 20,
             needs=("rdma_device", "pyverbs"), reference="ib_write_lat", rr=True,
             expected_copies="no _copy_*_iter on the data path; soft-RoCE's own copies "
             "(rxe_mr_copy) per request and per response counted apart"),
)}


# Names that select several workloads (`--workload rdma`, suites' `workloads = ["rdma"]`).
FAMILIES: dict[str, tuple[str, ...]] = {"rdma": ("rdma_write", "rdma_send"),
                                        "rdma_lat": ("rdma_send_lat", "rdma_write_lat")}


def expand_names(names) -> tuple[str, ...]:
    """Workload names with families replaced by their members, order kept, no duplicates."""
    out: list[str] = []
    for n in names:
        for m in FAMILIES.get(n, (n,)):
            if m not in out:
                out.append(m)
    return tuple(out)


def get(name: str) -> Workload:
    from bench.errors import UsageError
    try:
        return WORKLOADS[name]
    except KeyError:
        raise UsageError(f"unknown workload {name!r}",
                         f"use one of: {', '.join([*WORKLOADS, *FAMILIES])} (`bench list` shows "
                         "them)") from None
