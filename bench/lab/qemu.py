"""QEMU: choosing the accelerator, building the argv, starting and stopping by pid file.

Argv construction is pure (unit-tested); starting and stopping touch processes.
Networking obeys the project's traffic rule: user networking is `restrict=on`
(the guest reaches nothing outside; only the SSH forward on 127.0.0.1 comes in),
and the two-node link is a socket netdev on 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
from dataclasses import dataclass
from pathlib import Path

from bench import procs
from bench.errors import UsageError

QEMU = "qemu-system-x86_64"
QEMU_FIX = "apt-get install qemu-system-x86 qemu-utils"
LINK_NET = "198.18.0"  # RFC 2544 benchmark range; exists only inside the VMs


@dataclass(frozen=True)
class Link:
    """One end of the two-node link: node 0 listens, node 1 connects."""

    mode: str  # "listen" | "connect"
    port: int


MAX_DEFAULT_CPUS = 4   # the default never asks for more (bench lab up --cpus can)


@dataclass(frozen=True)
class NodeSpec:
    index: int
    ssh_port: int
    overlay: Path
    console: Path
    pidfile: Path
    memory_mib: int = 1536
    cpus: int = 1
    link: Link | None = None

    @property
    def name(self) -> str:
        return f"lab{self.index}"

    @property
    def eth1_addr(self) -> str | None:
        return f"{LINK_NET}.{self.index + 1}/24" if self.link else None

    @property
    def proc_name(self) -> str:
        """QEMU's -name, used to recognise our process behind a pid file."""
        return f"copybench-{self.name}"


def default_cpus(nodes: int, host_cpus: int | None = None) -> int:
    """vCPUs per node when none are asked for: the host's CPUs shared out among the nodes
    (at least 1, at most MAX_DEFAULT_CPUS). Soft-RoCE's transport, the network stack and both
    agents are kernel and user work on the guest's CPUs: on one vCPU they all take turns, and a
    receiver that verifies its payload (ours) loses to one that does not (perftest). Under TCG
    the vCPUs share one host thread (`accel_option`): two vCPUs keep the guest's concurrency
    (preemption, one side spinning while the other runs), not twice the speed."""
    host = host_cpus or os.cpu_count() or 1
    return max(1, min(MAX_DEFAULT_CPUS, host // max(1, nodes)))


def find_qemu() -> str:
    path = shutil.which(QEMU)
    if path is None:
        raise UsageError(f"{QEMU} not found: the lab needs QEMU", QEMU_FIX)
    if shutil.which("qemu-img") is None:
        raise UsageError("qemu-img not found: the lab needs it for disk overlays", QEMU_FIX)
    return path


def kernel_cmdline(node: NodeSpec, accel: str = "tcg") -> str:
    args = ["root=/dev/vda", "rw", "console=ttyS0", "net.ifnames=0",
            f"systemd.hostname={node.name}"]
    if accel == "tcg" and node.cpus > 1:
        # With several TCG vCPUs the guest's boot-time TSC sync check fails ("TSCs
        # unsynchronized") and it falls back to HPET: every clock read then is a system call
        # and an emulated MMIO access (measured: one clock_gettime syscall per message in the
        # agents' and the references' hot loops). TCG's TSC is the host's TSC on every vCPU
        # thread, so it is synchronized; tsc=reliable keeps it and the vDSO.
        args.append("tsc=reliable")
    if node.eth1_addr:
        args.append(f"copybench.eth1={node.eth1_addr}")
    return " ".join(args)


def accel_option(node: NodeSpec, accel: str) -> str:
    """QEMU's -accel value. TCG runs one host thread for all of a node's vCPUs: with a thread
    per vCPU (QEMU 7.2's default), a vCPU kept executing code another vCPU had just patched
    (a kprobe or ftrace site going away while copytrace loads or unloads): measured in the
    lab, a soft lockup at sock_recvmsg+0 (memory already showed the restored nop, the stuck
    vCPU still trapped on the old int3) or a jump to address 0, within 9 and 28 load/unload
    cycles (tests/tracing/attach_cycles.py)."""
    return "tcg,thread=single" if accel == "tcg" else accel


def qemu_argv(node: NodeSpec, kernel: Path, initrd: Path, accel: str,
              qemu: str = QEMU, daemonize: bool = True) -> list[str]:
    if accel not in ("kvm", "tcg"):
        raise ValueError(f"accel must be kvm or tcg, not {accel!r}")
    argv = [qemu, "-name", node.proc_name, "-accel", accel_option(node, accel),
            "-cpu", "host" if accel == "kvm" else "max",
            "-m", str(node.memory_mib), "-smp", str(node.cpus),
            "-kernel", str(kernel), "-initrd", str(initrd),
            "-append", kernel_cmdline(node, accel),
            "-drive", f"file={node.overlay},if=virtio,format=qcow2",
            "-netdev", f"user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:{node.ssh_port}-:22",
            "-device", f"virtio-net-pci,netdev=n0,mac=52:54:00:00:00:{node.index + 1:02x}"]
    if node.link:
        argv += ["-netdev", f"socket,id=n1,{node.link.mode}=127.0.0.1:{node.link.port}",
                 "-device", f"virtio-net-pci,netdev=n1,mac=52:54:00:00:01:{node.index + 1:02x}"]
    argv += ["-display", "none", "-monitor", "none", "-serial", f"file:{node.console}"]
    if daemonize:
        argv += ["-daemonize", "-pidfile", str(node.pidfile)]
    return argv


def create_overlay(base: Path, overlay: Path) -> None:
    """A qcow2 overlay on the shared raw image: nodes never write the cached image."""
    overlay.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", "-F", "raw",
                    "-b", str(base), str(overlay)], check=True)


