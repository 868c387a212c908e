"""Expand a suite and command-line overrides into concrete cases. Pure: no I/O, no root."""

from __future__ import annotations

import math
import mmap
from dataclasses import dataclass, field, replace

from bench.errors import UsageError
from bench.suite import Suite
from workloads import registry

# io_uring requests in flight per submission when the suite says nothing, and the kernel's
# IORING_MAX_ENTRIES: the agent's own limits, so a deeper queue is a usage error here first.
from workloads.io_uring import DEFAULT_QUEUE_DEPTH, MAX_QUEUE_DEPTH

# How both sides of an RDMA case wait (rdma_wait): "events", ours spin up to their limit, then
# sleep on the CQ's channel, perftest -e where it has it; "poll", both busy-poll. The agents'
# own list (rdma_verbs loads pyverbs only when it is used).
from workloads.rdma_verbs import WAITS as RDMA_WAITS

# The mapped receiver's default chunk (tcp_mmap's) and the largest a suite may ask for.
from workloads.tcp_zerocopy_receive import MAX_CHUNK, chunk_for

TOPOLOGIES = ("loopback", "veth", "link")   # link: two machines (--target with two nodes)
DEFAULT_DURATION = 2.0
MAX_DURATION_CAP = 120.0    # a --bytes run still stops by this many seconds
# Upper bounds on what one case may ask for: beyond them a value is a typo, not a plan (an hour
# per sample, a thousand samples per case, a TiB per sample).
MAX_DURATION = 3600.0
MAX_REPEAT = 1000
MAX_BYTES = 1 << 40


@dataclass(frozen=True)
class Overrides:
    duration: float | None = None
    bytes: int | None = None
    sizes: tuple[int, ...] | None = None
    repeat: int | None = None
    topology: str | None = None
    workloads: tuple[str, ...] | None = None
    reference: bool | None = None
    batch: int | None = None
    queue_depth: int | None = None
    response_size: int | None = None   # request/response cases: R bytes (default Q)
    in_flight: int | None = None       # ... and transactions outstanding at once (default 1)
    flows: int | None = None           # independent flows per case (default 1)


@dataclass(frozen=True)
class RdmaParams:
    depth: int = 128           # send queue depth (WRs in flight), perftest's -t default
    inline: int = 0            # messages up to this many bytes are posted inline
    signal_every: int = 16     # a signalled completion every N WRs
    wait: str = "events"       # how both sides wait for completions (RDMA_WAITS)

    def to_json(self) -> dict:
        return {"depth": self.depth, "inline": self.inline, "signal_every": self.signal_every,
                "wait": self.wait}


def _check_rdma_wait(wait) -> None:
    if wait not in RDMA_WAITS:
        raise UsageError(f"rdma_wait {wait!r}: must be one of " + ", ".join(map(repr, RDMA_WAITS)),
                         'set rdma_wait = "events" (ours sleep on CQ events after a short spin) '
                         'or "poll" (ours and perftest busy-poll) in the suite')


def _rdma_params(d: dict) -> RdmaParams:
    r = RdmaParams(depth=d.get("rdma_depth", 128), inline=d.get("rdma_inline", 0),
                   signal_every=d.get("rdma_signal_every", 16), wait=d.get("rdma_wait", "events"))
    _check_rdma_wait(r.wait)
    if not 1 <= r.depth <= 16384:
        raise UsageError(f"rdma_depth {r.depth}: must be between 1 and 16384", "e.g. 128")
    if not 0 <= r.inline <= 4096:
        raise UsageError(f"rdma_inline {r.inline}: must be between 0 and 4096 bytes", "e.g. 0")
    if not 1 <= r.signal_every <= r.depth:
        raise UsageError(f"rdma_signal_every {r.signal_every}: must be between 1 and "
                         f"rdma_depth ({r.depth})", "e.g. 16")
    return r


