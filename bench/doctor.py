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


def readonly_environment(env=None):
    """bench.tracing.select's Environment with its two writes taken out, so the doctor (and
    `--target auto`) leave the machine as found: no throw-away kprobe event is defined in
    kprobe_events (attachability is read from available_filter_functions instead, which lists
    what ftrace, and so trace_kprobe, may probe), and bpftrace's check does not mount tracefs
    (`bench run` mounts it when it counts)."""
    from dataclasses import replace

    from bench.tracing.base import Availability
    from bench.tracing.env import Environment
    env = env or Environment()

    def bpftrace_ok() -> Availability:
        if env.which("bpftrace") is None:
            return Availability(False, "bpftrace is not installed", "apt-get install bpftrace")
        if os.geteuid() != 0:
            return Availability(False, "bpftrace needs root", "run as root")
        return Availability(True, "bpftrace")
    return replace(env, try_attach=None, bpftrace_ok=bpftrace_ok)


def check_copy_counting(env=None) -> Check:
    """What `--copies auto` would use per copy point here, and how exact each is. Read-only
    (readonly_environment); `env` (bench.tracing.env.Environment) lets tests use fixture
    trees."""
    from bench.errors import UsageError
    from bench.tracing.select import plan
    try:
        choices = plan("auto", env=readonly_environment(env))
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
    if any(c.backend in ("bpftrace", "kprobe_events") for c in choices):
        detail += ("; kprobe attachability read from available_filter_functions (the doctor "
                   "writes nothing; `bench run` asks the kernel)")
    exact = all(c.backend in ("bpftrace", "kmod") for c in choices
                if c.point in ("send_copy", "recv_copy"))
    return Check("copy_counting", True, detail,
                 "" if exact else "exact per-copy counts (kprobes): `--target lab`")


def io_uring_sysctl(roots: Roots = Roots()) -> int | None:
    """kernel.io_uring_disabled (6.6+): 0 allowed, 1 only for io_uring_group/CAP_SYS_ADMIN,
    2 off for everyone; None where the kernel has no such sysctl."""
    try:
        return int((roots.proc / "sys/kernel/io_uring_disabled").read_text().strip())
    except (OSError, ValueError):
        return None


IO_URING_ENABLE_FIX = "sysctl -w kernel.io_uring_disabled=0 (as root), or use a kernel ≥6.0"


def check_io_uring(roots: Roots = Roots()) -> Check:
    libc = ctypes.CDLL(None, use_errno=True)
    params = ctypes.create_string_buffer(120)  # struct io_uring_params
    fd = libc.syscall(425, 1, params)  # __NR_io_uring_setup on x86-64 and arm64
    if fd >= 0:
        os.close(fd)
        return Check("io_uring", True, "io_uring_setup works")
    err = ctypes.get_errno()
    disabled = io_uring_sysctl(roots)
    if disabled:
        who = "for every process" if disabled >= 2 else "outside kernel.io_uring_group"
        return Check("io_uring", False, f"io_uring is disabled by sysctl kernel.io_uring_disabled="
                     f"{disabled} ({who}): io_uring_setup failed: {os.strerror(err)}",
                     IO_URING_ENABLE_FIX)
    return Check("io_uring", False, f"io_uring_setup failed: {os.strerror(err)}",
                 IO_URING_ENABLE_FIX)


def _io_uring_ops(roots: Roots, name: str, ops: tuple[str, ...], why: str) -> Check:
    """Opcodes this kernel's io_uring offers (io_uring_get_probe, through the binding)."""
    base = check_io_uring(roots)
    if not base.ok:
        return Check(name, False, f"io_uring itself is unavailable ({base.detail})", base.fix)
    try:
        import liburing
    except ImportError:
        return Check(name, False, "the io_uring binding (Python liburing) is not installed",
                     "python3 -m bench.bootstrap")
    probe = liburing.io_uring_get_probe()
    if probe.last_op is None:      # the probe could not be made: no pointer to ask
        return Check(name, False, "io_uring_get_probe failed", base.fix)
    try:
        missing = [op for op in ops if not liburing.io_uring_opcode_supported(
            probe, getattr(liburing.io_uring_op, op))]
    finally:
        liburing.io_uring_free_probe(probe)
    if missing:
        return Check(name, False, f"this kernel's io_uring lacks {', '.join(missing)} ({why})",
                     "use a newer kernel (`bench lab up`, then `--target lab`)")
    return Check(name, True, f"{', '.join(ops)} supported")


def check_io_uring_fixed_rw(roots: Roots = Roots()) -> Check:
    return _io_uring_ops(roots, "io_uring_fixed_rw",
                         ("IORING_OP_READ_FIXED", "IORING_OP_WRITE_FIXED"),
                         "registered-buffer reads and writes, Linux 5.1")


def check_io_uring_send_zc(roots: Roots = Roots()) -> Check:
    return _io_uring_ops(roots, "io_uring_send_zc", ("IORING_OP_SEND_ZC",),
                         "zerocopy send, Linux 6.0")


