"""Configure or inspect one end of a veth inside its namespace.

The calling thread steps into the namespace for the moment it takes (bench.setns.inside) and
opens its netlink socket and sysctl files there. Not pyroute2's NetNS, which forks a helper:
a fork of the runner would inherit its signal handlers and cleanup code, and a child process
per inspection cost seconds per case in the TCG lab (an interpreter and pyroute2's import).
"""

from __future__ import annotations

import os

from bench.setns import inside

# MSG_ZEROCOPY and io_uring send_zc charge each outstanding notification to optmem: the 128 KiB
# default caps how many sends can be in flight (ENOBUFS). Raised only inside our namespaces.
OPTMEM_MAX = 1 << 20
OPTMEM_PATH = "/proc/sys/net/core/optmem_max"
# Per namespace: with timestamps on, every segment carries 12 option bytes, which is what makes
# MTU 61492 carry 15 whole pages of payload over IPv4 (bench/topology.py).
TIMESTAMPS_PATH = "/proc/sys/net/ipv4/tcp_timestamps"


def raise_optmem(host_fd: int, value: int = OPTMEM_MAX) -> dict:
    """Raise optmem_max in this (our) namespace where the kernel keeps it per namespace.

    Kernels that keep it global (before 6.9) do not show it in a non-initial namespace; should
    a write still reach the host's value (read through `host_fd`, opened before setns), it is
    put back at once and the result says so: the host's sysctls are never changed."""
    def host() -> int:
        return int(os.pread(host_fd, 32, 0))
    if not os.path.exists(OPTMEM_PATH):
        return {"optmem_max": None, "optmem_note": "global on this kernel: left as it is"}
    before, cur = host(), int(open(OPTMEM_PATH).read())
    if cur < value:
        with open(OPTMEM_PATH, "w") as f:
            f.write(str(value))
        if host() != before:
            os.pwrite(host_fd, str(before).encode(), 0)
            return {"optmem_max": before, "optmem_note": "global on this kernel: left as it is"}
    return {"optmem_max": int(open(OPTMEM_PATH).read())}


def configure(ns: str, ifname: str, cidr: str, mtu: int | None = None) -> dict:
    """Address `ifname` in `ns`, bring it and lo up (at `mtu` when given), raise optmem_max
    there; its state after."""
    from pyroute2 import IPRoute
    host_fd = os.open(OPTMEM_PATH, os.O_RDWR | os.O_CLOEXEC)   # the host's, opened outside
    try:
        with inside(ns), IPRoute() as ipr:
            ipr.link("set", index=ipr.link_lookup(ifname="lo")[0], state="up")
            idx = ipr.link_lookup(ifname=ifname)[0]
            addr, prefix = cidr.split("/")
            ipr.addr("add", index=idx, address=addr, prefixlen=int(prefix))
            if mtu is not None:
                ipr.link("set", index=idx, mtu=mtu)
            ipr.link("set", index=idx, state="up")
            return {**raise_optmem(host_fd), **_link(ipr, idx),
                    "tcp_timestamps": _read_int(TIMESTAMPS_PATH)}
    finally:
        os.close(host_fd)


def configure_loopback(ns: str, mtu: int | None) -> dict:
    """`lo` of our namespace `ns` up (at `mtu` when given), optmem_max raised there: the
    loopback topology with a set-up of its own, the host's `lo` untouched."""
    from pyroute2 import IPRoute
    host_fd = os.open(OPTMEM_PATH, os.O_RDWR | os.O_CLOEXEC)
    try:
        with inside(ns), IPRoute() as ipr:
            idx = ipr.link_lookup(ifname="lo")[0]
            if mtu is not None:
                ipr.link("set", index=idx, mtu=mtu)
            ipr.link("set", index=idx, state="up")
            return {**raise_optmem(host_fd), **_link(ipr, idx),
                    "tcp_timestamps": _read_int(TIMESTAMPS_PATH)}
    finally:
        os.close(host_fd)


def cpu_mask(cpu: int) -> str:
    """The hex CPU mask sysfs takes for one CPU: 32-bit words, comma separated."""
    text = format(1 << cpu, "x")
    words = [text[max(0, i - 8):i] for i in range(len(text), 0, -8)]
    return ",".join(reversed(words))


def steer_receive(ns: str, ifname: str, cpu: int) -> dict:
    """Receive Packet Steering: the receive softirq of `ifname` in `ns` runs on `cpu`.

    A veth hands each packet to netif_rx on the sending CPU; with an RPS map on the receiving
    end's queues the protocol work (IP, TCP/UDP receive) is queued to `cpu`'s backlog instead,
    as on two machines. sysfs shows the net devices of the namespace that mounted it, so the
    write goes through `ip netns exec` (a mount namespace with that namespace's sysfs). Only
    our own veth end is touched, never a host device."""
    import subprocess
    mask = cpu_mask(cpu)
    script = 'for q in "$1"/rx-*; do echo "$2" > "$q/rps_cpus" || exit 1; done; ' \
             'cat "$1"/rx-0/rps_cpus'
    try:
        res = subprocess.run(["ip", "netns", "exec", ns, "sh", "-c", script, "rps",
                              f"/sys/class/net/{ifname}/queues", mask],
                             capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise RuntimeError(f"steering {ifname}'s receive softirq to CPU {cpu}: {exc}") from None
    got = res.stdout.strip()
    if res.returncode != 0 or _mask_value(got) != 1 << cpu:
        raise RuntimeError(f"steering {ifname}'s receive softirq to CPU {cpu} (rps_cpus {mask}) "
                           f"failed: {(res.stderr or got).strip()[-300:]}")
    return {"rps_cpu": cpu, "rps_cpus": got}


def _mask_value(text: str) -> int | None:
    """A sysfs CPU mask ("00000000,00000004") as a number; None if it is not one."""
    try:
        return int(text.replace(",", ""), 16)
    except ValueError:
        return None


def state(ns: str, ifname: str) -> dict:
    """What `ifname` in `ns` looks like now (read only): MTU, offload limits, qdisc, optmem."""
    from pyroute2 import IPRoute
    with inside(ns), IPRoute() as ipr:
        return {"optmem_max": _read_int(OPTMEM_PATH),
                **_link(ipr, ipr.link_lookup(ifname=ifname)[0]),
                "tcp_timestamps": _read_int(TIMESTAMPS_PATH)}


def _link(ipr, idx: int) -> dict:
    link = ipr.get_links(idx)[0]
    return {"mtu": link.get("IFLA_MTU"), "gso_max_size": link.get("IFLA_GSO_MAX_SIZE"),
            "gro_max_size": link.get("IFLA_GRO_MAX_SIZE"), "qdisc": link.get("IFLA_QDISC"),
            "txqlen": link.get("IFLA_TXQLEN"), "state": link.get("state")}


def _read_int(path: str) -> int | None:
    try:
        return int(open(path).read())
    except (OSError, ValueError):
        return None
