"""What this machine can measure, and the exact fix for each missing capability.

Every check is a pure-ish function of filesystem roots (`proc`, `sys_root`, `boot`), so tests run
them against fixture trees."""

from __future__ import annotations

import ctypes
import gzip
import os
import platform
import shutil
import socket
from dataclasses import asdict, dataclass
from pathlib import Path


@dataclass(frozen=True)
class Check:
    name: str
    ok: bool
    detail: str
    fix: str = ""


@dataclass(frozen=True)
class Roots:
    proc: Path = Path("/proc")
    sys_root: Path = Path("/sys")
    boot: Path = Path("/boot")
    lib_modules: Path = Path("/lib/modules")


def kernel_config(roots: Roots, release: str) -> dict[str, str]:
    """CONFIG_* values from /proc/config.gz or /boot/config-RELEASE; {} when neither exists."""
    text = None
    gz = roots.proc / "config.gz"
    if gz.exists():
        text = gzip.decompress(gz.read_bytes()).decode(errors="replace")
    elif (roots.boot / f"config-{release}").exists():
        text = (roots.boot / f"config-{release}").read_text(errors="replace")
    cfg = {}
    for line in (text or "").splitlines():
        if line.startswith("CONFIG_") and "=" in line:
            k, v = line.split("=", 1)
            cfg[k] = v
    return cfg


def check_kprobes(roots: Roots, cfg: dict) -> Check:
    if (roots.sys_root / "kernel/tracing/kprobe_events").exists() or \
            (roots.sys_root / "kernel/debug/kprobes").exists() or cfg.get("CONFIG_KPROBES") == "y":
        return Check("kprobes", True, "CONFIG_KPROBES present")
    return Check("kprobes", False, "this kernel has no kprobes: exact copy counts are impossible here",
                 "use a kernel with CONFIG_KPROBES=y: `bench lab up` then `--target lab`")


def check_modules(roots: Roots, cfg: dict) -> Check:
    if (roots.proc / "modules").exists():
        return Check("modules", True, "loadable modules supported")
    return Check("modules", False, "no loadable module support (no /proc/modules)",
                 "the kmod tracer needs CONFIG_MODULES=y: use `--target lab`")


def check_headers(roots: Roots, release: str) -> Check:
    build = roots.lib_modules / release / "build"
    if build.exists():
        return Check("kernel_headers", True, f"{build}")
    return Check("kernel_headers", False, f"no headers for {release} ({build} missing)",
                 f"apt-get install linux-headers-{release} (Debian kernels), or `--target lab`")


def check_tool(name: str, package: str, why: str) -> Check:
    path = shutil.which(name)
    if path:
        return Check(name, True, path)
    return Check(name, False, f"{name} not installed ({why})", f"apt-get install {package}")


def check_tracefs(roots: Roots, is_root: bool | None = None) -> Check:
    for p in (roots.sys_root / "kernel/tracing", roots.sys_root / "kernel/debug/tracing"):
        if (p / "events").exists():
            return Check("tracefs", True, str(p))
    if (os.geteuid() == 0) if is_root is None else is_root:
        # Not a problem: every backend mounts it when it needs it (as on a fresh boot here).
        return Check("tracefs", True, "not mounted yet: bench mounts it at "
                     f"{roots.sys_root / 'kernel/tracing'} when it counts copies")
    return Check("tracefs", False, "tracefs is not mounted and mounting it needs root",
                 "run bench as root (it mounts tracefs itself)")


def check_copy_counting() -> Check:
    """What `--copies auto` would use per copy point here, and how exact each is."""
    from bench.errors import UsageError
    from bench.tracing.select import plan
    try:
        choices = plan("auto")
    except (UsageError, OSError) as exc:
        return Check("copy_counting", False, f"cannot plan copy counting: {exc}",
                     "run as root; python3 -m bench.bootstrap")
    quality = {"bpftrace": "exact", "kmod": "exact", "kprobe_events": "exact unless lossy",
               "tracepoints": "bytes exact, calls estimated"}
    got = [f"{c.point}={c.backend} ({quality[c.backend]})" for c in choices if c.backend]
    missing = [c.point for c in choices if not c.backend]
    if not got:
        why = "; ".join(dict.fromkeys(r for c in choices for r in c.rejected.values()))
        return Check("copy_counting", False, f"nothing can count copies here: {why}",
                     "run as root with bpftrace (python3 -m bench.bootstrap), or `--target lab`")
    detail = ", ".join(got) + (f"; not measurable here: {', '.join(missing)}" if missing else "")
    exact = all(c.backend in ("bpftrace", "kmod") for c in choices
                if c.point in ("send_copy", "recv_copy"))
    return Check("copy_counting", True, detail,
                 "" if exact else "exact per-copy counts (kprobes): `--target lab`")


