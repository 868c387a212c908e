"""kmod backend: build, load, read and always unload the copytrace kprobe module.

The only backend that reaches `_copy_from_iter`/`_copy_to_iter` on kernels that mark them
notrace (Debian 6.1): kretprobes do not need ftrace. The module source ships in
bench/tracing/copytrace/ and is built on the target against /lib/modules/$(uname -r)/build, cached
per kernel release (and source hash) under /var/cache/copybench/kmod/<release>/.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from bench.errors import UsageError
from bench.tracing import btf as kernel_btf
from bench.tracing import catalog
from bench.tracing.base import Availability, PointCounts, Tracer
from bench.tracing.env import CACHE
from bench.tracing.kprobes import (
    ANY_TASK_POINTS,
    LEN_SKB_DATA_LEN,
    OUTPUT_VERSION,
    SKB_LEN_SYMBOLS,
    ModuleReport,
    to_counts,
)

SRC = Path(__file__).with_name("copytrace")   # the C module and its Makefile
MODULE = "copytrace"
MAX_FILTERS = 8          # = MAX_FILTERS in copytrace.c
RXE_COPY_SYMBOL = "rxe_mr_copy"   # copytrace ties its copies to the MR's owner (rxe_ibmr)
MAX_GATES = 8            # = MAX_GATES: socket entry functions copytrace can watch
CALIB_CALLS = 10000      # calls per probe-cost calibration (copytrace's `calib` parameter)


# -- pure parts ---------------------------------------------------------------------------------
def symbol_spec(probe: catalog.Probe) -> str:
    """name:ADDR:LEN:ANY as copytrace.c's `symbols=` parameter expects."""
    addr = -1 if probe.addr_arg is None else probe.addr_arg
    if probe.len_arg is not None:
        length = probe.len_arg
    elif probe.symbol in SKB_LEN_SYMBOLS:
        length = LEN_SKB_DATA_LEN
    else:
        length = -1
    return f"{probe.symbol}:{addr}:{length}:{1 if probe.point in ANY_TASK_POINTS else 0}"


def module_params(probes: list[catalog.Probe], pids: dict[str, int] | None = None,
                  comm: dict[str, str] | None = None, nsamples: int = 256,
                  sockonly: bool = True, stacks: int = 0,
                  calib: int = CALIB_CALLS,
                  gates: list[catalog.SocketGate] | None = None) -> list[str]:
    """insmod arguments. Slot i is the i-th side in pids (or comm) order. sockonly: count
    only copies inside socket operations (pipes/files use the same copy functions): inside
    `gates` (default: the catalog's socket entry functions) or socket-only syscalls. calib:
    calls per probe-cost calibration at load (0 = none, copytrace allows at most 100000)."""
    if not probes:
        raise UsageError("no kprobe symbols to trace", fix="choose points from the catalog")
    filters = list((comm or pids or {}).values())
    if not filters:
        raise UsageError("copytrace needs pids or comm names to filter on",
                         fix="pass the agents' pids, or --comm NAME")
    if len(filters) > MAX_FILTERS:
        raise UsageError(f"copytrace filters at most {MAX_FILTERS} pids/comms",
                         fix="trace fewer processes at once")
    for c in (comm or {}).values():
        if "," in c or " " in c or len(c) > 15:
            raise UsageError(f"bad comm {c!r}", fix="a task name of 1-15 chars, no comma/space")
    if not 0 <= calib <= 100_000:
        raise UsageError(f"calibration calls {calib}: copytrace takes 0..100000",
                         fix=f"use the default ({CALIB_CALLS})")
    key = "comm" if comm else "pids"
    gates = list(catalog.SOCKET_GATES) if gates is None else gates
    if sockonly and not gates:
        raise UsageError("counting socket copies needs at least one socket entry function",
                         fix="use --all-copies, or a kernel with sock_sendmsg/sock_recvmsg")
    if len(gates) > MAX_GATES:
        raise UsageError(f"copytrace watches at most {MAX_GATES} socket entry functions",
                         fix="trim catalog.SOCKET_GATES")
    return [f"symbols={','.join(symbol_spec(p) for p in probes)}",
            f"{key}={','.join(str(f) for f in filters)}", f"nsamples={nsamples}",
            f"sockonly={int(sockonly)}"] + (
            [f"gates={','.join(g.symbol for g in gates)}"] if sockonly else []) + (
            [f"stacks={stacks}"] if stacks else []) + (
            [] if calib == CALIB_CALLS else [f"calib={calib}"])