@dataclass(frozen=True)
class Case:
    workload: str
    size: int
    topology: str
    duration: float            # seconds cap on the send loop
    count: int | None          # message cap (from --bytes), or None
    repeat: int
    reference: bool
    batch: int = 1             # datagrams per system call (sendmmsg/recvmmsg) for udp
    skip_reason: str | None = None
    skip_fix: str | None = None
    rdma: RdmaParams | None = None   # RDMA cases: queue depth, inline threshold, signalling
    queue_depth: int | None = None   # io_uring cases: requests in flight per submission
    zc_chunk: int | None = None      # TCP_ZEROCOPY_RECEIVE cases: bytes mapped per call
    zc_rcvlowat: int | None = None   # ... and the receiver's SO_RCVLOWAT
    response_size: int | None = None   # request/response cases: R bytes (None: R = Q)
    in_flight: int | None = None       # ... transactions outstanding at once (1 when set)
    sendfile_dir: str | None = None    # sendfile cases: where the file lives (None: TMPDIR)
    flows: int = 1                     # independent flows: sender and receiver processes each

    @property
    def rr(self) -> bool:
        """A request/response (latency) case: its rows are round trips, not bandwidth."""
        return self.in_flight is not None

    @property
    def response(self) -> int:
        """R: the response's bytes (the request's, Q, unless the suite says otherwise)."""
        return self.response_size or self.size

    @property
    def id(self) -> str:
        suffix = f"-b{self.batch}" if self.batch > 1 else ""
        if self.queue_depth is not None and self.queue_depth != DEFAULT_QUEUE_DEPTH:
            suffix += f"-q{self.queue_depth}"
        if self.zc_chunk is not None and self.zc_chunk != chunk_for(self.size):
            suffix += f"-c{self.zc_chunk}"
        if self.zc_rcvlowat is not None and self.zc_rcvlowat != self.zc_chunk:
            suffix += f"-l{self.zc_rcvlowat}"
        if self.rdma is not None and self.rdma.wait != "events":
            suffix += f"-{self.rdma.wait}"
        if self.rr and self.response != self.size:
            suffix += f"-r{self.response}"
        if self.rr and self.in_flight != 1:
            suffix += f"-f{self.in_flight}"
        if self.flows > 1:
            suffix += f"-p{self.flows}"          # iperf3's -P
        return f"{self.workload}-{self.size}-{self.topology}{suffix}"


@dataclass(frozen=True)
class Plan:
    suite: str
    cases: tuple[Case, ...] = field(default_factory=tuple)

    @property
    def topologies(self) -> set[str]:
        return {c.topology for c in self.cases if c.skip_reason is None}


def _check_queue_depth(n) -> None:
    if n is not None and not 1 <= n <= MAX_QUEUE_DEPTH:
        raise UsageError(f"queue depth {n}: must be between 1 and {MAX_QUEUE_DEPTH} (the kernel's "
                         "IORING_MAX_ENTRIES)", "pass e.g. --queue-depth 32")


def _check_receive_chunk(chunk, lowat) -> None:
    page = mmap.PAGESIZE
    if chunk is not None and not (page <= chunk <= MAX_CHUNK and chunk % page == 0):
        raise UsageError(f"zc_chunk {chunk}: must be a multiple of the page size ({page} B) "
                         f"between {page} and {MAX_CHUNK} bytes (TCP_ZEROCOPY_RECEIVE maps whole "
                         "pages)", "set e.g. zc_chunk = 524288 (tcp_mmap's 512 KiB) in the suite")
    if lowat is not None and not 1 <= lowat <= MAX_CHUNK:
        raise UsageError(f"zc_rcvlowat {lowat}: must be between 1 and {MAX_CHUNK} bytes",
                         "set e.g. zc_rcvlowat = 524288 in the suite, or leave it out for "
                         "SO_RCVLOWAT = the chunk (as tcp_mmap sets it)")


def _check_rr(name: str, wl, response, in_flight) -> None:
    """R within what the path carries, in_flight within what the agents keep outstanding."""
    from workloads.rr import IN_FLIGHT_MAX
    if response is not None:
        err = wl.size_error(response)
        if err:
            raise UsageError(err.replace("message size", "response size"),
                             f"set response_size between {wl.min_size} and {wl.max_size} for "
                             f"{name} (or leave it out: R = Q)")
    if in_flight is not None and not 1 <= in_flight <= IN_FLIGHT_MAX:
        raise UsageError(f"in_flight {in_flight}: must be between 1 and {IN_FLIGHT_MAX} "
                         "transactions", "pass e.g. --in-flight 1 (netperf's RR: one at a time)")


MAX_FLOWS = 64


def _check_flows(name: str, wl, flows) -> None:
    if not isinstance(flows, int) or not 1 <= flows <= MAX_FLOWS:
        raise UsageError(f"flows {flows}: must be between 1 and {MAX_FLOWS}",
                         "pass e.g. --flows 2 (or the suite's flows)")
    if flows > 1 and not wl.flows:
        raise UsageError(f"{name} runs one flow per case (several are not built for it yet)",
                         f"run {name} with flows = 1, or drop it with --workload")


