"""Configure or inspect one end of a veth inside its namespace, in a short-lived child process.

    python -m bench.nsconfig NETNS IFNAME [ADDR/PREFIX]   -> prints the link's state as JSON

Why a child: pyroute2's NetNS helper forks, and a fork of the runner inherits its signal
handlers and Python stack; entering the namespace in a process of our own keeps the runner's
cleanup code running in exactly one process.
"""

from __future__ import annotations

import json
import sys


def configure(ifname: str, cidr: str | None) -> dict:
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
        return {"mtu": link.get("IFLA_MTU"), "gso_max_size": link.get("IFLA_GSO_MAX_SIZE"),
                "gro_max_size": link.get("IFLA_GRO_MAX_SIZE"), "qdisc": link.get("IFLA_QDISC"),
                "txqlen": link.get("IFLA_TXQLEN"), "state": link.get("state")}


def main(argv: list[str]) -> int:
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    from pyroute2 import netns
    netns.setns(argv[0])
    print(json.dumps(configure(argv[1], argv[2] if len(argv) == 3 else None)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
