"""Counting copies on remote nodes: one tracer per node, counts merged into one result.

On a remote run the agents run on SSH nodes: both on one node (NodePlacement), or the sender on
node 0 and the receiver on node 1 (LinkPlacement), each side's copies then in a different
kernel. The runner starts this module once per node over SSH (`bench tracer`, or `python -m
bench.tracing.remote`); it selects the tracer for the given spec on ITS kernel
(`select_tracer`: on the lab's Debian 6.1 `auto` picks kmod) and attaches to the agent(s) that
run there.

Protocol (JSON lines, like the agents'):
  runner -> node  {"spec": "auto", "node": "lab1", "survey": false, "lifetime_s": 3600,
                   "reuse": false}
                  (spec "syscalls": the node counts the agents' system calls instead of
                  copies, bench/tracing/syscount.py; "counts" are then SyscallCount lines)
  node -> runner  {"event": "ready", "node", "pid", "kernel", "choices": [...],
                   "available": {"ok", "reason", "fix"}, "bandwidth": {...} | null}
                  or {"event": "error", "message", "fix"} (then it exits 2)
  survey=true: the node also builds what attaching needs (the kprobe module), measures its
  memory bandwidth for the cost model, reports, and exits, unless "reuse" is true too: then
  the runner's check before the run is also the run's first tracer. Otherwise it then serves:
  runner -> node  {"cmd": "attach", "pids": {"receiver": 4242}}  -> {"event": "attached"}
                  {"cmd": "read"}    -> {"event": "counts", "counts": [PointCounts.to_json()]}
                  {"cmd": "detach"}  -> {"event": "detached"}, then exits 0; with
                  "reuse": true it serves the next attach instead (choosing the backends
                  reads kallsyms, ftrace's function list and the BTF: seconds under TCG,
                  once per run instead of once per case) until {"cmd": "quit"} or EOF
It detaches before exiting in every case: end of stdin (the runner or SSH died: exit 3),
SIGTERM/SIGINT/SIGHUP (exit 128+N), or its own lifetime watchdog (SIGALRM after lifetime_s:
exit 4), so no module, kprobe event or bpftrace stays attached on a node.

Runner side: RemoteTracer implements the Tracer interface (attach/read/detach, `choices`) over
one such process per node. Pids are the agents' own pids on their node (their "ready"
message), mapped by role to the node the agent runs on (`role_node`). Counts keep their quality
(exact/estimate/lossy) from the node's backend; copies that ran outside both agents on a node
(side "other": softirq, kernel threads) become side "other@<node>", so the two kernels' stray
copies are never summed into one figure.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sys
import time
from dataclasses import dataclass, field

from bench.costmodel import Bandwidth
from bench.errors import UsageError
from bench.procs import (
    EXIT_RUNNER_GONE,
    EXIT_WATCHDOG,
    NodeProcess,
    Stop,
    config_line,
    emitter,
    held,
    install_handlers,
)
from bench.tracing.base import Availability, PointCounts, Tracer

__all__ = ["EXIT_RUNNER_GONE", "EXIT_WATCHDOG", "RemoteTracer", "install_handlers", "serve"]
DEFAULT_LIFETIME_S = 3600.0
ROLE_SIDE = {"sender": "tx", "receiver": "rx"}     # agent role -> placement side
SIDE_NODE = {"tx": 0, "rx": 1}                     # two nodes: sender on 0, receiver on 1
TWO_NODES = {role: SIDE_NODE[side] for role, side in ROLE_SIDE.items()}
READY_TIMEOUT_S = 120.0        # select + (survey) a module build and a bandwidth run under TCG
SURVEY_TIMEOUT_S = 900.0
COMMAND_TIMEOUT_S = 120.0      # attach loads a module; detach unloads it (slow under TCG)


# == the node side ============================================================================
def _choices_json(tracer) -> list[dict]:
    return [c.to_json() for c in getattr(tracer, "choices", [])]


def _prepare(tracer) -> None:
    """Build what attach would build (the kprobe module, once per kernel), so attaching
    during the traced sample does not compile while the agents wait."""
    from bench.tracing import kmod
    for t in getattr(tracer, "tracers", []):
        if isinstance(t, kmod.KmodTracer):
            kmod.build(t.release, t.modules_root, t.cache)


def _make_tracer(spec: str, points):
    """The node's tracer for `spec`: the syscall counter for "syscalls" (bench/tracing/
    syscount.py), else the copy tracer `select_tracer` picks on this kernel."""
    from bench.tracing import syscount
    if spec == syscount.SPEC:
        return syscount.counter()
    from bench.tracing.select import select_tracer
    return select_tracer(spec, points)


def serve(rfile, wfile, make_tracer=None, measure_bandwidth=None, prepare=_prepare,
          kernel: str | None = None) -> int:
    """The node's tracer process: one config line, then commands until detach or EOF.
    Returns the exit code; the caller installs signal handlers and the watchdog."""

    emit = emitter(wfile)
    cfg = config_line(rfile, emit, "a JSON object")
    if isinstance(cfg, int):
        return cfg
    node = cfg.get("node") or os.uname().nodename
    if cfg.get("lifetime_s"):
        signal.setitimer(signal.ITIMER_REAL, float(cfg["lifetime_s"]))
    if make_tracer is None:
        make_tracer = _make_tracer
    tracer = live = None      # live: the tracer once attach was asked for (detach it then)
    try:
        try:
            tracer = make_tracer(cfg.get("spec", "auto"), cfg.get("points"))
            av = tracer.available()
            bandwidth = None
            if cfg.get("survey") and av.ok:
                prepare(tracer)
                if cfg.get("bandwidth"):
                    if measure_bandwidth is None:
                        from bench.costmodel import measure_bandwidth
                    bandwidth = measure_bandwidth().to_json()
        except UsageError as exc:
            emit("error", message=exc.message, fix=exc.fix)
            return 2
        if kernel is None:
            kernel = os.uname().release
        emit("ready", node=node, pid=os.getpid(), kernel=kernel, choices=_choices_json(tracer),
             available={"ok": av.ok, "reason": av.reason, "fix": av.fix}, bandwidth=bandwidth)
        if cfg.get("survey") and not cfg.get("reuse"):
            return 0
        while True:
            line = rfile.readline()
            if not line:
                return EXIT_RUNNER_GONE
            try:
                msg = json.loads(line)
            except ValueError:
                continue
            cmd = msg.get("cmd")
            try:
                if cmd == "attach":
                    live = tracer
                    tracer.attach({str(k): int(v) for k, v in msg["pids"].items()})
                    emit("attached")
                elif cmd == "read":
                    emit("counts", counts=[pc.to_json() for pc in tracer.read()])
                elif cmd == "detach":
                    t, live = live, None
                    if t is not None:
                        held(t.detach)
                    emit("detached")
                    if not cfg.get("reuse"):
                        return 0
                elif cmd == "quit":          # a reused tracer, detached: end
                    return 0
                else:
                    emit("error", message=f"unknown command {cmd!r}",
                         fix="attach, read, detach or quit")
            except UsageError as exc:
                emit("error", message=exc.message, fix=exc.fix)
            except (KeyError, TypeError, ValueError) as exc:
                emit("error", message=f"bad {cmd} command: {exc}", fix="see bench/tracing/remote.py")
    except Stop as stop:
        emit("error", message=f"tracer on {node} stopped: {stop.why}", fix="")
        return stop.code
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if live is not None:
            held(live.detach)


def main() -> int:
    install_handlers()
    try:
        return serve(sys.stdin, sys.stdout)
    except Stop as stop:          # a signal before serve's own handler was in place
        return stop.code


# == the runner side ==========================================================================
def split_pids(pids: dict[str, int], role_node: dict[str, int] = TWO_NODES
               ) -> dict[int, dict[str, int]]:
    """{"sender": P, "receiver": Q} -> {0: {"sender": P}, 1: {"receiver": Q}}: each agent is
    traced by the tracer on the node it runs on (two nodes: sender on 0, receiver on 1)."""
    from bench.flows import base_side
    out: dict[int, dict[str, int]] = {}
    for role, pid in pids.items():
        base = base_side(role)[0]          # flow N's "sender.N" runs where the senders run
        if base not in role_node:
            raise UsageError(f"no node for side {role!r} on a remote run",
                             "sides are sender and receiver")
        out.setdefault(role_node[base], {})[role] = int(pid)
    return out


def merge(per_node: dict[str, list[dict]], roles: dict[str, list[str]],
          kind=PointCounts) -> list:
    """The nodes' counts as one list. Each node may only report the roles traced there and
    "other" (copies outside its agent), which is relabelled "other@<node>". `kind`: what the
    node counted (PointCounts; syscount.SyscallCount for the syscall counter)."""
    from bench.flows import base_side
    out: list = []
    for node, docs in per_node.items():
        for doc in docs:
            pc = kind.from_json(doc)
            if pc.side == "other":
                pc.side = f"other@{node}"
            elif base_side(pc.side)[0] not in roles.get(node, []):
                raise UsageError(f"the tracer on {node} reported side {pc.side!r}, which does not "
                                 "run there", "a bug in bench/tracing/remote.py: please report it")
            pc.notes.append(f"counted on {node}")
            out.append(pc)
    return out


@dataclass(frozen=True)
class NodeBandwidth(Bandwidth):
    """A node's measured memory bandwidth (the cost model's), with every node's beside it."""

    measured_on: str = ""
    per_node: tuple = ()

    def to_json(self) -> dict:
        return {**super().to_json(), "measured_on": self.measured_on,
                "per_node": dict(self.per_node),
                "note": "the cost model of both sides uses node 0's (the sender's) bandwidth"}


