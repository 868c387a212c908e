"""kprobe_events backend: tracefs dynamic kprobes, no tools beyond the kernel (what `perf probe`
writes). Entry events fetch the buffer and length registers (`%di`/`%si` on x86-64), return
events time the copy; both stream through a private instance.

Definitions live in the global kprobe_events file under our own group `copybench_<pid>`, so
they are removed by name and a stale group is recognisable. The kernel refuses notrace
functions here (Debian 6.1's _copy_*_iter): such symbols are reported as refused.
Timing resolution is the trace clock's printed microseconds.

What it must match in kmod (copytrace.c): copies of the socket copy functions count only
inside socket operations of the traced tasks: between the entry (g<j>) and return (h<j>)
events of a socket entry function (catalog.SOCKET_GATES), or inside a socket-only syscall;
the "ANY" points (kprobes.ANY_TASK_POINTS: zerocopy fallbacks, rxe) count in the traced task
whatever it is doing, and when another task runs them (ksoftirqd, softirq on someone else's
time) they count for side "other": a separate instance records those events for every task
except the traced ones.

Loss: every event goes through a ring buffer, so after each sample the kernel's own loss
figures are read and recorded per point (PointCounts.add_loss): kprobe_profile misses of
our events, and the instances' ring-buffer overruns and dropped events.

skb_copy_ubufs has no length argument: its bytes are skb->data_len, fetched at the offset the
running kernel's BTF (/sys/kernel/btf/vmlinux) gives. Without BTF the symbol is refused with
the reason (never a byte count of 0); `refusal()` says so before attaching.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass
from pathlib import Path

from bench.errors import UsageError
from bench.tracing import btf as kernel_btf
from bench.tracing import catalog, kprobes, tracefs
from bench.tracing.base import Availability, PointCounts, Tracer
from bench.tracing.syscalls import socket_syscalls

LINE = re.compile(
    r"^\s*(?P<task>.*?)-(?P<pid>\d+)\s+(?:\(\s*(?P<tgid>[\d-]+)\)\s+)?\[(?P<cpu>\d+)\]\s+"
    r"(?:\S+\s+)?(?P<ts>\d+)\.(?P<us>\d+):\s+(?P<event>\w+):\s+(?P<body>.*)$")
ARG = re.compile(r"(\w+)=(\S+)")
BTF_VMLINUX = kernel_btf.VMLINUX
OTHER = "other"     # side of ANY-point copies run by tasks we do not trace (= kmod's ANY_SLOT)


def group_name(pid: int | None = None) -> str:
    return f"{tracefs.PREFIX}_{pid if pid is not None else os.getpid()}"


def definitions(probes: list[catalog.Probe], group: str, arch: str = "x86_64",
                skb_len: tuple[int, int] | None = None) -> list[str]:
    """kprobe_events lines: p<i> fetches addr/len at entry, r<i> marks the return.
    skb_len: (byte offset, size) of sk_buff.data_len, for the SKB_LEN_SYMBOLS."""
    out = []
    for i, p in enumerate(probes):
        args = []
        if p.addr_arg is not None:
            args.append(f"addr=%{p.reg(p.addr_arg, arch)}:x64")
        if p.len_arg is not None:
            args.append(f"len=%{p.reg(p.len_arg, arch)}:u64")
        elif p.symbol in kprobes.SKB_LEN_SYMBOLS and p.addr_arg is not None and skb_len:
            off, size = skb_len   # what copytrace reads: ((struct sk_buff *)arg)->data_len
            args.append(f"len=+{off}(%{p.reg(p.addr_arg, arch)}):u{8 * size}")
        out.append(" ".join([f"p:{group}/p{i}", p.symbol, *args]))
        out.append(f"r:{group}/r{i} {p.symbol}")
    return out


def gate_definitions(gates: list[catalog.SocketGate], group: str,
                     family: dict[str, str] | None = None) -> list[str]:
    """g<j>/h<j>: entry and return of socket entry function j. family: first_arg -> the
    fetch argument of the socket's family (family_fetch), so a unix socket's entry is known."""
    out = []
    for j, g in enumerate(gates):
        fam = (family or {}).get(g.first_arg)
        out += [" ".join(filter(None, [f"p:{group}/g{j}", g.symbol, fam])),
                f"r:{group}/h{j} {g.symbol}"]
    return out


# -- BTF: where sk_buff.data_len and a socket's family live on the running kernel ------------
# The socket behind a gate's first argument (catalog.SocketGate.first_arg), as struct members.
FAMILY_PATH = {"socket": [("socket", "sk")],
               "kiocb": [("kiocb", "ki_filp"), ("file", "private_data"), ("socket", "sk")]}


def family_fetch(types: kernel_btf.Types, first_arg: str, arch: str = "x86_64") -> str | None:
    """A fetch argument reading the socket family behind a gate's first argument
    (sock->sk->sk_family, or for a kiocb ki_filp->private_data->sk->sk_family), or None when
    the gate needs none (tcp_* gates: TCP's own socket)."""
    path = FAMILY_PATH.get(first_arg)
    if path is None:
        return None
    off, size = types.member("sock_common", "skc_family")   # struct sock starts with it
    expr = f"%{catalog.ARG_REGS[arch][0]}"
    for struct_name, name in path:
        expr = f"+{types.member(struct_name, name, pointer=True)[0]}({expr})"
    return f"fam=+{off}({expr}):u{8 * size}"


def skb_data_len(path: Path = kernel_btf.VMLINUX,
                 types: kernel_btf.Types | None = None) -> tuple[tuple[int, int] | None, str]:
    """(offset, size) of sk_buff.data_len on the running kernel, or None and why not."""
    if types is None:
        types, why = kernel_btf.load(path)
        if types is None:
            return None, f"needs skb->data_len's offset from the kernel's BTF ({why})"
    try:
        return types.member("sk_buff", "data_len"), "ok"
    except kernel_btf.ERRORS as e:
        return None, f"cannot read skb->data_len's offset from {path}: {e}"


def refusal(probe: catalog.Probe, btf: Path = BTF_VMLINUX) -> str | None:
    """Why this backend cannot measure `probe` here (None: it can). select.plan may ask this
    before choosing kprobe_events for a point; attach() refuses the same symbols."""
    if probe.symbol in kprobes.SKB_LEN_SYMBOLS:
        off, why = skb_data_len(btf)
        return None if off else why
    return None


# -- the kernel's loss figures ---------------------------------------------------------------
def kprobe_events_order(text: str) -> list[tuple[str, str]]:
    """(group, event) of every line of tracefs kprobe_events, in the kernel's order."""
    out = []
    for line in text.splitlines():
        head = line.split()[0] if line.split() else ""
        group, _, event = head.split(":", 1)[-1].partition("/")
        if event:
            out.append((group, event))
    return out


def profile_misses(profile: str, events: str, group: str,
                   names: list[str]) -> dict[str, int]:
    """Misses (kprobe_profile's third column) of our events, by event name.

    kprobe_profile prints event names without their group, one line per kprobe event in
    the order kprobe_events lists them; when another group has an event of the same name the
    two files are aligned line by line to tell ours apart. If they cannot be aligned, every
    line with the name counts (a conservative over-report, never an under-report)."""
    rows = []
    for line in profile.splitlines():
        f = line.split()
        if len(f) >= 3 and f[-1].isdigit() and f[-2].isdigit():
            rows.append((f[0], int(f[-1])))
    order = kprobe_events_order(events)
    aligned = len(order) == len(rows) and all(
        ev == name.rpartition("/")[2] for (_, ev), (name, _) in zip(order, rows, strict=True))
    out = {n: 0 for n in names}
    for i, (name, missed) in enumerate(rows):
        g, _, ev = name.rpartition("/")      # newer kernels may print group/event
        if ev not in out:
            continue
        mine = (g == group) if g else (order[i][0] == group if aligned else True)
        if mine:
            out[ev] += missed
    return out


RING_LOSS = {"overrun": "ring_overrun", "commit overrun": "ring_commit_overrun",
             "dropped events": "events_dropped"}


def ring_losses(stats: list[str]) -> dict[str, int]:
    """Events lost in one instance's ring buffer, summed over its per_cpu/cpu*/stats files:
    overwritten before they were read (overrun), lost to nested writes (commit overrun), or
    refused because the buffer was full (dropped events)."""
    out = {kind: 0 for kind in RING_LOSS.values()}
    for text in stats:
        for line in text.splitlines():
            key, _, val = line.partition(":")
            kind = RING_LOSS.get(key.strip())
            if kind and val.strip().isdigit():
                out[kind] += int(val.strip())
    return out


def read_ring_losses(inst: tracefs.Instance) -> dict[str, int]:
    return ring_losses([f.read_text() for f in sorted(inst.path.glob("per_cpu/cpu*/stats"))])


@dataclass(frozen=True)
class KEvent:
    kind: str      # "p" entry, "r" return, "enter"/"exit" socket syscall
    idx: int
    tid: int
    tgid: int
    t_us: int
    addr: str = "0x0"
    length: int = 0
    family: int = -1    # a gate entry's socket family, -1 when not fetched


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
    if len(ev) > 1 and ev[0] in "pr" and ev[1:].isdigit() or (
            len(ev) > 1 and ev[0] in "gh" and ev[1:].isdigit()):
        args = dict(ARG.findall(body))
        fam = args.get("fam", "-1")
        return KEvent(ev[0], int(ev[1:]), tid, tgid, t_us, args.get("addr", "0x0"),
                      int(args.get("len", "0"), 0),
                      int(fam, 0) if fam.lstrip("-").isalnum() else -1)
    return None


def count(lines: list[str], probes: list[catalog.Probe], slot: int,
          sockonly: bool = True, max_samples: int = 64,
          exclude_tgids: set[int] | frozenset[int] = frozenset()) -> kprobes.ModuleReport:
    """Pair entries with returns per thread; keep copies made inside socket syscalls, except
    for the ANY points (kprobes.ANY_TASK_POINTS), which count whatever syscall the task is in.
    exclude_tgids: processes whose events belong to another slot (the "other" instance)."""
    r = kprobes.ModuleReport(version=kprobes.OUTPUT_VERSION)
    anytask = {i for i, p in enumerate(probes) if p.point in kprobes.ANY_TASK_POINTS}
    insock: set[int] = set()             # in a socket-only syscall
    # tid -> open socket entry functions, innermost last: True for a network socket (a unix
    # socket's entry, catalog.AF_UNIX, opens nothing but must still be closed by its return)
    depth: dict[int, list[bool]] = {}
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
        elif e.kind == "g":
            depth.setdefault(e.tid, []).append(e.family != catalog.AF_UNIX)
        elif e.kind == "h":
            stack = depth.get(e.tid)
            if stack:
                stack.pop()
            if not stack:
                depth.pop(e.tid, None)
        elif e.kind == "p":
            if e.tgid in exclude_tgids or e.tid in exclude_tgids:
                continue
            if not sockonly or e.idx in anytask or e.tid in insock or any(depth.get(e.tid, ())):
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
                 buffer_kb: int = 8192, max_samples: int = 64, btf: Path = BTF_VMLINUX):
        self.probes = probes if probes is not None else catalog.probes(kind="kprobe")
        self.comm = comm or {}
        self.all_copies = all_copies
        self.roots, self.proc_root, self.btf = roots, proc_root, btf
        self.buffer_kb, self.max_samples = buffer_kb, max_samples
        self.group = group_name()
        self.root: Path | None = None
        self.defined: list[str] = []            # event names we added (p0, r0, g0, ...)
        self.gates: list[catalog.SocketGate] = []   # socket entry functions defined
        self.gate_refused: list[str] = []
        self.unix_note = ""                     # why unix sockets are not told apart, if not
        self.status: dict[str, str] = {}        # symbol -> ok | refused: <why>
        self.sides: dict[str, tracefs.Instance] = {}
        self.other: tracefs.Instance | None = None   # ANY points run by tasks we do not trace
        self.pids: dict[str, int] = {}
        self.baseline: dict[str, int] = {}      # kprobe_profile misses when we started
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
        skb_len, skb_why = None, ""
        want_skb = any(p.symbol in kprobes.SKB_LEN_SYMBOLS for p in self.probes)
        types, btf_why = (kernel_btf.load(self.btf) if want_skb or not self.all_copies
                          else (None, ""))
        if want_skb:
            skb_len, skb_why = skb_data_len(self.btf, types) if types else (
                None, f"needs skb->data_len's offset from the kernel's BTF ({btf_why})")
        lines = definitions(self.probes, self.group, arch, skb_len)
        for i, p in enumerate(self.probes):
            if p.symbol in kprobes.SKB_LEN_SYMBOLS and skb_len is None:
                self.status[p.symbol] = f"refused: {skb_why}"   # never a byte count of 0
                continue
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
        if self.all_copies:
            return
        family = self._family_fetches(types, btf_why, arch)
        present = catalog.kallsyms(self.proc_root)
        for j, g in enumerate(catalog.socket_gates(present)):
            entry, ret = gate_definitions([g], self.group, family)
            entry, ret = entry.replace("/g0 ", f"/g{j} "), ret.replace("/h0 ", f"/h{j} ")
            try:
                tracefs.append(root / "kprobe_events", entry + "\n")
                self.defined.append(f"g{j}")
                tracefs.append(root / "kprobe_events", ret + "\n")
                self.defined.append(f"h{j}")
                self.gates.append(g)
            except OSError as e:
                # A socket entry function we cannot watch: its copies would go uncounted.
                self.gate_refused.append(f"{g.symbol} ({e.strerror})")
                if self.defined and self.defined[-1] == f"g{j}":
                    tracefs.append(root / "kprobe_events", f"-:{self.group}/g{j}\n")
                    self.defined.pop()

    def _family_fetches(self, types, why: str, arch: str) -> dict[str, str]:
        """first_arg -> fetch of the socket family; without BTF, unix sockets' copies made
        inside a gate count as socket copies (more than the flow's, never fewer): noted."""
        if types is not None:
            try:
                return {arg: fetch for arg in FAMILY_PATH
                        if (fetch := family_fetch(types, arg, arch))}
            except kernel_btf.ERRORS as e:
                why = str(e)
        self.unix_note = f"unix socket copies are not told apart ({why})"
        return {}

    def _gate_events(self) -> list[str]:
        return [d for d in self.defined if d[0] in "gh"]

    def _ok(self) -> list[int]:
        return [i for i, p in enumerate(self.probes) if self.status.get(p.symbol) == "ok"]

    def _events(self) -> list[str]:
        return [f"{k}{i}" for i in self._ok() for k in "pr"]

    def _misses(self) -> dict[str, int] | None:
        try:
            profile = (self.root / "kprobe_profile").read_text()
            events = (self.root / "kprobe_events").read_text()
        except OSError:
            return None
        return profile_misses(profile, events, self.group,
                              self._events() + self._gate_events())

    def attach(self, pids: dict[str, int]) -> None:
        self.root = tracefs.ensure(self.roots)
        self.pids = dict(pids)
        try:
            self.define(self.root)
            if not any(s == "ok" for s in self.status.values()):
                raise UsageError(f"kprobe_events refused every symbol: {self.status}",
                                 fix="use --backend kmod (auto does)")
            self.baseline = self._misses() or {}
            names = self._events()
            anytask = [n for n in names if self.probes[int(n[1:])].point in kprobes.ANY_TASK_POINTS]
            ids = socket_syscalls(catalog.machine_arch())
            sysflt = " || ".join(f"id == {n}" for n in ids)
            sides = list(self.comm) if self.comm else list(pids)
            for side in sides:
                inst = tracefs.Instance(self.root, side, self.buffer_kb)
                self.sides[side] = inst
                comm = self.comm.get(side)
                inst.create(None if comm else pids[side], self.proc_root)
                cflt = f'comm == "{comm}"' if comm else ""
                for name in self._gate_events() + names:   # gates first: no copy before its gate
                    inst.enable(self.group, name, cflt)
                if not self.all_copies:
                    both = f"({cflt}) && ({sysflt})" if cflt else sysflt
                    inst.enable("raw_syscalls", "sys_enter", both)
                    inst.enable("raw_syscalls", "sys_exit", both)
            if anytask:   # as kmod's ANY slot: every task but the traced ones
                self.other = tracefs.Instance(self.root, "others", self.buffer_kb)
                self.other.create(None, self.proc_root)
                if not self.comm:
                    self._exclude(self.other, [pids[s] for s in sides])
                flt = " && ".join(f'comm != "{self.comm[s]}"' for s in sides if self.comm)
                for name in anytask:
                    self.other.enable(self.group, name, flt)
            for inst in self._instances().values():
                inst.open()
        except OSError as e:
            self.detach()
            raise UsageError(f"could not set up kprobe_events: {e}", fix="run as root") from None
        except UsageError:
            self.detach()
            raise
        self.pump = tracefs.start_pump(self._instances())

    def _exclude(self, inst: tracefs.Instance, pids: list[int]) -> None:
        """Keep the traced processes (and their children) out of an instance. Kernels before
        5.8 have no set_event_notrace_pid: read() then drops their events by tgid."""
        nopid = inst.path / "set_event_notrace_pid"
        if nopid.exists():
            tracefs.write(inst.path / "options/event-fork", "1")
            tracefs.write(nopid, " ".join(str(t) for pid in pids
                                          for t in tracefs.tids(pid, self.proc_root)))

    def _instances(self) -> dict[str, tracefs.Instance]:
        return {**self.sides, **({OTHER: self.other} if self.other else {})}

    def read(self) -> list[PointCounts]:
        tracefs.stop_recording(self._instances(), self.pump)
        sides = list(self.sides)
        report = kprobes.ModuleReport(version=kprobes.OUTPUT_VERSION)
        traced: set[int] = set(self.pids.values())
        for slot, inst in enumerate(self.sides.values()):
            _merge(report, count(inst.lines, self.probes, slot, sockonly=not self.all_copies,
                                 max_samples=self.max_samples))
            traced |= tgids(inst.lines)
        if self.other:
            _merge(report, count(self.other.lines, self.probes, kprobes.ANY_SLOT, sockonly=False,
                                 max_samples=self.max_samples,
                                 exclude_tgids=set() if self.comm else traced))
        report.probes = {i: (p.symbol, "ok" if i in self._ok() else
                             "absent" if self.status.get(p.symbol) == "refused: absent" else
                             "error:" + self.status.get(p.symbol, "refused").replace(" ", "_"), 0)
                         for i, p in enumerate(self.probes)}
        counts = kprobes.to_counts(report, self.probes, sides, max_samples=self.max_samples,
                                backend=self.name)
        misses = self._misses()
        ring = {side: read_ring_losses(inst) for side, inst in self._instances().items()}
        index = {p.symbol: i for i, p in enumerate(self.probes)}
        for c in counts:
            i = index[c.symbol]
            c.notes.append("timing resolution 1 us (trace clock)")
            refused = [f"{p.symbol} ({self.status[p.symbol]})" for p in self.probes
                       if p.point == c.point and self.status.get(p.symbol, "ok") != "ok"]
            if refused:
                c.notes.append("not probed: " + ", ".join(refused))
            if misses is None:
                c.exact = c.calls_exact = c.bytes_exact = False
                c.notes.append("kprobe_profile unreadable: kprobe misses unknown")
            else:
                n = sum(misses.get(e, 0) - self.baseline.get(e, 0) for e in (f"p{i}", f"r{i}"))
                c.add_loss("kprobe_missed", n, f"kprobe misses of {c.symbol} (kprobe_profile; "
                           "the probe is system-wide, so other tasks' calls are included)")
                if c.point not in kprobes.ANY_TASK_POINTS and not self.all_copies:
                    g = sum(misses.get(e, 0) - self.baseline.get(e, 0)
                            for e in self._gate_events())
                    c.add_loss("gate_missed", g, "kprobe misses of socket entry functions")
            if c.point not in kprobes.ANY_TASK_POINTS:
                if self.unix_note and self.gates:
                    c.notes.append(self.unix_note)
                for what in self.gate_refused:
                    c.add_loss("gate_not_registered", 1, "socket entry function not watched, "
                               f"its copies not counted: {what}")
            for kind, n in ring.get(c.side, {}).items():
                c.add_loss(kind, n, f"trace events lost in the {c.side} ring buffer ({kind})")
        return counts

    def detach(self) -> None:
        tracefs.remove_all(self._instances(), self.pump)
        self.pump = None
        self.sides = {}
        self.other = None
        if self.root:
            remove_group(self.root, self.group, self.defined)
        self.defined = []
        self.gates, self.gate_refused, self.unix_note = [], [], ""


def tgids(lines: list[str]) -> set[int]:
    """Processes that produced any of these trace lines."""
    out = set()
    for line in lines:
        e = parse_line(line)
        if e is not None:
            out.add(e.tgid)
    return out


def _merge(into: kprobes.ModuleReport, part: kprobes.ModuleReport) -> None:
    into.counts.update(part.counts)
    into.hist.update(part.hist)
    into.samples.extend(part.samples)


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
