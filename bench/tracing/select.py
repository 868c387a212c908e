"""Choosing tracer backends per copy point.

`auto` asks, for every catalog point, which backends could measure it on this kernel:
kprobe backends need the symbol present; bpftrace and kprobe_events additionally need it
attachable by the kernel's trace_kprobe (it refuses notrace functions such as Debian 6.1's
_copy_*_iter), which we find out by defining a throw-away kprobe event. Then, per point, it
takes the most exact backend that can measure it (ties: the one covering more points):

  bpftrace       exact, counts in BPF maps, ns timing, no module to build or load
  kmod           exact, counts in the module, ns timing; reaches notrace functions
  kprobe_events  exact unless the ring buffer overruns (streams every event; loss reported)
  tracepoints    bpftrace on sock/skb tracepoints: bytes exact, calls estimates (no kprobes)

The choice (and why every better backend was rejected) is recorded in `tracer.choices`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from bench.errors import UsageError
from bench.tracing import catalog, tracefs
from bench.tracing.base import Availability, PointCounts, Tracer
from bench.tracing.env import Environment, filter_functions
from bench.tracing.kprobe_events import refusal as kprobe_refusal

BACKENDS = ("kmod", "bpftrace", "kprobe_events", "tracepoints")
# In order of exactness: counts in kernel maps/counters first; kprobe_events streams every
# event through a ring buffer (lossy at high rates, loss reported); tracepoints estimate.
PREFERENCE = ("bpftrace", "kmod", "kprobe_events", "tracepoints")
EXACTNESS = {"bpftrace": 0, "kmod": 0, "kprobe_events": 1, "tracepoints": 2}
KPROBE_BACKENDS = ("bpftrace", "kmod", "kprobe_events")
# recv_skb is tracepoint-only and informational: it comes along whenever tracepoints is used.
DEFAULT_POINTS = tuple(p for p in catalog.POINTS if p != "recv_skb")


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
        kw.pop("all_copies", None)
        return TracepointsTracer(**kw)
    raise UsageError(f"unknown tracer backend {name!r}", fix=f"use auto or one of {BACKENDS}")


# -- discovery ----------------------------------------------------------------------------------
@dataclass
class SymbolFacts:
    """Per-symbol facts gathered once."""
    present: bool
    traceable: bool | None     # for bpftrace/kprobe_events; None = unknown
    why: str


def symbol_facts(probes: list[catalog.Probe], env: Environment) -> dict[str, SymbolFacts]:
    syms = catalog.kallsyms(env.proc_root)
    root = tracefs.find(env.roots)
    ftrace = filter_functions(root) if root else None
    kprobe_events = bool(root and (root / "kprobe_events").exists())
    facts = {}
    for p in probes:
        present = p.symbol in syms if syms else True
        if not present:
            facts[p.symbol] = SymbolFacts(False, False, "absent from /proc/kallsyms"
                                     + (f" (module {p.module} not loaded)" if p.module else ""))
        elif not kprobe_events:
            facts[p.symbol] = SymbolFacts(True, False, "no kprobe_events: kernel without kprobes")
        elif ftrace is not None and p.symbol not in ftrace:
            facts[p.symbol] = SymbolFacts(True, False, "not in available_filter_functions (notrace)")
        elif env.try_attach and root is not None and os.geteuid() == 0:
            ok, why = env.try_attach(p.symbol, root)
            facts[p.symbol] = SymbolFacts(True, ok, why)
        else:
            facts[p.symbol] = SymbolFacts(True, None if ftrace is None else True,
                                     "in available_filter_functions" if ftrace else "unknown")
    return facts


def backend_available(name: str, env: Environment, comm=None) -> Availability:
    if name in ("bpftrace", "tracepoints") and env.bpftrace_ok is not None:
        av = env.bpftrace_ok()      # the tracepoints backend runs on bpftrace too
        if name == "bpftrace" or not av.ok:
            return av
        root = tracefs.find(env.roots)
        if root is None or not any(catalog.tracepoint_exists(p.symbol, root)
                                   for p in catalog.probes(kind="tracepoint")):
            return Availability(False, "no copy tracepoints on this kernel",
                                "use a kprobe backend (kmod) or a kernel >= 6.3")
        return Availability(True, "tracepoints")
    kw: dict = {}
    if name == "kmod":
        kw = dict(proc_root=env.proc_root, sys_root=env.sys_root,
                  modules_root=env.modules_root, cache=env.cache, which=env.which)
    elif name in ("kprobe_events", "tracepoints"):
        kw = dict(roots=env.roots)
    return make_tracer(name, **kw).available()


# -- planning -----------------------------------------------------------------------------------
@dataclass
class Choice:
    point: str
    backend: str | None
    symbols: list[str]
    exact: bool
    rejected: dict[str, str] = field(default_factory=dict)   # backend -> why not

    def to_json(self) -> dict:
        return dict(self.__dict__)


def plan(spec: str = "auto", points: list[str] | None = None,
         env: Environment | None = None) -> list[Choice]:
    """Which backend measures which point, and with which symbols. Pure given `env`."""
    env = env or Environment()
    if spec != "auto" and spec not in BACKENDS:
        raise UsageError(f"unknown tracer backend {spec!r}", fix=f"use auto or one of {BACKENDS}")
    points = list(points or DEFAULT_POINTS)
    unknown = [p for p in points if p not in catalog.POINTS]
    if unknown:
        raise UsageError(f"unknown copy point(s) {unknown}",
                         fix=f"choose from {', '.join(catalog.POINTS)}")
    candidates = PREFERENCE if spec == "auto" else (spec,)
    kprobes = [p for p in catalog.probes(kind="kprobe") if p.point in points]
    facts = symbol_facts(kprobes, env) if any(b in KPROBE_BACKENDS for b in candidates) else {}
    avail = {b: backend_available(b, env) for b in candidates}
    # What each backend could do per point.
    usable: dict[str, dict[str, list[str]]] = {b: {} for b in candidates}
    why_not: dict[str, dict[str, str]] = {pt: {} for pt in points}
    for b in candidates:
        for pt in points:
            if not avail[b].ok:
                why_not[pt][b] = avail[b].reason
                continue
            if b == "tracepoints":
                root = tracefs.find(env.roots)
                tps = [p.symbol for p in catalog.probes(point=pt, kind="tracepoint")
                       if root and catalog.tracepoint_exists(p.symbol, root)]
                if tps:
                    usable[b][pt] = tps
                else:
                    why_not[pt][b] = "no tracepoint for this point on this kernel"
                continue
            syms = [p.symbol for p in kprobes if p.point == pt]
            present = [s for s in syms if facts[s].present]
            refused: dict[str, str] = {}
            if b == "kmod":
                ok = present
            else:
                ok = [s for s in present if facts[s].traceable is not False]
            if b == "kprobe_events":
                # e.g. skb_copy_ubufs' bytes need skb->data_len's offset from the kernel's BTF
                for s in list(ok):
                    why = kprobe_refusal(catalog.by_symbol(s), env.btf)
                    if why:
                        ok.remove(s)
                        refused[s] = why
            refused.update({s: facts[s].why for s in syms if s not in ok and s not in refused})
            if ok and (b == "kmod" or len(ok) == len(present)):
                usable[b][pt] = ok
            else:
                why_not[pt][b] = "; ".join(f"{s}: {w}" for s, w in refused.items()) or "no symbol"
    # Per point, the most exact backend that can measure it (PREFERENCE is that order): an
    # estimate never wins a point an exact backend could measure, even if it covers more.
    # Among equally exact backends, the one covering more points (fewer tracers attached).
    choices: dict[str, Choice] = {}
    order = sorted(candidates, key=lambda b: (EXACTNESS[b], -len(usable[b]), PREFERENCE.index(b)))
    for pt in points:
        for b in order:
            if pt in usable[b]:
                better = {k: v for k, v in why_not[pt].items()
                          if PREFERENCE.index(k) < PREFERENCE.index(b)}
                choices[pt] = Choice(pt, b, usable[b][pt], exact=b != "tracepoints",
                                     rejected=better)
                break
    for pt in points:
        if pt not in choices:
            choices[pt] = Choice(pt, None, [], False, rejected=why_not[pt])
    return [choices[pt] for pt in points]


class MultiTracer(Tracer):
    """Several backends, each on its own points, behind the one Tracer interface."""

    name = "auto"

    def __init__(self, tracers: list[Tracer], choices: list[Choice]):
        self.tracers = tracers
        self.choices = choices
        self.attached: list[Tracer] = []

    def available(self) -> Availability:
        if not self.tracers:
            # One short reason: the distinct refusals, not a dict per point.
            why = dict.fromkeys(r for c in self.choices for r in c.rejected.values())
            return Availability(False, "nothing can count copies here: " + "; ".join(why),
                                "run as root with bpftrace installed (python3 -m bench.bootstrap)"
                                ", or in the lab VM: --target lab")
        return Availability(True, ", ".join(f"{c.point}={c.backend}" for c in self.choices
                                            if c.backend))

    def attach(self, pids: dict[str, int]) -> None:
        try:
            for t in self.tracers:
                t.attach(pids)
                self.attached.append(t)
        except BaseException:
            self.detach()
            raise

    def read(self) -> list[PointCounts]:
        out: list[PointCounts] = []
        for t in self.attached:
            out.extend(t.read())
        return out

    def detach(self) -> None:
        errors = []
        for t in reversed(self.tracers):
            try:
                t.detach()
            except Exception as e:  # noqa: BLE001 - detach the others regardless
                errors.append(f"{t.name}: {e}")
        self.attached = []
        if errors:
            raise UsageError("could not remove every tracer: " + "; ".join(errors),
                             fix="bench doctor --cleanup")


def select_tracer(spec: str = "auto", points: list[str] | None = None,
                  comm: dict[str, str] | None = None, all_copies: bool = False,
                  env: Environment | None = None) -> MultiTracer:
    """The tracer for `spec` (auto|kmod|bpftrace|kprobe_events|tracepoints) and its choices."""
    env = env or Environment()
    choices = plan(spec, points, env)
    if spec != "auto" and not any(c.backend for c in choices):
        reasons = sorted({c.rejected.get(spec, "?") for c in choices})
        raise UsageError(f"backend {spec} cannot measure anything here: {'; '.join(reasons)}",
                         fix="use --backend auto, or the lab VM (bench lab up)")
    tracers: list[Tracer] = []
    for backend in dict.fromkeys(c.backend for c in choices if c.backend):
        syms = [s for c in choices if c.backend == backend for s in c.symbols]
        kw: dict = {"comm": comm}
        if backend == "tracepoints":
            kw["roots"] = env.roots
        else:
            kw["probes"] = [catalog.by_symbol(s) for s in syms]
            kw["all_copies"] = all_copies
            if backend == "kmod":
                kw.update(proc_root=env.proc_root, sys_root=env.sys_root,
                          modules_root=env.modules_root, cache=env.cache, which=env.which)
            if backend == "kprobe_events":
                kw["roots"] = env.roots
        tracers.append(make_tracer(backend, **kw))
    return MultiTracer(tracers, choices)

