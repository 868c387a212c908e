"""Metadata that identifies where a result was measured (kernel, CPU, virtualisation, versions).

Roots are parameters so tests can use fixture trees."""

from __future__ import annotations

import os
import platform
import re
import shutil
import subprocess
from importlib import metadata as im
from pathlib import Path

LIBRARIES = ("copybench", "pyroute2", "pyperf", "rich", "matplotlib")
TOOLS = {"iperf3": ["iperf3", "--version"],
         "bpftrace": ["bpftrace", "--version"]}
SYSCTLS = ("net/core/rmem_max", "net/core/wmem_max", "net/core/optmem_max",
           "net/ipv4/tcp_rmem", "net/ipv4/tcp_wmem", "net/ipv4/tcp_congestion_control")


def cpu_model(proc: Path = Path("/proc")) -> str:
    try:
        for line in (proc / "cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def virtualization(proc: Path = Path("/proc"), sys_root: Path = Path("/sys")) -> str:
    if shutil.which("systemd-detect-virt"):
        out = subprocess.run(["systemd-detect-virt"], capture_output=True, text=True).stdout.strip()
        if out:
            return out
    try:
        if " hypervisor" in (proc / "cpuinfo").read_text():
            product = (sys_root / "class/dmi/id/product_name")
            return product.read_text().strip() if product.exists() else "hypervisor"
    except OSError:
        pass
    return "none"


def tool_version(argv: list[str]) -> str | None:
    if not shutil.which(argv[0]):
        return None
    try:
        p = subprocess.run(argv, capture_output=True, text=True, timeout=5)
    except (OSError, subprocess.TimeoutExpired):
        return None
    text = (p.stdout or p.stderr).strip().splitlines()
    m = re.search(r"\d+(\.\d+)+", text[0]) if text else None
    return m.group(0) if m else (text[0] if text else None)


def git_sha(repo: Path = Path(__file__).resolve().parent.parent) -> str | None:
    if not (repo / ".git").exists() or not shutil.which("git"):
        return None
    p = subprocess.run(["git", "-C", str(repo), "rev-parse", "HEAD"], capture_output=True, text=True)
    if p.returncode != 0:
        return None
    dirty = subprocess.run(["git", "-C", str(repo), "status", "--porcelain", "--untracked-files=no"],
                           capture_output=True, text=True).stdout.strip()
    return p.stdout.strip() + ("-dirty" if dirty else "")


def sysctls(proc: Path = Path("/proc")) -> dict[str, str]:
    out = {}
    for key in SYSCTLS:
        try:
            out[key.replace("/", ".")] = (proc / "sys" / key).read_text().strip()
        except OSError:
            pass
    return out


def collect() -> dict:
    libs = {}
    for name in LIBRARIES:
        try:
            libs[name] = im.version(name)
        except im.PackageNotFoundError:
            libs[name] = None
    return {
        "hostname": platform.node(),
        "kernel": platform.release(),
        "arch": platform.machine(),
        "cpu_model": cpu_model(),
        "cpu_count": os.cpu_count(),
        "virtualization": virtualization(),
        **vm_host(),
        "python": platform.python_version(),
        "libraries": libs,
        "tools": {name: tool_version(argv) for name, argv in TOOLS.items()},
        "git_sha": git_sha(),
        "sysctls": sysctls(),
        "method": method(),
        "rdma_ports": rdma_ports(),
    }


VM_HOST_ENV = "COPYBENCH_VM_HOST"


def vm_host(environ=os.environ) -> dict:
    """The machine under this VM, as the operator states it ($COPYBENCH_VM_HOST: a guest
    cannot see its host, and DMI names the VM's platform, not the machine). The CI gate
    compares runs by it; without it a VM's runs are an "unknown host"."""
    name = (environ.get(VM_HOST_ENV) or "").strip()
    return {"vm_host": {"hostname": name, "source": f"${VM_HOST_ENV}"}} if name else {}


def rdma_ports() -> list[dict]:
    """The machine's RDMA ports and GID tables: context, and what a runner elsewhere chooses
    this node's device from (bench.rxe.choose_on_node)."""
    from bench import rxe
    return [rxe.port_to_json(p) for p in rxe.ports()]


def method() -> dict:
    """How every number in this result was measured: the reviewer's checklist, in the file."""
    from bench.metrics import BUSY_FIELDS, irq_time_accounting
    irq = irq_time_accounting()
    return {
        "throughput": "verified payload bytes over a window on one clock: the receiver's "
                      "CLOCK_MONOTONIC from its first to its last verified byte (bytes of the "
                      "first receive excluded); per sample `clock` says which",
        "cpu_per_side": "each agent's own user+sys (getrusage RUSAGE_SELF) per byte it handled: "
                        "sender per byte sent, receiver per byte received",
        "cpu_system": f"/proc/stat {'+'.join(BUSY_FIELDS)} over the sample (steal, idle and iowait "
                      "excluded; every CPU-second once), per byte received; two nodes: both "
                      "machines summed",
        "irq_time_accounting": irq,
        "softirq": ("CONFIG_IRQ_TIME_ACCOUNTING=y: softirq time is its own /proc/stat field and "
                    "not in the agents' sys time" if irq else
                    "tick-based accounting: a softirq is charged to /proc/stat softirq AND to the "
                    "sys time of the task it interrupted, so per-side CPU already holds some "
                    "softirq work; never add the softirq column to the sides - the system figure "
                    "counts it once" if irq is False else "accounting mode unknown (no kernel "
                    "config): the softirq column may overlap the sides' sys time"),
        "softirq_context": "on veth and loopback the receive softirq often runs in the sender's "
                           "context (its sys time), not the receiver's",
    }


def main() -> int:
    """`bench sysinfo` on a node: this machine's metadata as JSON, for a runner elsewhere."""
    import json
    print(json.dumps(collect()))
    return 0