def _check_common(duration, nbytes, repeat, topology, batch=None) -> None:
    if duration is not None and not 0 < duration <= MAX_DURATION:
        raise UsageError(f"duration {duration}: must be more than 0 and at most "
                         f"{MAX_DURATION:.0f} seconds",
                         "pass --duration (or the suite's duration) as e.g. 2")
    if nbytes is not None and not 1 <= nbytes <= MAX_BYTES:
        raise UsageError(f"bytes {nbytes}: must be between 1 and {MAX_BYTES} (1 TiB)",
                         "pass --bytes (or the suite's bytes) as e.g. 1000000")
    if batch is not None and not 1 <= batch <= 1024:
        raise UsageError(f"batch {batch}: must be between 1 and 1024", "pass e.g. --batch 32")
    if repeat is not None and not 1 <= repeat <= MAX_REPEAT:
        raise UsageError(f"repeat {repeat}: must be at least 1 and at most {MAX_REPEAT}",
                         "pass --repeat (or the suite's repeat) as e.g. 3")
    if topology is not None and topology not in TOPOLOGIES:
        # KIND-mtuN: an MTU set inside our namespaces (bench/topology.py)
        from bench.topology import parse_kind
        parse_kind(topology)


def reference_peer(workload: str, batch: int) -> bool:
    from bench.references.iperf3 import peer_note
    return peer_note(workload, batch) is None


def expand(suite: Suite, ov: Overrides = Overrides()) -> Plan:
    d = suite.defaults
    # --bytes on the command line replaces the suite's duration (the run then stops at the byte
    # count, or at MAX_DURATION_CAP); a suite duration must not cut a byte-counted sample short.
    duration = ov.duration if ov.duration is not None else (
        None if ov.bytes is not None else d.get("duration"))
    nbytes = ov.bytes if ov.bytes is not None else (None if ov.duration else d.get("bytes"))
    repeat = ov.repeat if ov.repeat is not None else d.get("repeat", 1)
    default_topology = ov.topology or d.get("topology", "veth")
    reference = ov.reference if ov.reference is not None else d.get("reference", True)
    batch = ov.batch if ov.batch is not None else d.get("batch", 1)
    depth = ov.queue_depth if ov.queue_depth is not None else d.get("queue_depth",
                                                                        DEFAULT_QUEUE_DEPTH)
    _check_common(duration, nbytes, repeat, default_topology, batch)
    _check_queue_depth(depth)
    _check_receive_chunk(d.get("zc_chunk"), d.get("zc_rcvlowat"))
    if duration is None:
        duration = MAX_DURATION_CAP if nbytes else DEFAULT_DURATION
    rdma = _rdma_params(d)
    wanted = registry.expand_names(ov.workloads) if ov.workloads else None
    cases: list[Case] = []
    seen: set[str] = set()
    for entry in suite.matrix:
        topologies = (ov.topology,) if ov.topology else (entry.topologies or (default_topology,))
        # the entry's own duration, unless the command line bounds the samples itself
        entry_duration = duration
        if entry.duration is not None and ov.duration is None and ov.bytes is None:
            _check_common(entry.duration, None, None, None)
            entry_duration = entry.duration
        for t in topologies:
            _check_common(None, None, None, t)
        for name in registry.expand_names(entry.workloads):
            wl = registry.get(name)
            if wanted and name not in wanted:
                continue
            for size in (ov.sizes or entry.sizes):
                err = wl.size_error(size)
                if err:
                    raise UsageError(err, f"choose sizes between {wl.min_size} and {wl.max_size} for {name}")
                eb = ov.batch if ov.batch is not None else (
                    entry.batch if entry.batch is not None else batch)
                _check_common(None, None, None, None, eb)
                eq = ov.queue_depth if ov.queue_depth is not None else (
                    entry.queue_depth if entry.queue_depth is not None else depth)
                _check_queue_depth(eq)
                ec = entry.zc_chunk if entry.zc_chunk is not None else d.get("zc_chunk")
                el = entry.zc_rcvlowat if entry.zc_rcvlowat is not None else d.get("zc_rcvlowat")
                _check_receive_chunk(ec, el)
                er = ov.response_size if ov.response_size is not None else (
                    entry.response_size if entry.response_size is not None
                    else d.get("response_size"))
                ef = ov.in_flight if ov.in_flight is not None else (
                    entry.in_flight if entry.in_flight is not None else d.get("in_flight", 1))
                if wl.rr:
                    _check_rr(name, wl, er, ef)
                    if wl.transport == "rdma" and ef is not None and ef > rdma.depth:
                        raise UsageError(f"in_flight {ef}: {name} posts one send WR per "
                                         f"transaction, at most rdma_depth ({rdma.depth})",
                                         f"pass --in-flight {rdma.depth} or less, or raise "
                                         "rdma_depth in the suite")
                flow_counts = ((ov.flows,) if ov.flows is not None else
                               entry.flows if entry.flows is not None else (d.get("flows", 1),))
                for nf in flow_counts:
                    _check_flows(name, wl, nf)
                # unset: tcp_mmap's rule, the chunk 512 KiB or the message in whole pages,
                # SO_RCVLOWAT the chunk
                chunk = (ec or chunk_for(size)) if wl.receive_chunk else None
                for nf, topo in ((nf, t) for nf in flow_counts for t in topologies):
                    case = Case(
                        workload=name, size=size, topology=topo, duration=float(entry_duration),
                        count=math.ceil(nbytes / size) if nbytes else None, repeat=int(repeat),
                        reference=bool(reference and wl.reference and (
                            wl.rr or reference_peer(name, int(eb) if wl.transport == "dgram"
                                                    else 1))),
                        batch=int(eb) if wl.transport == "dgram" else 1,
                        # Capabilities (python:liburing included) are checked later, on the
                        # machine that runs the agents, not here.
                        skip_reason=(f"workload {name} is not built yet" if not wl.built
                                     else None),
                        skip_fix=wl.not_built_fix if not wl.built else None,
                        rdma=_entry_rdma(rdma, entry) if wl.transport == "rdma" else None,
                        queue_depth=int(eq) if wl.queue_depth else None,
                        zc_chunk=chunk,
                        zc_rcvlowat=(el or chunk) if wl.receive_chunk else None,
                        response_size=(int(er) if wl.rr and er not in (None, size) else None),
                        in_flight=int(ef) if wl.rr else None,
                        sendfile_dir=d.get("sendfile_dir") if wl.file_source else None,
                        flows=int(nf),
                    )
                    if case.rr and case.reference:
                        from bench.references.rows import tools_for
                        if not tools_for(case):      # no latency tool can mirror it
                            case = replace(case, reference=False)
                    if case.id not in seen:
                        seen.add(case.id)
                        cases.append(case)
    if ov.workloads:
        for name in registry.expand_names(ov.workloads):
            registry.get(name)
    if not cases:
        raise UsageError(f"suite {suite.name}: nothing to run with these filters",
                         "drop --workload or pick workloads that are in the suite (`bench list`)")
    return Plan(suite=suite.name, cases=tuple(cases))


