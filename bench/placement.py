"""Where the two sides of a case run, and how their processes start. The runner always runs on
this machine and asks its placement the same questions whatever the target.

  LocalPlacement  both sides on this machine: host loopback, or two netns joined by veth.
  NodePlacement   both sides on one SSH node (`--target lab` with one node, one host): agents,
                  iperf3, the copy tracer (`bench tracer`) and the topology (`bench topology`,
                  veth or loopback there) start on the node over SSH.
  LinkPlacement   two SSH nodes (`bench lab up --nodes 2`, two hosts): the sender on node 0 and
                  the receiver on node 1, across the link between them.

Everything started on a node cleans up by itself when the runner or SSH goes away (end of
input, SIGHUP, a lifetime watchdog; iperf3 dies with its SSH session, bench/nsexec.py).
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

from bench.errors import UsageError
from bench.topology import Endpoints, Topology

SIDES = {"tx": 0, "rx": 1}
CPU_SIDES = ("tx", "rx", "rx")    # --cpus SENDER,RECEIVER[,SOFTIRQ]: the softirq CPU is on
                                  # the receiver's machine (RPS on its veth end)
TOPOLOGY_TIMEOUT_S = 120.0        # creating two netns and a veth pair on a TCG guest
TOPOLOGY_IDLE_S = 4 * 3600.0      # a node's topology goes away after this long without a command
REMOTE_LISTEN_S = 60.0     # a reference server on a node: ssh + Python + the tool, maybe under TCG
NODE_FACTS = ("import json, os, shutil, sys; print(json.dumps({'uid': os.geteuid(), 'missing': "
              "[t for t in sys.argv[1:] if not shutil.which(t)], "
              "'cpus': sorted(os.sched_getaffinity(0))}))")   # argv: the tools it must have


def check_cpus(cpus, allowed_on, where=lambda side: "here") -> None:
    """--cpus: each CPU must be one its side's machine lets us use (`allowed_on(side)`). A
    position holds one CPU or, with flows, a tuple of them (bench/cpulists.py)."""
    for side, listed in zip(CPU_SIDES, cpus or (), strict=False):
        allowed = allowed_on(side)
        for cpu in (listed if isinstance(listed, tuple) else (listed,)):
            if cpu not in allowed:
                raise UsageError(f"--cpus: CPU {cpu} is not available {where(side)} "
                                 f"(allowed: {sorted(allowed)})", "pick CPUs from that list")


def namespace_topologies(topologies) -> list[str]:
    """The kinds that create network namespaces, so need root: veth and every KIND-mtuN
    (loopback-mtuN runs in a namespace of its own); loopback and link create none."""
    return sorted(k for k in topologies if k not in ("loopback", "link"))


def softirq_cpu(cpus) -> int | None:
    """The third --cpus number: where the receiving veth end's softirq runs (RPS), if given."""
    if not cpus or len(cpus) < 3:
        return None
    return cpus[2][0] if isinstance(cpus[2], tuple) else cpus[2]


