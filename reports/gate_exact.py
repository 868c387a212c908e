"""The gate's rules that need no statistics: case status changes, copy counts and syscalls per
byte (compared exactly where both runs label them exact), the run parameters that change the
figures, and which machine ran a result (seen through a VM where the result records it)."""

from __future__ import annotations

from dataclasses import dataclass

from bench.results import CaseResult, RunResult, dig

# Exact figures are rounded when stored (round(x, 4..6)): an increase within this is rounding.
ROUNDING = 1e-3
# A figure labelled estimate/lossy on both sides is compared with this relative tolerance.
ESTIMATE_TOLERANCE = 0.10
# (where in the case, label key next to it, what it is, deterministic for a given build)
COPY_FIGURES = (
    ("copies.sides.{side}.bytes_per_payload_byte", "quality", "bytes copied per payload byte"),
    ("copies.sides.{side}.total_copied_per_payload_byte", "total_quality",
     "bytes copied per payload byte incl. deferred"),
    ("copies.sides.{side}.copies_per_message", "quality", "copies per message"),
)
SYSCALL_FIGURE = ("syscalls.sides.{side}.per_gb", "quality", "syscalls per GB")
SIDES = ("sender", "receiver")
# Copy calls per message depend on timing on both sides (a lagging receiver gets more bytes per
# call; a TCP sender's skb size follows TSO autosizing, i.e. the pacing rate), and so do receive
# syscalls (recvmmsg batches fill as the receiver lags: A/A udp 1472 b32 receiver 151,324 and
# 229,803 per GB on two nights): not functions of the build, shown when they move, not gated. Bytes copied
# per payload byte are (a copy put back shows there), and so are syscalls up to the window.
TIMING_DEPENDENT = {("sender", "copies per message"), ("receiver", "copies per message"),
                    ("receiver", "syscalls per GB")}
# The syscall window (attach to read) adds a few dozen protocol calls and misses a call already
# blocked at attach: an exact count of calls, but per GB it moves by this many calls over the
# sample's bytes from night to night. Allowed on top of rounding.
WINDOW_CALLS = 64

CASE_PARAMS = ("duration_s", "count", "socket_buffer", "batch", "rdma")
RUN_PARAMS = (("method.cpus", "CPU placement (--cpus)"),
              ("method.socket_buffer", "socket buffers (--sockbuf)"),
              ("method.syscalls", "syscall counting (--syscalls)"),
              ("copy_backends", "copy counting (--copies)"),
              ("target.chosen", "target (--target)"),
              ("placement.kind", "topology"),
              ("runner_host", "runner host"))
CONTAINERS = {None, "", "none", "docker", "podman", "lxc", "lxc-libvirt", "systemd-nspawn",
              "rkt", "container-other", "wsl"}
UNKNOWN_HOST = "unknown host"


@dataclass(frozen=True)
class Finding:
    case: str
    kind: str            # status | copies | syscalls | labels
    text: str
    regression: bool


def status_findings(base: RunResult, new: RunResult) -> list[Finding]:
    """A case ok in the baseline and failed, skipped, not run or missing now is a regression."""
    out = []
    new_by_id = {c.id: c for c in new.cases}
    for b in base.cases:
        n = new_by_id.get(b.id)
        if b.status == "ok" and (n is None or n.status != "ok"):
            now = "missing (not in the new run)" if n is None else n.status
            why = f" ({n.reason})" if n is not None and n.reason else ""
            out.append(Finding(b.id, "status", f"{b.id}: ok -> {now}{why}", True))
        elif b.status != "ok" and n is not None and n.status == "ok":
            out.append(Finding(b.id, "status", f"{b.id}: {b.status} -> ok", False))
    base_ids = {c.id for c in base.cases}
    for n in new.cases:
        if n.id not in base_ids:
            out.append(Finding(n.id, "status", f"{n.id}: new case ({n.status}), no baseline", False))
    return out


def _figure(case: CaseResult, path: str, label_key: str, side: str):
    doc = {"copies": case.copies or {}, "syscalls": case.syscalls or {}}
    where = path.format(side=side)
    return dig(doc, where), dig(doc, where.rsplit(".", 1)[0] + "." + label_key)


