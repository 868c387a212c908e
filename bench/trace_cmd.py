"""`bench trace [--backend B] [--comm NAME] -- CMD ARGS...`: count the kernel's copies of any
command, the way the seed's send_trace/recv_trace modules did for `sender` and `receiver`.

The command starts blocked on a pipe, so the tracer is attached (with the command's pid,
whose descendants count too) before it runs a single instruction of its own.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys

from bench.errors import UsageError, report
from bench.procs import stop
from bench.tracing.base import PointCounts

LABELS = {"send_copy": ("COPY1", "dest"), "recv_copy": ("COPY4", "src")}
BACKEND_CHOICES = ("auto", "kmod", "bpftrace", "kprobe_events", "tracepoints")
GATE = """import os, sys
fd = int(sys.argv[1])
if os.read(fd, 1) != b"g":
    sys.exit(125)
os.close(fd)
try:
    os.execvp(sys.argv[2], sys.argv[2:])
except FileNotFoundError:
    print(f"bench: error: command not found: {sys.argv[2]}", file=sys.stderr)
    sys.exit(127)
"""


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "trace", help="count the kernel's data copies of a command (seed view)",
        description="Run CMD and count its kernel data copies: COPY#1 (user->kernel on send) and "
                    "COPY#4 (kernel->user on receive), with bytes, time per copy and samples.")
    p.add_argument("--backend", default="auto", choices=BACKEND_CHOICES,
                   help="tracer backend (auto picks per copy point; default)")
    p.add_argument("--comm", metavar="NAME", action="append",
                   help="count tasks with this name instead of CMD's pid tree (repeatable), "
                        "as the seed's strcmp(current->comm, ...)")
    p.add_argument("--all-copies", action="store_true",
                   help="also count copies outside socket calls (pipes, files)")
    p.add_argument("--samples", type=int, default=8, metavar="N",
                   help="sample lines to print per copy point (default 8)")
    p.add_argument("--json", metavar="FILE", help="also write the counts and choices as JSON")
    p.add_argument("command", nargs=argparse.REMAINDER, help="-- CMD ARGS...")
    p.set_defaults(func=run)
    return p


def _command(args) -> list[str]:
    cmd = list(args.command)
    if cmd and cmd[0] == "--":
        cmd = cmd[1:]
    if not cmd:
        raise UsageError("no command to trace", fix="bench trace -- CMD ARGS...")
    if shutil.which(cmd[0]) is None:
        raise UsageError(f"command not found: {cmd[0]}", fix="give a program on PATH or a path")
    if args.samples < 0:
        raise UsageError(f"--samples {args.samples}: must be >= 0", fix="e.g. --samples 8")
    for name in args.comm or []:
        if not name or len(name) > 15 or "," in name or '"' in name:
            raise UsageError(f"--comm {name!r}: not a task name",
                             fix="1-15 characters, as in /proc/PID/comm")
    return cmd


def _check_json_path(name: str) -> None:
    """--json FILE must be a file we can write, checked without creating it."""
    from pathlib import Path

    from bench.results import PSEUDO_ROOTS
    path = Path(name).resolve()
    why = None
    if any(path == r or r in path.parents for r in PSEUDO_ROOTS):
        why = "is under a kernel pseudo filesystem"
    elif path.is_dir():
        why = "is a directory"
    elif path.exists():
        why = None if os.access(path, os.W_OK) else "exists and is not writable by this user"
    elif not path.parent.is_dir():
        why = f"its directory {path.parent} does not exist"
    elif not os.access(path.parent, os.W_OK | os.X_OK):
        why = f"its directory {path.parent} is not writable by this user"
    if why:
        raise UsageError(f"--json {name}: {why}", fix="pass a writable file path, e.g. "
                         "--json trace.json")


def run(args) -> int:
    from bench.tracing.select import select_tracer

    cmd = _command(args)
    if args.json:
        _check_json_path(args.json)     # before CMD runs: its counts must have somewhere to go
    comm = {name: name for name in args.comm} if args.comm else None
    tracer = select_tracer(args.backend, comm=comm, all_copies=args.all_copies)
    av = tracer.available()
    if not av.ok:
        raise UsageError(av.reason, fix=av.fix)
    # The child is a tiny exec-wrapper that waits on a pipe, then becomes CMD (same pid).
    # Why not preexec_fn: Popen itself waits for the exec, so gating there would deadlock.
    gate_r, gate_w = os.pipe()
    try:
        child = subprocess.Popen([sys.executable, "-c", GATE, str(gate_r), *cmd],
                                 pass_fds=(gate_r,))
    except OSError as e:
        os.close(gate_r)
        os.close(gate_w)
        raise UsageError(f"cannot start {cmd[0]}: {e}", fix="check the command") from None
    os.close(gate_r)
    interrupted = False
    counts: list[PointCounts] = []
    try:
        tracer.attach({"cmd": child.pid})
        os.write(gate_w, b"g")
        os.close(gate_w)
        gate_w = -1
        try:
            child.wait()
        except KeyboardInterrupt:   # pass it on, give CMD a moment, then report what we saw
            interrupted = True
            _stop(child)
        counts = tracer.read()
    finally:
        # A second Ctrl-C must not cut the cleanup short: no module or probe may stay behind.
        old = signal.signal(signal.SIGINT, signal.SIG_IGN)
        try:
            if gate_w >= 0:
                os.close(gate_w)
            _stop(child)
            tracer.detach()
        finally:
            signal.signal(signal.SIGINT, old)
    print(render(counts, [c.to_json() for c in tracer.choices], args.samples))
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"command": cmd, "returncode": child.returncode,
                       "choices": [c.to_json() for c in tracer.choices],
                       "counts": [c.to_json() for c in counts]}, f, indent=2)
    if interrupted:
        return 130
    return 0 if child.returncode == 0 else 1


def _stop(child: subprocess.Popen) -> None:
    """SIGINT, then SIGTERM, then SIGKILL, a few seconds apart."""
    stop(child, int_grace=5, term_grace=5)


def render(counts: list[PointCounts] | list[dict], choices: list[dict], samples: int = 8) -> str:
    """The seed's view: sample lines, then per point copies, bytes, ns per copy, and ratios."""
    rows = [c if isinstance(c, dict) else c.to_json() for c in counts]
    lines = []
    for c in choices:
        how = c["backend"] or "not measurable here"
        if c["backend"]:
            how += f" ({', '.join(c['symbols'])}{'' if c['exact'] else ', estimate'})"
        lines.append(f"# {c['point']}: {how}")
    for point, (label, word) in LABELS.items():
        shown = [s for r in rows if r["point"] == point for s in r["samples"]][:samples]
        for s in shown:
            what = s.get("addr_kind") or word   # tracepoints give a socket, not the buffer
            lines.append(f"[{label}] PID={s['pid']} {what}={s['addr']} len={s['len']}"
                         + (f" ns={s['ns']}" if "ns" in s else ""))
    lines.append("")
    lines.append(f"{'point':12} {'symbol':30} {'backend':13} {'copies':>9} {'bytes':>13} "
                 f"{'ns/copy':>9}  quality")
    for r in rows:
        if not r["calls"]:
            continue
        per = f"{r['ns_total'] / r['calls']:.0f}" if r["ns_total"] else "-"
        lines.append(f"{r['point']:12} {r['symbol']:30} {r['backend']:13} {r['calls']:>9} "
                     f"{r['bytes']:>13} {per:>9}  {_quality(r)}")
    sent = sum(r["bytes"] for r in rows if r["point"] == "send_copy")
    copied = sum(r["bytes"] for r in rows if r["point"] in ("send_copy", "recv_copy"))
    ncopies = sum(r["calls"] for r in rows if r["point"] in ("send_copy", "recv_copy"))
    lines.append("")
    lines.append(f"copies: {ncopies}, bytes copied: {copied}"
                 + (f", bytes copied per byte sent: {copied / sent:.2f}" if sent else ""))
    shared = _shared_addresses(rows)
    if shared:
        lines.append(f"same kernel address in COPY#1 and COPY#4: {', '.join(shared[:3])} "
                     "(the receiver read the skb the sender wrote: loopback, seed FAILURE 10)")
    if any(_quality(r) != "exact" for r in rows if r["calls"]):
        lines.append("estimate: not the copy function itself (tracepoints: no kprobes here); "
                     "lossy: the kernel reported lost events, counts are a lower bound")
    return "\n".join(lines)


def _quality(r: dict) -> str:
    q = r.get("quality") or ("exact" if r.get("exact") else "estimate")
    if q == "lossy":
        return "lossy (" + ", ".join(f"{k} {v}" for k, v in (r.get("lost") or {}).items()) + ")"
    if q == "estimate" and r.get("bytes_exact") and not r.get("calls_exact"):
        return "bytes exact, calls estimate"
    return q


def _shared_addresses(rows: list[dict]) -> list[str]:
    def buffers(point: str) -> set[str]:
        return {s["addr"] for r in rows if r["point"] == point for s in r["samples"]
                if not s.get("addr_kind")}
    send, recv = buffers("send_copy"), buffers("recv_copy")
    return sorted((send & recv) - {"0x0"})


if __name__ == "__main__":   # python -m bench.trace_cmd -- CMD (without the lead's CLI)
    ap = argparse.ArgumentParser(prog="bench")
    add_parser(ap.add_subparsers())
    ns = ap.parse_args(["trace", *sys.argv[1:]])
    try:
        sys.exit(ns.func(ns))
    except UsageError as e:
        sys.exit(report(e))
