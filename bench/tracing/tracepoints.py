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
import select
import threading
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


class _Side:
    """One tracefs instance for one side."""

    def __init__(self, root: Path, side: str):
        self.side = side
        self.path = root / "instances" / tracefs.instance_name(side)
        self.fd: int | None = None
        self.partial = b""
        self.events: list[Event] = []


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
        self.sides: list[_Side] = []
        self.events: list[str] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lost: dict[str, int] = {}

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
        sides = list(self.comm) if self.comm else list(pids)
        try:
            for side in sides:
                s = _Side(root, side)
                self.sides.append(s)
                s.path.mkdir()
                self._setup(s, pids.get(side))
        except OSError as e:
            self.detach()
            raise UsageError(f"could not set up tracepoints: {e}", fix="run as root") from None
        self._thread = threading.Thread(target=self._pump, daemon=True)
        self._thread.start()

    def _setup(self, s: _Side, pid: int | None) -> None:
        w = tracefs.write
        w(s.path / "buffer_size_kb", str(self.buffer_kb))
        w(s.path / "options/hash-ptr", "0")    # real kernel addresses in samples
        w(s.path / "options/record-tgid", "1")
        comm = self.comm.get(s.side)
        if comm is None:
            if pid is None:
                raise OSError(f"no pid for side {s.side!r}")
            w(s.path / "options/event-fork", "1")    # the pid's children are traced too
            w(s.path / "set_event_pid", " ".join(map(str, tracefs.tids(pid, self.proc_root))))
        for ev in self.events:
            group, name = ev.split(":")
            d = s.path / "events" / group / name
            flt = f'comm == "{comm}"' if comm else ""
            if group == "sock":
                flt = f"({flt}) && ret > 0" if flt else "ret > 0"   # errors copy nothing
            if flt:
                w(d / "filter", flt)
            w(d / "enable", "1")
        s.fd = os.open(s.path / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)

    def _drain(self, s: _Side) -> None:
        while s.fd is not None:
            try:
                chunk = os.read(s.fd, 1 << 16)
            except BlockingIOError:
                return
            if not chunk:
                return
            data = s.partial + chunk
            lines = data.split(b"\n")
            s.partial = lines.pop()
            for raw in lines:
                ev = parse_line(raw.decode(errors="replace"))
                if ev:
                    s.events.append(ev)

    def _pump(self) -> None:
        poller = select.poll()
        by_fd = {s.fd: s for s in self.sides if s.fd is not None}
        for fd in by_fd:
            poller.register(fd, select.POLLIN)
        while not self._stop.is_set():
            for fd, _ in poller.poll(100):
                self._drain(by_fd[fd])

    def _lost_events(self, s: _Side) -> int:
        lost = 0
        for stats in (s.path / "per_cpu").glob("cpu*/stats"):
            for line in stats.read_text().splitlines():
                key, _, val = line.partition(":")
                if key.strip() in ("overrun", "dropped events"):
                    lost += int(val.strip() or 0)
        return lost

    def read(self) -> list[PointCounts]:
        """Stop recording, drain what is buffered, and count. Call once, before detach()."""
        for s in self.sides:
            tracefs.write(s.path / "tracing_on", "0")
        self._stop.set()
        if self._thread:
            self._thread.join(timeout=5)
        out: list[PointCounts] = []
        for s in self.sides:
            self._drain(s)
            lost = self._lost_events(s)
            out.extend(aggregate(s.events, s.side, self.max_samples, lost))
        return out

    def detach(self) -> None:
        """Idempotent: disable, close, remove every instance we made."""
        self._stop.set()
        if self._thread and self._thread is not threading.current_thread():
            self._thread.join(timeout=5)
        for s in self.sides:
            if s.fd is not None:
                os.close(s.fd)
                s.fd = None
            if s.path.exists():
                try:
                    tracefs.write(s.path / "events/enable", "0")
                except OSError:
                    pass
                tracefs.rmdir_retry(s.path)
        self.sides = []