def copy_findings(b: CaseResult, n: CaseResult) -> list[Finding]:
    """Copies and bytes copied per payload byte, and syscalls per GB, new against baseline."""
    out = []
    for path, label_key, what in (*COPY_FIGURES, SYSCALL_FIGURE):
        kind = "syscalls" if path.startswith("syscalls") else "copies"
        for side in SIDES:
            vb, lb = _figure(b, path, label_key, side)
            vn, ln = _figure(n, path, label_key, side)
            if not isinstance(vb, (int, float)) or not isinstance(vn, (int, float)):
                continue
            name = f"{n.id} {side} {what}"
            if lb != ln:
                out.append(Finding(n.id, "labels", f"{name}: labels differ ({lb} vs {ln}): "
                                   f"{vb:g} -> {vn:g} not compared", False))
                continue
            if (side, what) in TIMING_DEPENDENT:
                if abs(vn - vb) > ESTIMATE_TOLERANCE * abs(vb):
                    out.append(Finding(n.id, kind, f"{name}: {vb:g} -> {vn:g} [timing-dependent: "
                                       "shown, not gated]", False))
                continue
            exact = lb == "exact"
            if exact:
                allow = ROUNDING * max(1.0, abs(vb))
                how = "exact"
                if kind == "syscalls":
                    nbytes = [x for x in (_figure(c, "syscalls.sides.{side}.payload_bytes",
                                                  "quality", side)[0] for c in (b, n))
                              if isinstance(x, (int, float)) and x > 0]
                    if nbytes:
                        allow += WINDOW_CALLS * 1e9 / min(nbytes)
                        how = f"exact calls, ±{WINDOW_CALLS} calls of the counting window"
                worse = vn > vb + allow
            else:
                worse = vn > vb * (1 + ESTIMATE_TOLERANCE) + ROUNDING
                how = f"{lb or 'unlabelled'}: compared with {ESTIMATE_TOLERANCE:.0%} tolerance"
            if worse:
                back = " (a copy put back)" if vb == 0 and kind == "copies" else ""
                out.append(Finding(n.id, kind, f"{name}: {vb:g} -> {vn:g}{back} [{how}]", True))
            elif not exact and vn != vb:
                out.append(Finding(n.id, kind, f"{name}: {vb:g} -> {vn:g} [{how}]", False))
    return out


def host_of(result: RunResult) -> str:
    """The machine that really ran it: the hostname, or under a VM the host recorded in
    metadata `vm_host`, or for `--target lab` the runner's host (`runner_host`, which started
    the QEMU lab); a lab guest's hostname and CPU say nothing of the host under it."""
    m = result.metadata or {}
    if m.get("virtualization") in CONTAINERS:
        return str(m.get("hostname"))
    vm_host = m.get("vm_host")
    if isinstance(vm_host, dict):
        vm_host = vm_host.get("hostname")
    if not vm_host and dig(m, "target.chosen") == "lab" and m.get("runner_host"):
        # the lab is QEMU started by the runner's own machine: that machine is the host
        vm_host = f"{m['runner_host']} (ran the lab)"
    return str(vm_host) if vm_host else UNKNOWN_HOST


MACHINE_KEYS = ("hostname", "cpu_model", "cpu_count", "arch", "virtualization")


def machine(result: RunResult) -> dict:
    m = result.metadata or {}
    return {**{k: m.get(k) for k in MACHINE_KEYS}, "host": host_of(result)}


def machine_differences(base: RunResult, new: RunResult) -> list[str]:
    mb, mn = machine(base), machine(new)
    diff = [f"{k} {mb[k]!r} vs {mn[k]!r}" for k in mb if mb[k] != mn[k]]
    if not diff and mb["host"] == UNKNOWN_HOST:
        diff.append(f"{UNKNOWN_HOST}: both ran under {mb['virtualization']} with no record of "
                    "the host under the VM, so they may be two machines")
    return diff


def param_differences(base: RunResult, new: RunResult) -> list[str]:
    """Run parameters that change the figures, per run and per shared case."""
    out = []
    mb, mn = base.metadata or {}, new.metadata or {}
    for key, what in RUN_PARAMS:
        if dig(mb, key) != dig(mn, key):
            out.append(f"{what}: {dig(mb, key)!r} vs {dig(mn, key)!r}")
    new_by_id = {c.id: c for c in new.cases}
    for b in base.cases:
        n = new_by_id.get(b.id)
        if n is None:
            continue
        pb, pn = b.params or {}, n.params or {}
        for key in CASE_PARAMS:
            if pb.get(key) != pn.get(key):
                out.append(f"{b.id} {key}: {pb.get(key)!r} vs {pn.get(key)!r}")
        for what, getter in (("copy counting", lambda c: (c.copies or {}).get("status")),
                             ("syscall counting", lambda c: (c.syscalls or {}).get("status"))):
            if (getter(b) == "off") != (getter(n) == "off"):
                out.append(f"{b.id} {what}: {getter(b)!r} vs {getter(n)!r}")
    return out
