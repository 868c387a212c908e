"""Probe catalog: logical copy points -> kernel symbols (or tracepoints) that realise them.

One table, read by every backend. A kprobe entry says which argument holds the kernel buffer
and which the length, so backends can generate `regs->di` / `%si` / `arg1` accesses for the
running architecture. A tracepoint entry says which event field is the length.

`verified` records, per kernel release, what was actually checked on that kernel (never what we
expect): "present" = symbol in /proc/kallsyms, "counted" = exact count of a known workload.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass, field
from pathlib import Path

# Function-argument registers by position (System V x86-64 ABI; AAPCS64 for arm64).
ARG_REGS = {
    "x86_64": ("di", "si", "dx", "cx", "r8", "r9"),
    "aarch64": ("x0", "x1", "x2", "x3", "x4", "x5"),
}
# kmod's C accessors for the same positions (pt_regs field names differ per arch).
C_ARG_REGS = {
    "x86_64": ("regs->di", "regs->si", "regs->dx", "regs->cx", "regs->r8", "regs->r9"),
    "aarch64": tuple(f"regs->regs[{i}]" for i in range(6)),
}

POINTS = {
    "send_copy": "COPY#1: user buffer -> kernel skb on send",
    "recv_copy": "COPY#4: kernel skb -> user buffer on receive",
    "zc_fallback": "a zerocopy skb copied after all (MSG_ZEROCOPY delivered locally)",
    "zc_receive": "TCP_ZEROCOPY_RECEIVE calls (pages mapped, not copied; leftovers reach recv_copy)",
    "rxe_copy": "soft-RoCE (rxe) emulation copies: the copy a real RDMA NIC does by DMA",
    "recv_skb": "skb handed to the datagram copy (tracepoint; skb address, length)",
}


@dataclass(frozen=True)
class Probe:
    point: str
    symbol: str                     # kernel function, or "group:event" for tracepoints
    kind: str                       # "kprobe" | "tracepoint"
    meaning: str
    addr_arg: int | None = None     # argument position of the kernel buffer (kprobe)
    len_arg: int | None = None      # argument position of the length (kprobe)
    len_field: str | None = None    # event field holding the length (tracepoint)
    addr_field: str | None = None   # event field holding an address (tracepoint)
    default: bool = True            # probed unless asked; False for wrappers that nest a default
    nests: tuple[str, ...] = ()     # symbols this one calls: never sum both
    module: str | None = None       # kernel module that provides it (absent until loaded)
    exact: bool = True              # False: an estimate of the copy, not the copy itself
    verified: dict[str, str] = field(default_factory=dict)

    def reg(self, pos: int | None, arch: str = "x86_64") -> str | None:
        return None if pos is None else ARG_REGS[arch][pos]


# Kernel releases we checked (see tests/tracing/test_lab.py for the counted ones).
K618 = "6.18.44-fc-v595"   # development machine (Firecracker, no kprobes): kallsyms + tracepoints
K61 = "6.1.0-56-amd64"     # lab VM: Debian bookworm linux-image-amd64 6.1.192-2 (kprobes, modules)
K61_57 = "6.1.0-57-amd64"  # lab VM after the 6.1.192-3 update: where the socket gates were checked
# What "notrace" means below: absent from available_filter_functions, so kprobe_events and
# bpftrace are refused (EINVAL) while copytrace's register_kretprobe attaches.

CATALOG: tuple[Probe, ...] = (
    # -- COPY#1, send ---------------------------------------------------------------------------
    Probe("send_copy", "_copy_from_iter", "kprobe",
          "_copy_from_iter(void *addr, size_t bytes, struct iov_iter *i): udp/tcp sendmsg with "
          "checksum offload (ip_generic_getfrag, skb_do_copy_data_nocopy)",
          addr_arg=0, len_arg=1,
          verified={K618: "present", K61: "counted 1000/1000 UDP sends, 1,000,000 B (kmod); "
                    "notrace; chain udp: ip_generic_getfrag <- __ip_append_data <- ip_make_skb "
                    "<- udp_sendmsg; tcp: tcp_sendmsg_locked <- tcp_sendmsg"}),
    Probe("send_copy", "_copy_from_iter_nocache", "kprobe",
          "same signature; TCP send when the route has NETIF_F_NOCACHE_COPY (tx-nocache-copy)",
          addr_arg=0, len_arg=1,
          verified={K618: "present", K61: "present, notrace; 0 calls on loopback/virtio"}),
    Probe("send_copy", "csum_and_copy_from_iter_full", "kprobe",
          "csum_and_copy_from_iter_full(void *addr, size_t bytes, __wsum *csum, iov_iter *i): "
          "send without checksum offload (ip_generic_getfrag when ip_summed != PARTIAL)",
          addr_arg=0, len_arg=1,
          verified={K618: "present", K61: "absent: an inline wrapper of csum_and_copy_from_iter"}),
    Probe("send_copy", "csum_and_copy_from_iter", "kprobe",
          "csum_and_copy_from_iter(void *addr, size_t bytes, __wsum *csum, iov_iter *i): what "
          "csum_and_copy_from_iter_full calls on kernels where the latter is inline (6.1)",
          addr_arg=0, len_arg=1, verified={K61: "present, notrace"}),
    Probe("send_copy", "copy_page_from_iter", "kprobe",
          "copy_page_from_iter(struct page *, size_t off, size_t bytes, iov_iter *): pipes and "
          "page-cache writes; wraps _copy_from_iter, so off by default",
          addr_arg=0, len_arg=2, default=False, nests=("_copy_from_iter",),
          verified={K618: "present", K61: "present, notrace"}),
    # -- COPY#4, receive ------------------------------------------------------------------------
    Probe("recv_copy", "_copy_to_iter", "kprobe",
          "_copy_to_iter(const void *addr, size_t bytes, iov_iter *i): linear UDP "
          "(copy_linear_skb) and skb_copy_datagram_iter for head and frags (TCP, paged UDP)",
          addr_arg=0, len_arg=1,
          verified={K618: "present", K61: "counted 1000/1000 UDP receives, 1,000,000 B (kmod); "
                    "notrace; chain udp: udp_recvmsg (copy_linear_skb inlined) <- inet_recvmsg; "
                    "tcp: __skb_datagram_iter <- skb_copy_datagram_iter <- tcp_recvmsg_locked"}),
    Probe("recv_copy", "csum_and_copy_to_iter", "kprobe",
          "csum_and_copy_to_iter(const void *addr, size_t bytes, void *csstate, iov_iter *i): "
          "UDP receive that must verify the checksum (skb_copy_and_csum_datagram_msg)",
          addr_arg=0, len_arg=1, verified={K618: "present (static)", K61: "present, notrace"}),
    Probe("recv_copy", "copy_page_to_iter", "kprobe",
          "copy_page_to_iter(struct page *, size_t off, size_t bytes, iov_iter *): splice and "
          "page cache; wraps _copy_to_iter, so off by default",
          addr_arg=0, len_arg=2, default=False, nests=("_copy_to_iter",),
          verified={K618: "present", K61: "present, notrace"}),
    # -- zerocopy paths and their fallbacks ------------------------------------------------------
    Probe("zc_fallback", "skb_copy_ubufs", "kprobe",
          "skb_copy_ubufs(struct sk_buff *skb, gfp_t gfp): copies a zerocopy skb's user pages "
          "(MSG_ZEROCOPY to a local socket); length is skb->data_len (kmod reads it)",
          addr_arg=0, len_arg=None, verified={K618: "present", K61: "present, traceable"}),
    Probe("zc_receive", "tcp_zerocopy_receive", "kprobe",
          "tcp_zerocopy_receive(struct sock *, struct tcp_zerocopy_receive *, ...): one call per "
          "getsockopt(TCP_ZEROCOPY_RECEIVE); counts calls, maps pages rather than copying",
          addr_arg=None, len_arg=None, exact=True,
          verified={K618: "present (static)", K61: "present (static), traceable"}),
    # -- soft-RoCE ------------------------------------------------------------------------------
    Probe("rxe_copy", "rxe_mr_copy", "kprobe",
          "rxe_mr_copy(struct rxe_mr *, u64 iova, void *addr, unsigned int length, dir): every "
          "payload copy between an MR and a packet in rdma_rxe",
          addr_arg=2, len_arg=3, module="rdma_rxe",
          verified={K61: "present with rdma_rxe loaded, traceable"}),
    Probe("rxe_copy", "copy_data", "kprobe",
          "copy_data(pd, access, struct rxe_dma_info *, void *addr, int length, dir): SEND/RECV "
          "scatter-gather; wraps rxe_mr_copy, so off by default",
          addr_arg=3, len_arg=4, default=False, nests=("rxe_mr_copy",), module="rdma_rxe",
          verified={K61: "present with rdma_rxe loaded, traceable"}),
    # -- tracepoint estimates (kernels without kprobes) -----------------------------------------
    Probe("send_copy", "sock:sock_send_length", "tracepoint",
          "sock_sendmsg's return value: bytes accepted per send call. Equals COPY#1 bytes for "
          "plain UDP/TCP, but also fires for MSG_ZEROCOPY sends that copy nothing: an estimate",
          len_field="ret", addr_field="sk", exact=False,
          verified={K618: "counted 1000 x 1000 B UDP sends", K61: "absent (added in 6.3)"}),
    Probe("recv_copy", "sock:sock_recv_length", "tracepoint",
          "sock_recvmsg's return value. For UDP one recvmsg = one copy of the datagram "
          "(copy_linear_skb), so exact for UDP; for TCP bytes match, calls do not",
          len_field="ret", addr_field="sk", exact=False,
          verified={K618: "counted 1000 x 1000 B UDP receives (exact)",
                    K61: "absent (added in 6.3)"}),
    Probe("recv_skb", "skb:skb_copy_datagram_iovec", "tracepoint",
          "skb_copy_datagram_iter entry: skb address and length. TCP and paged UDP only; since "
          "4.13 linear UDP uses copy_linear_skb and never fires it",
          len_field="len", addr_field="skbaddr", exact=False,
          verified={K618: "fires for TCP; 0 events for 1000 linear UDP datagrams",
                    K61: "present"}),
)

UDP = 17  # IPPROTO_UDP, as the sock tracepoints report it


@dataclass(frozen=True)
class SocketGate:
    """A kernel entry point of socket I/O. A copy counts as a socket copy while its task is
    inside one of these (or inside a socket-only system call), whatever system call brought
    it there: write/read/writev/readv on a socket, splice, io_uring (also its io-wq workers)."""

    symbol: str
    meaning: str
    verified: dict[str, str] = field(default_factory=dict)

    @property
    def first_arg(self) -> str:
        return gate_first_arg(self.symbol)


def gate_first_arg(symbol: str) -> str:
    """What a socket gate's first argument points to, which says how to reach the socket's
    family (the rule copytrace.c applies to the names it is given): sock_{read,write}_iter
    take a kiocb, tcp_* a struct sock (TCP's own, never AF_UNIX), the others a struct socket."""
    if "_iter" in symbol:
        return "kiocb"
    return "sock" if symbol.startswith("tcp_") else "socket"


AF_UNIX = 1     # a gate on a unix socket opens nothing: local IPC (a node launcher's stdio)

SOCKET_GATES: tuple[SocketGate, ...] = (
    SocketGate("sock_sendmsg", "every send that checks security hooks: sendto/sendmsg, "
               "write/writev via sock_write_iter, io_uring SEND/SENDMSG/SEND_ZC, splice and "
               "sendfile to a socket on >= 6.5 (MSG_SPLICE_PAGES)",
               verified={K618: "present", K61_57: "present, traceable"}),
    SocketGate("__sock_sendmsg", "what sock_sendmsg wraps since the msg_name fix (6.6, "
               "backported to 6.1.x); sendto, sendmsg and sock_write_iter call it directly",
               verified={K618: "absent (inlined)",
                         K61_57: "present (static), traceable; udp_sendmsg returns to it"}),
    SocketGate("sock_recvmsg", "recvfrom/recvmsg, read/readv via sock_read_iter, io_uring "
               "RECV/RECVMSG", verified={K618: "present", K61_57: "present, traceable"}),
    SocketGate("sock_write_iter", "write/writev/aio on a socket file (calls sock_sendmsg; kept "
               "so a kernel that inlines the call is still covered)",
               verified={K618: "present", K61_57: "present, traceable"}),
    SocketGate("sock_read_iter", "read/readv/aio on a socket file (calls sock_recvmsg)",
               verified={K618: "present", K61_57: "present, traceable"}),
    SocketGate("tcp_getsockopt", "getsockopt(TCP_ZEROCOPY_RECEIVE): tcp_zerocopy_receive "
               "copies what it cannot map (IPv4 and IPv6 share it)",
               verified={K618: "present", K61_57: "present, traceable"}),
)
# Why socket-only system calls stay in the gate beside the functions: sendmmsg to one address
# and recvmmsg after the first datagram call sock_{send,recv}msg_nosec, an inline helper that
# skips sock_sendmsg/sock_recvmsg. These calls act on sockets only, so admitting them claims
# nothing about pipes or files (io_uring_enter is not among them: it also reads files).


def socket_gates(present: set[str] | None = None) -> list[SocketGate]:
    """The gates, or those of them in `present` (a kallsyms set; empty = unknown: all)."""
    return [g for g in SOCKET_GATES if not present or g.symbol in present]


def probes(point: str | None = None, kind: str | None = None,
           defaults_only: bool = True) -> list[Probe]:
    return [p for p in CATALOG
            if (point is None or p.point == point)
            and (kind is None or p.kind == kind)
            and (p.default or not defaults_only)]


def by_symbol(symbol: str) -> Probe:
    for p in CATALOG:
        if p.symbol == symbol:
            return p
    known = ", ".join(p.symbol for p in CATALOG)
    raise KeyError(f"{symbol!r} is not in the probe catalog (known: {known})")


def machine_arch() -> str:
    """x86_64 or aarch64, from the running kernel (the same machine the tracer runs on)."""
    arch = os.uname().machine
    return "aarch64" if arch in ("aarch64", "arm64") else arch


def kallsyms(proc_root: Path = Path("/proc")) -> set[str]:
    """Function names the running kernel has (text symbols, modules included)."""
    path = proc_root / "kallsyms"
    try:
        st = path.stat()
    except OSError:
        return set()
    return set(_text_symbols(str(path), st.st_mtime_ns, st.st_size))


_TEXT_SYMBOL = re.compile(r"^\S+ [tTwW] (\S+)", re.MULTILINE)


@functools.lru_cache(maxsize=8)
def _text_symbols(path: str, mtime_ns: int, size: int) -> frozenset[str]:
    """Read once per process: choosing the backends asks twice, and reading and splitting
    the kernel's ~100k symbols takes ~3 s in the TCG lab VM. (procfs files keep their mtime
    and report size 0: the key only tells test fixtures apart.)"""
    try:
        text = Path(path).read_text()
    except OSError:
        return frozenset()
    return frozenset(_TEXT_SYMBOL.findall(text))


def tracepoint_exists(symbol: str, tracefs: Path) -> bool:
    group, _, event = symbol.partition(":")
    return (tracefs / "events" / group / event / "format").exists()


def kernel_release(proc_root: Path = Path("/proc")) -> str:
    try:
        return (proc_root / "sys/kernel/osrelease").read_text().strip()
    except OSError:
        return os.uname().release
