"""Where the two sides of a case run, and how their processes start.

  LocalPlacement  both sides on this machine: host loopback, or two netns joined by veth.
  LinkPlacement   two machines (the two-node lab, or two SSH hosts): the sender on node 0 and
                  the receiver on node 1, talking across the link between them; agents and
                  reference tools start over SSH, and each node's CPU is measured on that node.
"""

from __future__ import annotations

import shlex
import sys
import time
from pathlib import Path

from bench.errors import UsageError
from bench.topology import Endpoints, Topology

SIDES = {"tx": 0, "rx": 1}


class LocalPlacement:
    name = "local"
    remote = False

    def __init__(self):
        self._topologies: dict[str, Topology] = {}
        self._endpoints: dict[str, Endpoints] = {}

    def endpoints(self, kind: str) -> Endpoints:
        if kind == "link":
            raise UsageError("the link topology joins two machines",
                             "use --target lab with `bench lab up --nodes 2`, or two SSH hosts")
        if kind not in self._endpoints:
            topo = Topology(kind)
            self._topologies[kind] = topo
            self._endpoints[kind] = topo.__enter__()
        return self._endpoints[kind]

    def snapshot(self, kind: str) -> dict:
        return self._topologies[kind].snapshot()

    def agent_argv(self, side: str) -> list[str]:
        return [sys.executable, "-m", "workloads.agent"]

    def tool_argv(self, side: str, netns: str | None, argv: list[str]) -> list[str]:
        return [sys.executable, "-m", "bench.nsexec", netns, "--", *argv] if netns else argv

    def tracer(self, spec: str, survey: bool = False):
        """The copy tracer for both agents: here, one tracer on this kernel."""
        from bench.tracing.select import select_tracer
        return select_tracer(spec)

    def wait_listening(self, side: str, pid: int, port: int, timeout: float) -> None:
        """Poll the process's own view of TCP sockets (its netns) until `port` listens."""
        deadline = time.monotonic() + timeout
        want = f":{port:04X}"
        while time.monotonic() < deadline:
            for table in ("tcp", "tcp6"):
                try:
                    lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
                except OSError:
                    lines = []
                for ln in lines:
                    parts = ln.split()
                    if len(parts) > 3 and parts[1].endswith(want) and parts[3] == "0A":  # LISTEN
                        return
            time.sleep(0.05)
        raise UsageError(f"reference server did not listen on port {port} within {timeout:.0f} s",
                         "check that iperf3 runs (`iperf3 -s -1`), or use --no-reference")

    def teardown(self) -> None:
        for topo in self._topologies.values():
            topo.teardown()
        self._topologies.clear()
        self._endpoints.clear()


class LinkPlacement:
    """Sender on node 0, receiver on node 1 of an SSH target (bench.targets.ssh.SshTarget)."""

    name = "link"
    remote = True

    def __init__(self, target):
        if len(target.hosts) < 2:
            raise UsageError("a two-node run needs two hosts", "`bench lab up --nodes 2`")
        self.target = target
        self.tx_addr, self.rx_addr = target.link_address(0), target.link_address(1)
        if not (self.tx_addr and self.rx_addr):
            raise UsageError("the hosts have no link_addr for test traffic",
                             "set link_addr=ADDR/PREFIX per host in the inventory")

    def endpoints(self, kind: str) -> Endpoints:
        return Endpoints("link", None, None, self.tx_addr, self.rx_addr)

    def snapshot(self, kind: str) -> dict:
        out = {"kind": "link"}
        for side, node in SIDES.items():
            h = self.target.host(node)
            out[f"{side}_host"] = h.name
        return out

    def _ssh(self, side: str, argv: list[str]) -> list[str]:
        return self.target.ssh_argv(SIDES[side]) + [shlex.join(argv)]

    def agent_argv(self, side: str) -> list[str]:
        return self._ssh(side, ["bench", "agent"])

    def tool_argv(self, side: str, netns: str | None, argv: list[str]) -> list[str]:
        return self._ssh(side, argv)

    def tracer_argv(self, side: str) -> list[str]:
        """The node's copy tracer process (bench/tracing/remote.py), JSON lines over SSH."""
        return self._ssh(side, ["bench", "tracer"])

    def tracer(self, spec: str, survey: bool = False):
        """One tracer per node (each selects its backends on its own kernel), merged.
        survey=True: only ask each node what it would use (and build it), then end."""
        from bench.tracing.remote import RemoteTracer
        return RemoteTracer(self.tracer_argv, [h.name for h in self.target.hosts[:2]], spec,
                            survey=survey)

    def wait_listening(self, side: str, pid: int, port: int, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            res = self.target.run(SIDES[side], ["ss", "-Hltn", f"sport = :{port}"], check=False,
                                  timeout=30)
            if res.stdout.strip():
                return
            time.sleep(0.3)
        raise UsageError(f"reference server on {self.target.host(SIDES[side]).name} did not listen "
                         f"on port {port}", "check iperf3 there, or use --no-reference")

    def teardown(self) -> None:
        pass
