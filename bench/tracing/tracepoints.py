"""Tracepoint backend: for kernels without kprobes (our development machines).

It is the bpftrace backend on the catalog's tracepoints (`sock:sock_send_length`,
`sock:sock_recv_length`, `skb:skb_copy_datagram_iovec`): counts and byte sums are aggregated
in BPF maps in the kernel, so no event has to reach user space to be counted (streaming every
event through trace_pipe lost half of them at 570k datagrams/s). What it measures is labelled
per point: bytes returned by plain send/recv calls are the bytes copied (exact); calls are
system calls, which equal copies only for UDP receives of linear skbs.
"""

from __future__ import annotations

from pathlib import Path

from bench.errors import UsageError
from bench.tracing import catalog, tracefs
from bench.tracing.base import Availability
from bench.tracing.bpftrace import IO_URING_SUBMIT, BpftraceTracer


def present(root: Path) -> list[catalog.Probe]:
    """The catalog's tracepoints that exist on this kernel."""
    return [p for p in catalog.probes(kind="tracepoint") if catalog.tracepoint_exists(p.symbol, root)]


class TracepointsTracer(BpftraceTracer):
    name = "tracepoints"
    exact = False

    def __init__(self, roots: tuple[Path, ...] = tracefs.CANDIDATES,
                 comm: dict[str, str] | None = None, nsamples: int = 256,
                 binary: str = "bpftrace", **_ignored):
        super().__init__(probes=[], comm=comm, nsamples=nsamples, all_copies=True,
                         binary=binary, roots=roots)

    def available(self) -> Availability:
        av = super().available()     # bpftrace installed, root, tracefs mounted (we mount it)
        if not av.ok:
            return av
        root = tracefs.find(self.roots)
        found = present(root) if root else []
        if not any(p.point in ("send_copy", "recv_copy") for p in found):
            names = ", ".join(p.symbol for p in catalog.probes(kind="tracepoint"))
            return Availability(False, f"none of {names} exist on this kernel",
                                "use a kprobe backend (kmod) or a kernel >= 6.3")
        return Availability(True, "tracepoints " + ", ".join(p.symbol for p in found))

    def attach(self, pids: dict[str, int]) -> None:
        root = tracefs.ensure(self.roots)
        self.probes = present(root)
        if not self.probes:
            raise UsageError("no copy tracepoints on this kernel", fix="use --backend kmod")
        self.io_uring = catalog.tracepoint_exists(IO_URING_SUBMIT, root)
        super().attach(pids)
