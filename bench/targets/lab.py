"""`--target lab`: the local QEMU lab VM(s), reached over SSH on 127.0.0.1.

With two nodes, node 0 (lab0, eth1 198.18.0.1) and node 1 (lab1, eth1
198.18.0.2) are joined by a QEMU socket link; `link_address(node)` says where
the other side reaches a node for test traffic.
"""

from __future__ import annotations

from bench.errors import UsageError
from bench.lab import manager
from bench.lab.inventory import Host
from bench.lab.paths import LabPaths, lab_paths
from bench.targets.ssh import SshTarget


class LabTarget(SshTarget):
    kind = "lab"
    unreachable_fix = ("the lab VM does not answer: `bench lab status`, then "
                       "`bench lab down && bench lab up`")

    @classmethod
    def from_lab(cls, paths: LabPaths | None = None) -> LabTarget:
        paths = paths or lab_paths()
        st = manager.status(paths)
        if not st["running"]:
            raise UsageError("--target lab: the lab is not running",
                             "run `bench lab up` (or `bench lab up --nodes 2`)")
        state = manager.load_state(paths) or {"nodes": []}
        hosts = []
        for n in state["nodes"]:
            hv = {"link_addr": n["link_addr"]} if n.get("link_addr") else {}
            hosts.append(Host(name=n["name"], address="127.0.0.1", port=n["ssh_port"],
                              user="root", key=paths.key, vars=hv))
        return cls(hosts)
