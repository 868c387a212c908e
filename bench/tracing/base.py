"""The interface every tracer backend implements, and the counts it returns.

The runner uses it like this (one case):

    tracer = select_tracer(spec, points)          # spec: "auto" | "kmod" | "bpftrace" | ...
    tracer.check()                                # raises UsageError with a fix
    tracer.attach(points, pids={"sender": 123, "receiver": 124})
    ... traffic ...
    counts = tracer.read()                        # {point_name: PointCounts}
    tracer.detach()                               # always, also on Ctrl-C (use try/finally)
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
    exact: bool           # False for estimates (tracepoints)
    calls: int = 0
    bytes: int = 0
    ns_total: int | None = None                     # None where the backend cannot time copies
    ns_hist: dict[str, int] = field(default_factory=dict)   # log2 bucket label -> count
    samples: list[dict] = field(default_factory=list)       # {"addr": "0xffff...", "len": N, "pid": P}
    notes: list[str] = field(default_factory=list)          # why not exact, what was absent, ...

    def to_json(self) -> dict:
        return dict(self.__dict__)


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