class LocalPlacement:
    name = "local"
    remote = False
    rps_cpu: int | None = None      # set by check(): --cpus' third number
    machines = 1
    forced_topology: str | None = None

    def __init__(self):
        self._topologies: dict[str, Topology] = {}
        self._endpoints: dict[str, Endpoints] = {}
        self._rdma = None        # bench.rxe.Devices, made by the first RDMA case

    def describe(self) -> dict:
        return {"kind": self.name}

    def close(self) -> None:
        """Nothing held between runs here (topologies are torn down by the runner)."""

    def capabilities(self, names) -> dict[str, tuple[bool, str, str]]:
        from bench import doctor
        return doctor.capabilities(names)

    def sysinfo(self) -> dict:
        from bench import sysinfo
        return sysinfo.collect()

    def check(self, tools, topologies, cpus) -> None:
        """tools: the reference tools the plan runs (iperf3, perftest's ib_*_bw)."""
        from bench.references import installed
        installed.check_tools(tools)
        for kind in namespace_topologies(topologies):
            Topology(kind).check_privileges()
        check_cpus(cpus, lambda side: os.sched_getaffinity(0))
        self.rps_cpu = softirq_cpu(cpus)

    def usable_cpus(self, side: str) -> int:
        """How many CPUs a side's processes may use here."""
        return len(os.sched_getaffinity(0))

    def endpoints(self, kind: str) -> Endpoints:
        if kind == "link":
            raise UsageError("the link topology joins two machines",
                             "use --target lab with `bench lab up --nodes 2`, or two SSH hosts")
        if kind not in self._endpoints:
            topo = Topology(kind, rps_cpu=self.rps_cpu)
            self._topologies[kind] = topo
            self._endpoints[kind] = topo.__enter__()
        return self._endpoints[kind]

    def snapshot(self, kind: str) -> dict:
        return self._topologies[kind].snapshot()

    def agent_argv(self, side: str) -> list[str]:
        return [sys.executable, "-m", "workloads.agent"]

    def start_agent(self, role: str, side: str, config: dict | None):
        """An agent process here (config None: configured later, bench/agents.py)."""
        from bench.agents import Agent
        return Agent(role, config, argv=self.agent_argv(side))

    def tool_argv(self, side: str, netns: str | None, argv: list[str]) -> list[str]:
        return [sys.executable, "-m", "bench.nsexec", netns or "-", "--", *argv]

    def start_tool(self, side: str, netns: str | None, argv: list[str]):
        """A reference tool here in `netns`: (process, lifeline) (bench.procs)."""
        from bench.procs import spawn_with_lifeline
        return spawn_with_lifeline(self.tool_argv(side, netns, argv))

    def tracer(self, spec: str, survey: bool = False, reuse: bool = False):
        """The copy tracer for both agents: here, one tracer on this kernel (choosing is fast
        here: `reuse` is for node processes and means nothing locally)."""
        from bench.tracing.select import select_tracer
        return select_tracer(spec)

    def syscall_tracer(self, survey: bool = False, reuse: bool = False):
        """The syscall counter for both agents (bench/tracing/syscount.py), on this kernel."""
        from bench.tracing.syscount import counter
        return counter()

    def wait_listening(self, side: str, pid: int, port: int, timeout: float,
                       netns: str | None = None, proto: str = "tcp") -> None:
        """Poll the process's own view of its sockets (its netns) until `port` listens (TCP)
        or is bound (UDP: an unconnected socket, state 07 in /proc/net/udp)."""
        deadline = time.monotonic() + timeout
        want = f":{port:04X}"
        state = "0A" if proto == "tcp" else "07"      # TCP_LISTEN, TCP_CLOSE (a bound UDP socket)
        while time.monotonic() < deadline:
            for table in (proto, proto + "6"):
                try:
                    lines = Path(f"/proc/{pid}/net/{table}").read_text().splitlines()[1:]
                except OSError:
                    lines = []
                for ln in lines:
                    parts = ln.split()
                    if len(parts) > 3 and parts[1].endswith(want) and parts[3] == state:
                        return
            time.sleep(0.05)
        raise UsageError(f"reference server did not listen on port {port} within {timeout:.0f} s",
                         "check that the reference tool runs (`iperf3 -s -1`, `ib_write_bw`), or "
                         "use --no-reference")

    def rdma_devices(self, requested: str | None, ep: Endpoints) -> dict:
        """Device, port and GID per side (bench/rxe.py): a real NIC as it is, else a soft-RoCE
        link this run creates on its topology and removes at teardown."""
        if self._rdma is None:
            from bench.rxe import Devices
            self._rdma = Devices(requested)
        return self._rdma.for_endpoints(ep)

    def teardown(self) -> None:
        rdma, self._rdma = self._rdma, None
        if rdma is not None:       # our soft-RoCE links, before their netdevs
            rdma.release()
        for topo in self._topologies.values():
            topo.teardown()
        self._topologies.clear()
        self._endpoints.clear()