def _entry_rdma(rdma: RdmaParams, entry) -> RdmaParams:
    """The suite's RDMA parameters with the matrix entry's own rdma_wait, if it has one."""
    if entry.rdma_wait is None:
        return rdma
    _check_rdma_wait(entry.rdma_wait)
    return replace(rdma, wait=entry.rdma_wait)


def needed_capabilities(p: Plan) -> set[str]:
    """Capability names (bench.doctor checks) the plan's runnable cases need."""
    return {n for c in p.cases if c.skip_reason is None
            for n in registry.get(c.workload).capabilities}


def require(p: Plan, capabilities: dict[str, tuple[bool, str, str]]) -> Plan:
    """Skip the cases whose workload needs a capability this target lacks, with doctor's
    reason and fix, before anything starts. `capabilities`: name -> (ok, detail, fix)."""
    cases = []
    for c in p.cases:
        unmet = [n for n in registry.get(c.workload).capabilities
                 if n in capabilities and not capabilities[n][0]]
        if c.skip_reason is None and unmet:
            c = replace(c, skip_reason="; ".join(f"needs {n}: {capabilities[n][1]}" for n in unmet),
                        skip_fix="; ".join(capabilities[n][2] for n in unmet if capabilities[n][2])
                        or "see `bench doctor`")
        cases.append(c)
    return Plan(suite=p.suite, cases=tuple(cases))


def cap_flows(p: Plan, cpus: int) -> Plan:
    """Skip the cases with more flows than the sending machine has CPUs (a scaling suite lists
    flows up to the largest machine's): each flow needs a CPU of its own to scale."""
    cases = []
    for c in p.cases:
        if c.skip_reason is None and c.flows > max(cpus, 1):
            c = replace(c, skip_reason=f"{c.flows} flows, but the sending machine has {cpus} "
                        "CPUs: each flow needs one of its own to scale",
                        skip_fix="run it on a machine with as many CPUs, or pass --flows "
                        f"{cpus} or fewer")
        cases.append(c)
    return Plan(suite=p.suite, cases=tuple(cases))
