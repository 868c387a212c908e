"""Configure or inspect one end of a veth inside its namespace, in a short-lived child process.

    python -m bench.nsconfig NETNS IFNAME [ADDR/PREFIX]   -> prints the link's state as JSON

Why a child: pyroute2's NetNS helper forks, and a fork of the runner inherits its signal
handlers and Python stack; entering the namespace in a process of our own keeps the runner's
cleanup code running in exactly one process.
"""

from __future__ import annotations

import json
import os
import sys

# MSG_ZEROCOPY and io_uring send_zc charge each outstanding notification to optmem: the 128 KiB
# default caps how many sends can be in flight (ENOBUFS). Raised only inside our namespaces.
OPTMEM_MAX = 1 << 20
OPTMEM_PATH = "/proc/sys/net/core/optmem_max"


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


def configure(ifname: str, cidr: str | None, host_fd: int | None = None) -> dict:
    from pyroute2 import IPRoute
    with IPRoute() as ipr:
        lo = ipr.link_lookup(ifname="lo")[0]
        ipr.link("set", index=lo, state="up")
        idx = ipr.link_lookup(ifname=ifname)[0]
        if cidr:
            addr, prefix = cidr.split("/")
            ipr.addr("add", index=idx, address=addr, prefixlen=int(prefix))
            ipr.link("set", index=idx, state="up")
        link = ipr.get_links(idx)[0]
        sysctls = raise_optmem(host_fd) if cidr and host_fd is not None else {
            "optmem_max": _read_int(OPTMEM_PATH)}
        return {**sysctls, "mtu": link.get("IFLA_MTU"), "gso_max_size": link.get("IFLA_GSO_MAX_SIZE"),
                "gro_max_size": link.get("IFLA_GRO_MAX_SIZE"), "qdisc": link.get("IFLA_QDISC"),
                "txqlen": link.get("IFLA_TXQLEN"), "state": link.get("state")}


def _read_int(path: str) -> int | None:
    try:
        return int(open(path).read())
    except (OSError, ValueError):
        return None


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    from bench.setns import enter
    host_fd = os.open(OPTMEM_PATH, os.O_RDWR)   # the host's value, opened before setns
    enter(argv[0])
    print(json.dumps(configure(argv[1], argv[2] if len(argv) == 3 else None, host_fd)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
