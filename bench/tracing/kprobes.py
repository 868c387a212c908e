"""The kprobe backends' shared model: what kmod, bpftrace and kprobe_events measured, by
probe index and slot (`ModuleReport`), and how it becomes PointCounts per side, with losses,
demotions and the probe-cost calibration. The slot and length conventions are copytrace.c's
(its #defines of the same names), which the other two backends follow.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.tracing import catalog
from bench.tracing.base import PointCounts

ANY_SLOT = 8             # = ANY_SLOT: copies counted regardless of task (softirq work, rxe)
LEN_SKB_DATA_LEN = -2    # = LEN_SKB_DATA_LEN: length is skb->data_len of the addr argument
SKB_LEN_SYMBOLS = {"skb_copy_ubufs"}
# Copies that may run in softirq/tasklet context on another task's time (rxe's tasklets, a
# zerocopy skb copied in ksoftirqd): counted for the matching side when it is the current
# task, else in the "other" slot rather than lost.
ANY_TASK_POINTS = {"rxe_copy", "zc_fallback"}
OUTPUT_VERSION = 3       # = OUTPUT_VERSION: the /proc/copytrace format parse() reads


@dataclass
class ModuleReport:
    """What one kprobe backend measured, by probe index and slot (kmod, bpftrace share it)."""

    version: int = 0
    probes: dict[int, tuple[str, str, int]] = field(default_factory=dict)  # idx->(sym, status, missed)
    counts: dict[tuple[int, int], tuple[int, int, int]] = field(default_factory=dict)
    hist: dict[tuple[int, int], dict[int, int]] = field(default_factory=dict)
    samples: list[tuple[int, int, int, str, int, int]] = field(default_factory=list)
    # How each registered probe is hit (ftrace | optimized | breakpoint), and the probe-cost
    # calibration per mechanism: (mean apparent ns of an empty probed call, calls measured).
    mech: dict[int, str] = field(default_factory=dict)
    calib: dict[str, tuple[float, int]] = field(default_factory=dict)
    # Socket gates (copytrace's `gates`): idx -> (symbol, status, missed).
    gates: dict[int, tuple[str, str, int]] = field(default_factory=dict)


def bucket_label(b: int) -> str:
    """copytrace bucket b holds durations in [2^(b-1), 2^b) ns; bucket 0 holds 0 ns."""
    return "0" if b == 0 else f"[{1 << (b - 1)}, {1 << b})"


def demote(pcs: list[PointCounts], report: ModuleReport, probes: list[catalog.Probe]) -> None:
    """What makes a count a lower bound beyond its own probe's misses: a copy function of the
    same point that failed to register (an error, not an absent symbol: the catalog lists
    absent ones where a sibling covers them), and a socket gate that failed or missed (the
    copies made inside it were not admitted)."""
    failed: dict[str, list[str]] = {}
    for idx, (sym, status, _) in report.probes.items():
        if status not in ("ok", "absent"):
            failed.setdefault(probes[idx].point, []).append(f"{sym} ({status})")
    gate_fail = [f"{sym} ({st})" for sym, st, _ in report.gates.values() if st != "ok"]
    gate_missed = sum(m for _, st, m in report.gates.values() if st == "ok")
    for pc in pcs:
        for what in failed.get(pc.point, []):
            pc.add_loss("probe_not_registered", 1, f"copy function not counted: {what}")
        if pc.point in ANY_TASK_POINTS:
            continue   # counted whatever the task is doing: gates do not apply
        for what in gate_fail:
            pc.add_loss("gate_not_registered", 1,
                        f"socket entry function not watched, its copies not counted: {what}")
        pc.add_loss("gate_missed", gate_missed,
                    "socket operations not seen (gate kretprobe/kprobe misses, table full)")


def to_counts(report: ModuleReport, probes: list[catalog.Probe], sides: list[str],
              max_samples: int = 64, backend: str = "kmod") -> list[PointCounts]:
    """One PointCounts per registered probe and side, zeros included (no copy is a result)."""
    out: list[PointCounts] = []
    for idx, (sym, status, missed) in sorted(report.probes.items()):
        if status != "ok":
            continue
        probe = probes[idx]
        slots = list(range(len(sides))) + ([ANY_SLOT] if probe.point in ANY_TASK_POINTS else [])
        for slot in slots:
            side = sides[slot] if slot < len(sides) else "other"
            calls, nbytes, ns = report.counts.get((idx, slot), (0, 0, 0))
            pc = PointCounts(point=probe.point, side=side, symbol=sym, backend=backend,
                             exact=True, calls=calls, bytes=nbytes, ns_total=ns)
            # nmissed is per probe, not per side: every side of this probe is a lower bound.
            pc.add_loss("kretprobe_missed", missed,
                        "copies missed (kretprobe maxactive, or the kprobe's own misses)")
            pc.ns_hist = {bucket_label(b): n for b, n in
                          sorted(report.hist.get((idx, slot), {}).items())}
            pc.samples = [{"addr": a, "len": n, "pid": pid, "ns": t}
                          for i, s, pid, a, n, t in report.samples
                          if i == idx and s == slot][-max_samples:]
            if probe.len_arg is None and probe.symbol not in SKB_LEN_SYMBOLS:
                pc.notes.append("calls only: this function has no length argument")
            _calibrate(pc, report, idx)
            out.append(pc)
    demote(out, report, probes)
    return out


def _calibrate(pc: PointCounts, report: ModuleReport, idx: int) -> None:
    """Attach the probe cost measured for this probe's mechanism (ns_total stays raw)."""
    if not report.calib:
        return
    mech = report.mech.get(idx)
    if mech in report.calib:
        ns, n = report.calib[mech]
        pc.ns_probe_per_call = ns
        pc.notes.append(f"probe cost {ns:.0f} ns per call ({mech} kretprobe, mean of {n} "
                        "empty calls at load) is included in ns_total")
    else:
        have = ", ".join(sorted(report.calib))
        pc.notes.append(f"probe cost not calibrated for this probe's mechanism ({mech or '?'}; "
                        f"calibrated: {have}): ns_total includes an unknown probe cost")