def parse(text: str) -> ModuleReport:
    """Parse /proc/copytrace (format documented at the top of copytrace.c)."""
    r = ModuleReport()
    lines = [line.split() for line in text.splitlines() if line.split()]
    # The version comes first; check it before reading records whose layout it defines.
    version = next((f[1] for f in lines if f[0] == "version" and len(f) > 1), None)
    if version is None or not version.isdigit() or int(version) != OUTPUT_VERSION:
        raise ValueError(f"unknown copytrace output version {version} (this copybench reads "
                         f"version {OUTPUT_VERSION}): a module from another copybench is "
                         "loaded; run `bench doctor --cleanup` and retry")
    for f in lines:
        kind, args = f[0], f[1:]
        if kind == "version":
            r.version = int(args[0])
        elif kind == "calib":
            mech, ns, n = args[0], float(args[1]), int(args[2])
            if n > 0 and mech not in r.calib:     # first per mechanism
                r.calib[mech] = (ns, n)
        elif kind == "probe":
            r.probes[int(args[0])] = (args[1], args[2], int(args[3]))
            if len(args) > 4 and args[4] != "-":
                r.mech[int(args[0])] = args[4]
        elif kind == "gate":
            r.gates[int(args[0])] = (args[1], args[2], int(args[3]))
        elif kind == "count":
            i, s, calls, nbytes, ns = map(int, args)
            r.counts[(i, s)] = (calls, nbytes, ns)
        elif kind == "hist":
            r.hist[(int(args[0]), int(args[1]))] = {
                int(b): int(n) for b, n in (kv.split(":") for kv in args[2:])}
        elif kind == "sample":
            r.samples.append((int(args[0]), int(args[1]), int(args[2]), args[3], int(args[4]),
                              int(args[5])))
    return r


def load_error(stderr: str, release: str) -> UsageError:
    """Turn insmod's complaint into a message that names the fix."""
    s = stderr.lower()
    if "key was rejected" in s or "required key not available" in s:
        return UsageError("the kernel refused the unsigned copytrace module (module signature "
                          "enforcement / Secure Boot)",
                          fix="disable Secure Boot or sign the module; fallback: --backend "
                              "bpftrace or tracepoints")
    if "operation not permitted" in s:
        return UsageError("loading copytrace was refused (not root, kernel lockdown, or "
                          "kernel.modules_disabled=1)",
                          fix="run as root; check /sys/kernel/security/lockdown; fallback: "
                              "--backend tracepoints")
    if "file exists" in s:
        return UsageError("a copytrace module is already loaded (another run, or a stale one)",
                          fix="bench doctor --cleanup")
    if "invalid module format" in s or "exec format error" in s:
        return UsageError(f"copytrace was built for another kernel than {release}",
                          fix=f"rm -r {CACHE / release} and retry")
    return UsageError(f"insmod copytrace failed: {stderr.strip()}", fix="see dmesg")


# -- bounded commands ---------------------------------------------------------------------------
# How long each may take before it counts as hung: a kernel build under TCG takes minutes; insmod
# runs the module's init (kprobe registration, calibration); rmmod waits for the probes to go.
MAKE_TIMEOUT = 900.0
INSMOD_TIMEOUT = 120.0
RMMOD_TIMEOUT = 30.0


