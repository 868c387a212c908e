"""Per case, the figures the HTML report, its plots and its diagrams draw: copies per side
(COPY#1 on the send side, COPY#4 on the receive side, deferred/fallback copies, soft-RoCE's own),
bytes copied per payload byte, who measured each count and how far it can be trusted, the
zerocopy split, the cost model and the addresses the tracer saw.

Pure and total: every figure is read from the result, and a figure the result does not hold is
None (the report then says "not measured"); nothing here is estimated or invented."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.results import SOFT_ROCE_SIDE as SOFT_ROCE
from bench.results import CaseResult, RunResult


@dataclass(frozen=True)
class SideCopies:
    side: str
    calls: int | None
    bytes: int | None
    per_message: float | None
    per_payload_byte: float | None
    deferred_bytes: int | None = None
    deferred_per_payload_byte: float | None = None
    deferred_kind: str | None = None        # "probe", "completion report", or the unseen kind
    total_per_payload_byte: float | None = None
    quality: str | None = None
    total_quality: str | None = None
    backends: tuple[str, ...] = ()
    symbols: tuple[str, ...] = ()
    kernel_addrs: tuple[str, ...] = ()      # the copy's kernel address per traced call (samples)
    cost_bytes: int | None = None           # what the model charges: deferred copies included
    model_s: float | None = None            # bytes x 2 / DRAM bandwidth
    model_cached_s: float | None = None     # bytes x 2 / cache-hot bandwidth
    measured_copy_s: float | None = None    # the tracer's own copy time, probe cost subtracted
    cpu_s: float | None = None              # the agent's CPU in the traced sample
    share_of_cpu: float | None = None
    note: str | None = None

    @property
    def tracer(self) -> str:
        who = "+".join(self.backends) or "–"
        return f"{who} ({self.quality or 'not stated'})"


@dataclass(frozen=True)
class CaseFigures:
    case: CaseResult
    status: str
    copies_status: str                      # ok | off | unavailable | failed | not counted
    copies_reason: str | None
    sender: SideCopies | None = None
    receiver: SideCopies | None = None
    soft_roce: SideCopies | None = None
    soft_roce_device: bool = False
    zerocopy: dict | None = None            # sends completed, copied by the kernel, bytes
    zerocopy_receive: dict | None = None    # bytes mapped vs copied
    user_buffers: dict = field(default_factory=dict)   # side -> user buffer address
    messages: int | None = None             # in the traced sample
    payload_bytes: int | None = None        # in the traced sample
    protocol: str = "tcp"                   # udp | tcp | rdma
    mtu: int | None = None

    @property
    def id(self) -> str:
        return self.case.id

    @property
    def counted(self) -> bool:
        return self.copies_status == "ok"


def protocol(workload: str) -> str:
    if workload.startswith("udp"):
        return "udp"
    if workload.startswith("rdma"):
        return "rdma"
    return "tcp"


def _side(name: str, d: dict | None) -> SideCopies | None:
    if not d:
        return None
    dfr = d.get("deferred") or {}
    cost = d.get("cost") or {}
    kind = None
    if dfr:
        kind = dfr.get("kind") or ("probe" if dfr.get("source") == "probe" else "completion report")
    return SideCopies(
        side=name, calls=d.get("calls"), bytes=d.get("bytes"),
        per_message=d.get("copies_per_message"), per_payload_byte=d.get("bytes_per_payload_byte"),
        deferred_bytes=dfr.get("bytes") if dfr else None,
        deferred_per_payload_byte=dfr.get("per_payload_byte") if dfr else None,
        deferred_kind=kind,
        total_per_payload_byte=d.get("total_copied_per_payload_byte"),
        quality=d.get("quality") or ("exact" if d.get("exact") else None),
        total_quality=d.get("total_quality"),
        backends=tuple(d.get("backends") or ()), symbols=tuple(d.get("symbols") or ()),
        kernel_addrs=tuple(s["addr"] for s in d.get("samples") or () if s.get("addr")),
        cost_bytes=cost.get("bytes_copied"), model_s=cost.get("model_seconds"),
        model_cached_s=cost.get("model_seconds_cached"),
        measured_copy_s=cost.get("measured_copy_seconds"), cpu_s=cost.get("cpu_seconds"),
        share_of_cpu=cost.get("share_of_cpu"), note=d.get("total_note"),
    )


def _soft_roce_device(cr: CaseResult) -> bool:
    devs = (cr.network or {}).get("rdma") or {}
    # `soft` is the runner's own finding; an rxe* name is rdma_rxe's default naming
    if any(isinstance(d, dict) and (d.get("soft") or str(d.get("device") or "").startswith("rxe"))
           for d in devs.values()):
        return True
    return SOFT_ROCE in ((cr.copies or {}).get("sides") or {})


def _zerocopy(cr: CaseResult) -> dict | None:
    zc = [s["zerocopy"] for s in cr.measured() if s.get("zerocopy")]
    if not zc:
        return None
    return {"api": zc[0].get("api", "MSG_ZEROCOPY"),
            "completed": sum(z.get("completed") or 0 for z in zc),
            "copied": sum(z.get("copied") or 0 for z in zc),
            "copied_bytes": (sum(z["copied_bytes"] for z in zc)
                             if all(z.get("copied_bytes") is not None for z in zc) else None),
            "payload_bytes": sum(s.get("bytes") or 0 for s in cr.measured() if s.get("zerocopy"))}


def _zerocopy_receive(cr: CaseResult) -> dict | None:
    zr = [s["zerocopy_receive"] for s in cr.measured() if s.get("zerocopy_receive")]
    if not zr:
        return None
    return {"mapped_bytes": sum(z.get("mapped_bytes") or 0 for z in zr),
            "copied_bytes": sum(z.get("copied_bytes") or 0 for z in zr)}


def case_figures(cr: CaseResult) -> CaseFigures:
    cp = cr.copies or {}
    sides = cp.get("sides") or {}
    status = cp.get("status") or "not counted"
    traced = cp.get("traced_sample") or {}
    buffers = {k: v for k, v in (cp.get("buffers") or {}).items() if v}
    if not buffers:
        first = next(iter(cr.measured()), None) or {}
        buffers = {side: (first.get(side) or {}).get("buffer_addr") for side in ("sender", "receiver")
                   if (first.get(side) or {}).get("buffer_addr")}
    ok = status == "ok"
    return CaseFigures(
        case=cr, status=cr.status, copies_status=status,
        copies_reason=cp.get("reason"),
        sender=_side("sender", sides.get("sender")) if ok else None,
        receiver=_side("receiver", sides.get("receiver")) if ok else None,
        soft_roce=_side(SOFT_ROCE, sides.get(SOFT_ROCE)) if ok else None,
        soft_roce_device=_soft_roce_device(cr),
        zerocopy=_zerocopy(cr), zerocopy_receive=_zerocopy_receive(cr),
        user_buffers=buffers, messages=traced.get("messages"), payload_bytes=traced.get("bytes"),
        protocol=protocol(cr.workload), mtu=(cr.network or {}).get("tx_mtu"),
    )


def figures(result: RunResult) -> list[CaseFigures]:
    return [case_figures(c) for c in result.cases]


def emulated(result: RunResult) -> str | None:
    """Why timings of this run are not hardware figures: a VM under emulation (QEMU without
    KVM, i.e. TCG), or None."""
    m = result.metadata or {}
    virt = str(m.get("virtualization") or "").lower()
    said = " ".join(str(m.get(k) or "") for k in ("target", "placement", "cpu_model")).lower()
    if virt == "qemu" or "tcg" in said:
        return ("TCG lab: figures are functional, not performance. The target was a VM under "
                "emulation (QEMU TCG, no KVM): every time, throughput and CPU figure is the "
                "emulator's, not the hardware's; copy counts and bytes still hold")
    return None


def soft_roce(result: RunResult) -> list[str]:
    """Cases that ran on soft-RoCE (the kernel copies the payload an RDMA NIC would DMA)."""
    return [c.id for c in result.cases if _soft_roce_device(c)]


SOFT_ROCE_TEXT = ("The RDMA device of {cases} is soft-RoCE (rdma_rxe): the kernel copies every "
                  "payload byte that a real RDMA NIC would move by DMA, so these rows are not a "
                  "CPU-free path")


def run_warnings(result: RunResult) -> list[tuple[str, str]]:
    """(title, text) of what every report says first about a run's figures: the same words in
    the HTML, the Markdown and the terminal."""
    out = []
    why = emulated(result)
    if why:
        out.append(("Emulated target", why))
    soft = soft_roce(result)
    if soft:
        out.append(("soft-RoCE", SOFT_ROCE_TEXT.format(cases=", ".join(soft))))
    return out