class RemotePlacement:
    """The agents on SSH nodes of `target` (bench.targets.ssh.SshTarget): `sides` maps tx/rx to
    a node index. Subclasses say what the topology is."""

    remote = True
    rps_cpu: int | None = None      # set by check(): --cpus' third number (veth topologies)
    forced_topology: str | None = None

    def __init__(self, target, sides: dict[str, int]):
        self.target = target
        self.sides = sides
        self._facts: dict[int, dict] = {}
        self._launchers: dict[int, tuple | None] = {}   # node -> (launcher process, local socket)
        self._sysinfo: dict[int, dict] = {}             # node -> `bench sysinfo`, once per run
        self._rdma: dict | UsageError | None = None     # rdma_devices(), once per run

    @property
    def nodes(self) -> list[int]:
        return sorted(set(self.sides.values()))

    def close(self) -> None:
        """The launchers, then the target's shared SSH connections, end with the run."""
        try:
            self._stop_launchers()
        finally:
            self.target.close()

    def describe(self) -> dict:
        """`launch`: how agents and reference tools start on the nodes (start_agent)."""
        return {"kind": self.name, "target": self.target.kind,
                "hosts": [self.target.host(i).name for i in self.nodes],
                "launch": ("started by the node's launcher (bench launcher: fork and exec), "
                           "reached through the shared SSH connection"
                           if self.target.can_forward() else
                           "one SSH session each (bench agent, bench nsexec)")}

    # -- commands on a side's node ---------------------------------------------------------
    def _ssh(self, side: str, argv: list[str]) -> list[str]:
        return self.target.ssh_argv(self.sides[side]) + [shlex.join(argv)]

    def _bench(self, side: str, *args: str) -> list[str]:
        return self._ssh(side, [self.target.remote_bench, *args])

    def agent_argv(self, side: str) -> list[str]:
        return self._bench(side, "agent")

    def start_agent(self, role: str, side: str, config: dict | None):
        """Started by the node's launcher where the target shares one SSH connection per node
        (the lab): a connection through it instead of an SSH session per agent
        (bench/launcher.py). Elsewhere `bench agent` over SSH."""
        from bench.agents import Agent
        from bench.launched import LaunchedAgent, connect_unix
        path = self._launcher(self.sides[side])
        if path is None:
            return Agent(role, config, argv=self.agent_argv(side))
        return LaunchedAgent(role, config, connect=lambda: connect_unix(path))

    def _launcher(self, node: int) -> str | None:
        """The local end of node's launcher socket: started on first use, for the run."""
        launchers = self._launchers
        if node not in launchers:
            if not self.target.can_forward():
                launchers[node] = None
            else:
                from bench.procs import NodeProcess
                side = next(s for s, n in self.sides.items() if n == node)
                helper = NodeProcess(self.target.host(node).name, "launcher", "launcher",
                                     self._bench(side, "launcher"),
                                     {"lifetime_s": TOPOLOGY_IDLE_S})
                try:
                    ready = helper.expect("ready", TOPOLOGY_TIMEOUT_S)
                    local = self.target.forward_unix(node, ready["socket"])
                except BaseException:
                    helper.close(grace=5.0)
                    raise
                launchers[node] = (helper, str(local))
        entry = launchers[node]
        return entry[1] if entry else None

    def _stop_launchers(self) -> None:
        """End of input ends each launcher (and any agent it still has)."""
        launchers, self._launchers = self._launchers, {}
        for entry in launchers.values():
            if entry:
                entry[0].close(grace=10.0)

    def tool_argv(self, side: str, netns: str | None, argv: list[str]) -> list[str]:
        """Ends with its SSH session, or when the runner's end of its stdin closes."""
        return self._bench(side, "nsexec", netns or "-", "--until-eof", "--", *argv)

    def start_tool(self, side: str, netns: str | None, argv: list[str]):
        """A reference tool on the side's node in `netns`: started by the node's launcher where
        there is one (no session, no interpreter), else `bench nsexec --until-eof` over SSH.
        (process, lifeline): the launcher's stream is its own lifeline."""
        path = self._launcher(self.sides[side])
        if path is None:
            from bench.procs import spawn_with_lifeline
            return spawn_with_lifeline(self.tool_argv(side, netns, argv))
        from bench.launched import LaunchedProcess, connect_unix
        try:
            return LaunchedProcess(lambda: connect_unix(path), argv, netns), None
        except OSError as exc:
            raise UsageError(f"no connection to the agent launcher on "
                             f"{self.target.host(self.sides[side]).name}: {exc}",
                             "check the node (`bench lab status`), then retry") from None

    def tracer_argv(self, side: str) -> list[str]:
        """The node's copy tracer process (bench/tracing/remote.py), JSON lines over SSH."""
        return self._bench(side, "tracer")

    def tracer(self, spec: str, survey: bool = False, reuse: bool = False):
        """One tracer per node (each selects its backends on its own kernel), merged.
        survey=True: only ask each node what it would use (and build it), then end.
        reuse=True: the node processes serve one sample after another until close() (after
        a survey too: the run's check is then its first tracer)."""
        return self._node_tracer(spec, survey, reuse)

    def syscall_tracer(self, survey: bool = False, reuse: bool = False):
        """One syscall counter per node (`bench tracer` with spec "syscalls"), merged."""
        from bench.tracing.syscount import SPEC
        return self._node_tracer(SPEC, survey, reuse)

    def _node_tracer(self, spec: str, survey: bool, reuse: bool):
        from bench.tracing.remote import ROLE_SIDE, RemoteTracer
        return RemoteTracer(self.tracer_argv, [h.name for h in self.target.hosts], spec,
                            survey=survey, reuse=reuse,
                            role_node={role: self.sides[side] for role, side in ROLE_SIDE.items()})

    def wait_listening(self, side: str, pid: int, port: int, timeout: float,
                       netns: str | None = None, proto: str = "tcp") -> None:
        node = self.sides[side]
        # One process that polls on the node: each call from here would start ssh there, and
        # see one or two tries in `timeout` under emulation (TCG). `ss` rather than `bench
        # nsexec`: no interpreter starts (≈0.8 s per reference sample under TCG). Through the
        # node's launcher where there is one (no SSH session either). The node's own start-up
        # counts too: at least REMOTE_LISTEN_S.
        wait = max(timeout, REMOTE_LISTEN_S)
        path = self._launcher(node)
        where = f"-N {shlex.quote(netns)} " if netns and path is None else ""
        poll = (f"end=$(( $(date +%s) + {int(wait)} )); while [ $(date +%s) -lt $end ]; do "
                f"ss {where}-Hl{proto[0]}n 'sport = :{port}' | grep -q . && exit 0; sleep 0.3; "
                "done; "
                "exit 1")
        if path is None:
            code = self.target.run(node, ["sh", "-c", poll], check=False,
                                   timeout=wait + 60).returncode
        else:
            proc, _ = self.start_tool(side, netns, ["sh", "-c", poll])
            try:
                code = proc.wait(timeout=wait + 60)
            except subprocess.TimeoutExpired:
                from bench.procs import stop
                stop(proc, term_grace=5.0)
                code = None
        if code == 0:
            return
        raise UsageError(f"reference server on {self.target.host(node).name} did not listen "
                         f"on port {port}", "check the reference tool there (iperf3, perftest), "
                         "or use --no-reference")

    # -- what the nodes are and can do -----------------------------------------------------
    def sysinfo(self) -> dict:
        """The result's metadata from the node(s) that measured (`bench sysinfo` there): node
        0's at the top, every node's under `nodes` when there are two; the git sha and host
        of the runner here."""
        import platform

        from bench import sysinfo
        per = {self.target.host(node).name: self._node_sysinfo(node) for node in self.nodes}
        meta = {**next(iter(per.values())), "git_sha": sysinfo.git_sha(),
                "runner_host": platform.node()}
        if len(per) > 1:
            meta["nodes"] = per
        return meta

    def _node_sysinfo(self, node: int) -> dict:
        """`bench sysinfo` on a node, once per run."""
        from bench.procs import PROVISION_FIX
        cache = self._sysinfo
        if node not in cache:
            name = self.target.host(node).name
            try:
                out = self.target.run(node, [self.target.remote_bench, "sysinfo"],
                                      timeout=120).stdout
                cache[node] = json.loads(out.strip().splitlines()[-1])
            except (UsageError, ValueError, IndexError) as exc:
                raise UsageError(f"{name}: `bench sysinfo` failed (a copybench older than this "
                                 f"one?): {getattr(exc, 'message', exc)}", PROVISION_FIX) from None
        return cache[node]

    def rdma_devices(self, requested: str | None, ep: Endpoints) -> dict:
        """Each side's RDMA device on its own node, as the node's `bench sysinfo` lists them,
        used as they are (the lab's rxe0 on one node; each node's own across a link). Chosen
        once per run: a choice that failed fails every later case alike."""
        if self._rdma is None:
            try:
                self._rdma = self._choose_rdma(requested, ep)
            except UsageError as exc:
                self._rdma = exc
        if isinstance(self._rdma, UsageError):
            raise self._rdma
        return self._rdma

    def _choose_rdma(self, requested: str | None, ep: Endpoints) -> dict:
        from bench import rxe
        out = {}
        for side, addr in (("tx", ep.tx_addr), ("rx", ep.rx_addr)):
            node = self.sides[side]
            ports = [rxe.port_from_json(d) for d in self._node_sysinfo(node).get("rdma_ports", [])]
            out[side] = rxe.choose_on_node(ports, self.target.host(node).name, requested,
                                           address=addr)
        return out

    def facts(self, node: int, tools=()) -> dict:
        """uid, which of `tools` are missing, usable CPUs: one SSH call per node, cached."""
        if node not in self._facts:
            out = self.target.run(node, ["python3", "-c", NODE_FACTS, *sorted(tools)],
                                  timeout=60).stdout
            try:
                self._facts[node] = json.loads(out.strip().splitlines()[-1])
            except (ValueError, IndexError):
                raise UsageError(f"{self.target.host(node).name}: could not read the node's "
                                 f"facts ({out.strip()[-200:]!r})", "check python3 there") from None
        return self._facts[node]

    def check(self, tools, topologies, cpus) -> None:
        for node in self.nodes:
            name = self.target.host(node).name
            f = self.facts(node, tools)
            if f.get("missing"):
                raise UsageError(f"missing reference tool on {name}: "
                                 f"{', '.join(f['missing'])} not installed",
                                 "provision the node (`bench lab up`; real hosts: "
                                 "ansible-playbook -i INVENTORY site.yml), or --no-reference")
            kinds = namespace_topologies(topologies)
            if kinds and self.forced_topology is None and f.get("uid") != 0:
                raise UsageError(f"the {kinds[0]} topology creates network namespaces on {name} "
                                 "and needs root there", "log in as root (ansible_user=root), or "
                                 "use --topology loopback")
        check_cpus(cpus, lambda side: set(self.facts(self.sides[side])["cpus"]),
                   lambda side: f"on {self.target.host(self.sides[side]).name}")
        self.rps_cpu = softirq_cpu(cpus)

    def usable_cpus(self, side: str) -> int:
        """How many CPUs a side's node lets us use (its facts, read by check())."""
        return len(self.facts(self.sides[side]).get("cpus") or ()) or 1

    def capabilities(self, names) -> dict[str, tuple[bool, str, str]]:
        """What the plan's workloads need, as every node's `bench doctor --json` says."""
        names = set(names)
        found: dict[str, list[tuple[str, dict]]] = {}
        if names:
            for node in self.nodes:
                for c in self.target.doctor(node=node):
                    if c.get("name") in names:
                        found.setdefault(c["name"], []).append((self.target.host(node).name, c))
        out = {}
        for name, checks in found.items():
            bad = [(h, c) for h, c in checks if not c.get("ok")]
            shown = bad or checks
            out[name] = (not bad, "; ".join(f"{h}: {c.get('detail', '')}" for h, c in shown),
                         "; ".join(dict.fromkeys(c.get("fix", "") for _, c in bad if c.get("fix"))))
        return out


