"""What the traced sample counts: the kernel's copies (bench/tracing/, summarised by
bench/copycount.py) and the agents' system calls (bench/tracing/syscount.py).

`Instruments` is built from the placement: it surveys once per run what can count there (one
note per run says why not), hands out the tracers of each case's traced sample (node tracers
kept from case to case), and turns a traced `Sample` into the case's `copies` and `syscalls`.
The runner runs the sample; nothing here runs one or calls back into the runner."""

from __future__ import annotations

import statistics
import traceback

from bench.errors import UsageError, attempt
from bench.sample import AGENT_READY_TIMEOUT, Sample
from bench.tracing.base import Availability

SYSCALLS_METHOD = (
    "system calls of each agent, counted in the kernel on raw_syscalls:sys_enter (a tracefs "
    "hist trigger on the agents' threads where the kernel has them, else a bpftrace BPF map "
    "over their pid trees; per side and syscall id) from attach (both agents ready) to read "
    "(both results in): in the copy-counting sample when copies are counted, else in a sample "
    "of its own; per GB: sender per byte sent, receiver per byte received; exact unless the "
    "kernel reports a loss (BPF recursion misses, a full map or hist table, a task started "
    "while counting: lossy, a lower bound)")


class Instruments:
    """The run's counting. `copies_state` / `syscalls_state`: None where that can be counted,
    else what every case records instead (off, unavailable: see the run's note)."""

    def __init__(self, placement, copies_spec: str, syscalls_spec: str, metadata: dict):
        self.placement, self.metadata = placement, metadata
        self.copies_spec, self.syscalls_spec = copies_spec, syscalls_spec
        self.copies_state: dict | None = None
        self.syscalls_state: dict | None = None
        self.bandwidth = None       # memcpy bandwidth of the measuring machine, once per run
        self._tracers: dict[str, object] = {}    # node tracers kept ("copies", "syscalls")
        self._ws_bandwidth: dict[int, object] = {}   # working-set bytes -> memcpy bandwidth

    @property
    def kept(self) -> dict[str, object]:
        """The node tracers kept for the run, by kind."""
        return dict(self._tracers)

    def method(self) -> str:
        """The result's method.syscalls."""
        return SYSCALLS_METHOD if self.syscalls_spec != "off" else "not counted (--syscalls off)"

    # -- once per run -----------------------------------------------------------------------
    def check(self) -> None:
        """What can count where the agents run; UsageError (exit 2) for an explicit backend
        that cannot. A node tracer that surveyed is kept as the run's first (`reused`)."""
        try:
            self.copies_state = self.check_copies()
            if self.copies_state and self.copies_state["status"] == "unavailable":
                # One note per run names the reason and the fix; cases only point at it.
                self.metadata["copies_note"] = self.copies_state
                self.copies_state = {"status": "unavailable", "reason": "see the run's "
                                     "copies_note", "run_note": True}
            self.syscalls_state = self.check_syscalls()
        except BaseException:
            self.close()        # a node tracer the survey kept for the run
            raise

    def check_copies(self) -> dict | None:
        """None when copies can be counted; else why not (explicit backends fail loudly)."""
        if self.copies_spec == "off":
            return {"status": "off", "reason": "copy counting not requested (--copies off)"}
        try:
            # An explicit backend that cannot work raises. Remote: each node's tracer says
            # what it would use there (bench/tracing/remote.py).
            tracer = self.placement.tracer(self.copies_spec, survey=True, reuse=True)
        except UsageError as exc:
            raise UsageError(f"--copies {self.copies_spec}: {exc.message}",
                             "use --copies auto (picks what works here), --copies off, or "
                             "--target lab for kprobes") from None
        av = self._surveyed("copies", tracer)
        if not av.ok:
            return {"status": "unavailable", "reason": av.reason, "fix": av.fix}
        self.metadata["copy_backends"] = [c.to_json() for c in tracer.choices]
        from bench.costmodel import measure_bandwidth
        # The seed's cost model needs this machine's memory bandwidth: measured once per run.
        self.bandwidth = getattr(tracer, "bandwidth", None) or measure_bandwidth()
        self.metadata["memory_bandwidth"] = self.bandwidth.to_json()
        return None

    def check_syscalls(self) -> dict | None:
        """None when syscalls can be counted; else why not (once per run, as copies_note)."""
        if self.syscalls_spec == "off":
            return {"status": "off", "reason": "syscall counting not requested (--syscalls off)"}
        if self.syscalls_spec != "auto":
            raise UsageError(f"--syscalls {self.syscalls_spec!r}", "use --syscalls auto or off")
        try:
            av = self._surveyed("syscalls", self.placement.syscall_tracer(survey=True,
                                                                          reuse=True))
        except UsageError as exc:
            av = Availability(False, exc.message, exc.fix)
        if av.ok:
            return None
        return self._syscalls_unavailable(av.reason, av.fix)

    def _syscalls_unavailable(self, reason: str, fix: str) -> dict:
        """One note per run with the reason and the fix; cases only point at it."""
        self.metadata["syscalls_note"] = {"status": "unavailable", "reason": reason, "fix": fix}
        self.syscalls_state = {"status": "unavailable", "reason": "see the run's syscalls_note",
                               "run_note": True}
        return self.syscalls_state

    def _surveyed(self, kind: str, tracer) -> Availability:
        """A node tracer that surveyed its node (seconds under TCG) and can count is kept as
        the run's first tracer of its kind (`reused`); one that cannot is ended now."""
        av = tracer.available()
        if av.ok and getattr(tracer, "reuse", False):
            self._tracers[kind] = tracer
        elif hasattr(tracer, "close"):
            attempt(tracer.close)
        return av

    # -- per case ---------------------------------------------------------------------------
    def tracers_for(self, case) -> tuple[object, object | None]:
        """The copy tracer and the syscall counter (or None) of the case's traced sample."""
        tracer = self.reused("copies", case,
                             lambda: self.placement.tracer(self.copies_spec, reuse=True))
        return tracer, self.syscall_counter(case)

    def syscall_counter(self, case):
        """A syscall counter for the next sample, or None (off, unavailable, or it cannot be
        made here: then the run's note says why)."""
        if self.syscalls_state is not None:
            return None
        try:
            return self.reused("syscalls", case,
                               lambda: self.placement.syscall_tracer(reuse=True))
        except UsageError as exc:
            self._syscalls_unavailable(exc.message, exc.fix)
            return None

    def reused(self, kind: str, case, make):
        """The tracer of `kind` for this case's traced sample. On SSH nodes choosing the
        backends costs seconds under TCG (kallsyms, ftrace's list, BTF), so a node tracer
        serves one case after another (detached in between: nothing stays attached) until
        the run ends, it fails, or its nodes' lifetime watchdog would fire within the case."""
        t = self._tracers.get(kind)
        if t is not None and not t.usable_for(case.duration + AGENT_READY_TIMEOUT * 2 + 120):
            self.close(kind)
            t = None
        if t is None:
            t = make()
            if getattr(t, "reuse", False):
                self._tracers[kind] = t
        return t

    def close(self, *kinds: str) -> None:
        """End the kept node tracers (all, or those of `kinds`): the run's end, or a traced
        sample that failed and left them in an unknown state."""
        for kind in kinds or list(self._tracers):
            t = self._tracers.pop(kind, None)
            if t is not None:
                attempt(t.close)

    # -- a traced sample's figures ----------------------------------------------------------
    def copies(self, case, cr, sample: Sample, tracer) -> dict:
        """The case's `copies` from its traced sample: the accounting per side, and what
        counting cost (its throughput against the untraced samples of the same case)."""
        from bench.copycount import add_costs, summarize
        s, counts = sample.record, sample.copy_counts
        per_flow = _per_flow_copies(counts, s, case.size) if s.get("flows") else None
        counts = _merged_sides(counts)
        sides = summarize(counts,
                          {"sender": s["messages_sent"], "receiver": s["messages"]},
                          {"sender": s["messages_sent"] * case.size, "receiver": s["bytes"]},
                          completions=s.get("zerocopy"),
                          receive_report=s.get("zerocopy_receive"),
                          rdma=_rdma_summary(case, cr))
        add_costs(sides, s["cpu"], self.bandwidth, self._working_set(case.size, case.batch))
        return {
            "status": "ok",
            "choices": [c.to_json() for c in tracer.choices],
            "sides": sides,
            **({"flows": per_flow} if per_flow is not None else {}),
            "points": [c.to_json() for c in counts],
            "traced_sample": {k: s.get(k) for k in ("bytes", "messages", "messages_sent",
                                                    "gbps", "window_s", "payload_errors",
                                                    "zerocopy", "zerocopy_receive", "rdma")},
            "tracer_overhead_ratio": _overhead(s, cr),
            "buffers": {"sender": s["sender"].get("buffer_addr"),
                        "receiver": s["receiver"].get("buffer_addr")},
        }

    def syscalls(self, case, cr, sample: Sample, counter, which: str) -> dict:
        """The case's `syscalls`: per side calls, per GB, top syscalls; or why not."""
        from bench.tracing import syscount
        s, counts = sample.record, sample.syscall_counts
        if counts is not None:
            counts = _merged_syscalls(_merged_sides(counts))
        if counts is None:
            reason, fix, attached = sample.syscall_error or ("no counts", "", True)
            if not attached:      # it cannot attach here: say so once, do not retry per case
                self._syscalls_unavailable(f"the syscall counter could not attach: {reason}", fix)
            return {"status": "failed", "reason": f"syscall counting failed: {reason}",
                    "fix": fix}
        sent = s["messages_sent"]
        sides = syscount.summarize(counts, {"sender": sent * case.size, "receiver": s["bytes"]},
                                   {"sender": sent, "receiver": s["messages"]})
        out = {
            "status": "ok",
            "sample": which,
            "counted_by": (counter.describe() if hasattr(counter, "describe") else {}),
            "quality": ("lossy" if any(d["quality"] == "lossy" for d in sides.values())
                        else "exact"),
            "sides": sides,
            "traced_sample": {**{k: s.get(k) for k in ("bytes", "messages",
                                                       "messages_sent", "gbps", "window_s")},
                              "send_errors": s["sender"].get("send_errors"),
                              "recv_calls": s["receiver"].get("recv_calls")},
            "tracer_overhead_ratio": _overhead(s, cr),
        }
        check = _recv_calls_check(s, cr)
        if check:
            out["recv_calls_check"] = check
        return out

    def _working_set(self, size: int, batch: int = 1):
        """memcpy bandwidth at the case's working set (cache-hot), measured once per size."""
        from bench.costmodel import measure_working_set, working_set_bytes
        if self.placement.remote:
            return None      # it would measure this machine, not the nodes that copied
        size = working_set_bytes(size, batch or 1)
        cache = self._ws_bandwidth
        if size not in cache:
            cache[size] = measure_working_set(size)
            self.metadata.setdefault("working_set_bandwidth", {})[str(size)] = \
                cache[size].to_json()
        return cache[size]


