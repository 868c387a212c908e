"""bpftrace backend: a generated script that counts in the kernel, read back as `-f json`.

Counts and byte sums live in BPF maps (per-CPU aggregations), so they do not depend on user
space keeping up; only the first `nsamples` copies are streamed as sample lines. Two kinds of
probe, both from the catalog:

  kprobe      kprobe/kretprobe pair: calls, bytes, ns, log2 histogram (exact). Entries are
              counted too: entries that never returned (kretprobe maxactive, a full map)
              are the kernel-side loss and make the point "lossy".
  tracepoint  sock:sock_send_length / sock_recv_length / skb:skb_copy_datagram_iovec: for
              kernels without kprobes (our development machines). Bytes returned by a plain
              send/recv are the bytes copied (exact); calls are not copies except for UDP
              receives of linear skbs, which the kernel's own skb tracepoint tells apart.

After a sample the backend also reads the kernel's loss figure for BPF programs themselves:
`recursion_misses` in the fdinfo of bpftrace's program fds (a program skipped because another
BPF program was running on that CPU).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import UsageError
from bench.procs import stop
from bench.tracing import catalog, kprobes, tracefs
from bench.tracing.base import Availability, PointCounts, Tracer
from bench.tracing.syscalls import plain_writes, send_flags_args, socket_syscalls, splice_sends

ATTACH_TIMEOUT = 120.0   # bpftrace compiles and attaches slowly under TCG
STOP_TIMEOUT = 60.0      # SIGINT to exit, maps printed
SIGINT_RETRY_S = 2.0     # a SIGINT bpftrace has not acted on by then is sent again
ANY_SLOT = kprobes.ANY_SLOT
READY = "copybench-ready"
MSG_ZEROCOPY = 0x4000000
UDP = catalog.UDP
# Map size for the pid-tree map; more inserts than this may have failed (counted, reported).
MAP_KEYS_MAX = 65536
ZC_SEND = "zc_send"      # pseudo-point: bytes of MSG_ZEROCOPY sends (tracepoint backend)
SPLICED = "spliced"      # pseudo-point: bytes sent inside sendfile/splice (page references)
IORING_ZC_OPCODES = (47, 48)   # IORING_OP_SEND_ZC, IORING_OP_SENDMSG_ZC
IORING_SEND_OPCODES = (9, 26)  # IORING_OP_SENDMSG, IORING_OP_SEND
IO_URING_SUBMIT = "io_uring:io_uring_submit_req"


def _length_expr(probe: catalog.Probe) -> str:
    if probe.len_arg is not None:
        return f"arg{probe.len_arg}"
    if probe.symbol in kprobes.SKB_LEN_SYMBOLS:
        return f"((struct sk_buff *)arg{probe.addr_arg})->data_len"
    return "0"


def _check_comm(comm: dict[str, str] | None) -> None:
    for c in (comm or {}).values():
        if not c.replace("-", "").replace("_", "").replace(".", "").isalnum():
            raise UsageError(f"bad comm {c!r}", fix="letters, digits, '-', '_', '.' only")


def _kprobe_lines(i: int, p: catalog.Probe, slot_code: str, sockonly: bool,
                  nsamples: int) -> list[str]:
    """Entry and return probes for catalog probe number i."""
    addr = f"arg{p.addr_arg}" if p.addr_arg is not None else "0"
    # ANY points belong to the matching task in any syscall, else to "other" (softirq)
    anyslot = f" if (!$s) {{ $s = {ANY_SLOT + 1}; }}" if p.point in kprobes.ANY_TASK_POINTS else ""
    cond = "$s" if anyslot or not sockonly else "$s && (@insock[tid] || @insys[tid])"
    enter = (f"kprobe:{p.symbol} {{ {slot_code}{anyslot} if ({cond}) "
             f"{{ @enter[{i}, $s - 1] = count(); @t[tid, {i}] = nsecs; @a[tid, {i}] = {addr}; "
             f"@l[tid, {i}] = {_length_expr(p)}; @s[tid, {i}] = $s; }} }}")
    ret = (f"kretprobe:{p.symbol} /@t[tid, {i}]/ {{ $d = nsecs - @t[tid, {i}]; "
           f"$k = @s[tid, {i}] - 1; $l = @l[tid, {i}]; "
           f"@calls[{i}, $k] = count(); @bytes[{i}, $k] = sum($l); @ns[{i}, $k] = sum($d); "
           f"@hist[{i}, $k] = hist($d); "
           f"if (@nsamp[{i}, $k] < {nsamples}) {{ @nsamp[{i}, $k]++; "
           f"printf(\"sample {i} %d %d 0x%lx %d %d\\n\", "
           f"$k, pid, @a[tid, {i}], $l, $d); }} "
           f"delete(@t[tid, {i}]); delete(@a[tid, {i}]); delete(@l[tid, {i}]); "
           f"delete(@s[tid, {i}]); }}")
    return [enter, ret]


# Tags of the third key of @st (tracepoint stats): which kind of call the event was.
TAG_COPY, TAG_UDP, TAG_ZC, TAG_SPLICE = 0, 1, 2, 3


def _tracepoint_lines(i: int, p: catalog.Probe, slot_code: str, nsamples: int) -> list[str]:
    """One tracepoint probe: calls and bytes per slot, in the kernel; samples streamed.

    One map update per event: stats() keeps count and total together, keyed by point, slot and
    a tag (copy, UDP receive, MSG_ZEROCOPY send); samples use a per-point scalar counter. At
    hundreds of thousands of datagrams a second every map operation shows in the overhead."""
    length = f"args->{p.len_field}"
    addr = f"args->{p.addr_field}" if p.addr_field else "0"
    count = f"@st[{i}, $k, {TAG_COPY}] = stats({length});"
    if p.symbol == "sock:sock_send_length":
        # MSG_ZEROCOPY sends pin pages instead of copying: counted apart (flags of the syscall,
        # the tracepoint's own flags field is always 0 on the send side).
        # @sflag[tid]: 1 = in a send syscall or write/writev, 2 = in one with MSG_ZEROCOPY, 3 =
        # io_uring's zerocopy opcode just submitted, 4 = in sendfile or splice (pages handed
        # over by reference on >= 6.5: counted apart, TAG_SPLICE); 0 = a send outside all of
        # them (io_uring, io-wq workers).
        # A send outside any send syscall (io_uring task work or io-wq) takes the class of the
        # process's last io_uring send submission (@uzc[pid]), and is counted in @uring.
        count = (f"$f = @sflag[tid]; if ($f == 0 && @uzc[pid]) {{ $f = 3; }} "
                 f"if ($f == 4) {{ @st[{i}, $k, {TAG_SPLICE}] = stats({length}); }} "
                 f"else if ($f >= 2) {{ @st[{i}, $k, {TAG_ZC}] = stats({length}); }} "
                 f"else {{ {count} }} if ($f == 0 || $f == 3) {{ @uring[$k] = count(); }}")
    elif p.symbol == "sock:sock_recv_length":
        count = f"@st[{i}, $k, args->protocol == {UDP}] = stats({length});"
    return [f"tracepoint:{p.symbol} {{ {slot_code} if ($s && {length} > 0) {{ $k = $s - 1; "
            f"{count} if (@n{i} < {nsamples}) {{ @n{i}++; "
            f"printf(\"sample {i} %d %d 0x%lx %d 0\\n\", $k, pid, {addr}, {length}); }} }} }}"]


# The socket family behind a gate's first argument (catalog.SocketGate.first_arg), read
# through the kernel's BTF types as copytrace.c reads it.
FAMILY = {"socket": "((struct socket *)arg0)->sk->__sk_common.skc_family",
          "kiocb": "((struct socket *)((struct kiocb *)arg0)->ki_filp->private_data)"
                   "->sk->__sk_common.skc_family"}


def script(probes: list[catalog.Probe], pids: dict[str, int] | None = None,
           comm: dict[str, str] | None = None, arch: str = "x86_64", sockonly: bool = True,
           nsamples: int = 64, tag: str = "copybench", io_uring: bool = False,
           gates: list[str] | None = None) -> str:
    """The bpftrace program. Slot i = i-th side of pids (or comm), as in copytrace.
    `io_uring`: the kernel has the io_uring:io_uring_submit_req tracepoint. `gates`: the
    socket entry functions present on this kernel (default: the catalog's)."""
    if not probes:
        raise UsageError("no probes to trace", fix="choose points from the catalog")
    if not (pids or comm):
        raise UsageError("bpftrace backend needs pids or comm names", fix="pass pids or --comm")
    _check_comm(comm)
    kprobes = [p for p in probes if p.kind == "kprobe"]
    tps = [p for p in probes if p.kind == "tracepoint"]
    lines = [f"// {tag}: generated by bench/tracing/bpftrace.py; do not edit"]
    init = ""
    if comm:
        # slot = 1 + index of the matching name; the seed's comm filter
        slot_code = "$s = 0; " + " ".join(
            f'if (comm == "{c}") {{ $s = {i + 1}; }}' for i, c in enumerate(comm.values()))
        who = " || ".join(f'comm == "{c}"' for c in comm.values())
    else:
        # pid tree: @side[tgid] = slot + 1, inherited by children at fork
        init = " ".join(f"@side[{p}] = {i + 1};" for i, p in enumerate(pids.values()))
        lines.append("tracepoint:sched:sched_process_fork /@side[pid]/ "
                     "{ @side[args->child_pid] = @side[pid]; @nside = count(); }")
        slot_code = "$s = @side[pid];"
        who = "@side[pid]"
    # bpftrace reports "attached_probes" before attaching; BEGIN fires once all are attached.
    lines.append(f'BEGIN {{ {init} printf("{READY}\\n"); }}'.replace("{  ", "{ "))
    if kprobes and sockonly:
        # Inside a socket operation = inside a socket entry function (depth per thread: io-wq
        # workers and write()/read() on sockets pass them too) or a socket-only syscall.
        gates = [g.symbol for g in catalog.SOCKET_GATES] if gates is None else gates
        if not gates:
            raise UsageError("counting socket copies needs at least one socket entry function",
                             fix="use --all-copies, or a kernel with sock_sendmsg/sock_recvmsg")
        ids = " || ".join(f"args->id == {n}" for n in socket_syscalls(arch))
        lines.append(f"tracepoint:raw_syscalls:sys_enter /{who}/ "
                     f"{{ if ({ids}) {{ @insys[tid] = 1; }} }}")
        lines.append("tracepoint:raw_syscalls:sys_exit /@insys[tid]/ { delete(@insys[tid]); }")
        by_arg: dict[str, list[str]] = {}
        for g in gates:
            by_arg.setdefault(catalog.gate_first_arg(g), []).append(g)
        for arg, names in by_arg.items():
            # A unix socket's entry opens nothing (local IPC: a node launcher's stdio); its
            # return finds @insock unset and passes. (Only a unix call nested inside a network
            # one would be closed early here: none of the gates calls the other kind.)
            net = "" if arg == "sock" else f" && {FAMILY[arg]} != {catalog.AF_UNIX}"
            lines.append(",".join(f"kprobe:{g}" for g in names) +
                         f" /{who}{net}/ {{ @insock[tid] = @insock[tid] + 1; @gin = count(); }}")
        lines.append(",".join(f"kretprobe:{g}" for g in gates) +
                     " /@insock[tid]/ { @gout = count(); if (@insock[tid] <= 1) "
                     "{ delete(@insock[tid]); } else { @insock[tid] = @insock[tid] - 1; } }")
    if any(p.symbol == "sock:sock_send_length" for p in tps):
        sends = send_flags_args(arch)
        conds = " || ".join(f"(args->id == {nr} && (args->args[{pos}] & {MSG_ZEROCOPY}))"
                            for nr, pos in sends.items())
        insend = " || ".join(f"args->id == {nr}" for nr in (*sends, *plain_writes(arch)))
        spliced = " || ".join(f"args->id == {nr}" for nr in splice_sends(arch))
        lines.append(f"tracepoint:raw_syscalls:sys_enter /{who}/ "
                     f"{{ if ({insend}) {{ @sflag[tid] = 1; if ({conds}) {{ @sflag[tid] = 2; }} }} "
                     f"if ({spliced}) {{ @sflag[tid] = 4; }} }}")
        lines.append("tracepoint:raw_syscalls:sys_exit /@sflag[tid]/ { delete(@sflag[tid]); }")
        if io_uring:
            # io_uring issues a send inline right after its submit tracepoint: the opcode says
            # whether it is a zerocopy send (SEND_ZC, SENDMSG_ZC). Sends outside a send syscall
            # are counted in @uring so their classification is labelled an estimate.
            zc_ops = " || ".join(f"args->opcode == {op}" for op in IORING_ZC_OPCODES)
            plain = " || ".join(f"args->opcode == {op}" for op in IORING_SEND_OPCODES)
            lines.append(f"tracepoint:io_uring:io_uring_submit_req /{who}/ "
                         f"{{ if ({zc_ops}) {{ @sflag[tid] = 3; @uzc[pid] = 1; }} else {{ "
                         f"delete(@sflag[tid]); if ({plain}) {{ delete(@uzc[pid]); }} }} }}")
    for i, p in enumerate(probes):
        if p.kind == "kprobe":
            lines += _kprobe_lines(i, p, slot_code, sockonly, nsamples)
        else:
            lines += _tracepoint_lines(i, p, slot_code, nsamples)
    # @insock stays: gate entries still open at the end explain @gin - @gout.
    used = (["side"] if not comm else []) + (["insys"] if kprobes and sockonly else []) + (
        ["t", "a", "l", "s", "nsamp"] if kprobes else []) + [f"n{i}" for i, p in enumerate(probes)
                                                              if p.kind == "tracepoint"] + (
        ["sflag"] if any(p.symbol == "sock:sock_send_length" for p in tps) else []) + (
        ["uzc"] if io_uring and any(p.symbol == "sock:sock_send_length" for p in tps) else [])
    clear = " ".join(f"clear(@{m});" for m in used)   # only the result maps get printed
    lines.append(f"END {{ {clear} }}")
    return "\n".join(lines) + "\n"


def _bucket(max_ns: int) -> int:
    """bpftrace's power-of-2 bucket [2^(b-1), 2^b) has max 2^b - 1, as copytrace's bucket b."""
    return max(0, int(max_ns)).bit_length()


@dataclass
class Report(kprobes.ModuleReport):
    """copytrace's report plus what only bpftrace's maps say."""

    entered: dict[tuple[int, int], int] = field(default_factory=dict)   # kprobe entries
    udp: dict[tuple[int, int], int] = field(default_factory=dict)       # UDP recvmsg calls
    zc: dict[int, tuple[int, int]] = field(default_factory=dict)        # slot -> (calls, bytes)
    spliced: dict[int, tuple[int, int]] = field(default_factory=dict)   # ... sendfile/splice
    uring: dict[int, int] = field(default_factory=dict)     # slot -> sends outside send syscalls
    forks: int = 0                                                       # @side inserts
    gate_in: int = 0        # socket gate entries of traced tasks
    gate_out: int = 0       # ... and returns
    gate_open: int = 0      # gate depth still open when bpftrace stopped (blocked in recv)


def _key(key: str) -> tuple[int, ...]:
    return tuple(int(x) for x in key.split(","))


def parse(text: str, probes: list[catalog.Probe]) -> Report:
    """bpftrace -f json output -> the same report copytrace produces (plus bpftrace extras)."""
    r = Report(version=1)
    r.probes = {i: (p.symbol, "ok", 0) for i, p in enumerate(probes)}
    maps: dict[str, dict] = {}
    stats: dict[tuple[int, ...], dict] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line.startswith("{"):
            continue
        doc = json.loads(line)
        kind, data = doc.get("type"), doc.get("data")
        if kind == "printf":
            for row in data.splitlines():
                f = row.split()
                if f and f[0] == "sample":
                    r.samples.append((int(f[1]), int(f[2]), int(f[3]), f[4], int(f[5]), int(f[6])))
        elif kind in ("map", "hist", "stats") and isinstance(data, dict):
            for name, values in data.items():
                if name == "@nside":
                    r.forks = int(values)
                elif name in ("@gin", "@gout") and not isinstance(values, dict):
                    setattr(r, "gate_in" if name == "@gin" else "gate_out", int(values))
                elif name == "@st" and isinstance(values, dict):
                    stats.update({_key(k): v for k, v in values.items()})
                elif name == "@hist" and isinstance(values, dict):
                    for key, v in values.items():
                        r.hist[_key(key)] = {_bucket(b["max"]) if "max" in b else 0: b["count"]
                                             for b in v if b["count"]}
                elif isinstance(values, dict):
                    maps[name] = {_key(k): v for k, v in values.items()}
    calls, nbytes, ns = maps.get("@calls", {}), maps.get("@bytes", {}), maps.get("@ns", {})
    for key in set(calls) | set(maps.get("@enter", {})):
        r.counts[key] = (calls.get(key, 0), nbytes.get(key, 0), ns.get(key, 0))
    r.entered = maps.get("@enter", {})
    # Tracepoint stats: (point, slot, tag) -> {count, total}
    for (i, k, tag), v in stats.items():
        n, total = int(v.get("count", 0)), int(v.get("total", 0))
        if tag in (TAG_ZC, TAG_SPLICE):
            into = r.zc if tag == TAG_ZC else r.spliced
            c0, b0 = into.get(k, (0, 0))
            into[k] = (c0 + n, b0 + total)
            continue
        c0, b0, _ = r.counts.get((i, k), (0, 0, 0))
        r.counts[(i, k)] = (c0 + n, b0 + total, 0)
        if tag == TAG_UDP:
            r.udp[(i, k)] = r.udp.get((i, k), 0) + n
    r.uring = {k[0]: v for k, v in maps.get("@uring", {}).items()}
    r.gate_open = sum(int(v) for v in maps.get("@insock", {}).values())
    return r


def to_counts(report: Report, probes: list[catalog.Probe], sides: list[str],
              backend: str = "bpftrace", lost: dict[str, int] | None = None) -> list[PointCounts]:
    """PointCounts per probe and side, with per-point exactness and the kernel's loss."""
    out = kprobes.to_counts(report, probes, sides, backend=backend)
    by = {(pc.symbol, pc.side): pc for pc in out}
    slot_of = {s: i for i, s in enumerate(sides)}
    slot_of["other"] = ANY_SLOT
    skb_calls = {k[1]: v[0] for k, v in report.counts.items()
                 if probes[k[0]].symbol == "skb:skb_copy_datagram_iovec"}
    for pc in out:
        idx = next(i for i, p in enumerate(probes) if p.symbol == pc.symbol)
        probe, slot = probes[idx], slot_of[pc.side]
        if probe.kind == "kprobe":
            entered = report.entered.get((idx, slot), pc.calls)
            pc.add_loss("entries_without_return", entered - pc.calls,
                        "probe entries that never returned (kretprobe missed or map full)")
            if probe.point not in kprobes.ANY_TASK_POINTS:
                # A gate whose return was missed leaves its thread marked "inside" (copies
                # after it admitted): never exact then.
                pc.add_loss("gate_missed",
                            report.gate_in - report.gate_out - report.gate_open,
                            "socket entry functions entered but never returned")
            continue
        pc.ns_total = None      # tracepoints cannot time the copy
        pc.ns_hist = {}
        pc.exact = False
        if probe.symbol == "sock:sock_recv_length":
            udp_all = pc.calls and report.udp.get((idx, slot), 0) == pc.calls
            linear = skb_calls.get(slot, 0) == 0
            pc.bytes_exact = True
            # Never exact: a UDP datagram whose checksum is still unverified (veth, IP
            # fragments) is copied by csum_and_copy_to_iter once per fragment, a path with no
            # tracepoint (kmod counted 23 copies for one 32 KiB datagram over veth).
            pc.calls_exact = False
            pc.notes.append("bytes returned by recvmsg are the bytes copied to user space")
            if udp_all and linear:
                pc.notes.append("calls are a lower bound of copies: a UDP recvmsg is one copy "
                                "of a linear, checksum-verified datagram, but one per fragment "
                                "where the copy verifies the checksum (csum_and_copy_to_iter, "
                                "no tracepoint)")
            else:
                pc.notes.append("calls are recvmsg calls, not copies (TCP, or paged UDP skbs)")
        elif probe.symbol == "sock:sock_send_length":
            outside = report.uring.get(slot, 0)
            pc.bytes_exact, pc.calls_exact = not outside, False
            pc.notes.append("bytes accepted by sendmsg without MSG_ZEROCOPY are the bytes copied "
                            "from user space; calls are sendmsg calls, not copies")
            if outside:
                pc.notes.append(f"{outside} sends outside send/write system calls (io_uring, "
                                "io-wq workers, sendfile/splice): copy vs zerocopy told from the "
                                "last submitted io_uring opcode, an estimate")
        else:
            pc.calls_exact = pc.bytes_exact = False
        pc.exact = pc.calls_exact and pc.bytes_exact
    # Sends that hand pages over instead of copying, each a point of its own
    handed = (
        (report.zc, ZC_SEND, "sock:sock_send_length+MSG_ZEROCOPY", True, False,
         "MSG_ZEROCOPY sends: bytes handed over with pinned pages; whether the kernel copied "
         "them later is in the completion report, not here"),
        (report.spliced, SPLICED, "sock:sock_send_length+splice", False, True,
         "sends inside sendfile/splice: bytes handed to the socket as page references "
         "(MSG_SPLICE_PAGES, >= 6.5), not copied from user memory; calls are sendmsg calls. "
         "No tracepoint sees a copy: kprobes do"))
    for by_slot, point, symbol, calls_exact, bytes_exact, note in handed:
        for slot, (calls, nbytes) in sorted(by_slot.items()):
            side = sides[slot] if slot < len(sides) else "other"
            pc = PointCounts(point=point, side=side, symbol=symbol, backend=backend,
                             exact=False, calls=calls, bytes=nbytes, calls_exact=calls_exact,
                             bytes_exact=bytes_exact)
            pc.notes.append(note)
            out.append(pc)
            by[(pc.symbol, side)] = pc
    for kind, n in (lost or {}).items():
        for pc in out:
            pc.add_loss(kind, n, kind.replace("_", " "))
    if report.forks >= MAP_KEYS_MAX - len(sides):
        for pc in out:
            pc.add_loss("map_full", 1, "pid map full: children may have been missed")
    return out


def _is_ready(line: str) -> bool:
    try:
        return json.loads(line).get("data") == READY + "\n"
    except (ValueError, AttributeError):
        return False


def recursion_misses(pid: int, proc_root: Path = Path("/proc")) -> int:
    """Sum of `recursion_misses` over the BPF programs process `pid` holds (fdinfo, 5.12+):
    runs the kernel skipped because another BPF program was active on that CPU."""
    total = 0
    fddir = proc_root / str(pid) / "fdinfo"
    try:
        names = os.listdir(fddir)
    except OSError:
        return 0
    for name in names:
        try:
            text = (fddir / name).read_text()
        except OSError:
            continue
        if "prog_id:" not in text:
            continue
        for line in text.splitlines():
            key, _, val = line.partition(":")
            if key.strip() == "recursion_misses":
                total += int(val.strip() or 0)
    return total


class BpftraceTracer(Tracer):
    name = "bpftrace"
    exact = True
    attach_fix = "the symbol may be notrace here: use --backend kmod (auto does)"

    def __init__(self, probes: list[catalog.Probe] | None = None,
                 comm: dict[str, str] | None = None, nsamples: int = 64,
                 all_copies: bool = False, binary: str = "bpftrace",
                 roots: tuple[Path, ...] = tracefs.CANDIDATES):
        self.probes = probes if probes is not None else catalog.probes(kind="kprobe")
        self.comm = comm
        self.nsamples = nsamples
        self.all_copies = all_copies
        self.binary = binary
        self.roots = roots
        self.sides: list[str] = []
        self.proc: subprocess.Popen | None = None
        self.path: Path | None = None
        self.out: list[str] = []
        self.errfile = None
        self._reader: threading.Thread | None = None
        self._ready = threading.Event()
        self._misses = 0
        self.io_uring = False      # set by the tracepoints backend when the kernel has it

    def available(self) -> Availability:
        from shutil import which
        if which(self.binary) is None:
            return Availability(False, "bpftrace is not installed", "apt-get install bpftrace")
        if os.geteuid() != 0:
            return Availability(False, "bpftrace needs root", "run as root")
        try:
            tracefs.ensure(self.roots)      # bpftrace reads tracepoint formats from tracefs
        except UsageError as e:
            return Availability(False, e.message, e.fix)
        return Availability(True, "bpftrace")

    def _script(self, pids: dict[str, int]) -> str:
        """The bpftrace program for these pids (subclasses count other things)."""
        return script(self.probes, pids=None if self.comm else pids, comm=self.comm,
                      arch=catalog.machine_arch(), sockonly=not self.all_copies,
                      nsamples=self.nsamples, tag=f"copybench-{os.getpid()}",
                      io_uring=self.io_uring,
                      gates=[g.symbol for g in catalog.socket_gates(catalog.kallsyms())])

    def attach(self, pids: dict[str, int]) -> None:
        tracefs.ensure(self.roots)
        text = self._script(pids)
        self.sides = list(self.comm or pids)
        fd, name = tempfile.mkstemp(prefix=f"copybench-{os.getpid()}-", suffix=".bt")
        with os.fdopen(fd, "w") as f:
            f.write(text)
        self.path = Path(name)
        self.out, self._reader = [], None     # a reused tracer: only this run's output
        # Own session: a Ctrl-C at the terminal must not kill it before we read its maps.
        # stderr to a file: an unread pipe can fill up and stall bpftrace.
        self.errfile = tempfile.TemporaryFile(mode="w+")
        env = dict(os.environ, BPFTRACE_MAP_KEYS_MAX=str(MAP_KEYS_MAX))
        self.proc = subprocess.Popen([self.binary, "-f", "json", name], stdout=subprocess.PIPE,
                                     stderr=self.errfile, text=True, start_new_session=True,
                                     env=env)
        # Read in a thread from the start: a bpftrace that hangs before READY must still time
        # out, which a blocking readline() here would never do.
        self._ready = threading.Event()
        self._reader = threading.Thread(target=self._read_rest, daemon=True)
        self._reader.start()
        deadline = time.monotonic() + ATTACH_TIMEOUT
        while time.monotonic() < deadline and self.proc.poll() is None:
            if self._ready.wait(timeout=0.2):
                self._misses = recursion_misses(self.proc.pid)
                return
        if self._ready.is_set():
            return
        err = self._stderr() if self.proc.poll() is not None else "timed out attaching"
        err = err or self._stderr()
        self.detach()
        raise UsageError(f"bpftrace could not attach: {err.strip()[-800:]}", fix=self.attach_fix)

    def _stderr(self) -> str:
        self.errfile.seek(0)
        return self.errfile.read()

    def _read_rest(self) -> None:
        """Lines up to READY announce the attach; only what follows is the run's output."""
        for line in self.proc.stdout:
            if self._ready.is_set():
                self.out.append(line)
            elif _is_ready(line):
                self._ready.set()

    def read(self) -> list[PointCounts]:
        """SIGINT makes bpftrace print its maps and exit."""
        text, lost = self._stop_and_collect()
        report = parse(text, self.probes)
        counts = to_counts(report, self.probes, self.sides, backend=self.name, lost=lost)
        dropped = _lost_samples(self._stderr())
        if dropped:
            for pc in counts:
                pc.notes.append(f"{dropped} sample lines lost in the perf buffer (samples only; "
                                "counts are kept in kernel maps)")
        return counts

    def _stop_and_collect(self) -> tuple[str, dict[str, int]]:
        """Stop bpftrace with SIGINT (it prints its maps) and return its JSON output and the
        kernel's loss figures for its BPF programs."""
        lost: dict[str, int] = {}
        if self.proc is None:
            raise UsageError("bpftrace is not attached", fix="attach() before read()")
        if self.proc.poll() is not None:
            # It died mid-sample: its maps died with it. Never report a partial count as a count.
            err = self._stderr().strip()[-400:]
            raise UsageError(f"bpftrace exited during the sample (status {self.proc.returncode})"
                             f": {err}", fix="see the message; bench doctor --cleanup")
        lost["bpf_recursion_misses"] = max(0, recursion_misses(self.proc.pid) - self._misses)
        self._interrupt()
        if self._reader:
            self._reader.join(timeout=10)
        return "".join(self.out), lost

    def _interrupt(self) -> None:
        """SIGINT and wait for the exit. bpftrace 0.17 can lose a SIGINT that lands just before
        it blocks in epoll_wait: it then sleeps with its maps unprinted (seen here about once
        in 40 stops). Another SIGINT wakes it; one is sent only while nothing has been printed,
        so a slow map print is never cut short."""
        printed = len(self.out)
        deadline = time.monotonic() + STOP_TIMEOUT
        self.proc.send_signal(signal.SIGINT)
        while True:
            try:
                self.proc.wait(timeout=SIGINT_RETRY_S)
                return
            except subprocess.TimeoutExpired:
                pass
            if time.monotonic() >= deadline:
                err = self._stderr()[-800:]
                self.detach()
                raise UsageError(f"bpftrace did not exit after SIGINT: {err}",
                                 fix="retry; report the bpftrace version if it persists")
            if len(self.out) == printed:
                self.proc.send_signal(signal.SIGINT)

    def detach(self) -> None:
        if self.proc:
            stop(self.proc, int_grace=10, term_grace=5)
        if self.proc and self.proc.stdout:
            self.proc.stdout.close()
        if self.errfile:
            self.errfile.close()
            self.errfile = None
        if self.path:
            self.path.unlink(missing_ok=True)
            self.path = None


def _lost_samples(stderr: str) -> int:
    """bpftrace prints 'Lost N events' when its perf buffer overflowed (printf lines)."""
    n = 0
    for line in stderr.splitlines():
        f = line.split()
        if len(f) >= 3 and f[0] == "Lost" and f[1].isdigit() and f[2].startswith("event"):
            n += int(f[1])
    return n