class NodePlacement(RemotePlacement):
    """Both agents on one node; its topology made there by `bench topology` (one helper
    process per topology kind, for the whole run)."""

    name = "node"
    machines = 1

    def __init__(self, target, node: int = 0):
        super().__init__(target, {"tx": node, "rx": node})
        self._helpers: dict = {}
        self._endpoints: dict[str, Endpoints] = {}

    def endpoints(self, kind: str) -> Endpoints:
        if kind == "link":
            raise UsageError("the link topology joins two machines",
                             "use `bench lab up --nodes 2`, or two SSH hosts")
        if kind not in self._endpoints:
            from bench.procs import NodeProcess
            helper = NodeProcess(self.target.host(self.sides["rx"]).name, "topology helper",
                                 "topology", self._bench("rx", "topology"),
                                 {"kind": kind, "lifetime_s": TOPOLOGY_IDLE_S,
                                  "rps_cpu": self.rps_cpu})
            self._helpers[kind] = helper
            ready = helper.expect("ready", TOPOLOGY_TIMEOUT_S)
            self._endpoints[kind] = Endpoints(**ready["endpoints"])
        return self._endpoints[kind]

    def snapshot(self, kind: str) -> dict:
        helper = self._helpers[kind]
        helper.send({"cmd": "snapshot"})      # also re-arms the helper's idle watchdog
        return helper.expect("snapshot", 60)["snapshot"]

    def teardown(self) -> None:
        """Each helper removes its topology and says so; one that cannot be reached removes it
        on its own when its input ends (closing it ends that)."""
        for kind, helper in list(self._helpers.items()):
            try:
                if helper.proc.poll() is not None:
                    continue              # it failed and said so; nothing of it is left
                helper.send({"cmd": "down"})
                helper.expect("down", TOPOLOGY_TIMEOUT_S)
            except UsageError as exc:
                print(f"bench: warning: removing the {kind} topology on {helper.node}: "
                      f"{exc.message} (fix: `bench doctor --cleanup` there)", file=sys.stderr)
            finally:
                helper.close()
                del self._helpers[kind]
        self._endpoints.clear()