def probe_kvm(kernel: Path, qemu: str = QEMU, timeout: float = 25.0) -> tuple[bool, str]:
    """Does a guest really run under KVM here? Boot the kernel without a root
    file system: it panics within seconds and -no-reboot makes QEMU exit. On
    hosts where nested guests hang, nothing happens and the timeout decides."""
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return False, "/dev/kvm is missing or not accessible"
    argv = [qemu, "-accel", "kvm", "-cpu", "host", "-m", "256", "-kernel", str(kernel),
            "-append", "console=ttyS0 panic=-1 loglevel=4", "-no-reboot",
            "-display", "none", "-monitor", "none", "-serial", "stdio", "-nodefaults"]
    try:
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
    except OSError as e:
        return False, f"cannot start {qemu}: {e}"
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        return False, f"a KVM guest did not get through kernel boot in {timeout:.0f}s (nested KVM hangs)"
    text = out.decode(errors="replace")
    if "Kernel panic" in text or "Linux version" in text:
        return True, "a KVM guest booted its kernel"
    return False, f"KVM guest failed: {text.strip().splitlines()[-1:] or ['no output']}"


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def cached_probe(kernel: Path, qemu: str, cache: Path | None) -> tuple[bool, str]:
    """probe_kvm, remembered for this host boot: whether nested KVM works does not change until
    the host reboots, and a hanging probe costs its whole timeout (25 s) on every `lab up`."""
    key = {"boot_id": boot_id(), "qemu": shutil.which(qemu) or qemu, "kernel": str(kernel)}
    if cache is not None and key["boot_id"]:
        try:
            seen = json.loads(cache.read_text())
            if {k: seen.get(k) for k in key} == key:
                return bool(seen["ok"]), f"{seen['why']} (probed earlier in this host boot)"
        except (OSError, ValueError, KeyError, TypeError):
            pass
    ok, why = probe_kvm(kernel, qemu)
    if cache is not None and key["boot_id"] and "cannot start" not in why:
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            cache.write_text(json.dumps({**key, "ok": ok, "why": why}) + "\n")
        except OSError:
            pass               # only a cache: the next `lab up` probes again
    return ok, why


def choose_accel(requested: str, kernel: Path, qemu: str = QEMU,
                 cache: Path | None = None) -> tuple[str, str]:
    """(accel, reason). `auto` probes KVM (once per host boot with a cache) and falls back to
    TCG."""
    if requested == "tcg":
        return "tcg", "requested"
    ok, why = cached_probe(kernel, qemu, cache)
    if requested == "kvm":
        if not ok:
            raise UsageError(f"--accel kvm: {why}", "use --accel tcg (or auto)")
        return "kvm", why
    return ("kvm", why) if ok else ("tcg", why + "; using TCG")


