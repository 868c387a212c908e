"""kprobe_events backend: tracefs dynamic kprobes, no tools beyond the kernel (what `perf probe`
writes). Entry events fetch the buffer and length registers (`%di`/`%si` on x86-64), return
events time the copy; both stream through a private instance.

Definitions live in the global kprobe_events file under our own group `copybench_<pid>`, so
they are removed by name and a stale group is recognisable. The kernel refuses notrace
functions here (Debian 6.1's _copy_*_iter): such symbols are reported as refused.
Timing resolution is the trace clock's printed microseconds.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from bench.errors import UsageError
from bench.tracing import catalog, kmod, tracefs
from bench.tracing.base import Availability, PointCounts, Tracer
from bench.tracing.syscalls import socket_syscalls

LINE = re.compile(
    r"^\s*(?P<task>.*?)-(?P<pid>\d+)\s+(?:\(\s*(?P<tgid>[\d-]+)\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:\S+\s+)?(?P<ts>\d+)\.(?P<us>\d+):\s+(?P<event>\w+):\s+(?P<body>.*)$")
ARG = re.compile(r"(\w+)=(\S+)")


def group_name(pid: int | None = None) -> str:
    return f"{tracefs.PREFIX}_{pid if pid is not None else os.getpid()}"


def definitions(probes: list[catalog.Probe], group: str, arch: str = "x86_64") -> list[str]:
    """kprobe_events lines: p<i> fetches addr/len at entry, r<i> marks the return."""
    out = []
    for i, p in enumerate(probes):
        args = []
        if p.addr_arg is not None:
            args.append(f"addr=%{p.reg(p.addr_arg, arch)}:x64")
        if p.len_arg is not None:
            args.append(f"len=%{p.reg(p.len_arg, arch)}:u64")
        elif p.symbol in kmod.SKB_LEN_SYMBOLS and p.addr_arg is not None:
            pass   # skb->data_len needs struct offsets: counted as calls only here
        out.append(" ".join([f"p:{group}/p{i}", p.symbol, *args]))
        out.append(f"r:{group}/r{i} {p.symbol}")
    return out


@dataclass(frozen=True)
class KEvent:
    kind: str      # "p" entry, "r" return, "enter"/"exit" socket syscall
    idx: int
    tid: int
    tgid: int
    t_us: int
    addr: str = "0x0"
    length: int = 0


def parse_line(line: str) -> KEvent | None:
    m = LINE.match(line)
    if not m:
        return None
    ev, body = m["event"], m["body"]
    tid = int(m["pid"])
    tgid = int(m["tgid"]) if m["tgid"] and m["tgid"].isdigit() else tid
    t_us = int(m["ts"]) * 1_000_000 + int(m["us"].ljust(6, "0")[:6])
    if ev in ("sys_enter", "sys_exit"):
        return KEvent("enter" if ev == "sys_enter" else "exit", -1, tid, tgid, t_us)
    if len(ev) > 1 and ev[0] in "pr" and ev[1:].isdigit():
        args = dict(ARG.findall(body))
        return KEvent(ev[0], int(ev[1:]), tid, tgid, t_us, args.get("addr", "0x0"),
                      int(args.get("len", "0"), 0))
    return None


def count(lines: list[str], probes: list[catalog.Probe], slot: int,
          sockonly: bool = True, max_samples: int = 64) -> kmod.ModuleReport:
    """Pair entries with returns per thread; keep copies made inside socket syscalls."""
    r = kmod.ModuleReport(version=1)
    insock: set[int] = set()
    open_: dict[tuple[int, int], KEvent] = {}
    totals: dict[int, list[int]] = {}
    for line in lines:
        e = parse_line(line)
        if e is None:
            continue
        if e.kind == "enter":
            insock.add(e.tid)
        elif e.kind == "exit":
            insock.discard(e.tid)
        elif e.kind == "p":
            if not sockonly or e.tid in insock:
                open_[(e.tid, e.idx)] = e
        elif e.kind == "r":
            start = open_.pop((e.tid, e.idx), None)
            if start is None:
                continue
            ns = (e.t_us - start.t_us) * 1000
            t = totals.setdefault(e.idx, [0, 0, 0])
            t[0] += 1
            t[1] += start.length
            t[2] += ns
            b = ns.bit_length()
            h = r.hist.setdefault((e.idx, slot), {})
            h[b] = h.get(b, 0) + 1
            if len(r.samples) < max_samples:
                r.samples.append((e.idx, slot, start.tgid, start.addr, start.length, ns))
    for idx, (calls, nbytes, ns) in totals.items():
        r.counts[(idx, slot)] = (calls, nbytes, ns)
    return r


class KprobeEventsTracer(Tracer):
    name = "kprobe_events"
    exact = True

    def __init__(self, probes: list[catalog.Probe] | None = None,
                 comm: dict[str, str] | None = None, all_copies: bool = False,
                 roots: tuple[Path, ...] = tracefs.CANDIDATES, proc_root: Path = Path("/proc"),
                 buffer_kb: int = 8192, max_samples: int = 64):
        self.probes = probes if probes is not None else catalog.probes(kind="kprobe")
        self.comm = comm or {}
        self.all_copies = all_copies
        self.roots, self.proc_root = roots, proc_root
        self.buffer_kb, self.max_samples = buffer_kb, max_samples
        self.group = group_name()
        self.root: Path | None = None
        self.defined: list[str] = []            # event names we added (p0, r0, ...)
        self.status: dict[str, str] = {}        # symbol -> ok | refused: <why>
        self.sides: dict[str, tracefs.Instance] = {}
        self.pump: tracefs.Pump | None = None

    def available(self) -> Availability:
        root = tracefs.find(self.roots)
        if root is None:
            return Availability(False, "tracefs is not mounted",
                                f"mount -t tracefs nodev {self.roots[0]}")
        if not (root / "kprobe_events").exists():
            return Availability(False, "kernel without kprobe events (CONFIG_KPROBE_EVENTS)",
                                "use --backend tracepoints here, or the lab VM (bench lab up)")
        return Availability(True, "tracefs kprobe_events")

    def define(self, root: Path) -> None:
        """Add our probe definitions; a refused symbol is recorded, not fatal."""
        arch = catalog.machine_arch()
        lines = definitions(self.probes, self.group, arch)
        for i, p in enumerate(self.probes):
            entry, ret = lines[2 * i], lines[2 * i + 1]
            try:
                tracefs.append(root / "kprobe_events", entry + "\n")
                self.defined.append(f"p{i}")
                tracefs.append(root / "kprobe_events", ret + "\n")
                self.defined.append(f"r{i}")
                self.status[p.symbol] = "ok"
            except OSError as e:
                why = "notrace or blacklisted" if e.errno == errno.EINVAL else e.strerror
                if e.errno == errno.ENOENT:
                    why = "absent"
                self.status[p.symbol] = f"refused: {why}"

    def attach(self, pids: dict[str, int]) -> None:
        self.root = tracefs.ensure(self.roots)
        try:
            self.define(self.root)
            if not any(s == "ok" for s in self.status.values()):
                raise UsageError(f"kprobe_events refused every symbol: {self.status}",
                                 fix="use --backend kmod (auto does)")
            ids = socket_syscalls(catalog.machine_arch())
            sysflt = " || ".join(f"id == {n}" for n in ids)
            for side in (list(self.comm) if self.comm else list(pids)):
                inst = tracefs.Instance(self.root, side, self.buffer_kb)
                self.sides[side] = inst
                comm = self.comm.get(side)
                inst.create(None if comm else pids[side], self.proc_root)
                cflt = f'comm == "{comm}"' if comm else ""
                for name in self.defined:
                    inst.enable(self.group, name, cflt)
                if not self.all_copies:
                    both = f"({cflt}) && ({sysflt})" if cflt else sysflt
                    inst.enable("raw_syscalls", "sys_enter", both)
                    inst.enable("raw_syscalls", "sys_exit", both)
                inst.open()
        except OSError as e:
            self.detach()
            raise UsageError(f"could not set up kprobe_events: {e}", fix="run as root") from None
        except UsageError:
            self.detach()
            raise
        self.pump = tracefs.start_pump(self.sides)

    def read(self) -> list[PointCounts]:
        tracefs.stop_recording(self.sides, self.pump)
        out: list[PointCounts] = []
        ok = [p for p in self.probes if self.status.get(p.symbol) == "ok"]
        for slot, (side, inst) in enumerate(self.sides.items()):
            report = count(inst.lines, self.probes, slot, sockonly=not self.all_copies,
                           max_samples=self.max_samples)
            report.probes = {i: (p.symbol, "ok" if p in ok else "absent", 0)
                             for i, p in enumerate(self.probes)}
            counts = kmod.to_counts(report, self.probes, list(self.sides), backend=self.name)
            counts = [c for c in counts if c.side == side]
            lost = inst.lost()
            for c in counts:
                c.notes.append("timing resolution 1 us (trace clock)")
                refused = [f"{p.symbol} ({self.status[p.symbol]})" for p in self.probes
                           if p.point == c.point and self.status.get(p.symbol, "ok") != "ok"]
                if refused:
                    c.notes.append("not probed: " + ", ".join(refused))
                if lost:
                    c.exact = False
                    c.notes.append(f"kernel dropped {lost} trace events: lower bound")
            out.extend(counts)
        return out

    def detach(self) -> None:
        tracefs.remove_all(self.sides, self.pump)
        self.pump = None
        self.sides = {}
        if self.root:
            remove_group(self.root, self.group, self.defined)
        self.defined = []


def remove_group(root: Path, group: str, names: list[str] | None = None) -> int:
    """Delete a group's kprobe events (disabled everywhere first); returns how many."""
    if names is None:   # lines look like "p:GROUP/NAME sym ..." or "r10:GROUP/NAME sym"
        names = []
        for line in (root / "kprobe_events").read_text().splitlines():
            head = line.split()[0] if line.split() else ""
            g, _, name = head.split(":", 1)[-1].partition("/")
            if g == group:
                names.append(name)
    removed = 0
    for name in names:
        enable = root / "events" / group / name / "enable"
        try:
            if enable.exists():
                tracefs.write(enable, "0")
            tracefs.append(root / "kprobe_events", f"-:{group}/{name}\n")
            removed += 1
        except OSError:
            pass
    return removed
