"""Tracepoint backend: for kernels without kprobes (our development machines).

Why raw tracefs and not bpftrace: it needs no extra tool, starts instantly, and a private
instance (`instances/copybench-<pid>-<side>`) gives each side its own buffer, pid filter
(`set_event_pid` + `event-fork`, so children count too) and clean removal. Events are streamed
from `trace_pipe` by a thread, so the buffer only has to absorb bursts; any loss the kernel
reports (per-cpu overrun / dropped events) marks the result not exact instead of hiding it.

Exactness: `sock:sock_recv_length` is one event per recvmsg; for UDP each recvmsg copies one
datagram in one copy, so UDP receive counts are exact. Everything else is an estimate.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

from bench.errors import UsageError
from bench.tracing import catalog, tracefs
from bench.tracing.base import Availability, PointCounts, Tracer

LINE = re.compile(
    r"^\s*(?P<task>.*?)-(?P<pid>\d+)\s+(?:\(\s*(?P<tgid>[\d-]+)\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:\S+\s+)?(?P<ts>\d+\.\d+):\s+(?P<event>\w+):\s+(?P<body>.*)$")
SOCK_BODY = re.compile(r"sk address = (?P<addr>[0-9a-fx]+).*?protocol = (?P<proto>\S+?),"
                       r" length = (?P<len>-?\d+)")
SKB_BODY = re.compile(r"skbaddr=(?P<addr>[0-9a-fx]+) len=(?P<len>-?\d+)")
PROTO_NAMES = {"IPPROTO_TCP": 6, "IPPROTO_SCTP": 132, "IPPROTO_MPTCP": 262}


@dataclass(frozen=True)
class Event:
    event: str      # tracepoint name without group, e.g. "sock_recv_length"
    pid: int
    length: int
    addr: str
    proto: int | None = None


def _proto(text: str) -> int | None:
    if text in PROTO_NAMES:
        return PROTO_NAMES[text]
    try:
        return int(text, 0)
    except ValueError:
        return None


def parse_line(line: str) -> Event | None:
    """One trace_pipe line -> Event; None for comments and events we do not read."""
    m = LINE.match(line)
    if not m:
        return None
    event, body = m["event"], m["body"]
    if event in ("sock_send_length", "sock_recv_length"):
        b = SOCK_BODY.search(body)
        if not b:
            return None
        return Event(event, int(m["pid"]), int(b["len"]), "0x" + b["addr"].removeprefix("0x"),
                     _proto(b["proto"]))
    if event == "skb_copy_datagram_iovec":
        b = SKB_BODY.search(body)
        if not b:
            return None
        return Event(event, int(m["pid"]), int(b["len"]), "0x" + b["addr"].removeprefix("0x"))
    return None


def aggregate(events: list[Event], side: str, max_samples: int = 32,
              lost: int = 0) -> list[PointCounts]:
    """Events of one side -> one PointCounts per catalog tracepoint that fired."""
    out = []
    for probe in catalog.probes(kind="tracepoint"):
        name = probe.symbol.split(":", 1)[1]
        mine = [e for e in events if e.event == name and e.length > 0]
        if not mine:
            continue
        pc = PointCounts(point=probe.point, side=side, symbol=probe.symbol,
                         backend="tracepoints", exact=False,
                         calls=len(mine), bytes=sum(e.length for e in mine))
        pc.samples = [{"addr": e.addr, "len": e.length, "pid": e.pid,
                       "addr_kind": probe.addr_field} for e in mine[:max_samples]]
        protos = {e.proto for e in mine}
        if name == "sock_recv_length" and protos == {catalog.UDP} and not lost:
            pc.exact = True   # one recvmsg == one datagram copy on UDP
            pc.notes.append("UDP: one recvmsg is one copy of the datagram, so exact")
        else:
            pc.notes.append(f"estimate from {probe.symbol}: {probe.meaning}")
        if lost:
            pc.notes.append(f"kernel dropped {lost} trace events: counts are a lower bound")
        out.append(pc)
    return out


class TracepointsTracer(Tracer):
    name = "tracepoints"
    exact = False
    EVENTS = tuple(p.symbol for p in catalog.probes(kind="tracepoint"))

    def __init__(self, roots: tuple[Path, ...] = tracefs.CANDIDATES, proc_root: Path = Path("/proc"),
                 comm: dict[str, str] | None = None, max_samples: int = 32, buffer_kb: int = 4096):
        self.roots = roots
        self.proc_root = proc_root
        self.comm = comm or {}            # side -> comm: filter by name (the seed's way)
        self.max_samples = max_samples
        self.buffer_kb = buffer_kb
        self.sides: dict[str, tracefs.Instance] = {}
        self.events: list[str] = []
        self.pump: tracefs.Pump | None = None

    # -- capability -------------------------------------------------------------------------
    def available(self) -> Availability:
        root = tracefs.find(self.roots)
        if root is None:
            return Availability(False, "tracefs is not mounted",
                                f"mount -t tracefs nodev {self.roots[0]}")
        present = [e for e in self.EVENTS if catalog.tracepoint_exists(e, root)]
        if not present:
            return Availability(False, f"none of {', '.join(self.EVENTS)} exist on this kernel",
                                "use a kprobe backend (kmod) or a kernel >= 6.3")
        if not os.access(root / "instances", os.W_OK):
            return Availability(False, "cannot create tracefs instances (not root?)",
                                "run as root")
        return Availability(True, f"tracepoints {', '.join(present)}")

    # -- lifecycle --------------------------------------------------------------------------
    def attach(self, pids: dict[str, int]) -> None:
        root = tracefs.ensure(self.roots)
        self.events = [e for e in self.EVENTS if catalog.tracepoint_exists(e, root)]
        try:
            for side in (list(self.comm) if self.comm else list(pids)):
                inst = tracefs.Instance(root, side, self.buffer_kb)
                self.sides[side] = inst
                comm = self.comm.get(side)
                if comm is None and side not in pids:
                    raise OSError(f"no pid for side {side!r}")
                inst.create(None if comm else pids[side], self.proc_root)
                for ev in self.events:
                    group, name = ev.split(":")
                    flt = f'comm == "{comm}"' if comm else ""
                    if group == "sock":   # errors copy nothing
                        flt = f"({flt}) && ret > 0" if flt else "ret > 0"
                    inst.enable(group, name, flt)
                inst.open()
        except OSError as e:
            self.detach()
            raise UsageError(f"could not set up tracepoints: {e}", fix="run as root") from None
        self.pump = tracefs.start_pump(self.sides)

    def read(self) -> list[PointCounts]:
        """Stop recording, drain what is buffered, and count. Call once, before detach()."""
        tracefs.stop_recording(self.sides, self.pump)
        out: list[PointCounts] = []
        for side, inst in self.sides.items():
            events = [e for e in map(parse_line, inst.lines) if e]
            out.extend(aggregate(events, side, self.max_samples, inst.lost()))
        return out

    def detach(self) -> None:
        """Idempotent: disable, close, remove every instance we made."""
        tracefs.remove_all(self.sides, self.pump)
        self.pump = None
        self.sides = {}