def read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return None


def running_pid(pidfile: Path, proc_name: str) -> int | None:
    """The pid in `pidfile` if that process is still our QEMU (pids get reused)."""
    pid = read_pid(pidfile)
    if pid is None:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return None
    return pid if proc_name.encode() in cmdline else None


@dataclass(frozen=True)
class Running:
    """A copybench QEMU found by its command line, listed in the lab's state or not."""

    pid: int
    name: str          # its -name, copybench-labN
    files: tuple[str, ...]   # the overlay / pid file / console under the state directory

    def describe(self) -> str:
        return f"pid {self.pid} ({self.name}, {', '.join(self.files)})"


_NAME = re.compile(r"copybench-lab\d+")


def ours_running(state_dir: Path, proc_root: Path = Path("/proc")) -> list[Running]:
    """Every QEMU on this machine that this lab started: `-name copybench-labN` and an overlay,
    pid file or console under `state_dir`. Found from /proc, not from the state file, so a node
    the state no longer lists (an interrupted `up`, a state rewritten by another `up`) is found
    too. Another lab directory's VMs (a test's temporary lab) are left alone."""
    found = []
    prefixes = tuple({str(Path(state_dir)) + "/", str(Path(state_dir).resolve()) + "/"})
    for d in proc_root.iterdir() if proc_root.exists() else []:
        if not d.name.isdigit():
            continue
        try:
            argv = [a.decode(errors="replace") for a in (d / "cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
        if not argv or not os.path.basename(argv[0]).startswith("qemu-system"):
            continue
        try:
            name = argv[argv.index("-name") + 1]
        except (ValueError, IndexError):
            continue
        if not _NAME.fullmatch(name):
            continue
        files = tuple(sorted({m for a in argv for m in re.findall(r"(?:file[:=])?(/[^,\s]+)", a)
                              if m.startswith(prefixes)}))
        if files:
            found.append(Running(int(d.name), name, files))
    return sorted(found, key=lambda r: r.pid)


def stop_pid(pid: int, name: str, grace: float = 5.0, proc_root: Path = Path("/proc")) -> bool:
    """SIGTERM, then SIGKILL, a QEMU known by pid and -name (a reused pid is left alone)."""
    def alive() -> bool:
        try:
            return name.encode() in (proc_root / str(pid) / "cmdline").read_bytes().split(b"\0")
        except OSError:
            return False
    return procs.stop_pid(pid, alive, term_grace=grace, kill_grace=5.0)


def start(node: NodeSpec, argv: list[str]) -> int:
    """Start a daemonized QEMU; returns its pid once QEMU has set up its devices."""
    node.pidfile.unlink(missing_ok=True)
    node.console.unlink(missing_ok=True)
    res = subprocess.run(argv, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    pid = running_pid(node.pidfile, node.proc_name)
    if res.returncode != 0 or pid is None:
        msg = (res.stderr or res.stdout).strip()
        fix = "see the QEMU message above"
        if re.search(r"Could not set up host forwarding|Address already in use", msg):
            fix = "a port on 127.0.0.1 is taken: run `bench lab down` or stop what listens there"
        raise UsageError(f"QEMU failed to start {node.name}: {msg or 'no message'}", fix)
    return pid


def stop(pidfile: Path, proc_name: str, grace: float = 10.0) -> bool:
    """SIGTERM, then SIGKILL; always removes the pid file. True if a process was stopped."""
    pid = running_pid(pidfile, proc_name)
    if pid is not None:
        stop_pid(pid, proc_name, grace)
    pidfile.unlink(missing_ok=True)
    return pid is not None


_ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")


def console_tail(console: Path, lines: int = 25) -> str:
    try:
        data = console.read_bytes()[-32768:]
    except OSError:
        return "(no console log)"
    text = _ANSI.sub("", data.decode(errors="replace"))
    tail = [ln for ln in text.splitlines() if ln.strip()][-lines:]
    return "\n".join(tail) if tail else "(console log is empty)"