@dataclass
class NodeChoice:
    """One node's backend choice for one copy point (select.Choice as JSON, plus the node)."""

    node: str
    role: str
    choice: dict

    @property
    def backend(self) -> str | None:
        return self.choice.get("backend")

    @property
    def point(self) -> str:
        return self.choice.get("point", "")

    def to_json(self) -> dict:
        return {**self.choice, "node": self.node, "role": self.role}


@dataclass
class _Node:
    index: int
    name: str
    roles: list[str]
    argv: list[str]
    proc: NodeProcess | None = None
    ready: dict = field(default_factory=dict)


class RemoteTracer(Tracer):
    """One tracer per node, behind the one Tracer interface.

    `argv_for(side)` gives the command that starts `bench tracer` on that side's node
    (RemotePlacement.tracer_argv); `names` are the nodes' names (lab0, lab1); `role_node` says
    which node each agent runs on (both on node 0 for a one-node run: one tracer traces both)."""

    name = "remote"

    def __init__(self, argv_for, names: list[str], spec: str = "auto",
                 points: list[str] | None = None, survey: bool = False,
                 lifetime_s: float = DEFAULT_LIFETIME_S, role_node: dict[str, int] = TWO_NODES,
                 reuse: bool = False):
        self.spec = spec
        self.reuse = reuse
        self.started = time.monotonic()
        self.role_node = role_node
        self.nodes: list[_Node] = []
        for role, side in ROLE_SIDE.items():
            index = role_node[role]
            node = next((n for n in self.nodes if n.index == index), None)
            if node is None:
                self.nodes.append(_Node(index, names[index], [role], argv_for(side)))
            else:
                node.roles.append(role)
        self.attached = False
        self.lifetime_s = lifetime_s
        from bench.tracing import syscount
        self.kind = syscount.SyscallCount if spec == syscount.SPEC else PointCounts
        # The cost model's memory bandwidth: measured in a copy tracer's survey only.
        config = {"spec": spec, "points": points, "survey": survey,
                  "bandwidth": survey and spec != syscount.SPEC, "lifetime_s": lifetime_s,
                  "reuse": self.reuse}
        try:
            for n in self.nodes:            # start all first: the nodes select in parallel
                n.proc = NodeProcess(n.name, "copy tracer", "tracer", n.argv, config)
            for n in self.nodes:
                n.ready = n.proc.expect("ready", SURVEY_TIMEOUT_S if survey else READY_TIMEOUT_S)
        except BaseException:
            self._close()
            raise
        if survey and not reuse:
            self._close()
        self.choices = [NodeChoice(n.name, "+".join(n.roles), c) for n in self.nodes
                        for c in n.ready.get("choices", [])]
        self.bandwidth = self._bandwidth()

    def _bandwidth(self):
        """Node 0's memory bandwidth for the cost model (both nodes' in its JSON)."""
        per = {n.name: n.ready.get("bandwidth") for n in self.nodes if n.ready.get("bandwidth")}
        first = per.get(self.nodes[0].name)
        if not first:
            return None
        return NodeBandwidth(first["buffer_bytes"], first["repeats"], first["best_seconds"],
                             measured_on=self.nodes[0].name, per_node=tuple(per.items()))

    def describe(self) -> dict:
        """What counted on each node, for the result."""
        return {"backend": "remote", "spec": self.spec,
                "nodes": {n.name: {"roles": n.roles, "kernel": n.ready.get("kernel"),
                                   "available": (n.ready.get("available") or {}).get("reason")}
                          for n in self.nodes}}

    def available(self) -> Availability:
        for n in self.nodes:
            av = n.ready.get("available") or {}
            if not av.get("ok"):
                return Availability(False, f"on {n.name}: {av.get('reason')}", av.get("fix", ""))
        return Availability(True, "; ".join(f"{n.name}: {n.ready['available'].get('reason')}"
                                            for n in self.nodes))

    def attach(self, pids: dict[str, int]) -> None:
        by_node = split_pids(pids, self.role_node)
        try:
            for n in self.nodes:
                if n.proc is None:
                    raise UsageError("this tracer only surveyed the nodes",
                                     "construct RemoteTracer(survey=False) to count")
                n.proc.send({"cmd": "attach", "pids": by_node.get(n.index, {})})
            for n in self.nodes:
                n.proc.expect("attached", COMMAND_TIMEOUT_S)
            self.attached = True
        except BaseException:
            self.detach()
            raise

    def read(self) -> list[PointCounts]:
        for n in self.nodes:
            n.proc.send({"cmd": "read"})
        per_node = {n.name: n.proc.expect("counts", COMMAND_TIMEOUT_S)["counts"]
                    for n in self.nodes}
        return merge(per_node, {n.name: n.roles for n in self.nodes}, self.kind)

    def usable_for(self, seconds: float) -> bool:
        """Whether a reused tracer can serve `seconds` more: its processes still run and
        its nodes' lifetime watchdog will not fire meanwhile."""
        return (self.reuse and all(n.proc is not None for n in self.nodes)
                and time.monotonic() - self.started + seconds < self.lifetime_s)

    def detach(self) -> None:
        """Every node detaches (and says so); then their processes end, unless the tracer is
        reused (close() ends them). Idempotent."""
        errors = []
        live = [n for n in self.nodes if n.proc is not None]
        for n in live:
            try:
                n.proc.send({"cmd": "detach"})
            except UsageError as e:
                errors.append(e.message)
        for n in live:
            try:
                n.proc.expect("detached", COMMAND_TIMEOUT_S)
            except UsageError as e:
                errors.append(e.message)
        self.attached = False
        if errors or not self.reuse:
            self._close()
        if errors:
            raise UsageError("could not confirm every node detached its tracer: "
                             + "; ".join(errors), "bench doctor --cleanup on the node(s)")

    def close(self) -> None:
        """End the nodes' processes (a reused tracer, after its last detach). Idempotent."""
        for n in self.nodes:
            if n.proc is not None:
                with contextlib.suppress(UsageError):
                    n.proc.send({"cmd": "quit"})
        self._close()

    def _close(self) -> None:
        for n in self.nodes:
            if n.proc is not None:
                n.proc.close()
                n.proc = None


if __name__ == "__main__":
    sys.exit(main())