def run_bounded(argv: list[str], timeout: float) -> subprocess.CompletedProcess:
    """subprocess.run(capture_output, text) that cannot hang: on timeout the child and its
    process group (make's compilers hold the pipes too) are killed, waited for 5 s at most (one
    stuck in the kernel cannot die), then TimeoutExpired."""
    p = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                         stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout)
    except BaseException as exc:     # the timeout, or a Ctrl-C: the child must not outlive it
        try:
            os.killpg(p.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:
            p.communicate(timeout=5)
        except subprocess.TimeoutExpired:
            pass
        if isinstance(exc, subprocess.TimeoutExpired):
            raise subprocess.TimeoutExpired(argv, timeout) from None
        raise
    return subprocess.CompletedProcess(argv, p.returncode, out, err)


# -- building -----------------------------------------------------------------------------------
def source_hash() -> str:
    h = hashlib.sha256()
    for name in ("copytrace.c", "Makefile"):
        h.update((SRC / name).read_bytes())
    return h.hexdigest()


def build(release: str, modules_root: Path = Path("/lib/modules"), cache: Path = CACHE,
          quiet: bool = True) -> Path:
    """copytrace.ko for `release`, built once per kernel release and source version."""
    out_dir = cache / release
    ko, stamp = out_dir / f"{MODULE}.ko", out_dir / "source.sha256"
    digest = source_hash()
    if ko.exists() and stamp.exists() and stamp.read_text().strip() == digest:
        return ko
    kdir = modules_root / release / "build"
    if not (kdir / "Makefile").exists():
        raise UsageError(f"no kernel headers for {release} ({kdir} missing)",
                         fix=f"apt-get install linux-headers-{release}; fallback: "
                             "--backend tracepoints")
    for tool in ("make", "gcc"):
        if shutil.which(tool) is None:
            raise UsageError(f"{tool} is not installed: cannot build copytrace",
                             fix="apt-get install build-essential")
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        for name in ("copytrace.c", "Makefile"):
            shutil.copy(SRC / name, tmp)
        try:
            proc = run_bounded(["make", "-C", str(kdir), f"M={tmp}", "modules"], MAKE_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise UsageError(f"building copytrace against {kdir} did not finish in "
                             f"{MAKE_TIMEOUT:.0f} s (killed)",
                             fix="check the machine's load and the headers' Makefile; fallback: "
                                 "--backend bpftrace or tracepoints") from None
        if proc.returncode != 0:
            tail = "\n".join((proc.stdout + proc.stderr).splitlines()[-15:])
            raise UsageError(f"building copytrace against {kdir} failed:\n{tail}",
                             fix=f"check that linux-headers-{release} matches the running kernel")
        shutil.move(str(Path(tmp) / f"{MODULE}.ko"), ko)   # rename within the cache directory
    stamp.write_text(digest + "\n")
    return ko


# -- the backend --------------------------------------------------------------------------------
def module_loaded(sys_root: Path = Path("/sys")) -> bool:
    return (sys_root / "module" / MODULE).exists()


def unload(sys_root: Path = Path("/sys")) -> bool:
    """rmmod copytrace if loaded; True if something was removed."""
    if not module_loaded(sys_root):
        return False
    for _ in range(50):   # a module still initialising (insmod interrupted) is busy briefly
        try:
            run_bounded(["rmmod", MODULE], RMMOD_TIMEOUT)
        except subprocess.TimeoutExpired:
            return False      # hung in the kernel: retrying will not help (callers say so)
        if not module_loaded(sys_root):
            return True
        time.sleep(0.2)
    return False


def module_owner(sys_root: Path = Path("/sys")) -> int | None:
    """Pid that loaded copytrace (its `owner` parameter), if any."""
    try:
        pid = int((sys_root / "module" / MODULE / "parameters/owner").read_text())
    except (OSError, ValueError):
        return None
    return pid or None


def lockdown_mode(sys_root: Path = Path("/sys")) -> str:
    try:
        text = (sys_root / "kernel/security/lockdown").read_text()
    except OSError:
        return "none"
    return text[text.find("[") + 1:text.find("]")] if "[" in text else "none"


class KmodTracer(Tracer):
    name = "kmod"
    exact = True

    def __init__(self, probes: list[catalog.Probe] | None = None,
                 comm: dict[str, str] | None = None, nsamples: int = 256,
                 all_copies: bool = False, stacks: int = 0,
                 proc_root: Path = Path("/proc"), sys_root: Path = Path("/sys"),
                 modules_root: Path = Path("/lib/modules"), cache: Path = CACHE,
                 which=shutil.which):
        self.probes = probes if probes is not None else catalog.probes(kind="kprobe")
        self.comm = comm
        self.nsamples = nsamples
        self.all_copies = all_copies     # True: also pipe/file copies (bench trace --all-copies)
        self.stacks = stacks             # >0: log call chains of the first N copies to dmesg
        self.proc_root, self.sys_root = proc_root, sys_root
        self.modules_root, self.cache = modules_root, cache
        self.which = which
        self.release = catalog.kernel_release(proc_root)
        self.sides: list[str] = []
        self.status: dict[str, str] = {}     # symbol -> ok | absent | error:-N
        self._loaded = False
        self.rxe_note = ""

    def available(self) -> Availability:
        syms = catalog.kallsyms(self.proc_root)
        if not (self.proc_root / "modules").exists():
            return Availability(False, "kernel without loadable modules (CONFIG_MODULES)",
                                "use --backend tracepoints here, or the lab VM (bench lab up)")
        if syms and "register_kretprobe" not in syms:
            return Availability(False, "kernel without kprobes (CONFIG_KPROBES)",
                                "use --backend tracepoints here, or the lab VM (bench lab up)")
        mode = lockdown_mode(self.sys_root)
        if mode not in ("none", ""):
            return Availability(False, f"kernel lockdown={mode} refuses unsigned modules",
                                "boot with lockdown=none, or use --backend tracepoints")
        ko = self.cache / self.release / f"{MODULE}.ko"
        if not ko.exists() and not (self.modules_root / self.release / "build").exists():
            return Availability(False, f"no kernel headers for {self.release}",
                                f"apt-get install linux-headers-{self.release}")
        if not ko.exists() and not (self.which("make") and self.which("gcc")):
            return Availability(False, "no compiler to build copytrace",
                                "apt-get install build-essential")
        if self.which("insmod") is None:
            return Availability(False, "insmod not found", "apt-get install kmod")
        return Availability(True, f"copytrace for {self.release}")

    def attach(self, pids: dict[str, int]) -> None:
        if module_loaded(self.sys_root):
            raise UsageError("a copytrace module is already loaded (another run, or a stale one)",
                             fix="bench doctor --cleanup")
        ko = build(self.release, self.modules_root, self.cache)
        # Gates absent from this kernel are not asked for (copytrace would report them
        # absent, and a missing entry function has no socket operations to miss).
        gates = catalog.socket_gates(catalog.kallsyms(self.proc_root))
        params = module_params(self.probes, pids=pids, comm=self.comm, nsamples=self.nsamples,
                               sockonly=not self.all_copies, stacks=self.stacks, gates=gates)
        params.append(f"owner={os.getpid()}")   # lets cleanup_stale spare a live run's module
        self.rxe_note = ""
        if any(p.symbol == RXE_COPY_SYMBOL for p in self.probes):
            params += self._rxe_owner_param()
        self.sides = list(self.comm or pids)
        atexit.register(self.detach)   # a crash between attach and finally still unloads
        # Ours from before insmod starts: a Ctrl-C during the (slow) load still unloads it.
        self._loaded = True
        try:
            proc = run_bounded(["insmod", str(ko), *params], INSMOD_TIMEOUT)
        except subprocess.TimeoutExpired:
            raise UsageError(f"insmod copytrace did not return within {INSMOD_TIMEOUT:.0f} s "
                             "(killed)", fix="see dmesg; `bench doctor --cleanup` unloads a "
                             "copytrace left loaded") from None
        if proc.returncode != 0:
            self._loaded = False
            raise load_error(proc.stderr, self.release)
        report = parse(self._proc_text())
        self.status = {sym: st for sym, st, _ in report.probes.values()}
        if not any(st == "ok" for st in self.status.values()):
            self.detach()
            raise UsageError(f"copytrace could not probe any of {', '.join(self.status)}",
                             fix="check the symbols exist in /proc/kallsyms")

    def _proc_text(self) -> str:
        return (self.proc_root / MODULE).read_text()

    def _rxe_owner_param(self) -> list[str]:
        """Where rdma_rxe keeps an MR's ib_mr (its struct is private to the module): copies
        that rxe's tasklets make outside the agents then count for the MR's owner."""
        off, why = kernel_btf.module_member("rdma_rxe", "rxe_mr", "ibmr", embedded=True,
                                            btf_dir=self.sys_root / "kernel/btf")
        if off is None:
            self.rxe_note = (f"soft-RoCE copies outside the agents are not tied to an MR's "
                             f"owner ({why})")
            return []
        return [f"rxe_ibmr={off[0]}"]

    def read(self) -> list[PointCounts]:
        counts = to_counts(parse(self._proc_text()), self.probes, self.sides)
        for pc in counts:
            if self.rxe_note and pc.symbol == RXE_COPY_SYMBOL:
                pc.notes.append(self.rxe_note)
            absent = [p.symbol for p in self.probes if p.point == pc.point
                      and self.status.get(p.symbol, "ok") != "ok"]
            if absent:
                pc.notes.append(f"not probed on {self.release}: {', '.join(absent)}")
        return counts

    def detach(self) -> None:
        if self._loaded:   # never unload a copytrace some other run loaded
            unload(self.sys_root)
        self._loaded = False
        atexit.unregister(self.detach)
