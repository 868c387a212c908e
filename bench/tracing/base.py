"""The interface every tracer backend implements, and the counts it returns.

How the counting room (bench/counting.py) uses a tracer for one traced sample:

    tracer = select_tracer("auto", points)        # or "kmod" | "bpftrace" | ...: a MultiTracer
                                                  # of one backend per point (tracer.choices
                                                  # says which and why); raises UsageError
    tracer.attach({"sender": 123, "receiver": 124})   # once both agents are ready
    ... traffic ...
    counts = tracer.read()                        # list of PointCounts, one per point and side
    tracer.detach()                               # always, also on Ctrl-C (try/finally)
    tracer.close()                                # what outlives detach (a node's tracer)

`available()` says whether a backend can run here at all, with the fix when it cannot.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Availability:
    ok: bool
    reason: str = ""
    fix: str = ""


@dataclass
class PointCounts:
    """What one backend measured at one logical copy point, for one side (sender/receiver)."""

    point: str            # logical point name from the catalog, e.g. "send_copy"
    side: str             # "sender" | "receiver" | "other"
    symbol: str           # kernel symbol or tracepoint that produced the numbers
    backend: str          # "kmod" | "bpftrace" | "kprobe_events" | "tracepoints"
    exact: bool           # False for estimates (tracepoints) and for any kernel-reported loss
    calls: int = 0
    bytes: int = 0
    ns_total: int | None = None                     # None where the backend cannot time copies
    ns_hist: dict[str, int] = field(default_factory=dict)   # log2 bucket label -> count
    samples: list[dict] = field(default_factory=list)       # {"addr": "0xffff...", "len": N, "pid": P}
    notes: list[str] = field(default_factory=list)          # why not exact, what was absent, ...
    # Calls and bytes can differ in quality: one sock_recv_length per TCP recvmsg is not one
    # copy, but its bytes are the bytes copied. None = same as `exact`.
    calls_exact: bool | None = None
    bytes_exact: bool | None = None
    # The kernel's own loss figures for this point, by kind (kretprobe_missed, ring_overrun,
    # events_dropped, bpf_recursion_misses, map_full, ...). Any nonzero value => lossy.
    lost: dict[str, int] = field(default_factory=dict)
    # Measured cost of the probe itself per timed call (ns), already part of ns_total; the
    # summary subtracts it. None = not calibrated.
    ns_probe_per_call: float | None = None

    def __post_init__(self):
        if self.calls_exact is None:
            self.calls_exact = self.exact
        if self.bytes_exact is None:
            self.bytes_exact = self.exact

    def add_loss(self, kind: str, n: int, what: str = "") -> None:
        """Record a loss the kernel reported; the point then is a lower bound, never exact."""
        if n <= 0:
            return
        self.lost[kind] = self.lost.get(kind, 0) + int(n)
        self.exact = self.calls_exact = self.bytes_exact = False
        self.notes.append(f"{n} {what or kind} reported by the kernel: counts are a lower bound")

    @property
    def quality(self) -> str:
        """exact | lossy (the kernel reported losses) | estimate (not the copy itself)."""
        if any(self.lost.values()):
            return "lossy"
        return "exact" if self.calls_exact and self.bytes_exact else "estimate"

    def to_json(self) -> dict:
        return {**self.__dict__, "quality": self.quality}

    @classmethod
    def from_json(cls, doc: dict) -> PointCounts:
        """Inverse of to_json (counts read back from a remote node's tracer)."""
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: v for k, v in doc.items() if k in known})


class Tracer:
    """Base class; backends override every method."""

    name = "base"
    exact = True

    def available(self) -> Availability:  # pragma: no cover - interface
        raise NotImplementedError

    def attach(self, pids: dict[str, int]) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def read(self) -> list[PointCounts]:  # pragma: no cover - interface
        raise NotImplementedError

    def detach(self) -> None:  # pragma: no cover - interface
        raise NotImplementedError

    def close(self) -> None:
        """Release what outlives detach (a reused node process); most tracers have none."""
