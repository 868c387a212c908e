"""Choosing a tracer backend (filled in below)."""

from __future__ import annotations

from bench.errors import UsageError
from bench.tracing.base import Tracer

BACKENDS = ("kmod", "bpftrace", "kprobe_events", "tracepoints")


def make_tracer(name: str, **kw) -> Tracer:
    """One backend by name, with its options (probes=, comm=, ...)."""
    if name == "kmod":
        from bench.tracing.kmod import KmodTracer
        return KmodTracer(**kw)
    if name == "bpftrace":
        from bench.tracing.bpftrace import BpftraceTracer
        return BpftraceTracer(**kw)
    if name == "kprobe_events":
        from bench.tracing.kprobe_events import KprobeEventsTracer
        return KprobeEventsTracer(**kw)
    if name == "tracepoints":
        from bench.tracing.tracepoints import TracepointsTracer
        kw.pop("probes", None)
        return TracepointsTracer(**kw)
    raise UsageError(f"unknown tracer backend {name!r}", fix=f"use auto or one of {BACKENDS}")