class LinkPlacement(RemotePlacement):
    """Sender on node 0, receiver on node 1, across the link between them."""

    name = "link"
    machines = 2
    forced_topology = "link"

    def __init__(self, target):
        if len(target.hosts) < 2:
            raise UsageError("a two-node run needs two hosts", "`bench lab up --nodes 2`")
        super().__init__(target, dict(SIDES))
        self.tx_addr, self.rx_addr = target.link_address(0), target.link_address(1)
        if not (self.tx_addr and self.rx_addr):
            raise UsageError("the hosts have no link_addr for test traffic",
                             "set link_addr=ADDR/PREFIX per host in the inventory")

    def endpoints(self, kind: str) -> Endpoints:
        return Endpoints("link", None, None, self.tx_addr, self.rx_addr)

    def snapshot(self, kind: str) -> dict:
        out = {"kind": "link", **{f"{side}_host": self.target.host(node).name
                                  for side, node in self.sides.items()}}
        if self.rps_cpu is not None:
            out["rps_note"] = ("receive softirq not steered: across a link it runs on the "
                               "receiving machine already, and a NIC is left as it is")
        return out

    def teardown(self) -> None:
        pass


def for_target(target) -> NodePlacement | LinkPlacement:
    """One node: everything on it; two or more: sender on the first, receiver on the second."""
    return LinkPlacement(target) if len(target.hosts) >= 2 else NodePlacement(target)