def _merged_sides(counts: list) -> list:
    """Counts of several flows' processes ("sender.1", ...) as the sides they play: the
    case's totals are every flow's sender and every flow's receiver."""
    from dataclasses import replace

    from bench.flows import base_side
    return [replace(c, side=base_side(c.side)[0]) if base_side(c.side)[1] else c
            for c in counts]


def _merged_syscalls(counts: list) -> list:
    """One count per (side, syscall): several flows' processes of a side added together."""
    from dataclasses import replace
    by: dict[tuple[str, int], object] = {}
    for c in counts:
        key = (c.side, c.nr)
        by[key] = c if key not in by else replace(by[key], calls=by[key].calls + c.calls)
    return list(by.values())


def _per_flow_copies(counts: list, s: dict, size: int) -> list[dict]:
    """Each flow's copies per side: calls, bytes and bytes per payload byte of its own
    processes (the sides' main copy point), beside the flow's own verified bytes."""
    from bench.copycount import SIDE_POINT, worst
    from bench.flows import base_side
    out = []
    for f in s["flows"]:
        row = {"flow": f["flow"]}
        for role in ("sender", "receiver"):
            mine = [c for c in counts if base_side(c.side) == (role, f["flow"])
                    and c.point == SIDE_POINT[role]]
            payload = f["bytes"] if role == "receiver" else f["messages_sent"] * size
            nbytes = sum(c.bytes for c in mine)
            row[role] = {"calls": sum(c.calls for c in mine), "bytes": nbytes,
                         "bytes_per_payload_byte": round(nbytes / payload, 4) if payload else None,
                         "quality": worst(c.quality for c in mine)}
        out.append(row)
    return out