def check_io_uring() -> Check:
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)  # struct io_uring_params
    fd = libc.syscall(425, 1, params)  # __NR_io_uring_setup on x86-64 and arm64
    if fd >= 0:
        os.close(fd)
        return Check("io_uring", True, "io_uring_setup works")
    err = ctypes.get_errno()
    return Check("io_uring", False, f"io_uring_setup failed: {os.strerror(err)}",
                 "enable io_uring (sysctl kernel.io_uring_disabled=0) or use a kernel ≥5.19")


def check_so_zerocopy() -> Check:
    so_zerocopy = getattr(socket, "SO_ZEROCOPY", 60)
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, so_zerocopy, 1)
        return Check("so_zerocopy", True, "SO_ZEROCOPY accepted")
    except OSError as exc:
        return Check("so_zerocopy", False, f"SO_ZEROCOPY refused: {exc}", "use a kernel ≥4.14")


def check_rdma(roots: Roots) -> Check:
    """An ACTIVE RDMA port, or the means to make a soft-RoCE one (bench/rxe.py)."""
    from bench import rxe
    found = rxe.ports(roots.sys_root)
    active = [f"{p.device}/{p.port}" + (" (soft-RoCE)" if p.soft else "") for p in found
              if p.active]
    if active:
        return Check("rdma_device", True, ", ".join(active))
    ok, why = rxe.rxe_available(roots.proc, roots.lib_modules)
    if ok and os.geteuid() == 0:
        return Check("rdma_device", True, f"no RDMA device yet; {why}: `bench run` creates its own "
                     f"soft-RoCE link (cbrxe<pid>) on its veth topology and removes it")
    seen = ", ".join(f"{p.device}/{p.port} {p.state}" for p in found)
    return Check("rdma_device", False,
                 f"no active RDMA port ({seen or 'no /sys/class/infiniband entries'}) and no way "
                 f"to make one here ({why if not ok else 'soft-RoCE set-up needs root'})",
                 rxe.no_device_fix())


def check_pyverbs() -> Check:
    import importlib.util
    if importlib.util.find_spec("pyverbs") is not None:
        return Check("pyverbs", True, "pyverbs importable (Debian python3-pyverbs)")
    return Check("pyverbs", False, "pyverbs is not importable (the RDMA workloads' verbs binding)",
                 "apt-get install python3-pyverbs (Debian's; the venv sees it through "
                 "--system-site-packages), or `--target lab`")


def check_root() -> Check:
    if os.geteuid() == 0:
        return Check("root", True, "running as root")
    return Check("root", False, "not root: veth topology, tracers and RDMA setup need root",
                 "run as root (sudo), or use --topology loopback")


def check_kvm() -> Check:
    if os.access("/dev/kvm", os.R_OK | os.W_OK):
        return Check("kvm", True, "/dev/kvm present (the lab still probes that a guest really "
                     "boots under it and falls back to TCG)")
    return Check("kvm", False, "no usable /dev/kvm: the lab VM runs under TCG (slower)",
                 "nothing to do for correctness; for speed enable KVM")


def run_checks(roots: Roots = Roots(), release: str | None = None) -> list[Check]:
    release = release or platform.release()
    cfg = kernel_config(roots, release)
    return [
        check_root(),
        check_kprobes(roots, cfg),
        check_modules(roots, cfg),
        check_headers(roots, release),
        check_tracefs(roots),
        check_tool("bpftrace", "bpftrace", "bpftrace tracer backend"),
        *([check_copy_counting()] if roots == Roots() else []),   # needs the real kernel
        check_io_uring(),
        check_so_zerocopy(),
        check_rdma(roots),
        check_pyverbs(),
        check_tool("iperf3", "iperf3", "reference for TCP/UDP"),
        check_tool("ib_write_bw", "perftest", "reference for RDMA"),
        check_tool("rdma", "iproute2", "soft-RoCE set-up (`rdma link`)"),
        check_kvm(),
        check_tool("qemu-system-x86_64", "qemu-system-x86", "the lab VM"),
        check_tool("mmdebstrap", "mmdebstrap", "building the lab VM image"),
    ]


CAPABILITY_CHECKS = {
    "io_uring": lambda roots: check_io_uring(),
    "so_zerocopy": lambda roots: check_so_zerocopy(),
    "rdma_device": check_rdma,
    "pyverbs": lambda roots: check_pyverbs(),
}


def capabilities(names, roots: Roots = Roots()) -> dict[str, tuple[bool, str, str]]:
    """Just the checks a plan's workloads need (Workload.needs): name -> (ok, detail, fix)."""
    out = {}
    for name in sorted(set(names)):
        if name in CAPABILITY_CHECKS:
            c = CAPABILITY_CHECKS[name](roots)
            out[name] = (c.ok, c.detail, c.fix)
    return out


def as_json(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