def check_io_uring_recv_multishot(roots: Roots = Roots()) -> Check:
    """Multishot recv selecting provided buffers has no opcode of its own: try one (Linux 6.0)
    on a socketpair — one byte in, one completion that names a buffer and says more follow."""
    c = _io_uring_ops(roots, "io_uring_recv_multishot",
                      ("IORING_OP_RECV", "IORING_OP_PROVIDE_BUFFERS"), "provided buffers")
    if not c.ok:
        return c
    import errno as errno_mod

    import liburing

    from workloads.io_uring import BGID, constants
    k = constants()
    ring = liburing.io_uring()
    a, b = socket.socketpair()
    pool, dummy = bytearray(64), bytearray(1)
    try:
        liburing.io_uring_queue_init(4, ring, 0)
    except OSError as exc:
        a.close()
        b.close()
        return Check("io_uring_recv_multishot", False, f"io_uring_setup: {exc}", IO_URING_ENABLE_FIX)
    try:
        cqe = liburing.io_uring_cqe()
        sqe = liburing.io_uring_get_sqe(ring)
        liburing.io_uring_prep_provide_buffers(sqe, memoryview(pool), 32, 2, BGID, 0)
        liburing.io_uring_sqe_set_data64(sqe, 1)
        sqe = liburing.io_uring_get_sqe(ring)
        liburing.io_uring_prep_recv_multishot(sqe, a.fileno(), dummy, 0, 0)
        liburing.io_uring_sqe_set_flags(sqe, k["IOSQE_BUFFER_SELECT"])
        liburing.io_uring_sqe_set_data64(sqe, 2)
        b.send(b"x")
        got = {}
        for _ in range(4):
            try:
                liburing.io_uring_submit_and_wait_timeout(ring, cqe, 1, liburing.timespec(1.0))
            except OSError:
                break
            while liburing.io_uring_peek_cqe(ring, cqe) == 0:
                got[cqe.user_data] = (cqe.res, cqe.flags)
                liburing.io_uring_cqe_seen(ring, cqe)
            if 2 in got:
                break
        res, flags = got.get(2, (-errno_mod.ETIME, 0))
        ok = res == 1 and flags & k["CQE_F_MORE"] and flags & k["CQE_F_BUFFER"]
        b.close()          # ends the multishot before the ring goes
        a.shutdown(socket.SHUT_RDWR)
        try:
            liburing.io_uring_submit_and_wait_timeout(ring, cqe, 1, liburing.timespec(0.5))
        except OSError:
            pass
    finally:
        liburing.io_uring_queue_exit(ring)
        a.close()
        b.close()
    if ok:
        return Check("io_uring_recv_multishot", True, "multishot recv with provided buffers works")
    why = os.strerror(-res) if res < 0 else f"result {res}, flags {flags:#x}"
    return Check("io_uring_recv_multishot", False,
                 f"multishot recv with provided buffers does not work here ({why}; Linux 6.0+)",
                 "use a newer kernel (`bench lab up`, then `--target lab`)")


def check_so_zerocopy() -> Check:
    so_zerocopy = getattr(socket, "SO_ZEROCOPY", 60)
    try:
        with socket.socket() as s:
            s.setsockopt(socket.SOL_SOCKET, so_zerocopy, 1)
        return Check("so_zerocopy", True, "SO_ZEROCOPY accepted")
    except OSError as exc:
        return Check("so_zerocopy", False, f"SO_ZEROCOPY refused: {exc}", "use a kernel ≥4.14")


def check_tcp_zerocopy_receive() -> Check:
    from workloads.tcp_zerocopy_receive import supported
    why = supported()
    if why is None:
        return Check("tcp_zerocopy_receive", True, "mmap + getsockopt(TCP_ZEROCOPY_RECEIVE) work")
    return Check("tcp_zerocopy_receive", False, f"no TCP_ZEROCOPY_RECEIVE: {why}",
                 "use a kernel >= 5.11 (`bench lab up`, then `--target lab`)")


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


def check_python_module(module: str) -> Check:
    """A Python module the agents import (Workload.python_module), on the machine they run."""
    import importlib.util
    name = f"python:{module}"
    if importlib.util.find_spec(module) is not None:
        return Check(name, True, f"Python module {module} importable")
    return Check(name, False, f"Python module {module} is not installed (the agents import it)",
                 f"python3 -m bench.bootstrap (installs {module}, pinned); on lab nodes "
                 "`bench lab up` re-provisions")


def agent_modules() -> list[str]:
    from workloads.registry import WORKLOADS
    return sorted({w.python_module for w in WORKLOADS.values() if w.python_module})


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
        check_io_uring(roots),
        *([check_io_uring_fixed_rw(roots), check_io_uring_send_zc(roots),
           check_io_uring_recv_multishot(roots)] if _has_liburing() else []),
        check_so_zerocopy(),
        check_tcp_zerocopy_receive(),
        check_rdma(roots),
        check_pyverbs(),
        *[check_python_module(m) for m in agent_modules()],
        check_tool("iperf3", "iperf3", "reference for TCP/UDP"),
        check_tool("ib_write_bw", "perftest", "reference for RDMA"),
        check_tool("sockperf", "sockperf", "latency reference for TCP/UDP round trips"),
        check_tool("qperf", "qperf", "latency reference (tcp_lat, udp_lat, rc_lat)"),
        check_tool("rdma", "iproute2", "soft-RoCE set-up (`rdma link`)"),
        check_kvm(),
        check_tool("qemu-system-x86_64", "qemu-system-x86", "the lab VM"),
        check_tool("mmdebstrap", "mmdebstrap", "building the lab VM image"),
    ]


def _has_liburing() -> bool:
    import importlib.util
    return importlib.util.find_spec("liburing") is not None


CAPABILITY_CHECKS = {
    "io_uring": check_io_uring,
    "io_uring_fixed_rw": check_io_uring_fixed_rw,
    "io_uring_send_zc": check_io_uring_send_zc,
    "io_uring_recv_multishot": check_io_uring_recv_multishot,
    "so_zerocopy": lambda roots: check_so_zerocopy(),
    "tcp_zerocopy_receive": lambda roots: check_tcp_zerocopy_receive(),
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
        elif name.startswith("python:"):
            c = check_python_module(name.split(":", 1)[1])
            out[name] = (c.ok, c.detail, c.fix)
    return out


def as_json(checks: list[Check]) -> list[dict]:
    return [asdict(c) for c in checks]