def failed_copies(exc: BaseException) -> dict:
    """The case's `copies` when its traced sample broke in the tracer (not an agent): only
    the counts go, the untraced samples stand."""
    if isinstance(exc, UsageError):
        return {"status": "failed", "reason": f"copy counting failed: {exc.message}",
                "fix": exc.fix}
    return {"status": "failed", "reason": f"copy counting failed: {type(exc).__name__}: {exc}",
            "fix": "re-run with --copies off to measure without counts; report it",
            "traceback": traceback.format_exc()}


def _overhead(sample: dict, cr) -> float | None:
    """The traced sample's throughput over the untraced median of the same case."""
    untraced = cr.stat("gbps")
    return (round(sample["gbps"] / untraced["median"], 4)
            if untraced and sample.get("gbps") else None)


def _rdma_summary(case, cr) -> dict | None:
    """For RDMA rows: whether the device is soft-RoCE (its kernel copies the payload)."""
    if case.rdma is None:
        return None
    devs = (cr.network or {}).get("rdma") or {}
    return {"soft": any(d.get("soft") for d in devs.values()), "devices": devs}


def _recv_calls_check(sample: dict, cr) -> dict | None:
    """The receiver's own recv call count per GB in the counted sample against the untraced
    samples': a receiver that lags gets more bytes per call, so a tracer that slows one side
    can change how many calls a stream takes (DESIGN.md, "Syscalls")."""
    def per_gb(s: dict) -> float | None:
        calls = (s.get("receiver") or {}).get("recv_calls")
        return calls / (s["bytes"] / 1e9) if calls is not None and s.get("bytes") else None

    traced = per_gb(sample)
    untraced = [v for v in (per_gb(s) for s in cr.measured()) if v is not None]
    if traced is None or not untraced:
        return None
    med = statistics.median(untraced)
    return {"traced_per_gb": round(traced, 3), "untraced_median_per_gb": round(med, 3),
            "ratio": round(traced / med, 4) if med else None}
