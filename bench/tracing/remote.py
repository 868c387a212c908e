"""Counting copies on two machines: one tracer per node, counts merged into one result.

On a two-node run (LinkPlacement) the sender agent runs on node 0 and the receiver on node 1,
so each side's copies happen in a different kernel. The runner starts this module on each node
over SSH (`bench tracer`, or `python -m bench.tracing.remote`); it selects the tracer for the
given spec on ITS kernel (`select_tracer`: on the lab's Debian 6.1 `auto` picks kmod) and
attaches to the agent that runs there.

Protocol (JSON lines, like the agents'):
  runner -> node  {"spec": "auto", "node": "lab1", "survey": false, "lifetime_s": 3600}
  node -> runner  {"event": "ready", "node", "pid", "kernel", "choices": [...],
                   "available": {"ok", "reason", "fix"}, "bandwidth": {...} | null}
                  or {"event": "error", "message", "fix"} (then it exits 2)
  survey=true: the node also builds what attaching needs (the kprobe module), measures its
  memory bandwidth for the cost model, reports, and exits. Otherwise it then serves:
  runner -> node  {"cmd": "attach", "pids": {"receiver": 4242}}  -> {"event": "attached"}
                  {"cmd": "read"}    -> {"event": "counts", "counts": [PointCounts.to_json()]}
                  {"cmd": "detach"}  -> {"event": "detached"}, then exits 0
It detaches before exiting in every case: end of stdin (the runner or SSH died: exit 3),
SIGTERM/SIGINT/SIGHUP (exit 128+N), or its own lifetime watchdog (SIGALRM after lifetime_s:
exit 4), so no module, kprobe event or bpftrace stays attached on a node.

Runner side: RemoteTracer implements the Tracer interface (attach/read/detach, `choices`) over
one such process per node. Pids are the agents' own pids on their node (their "ready"
message), mapped by role: sender -> node 0, receiver -> node 1. Counts keep their quality
(exact/estimate/lossy) from the node's backend; copies that ran outside both agents on a node
(side "other": softirq, kernel threads) become side "other@<node>", so the two kernels' stray
copies are never summed into one figure.
"""

from __future__ import annotations

import json
import os
import selectors
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field

from bench.costmodel import Bandwidth
from bench.errors import UsageError
from bench.tracing.base import Availability, PointCounts, Tracer

EXIT_RUNNER_GONE = 3
EXIT_WATCHDOG = 4
DEFAULT_LIFETIME_S = 3600.0
ROLE_SIDE = {"sender": "tx", "receiver": "rx"}     # agent role -> placement side
SIDE_NODE = {"tx": 0, "rx": 1}                     # = bench.placement.SIDES
READY_TIMEOUT_S = 120.0        # select + (survey) a module build and a bandwidth run under TCG
SURVEY_TIMEOUT_S = 900.0
COMMAND_TIMEOUT_S = 120.0      # attach loads a module; detach unloads it (slow under TCG)
PROVISION_FIX = ("install this copybench on the nodes: `bench lab up --nodes 2` re-provisions "
                 "the lab; real hosts: ansible-playbook -i INVENTORY site.yml")


# == the node side ============================================================================
class _Stop(BaseException):
    """Raised by the signal handlers: leave the command loop, detach, exit with `code`."""

    def __init__(self, code: int, why: str):
        super().__init__(why)
        self.code, self.why = code, why


def _install_handlers() -> None:
    def stop(signum, frame):
        # The first signal wins; later ones must not cut the detach short.
        for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM):
            signal.signal(s, signal.SIG_IGN)
        if signum == signal.SIGALRM:
            raise _Stop(EXIT_WATCHDOG, "lifetime watchdog expired")
        raise _Stop(128 + signum, f"signal {signal.Signals(signum).name}")
    for s in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGALRM):
        signal.signal(s, stop)


def _choices_json(tracer) -> list[dict]:
    return [c.to_json() for c in getattr(tracer, "choices", [])]


def _prepare(tracer) -> None:
    """Build what attach would build (the kprobe module, once per kernel), so attaching
    during the traced sample does not compile while the agents wait."""
    from bench.tracing import kmod
    for t in getattr(tracer, "tracers", []):
        if isinstance(t, kmod.KmodTracer):
            kmod.build(t.release, t.modules_root, t.cache)


def serve(rfile, wfile, make_tracer=None, measure_bandwidth=None, prepare=_prepare,
          kernel: str | None = None) -> int:
    """The node's tracer process: one config line, then commands until detach or EOF.
    Returns the exit code; the caller installs signal handlers and the watchdog."""

    def emit(event: str, **kw) -> None:
        try:
            wfile.write(json.dumps({"event": event, **kw}) + "\n")
            wfile.flush()
        except (BrokenPipeError, OSError, ValueError):
            pass    # the runner is gone; detaching is all that is left to do

    line = rfile.readline()
    if not line:
        return EXIT_RUNNER_GONE
    try:
        cfg = json.loads(line)
    except ValueError:
        emit("error", message=f"bad config line {line[:80]!r}", fix="a JSON object")
        return 2
    node = cfg.get("node") or os.uname().nodename
    if cfg.get("lifetime_s"):
        signal.setitimer(signal.ITIMER_REAL, float(cfg["lifetime_s"]))
    if make_tracer is None:
        from bench.tracing.select import select_tracer as make_tracer
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
        if cfg.get("survey"):
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
                        _held(t.detach)
                    emit("detached")
                    return 0
                else:
                    emit("error", message=f"unknown command {cmd!r}",
                         fix="attach, read or detach")
            except UsageError as exc:
                emit("error", message=exc.message, fix=exc.fix)
            except (KeyError, TypeError, ValueError) as exc:
                emit("error", message=f"bad {cmd} command: {exc}", fix="see bench/tracing/remote.py")
    except _Stop as stop:
        emit("error", message=f"tracer on {node} stopped: {stop.why}", fix="")
        return stop.code
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        if live is not None:
            _held(live.detach)


def _held(fn) -> None:
    """Run fn with SIGINT/SIGTERM/SIGHUP/SIGALRM held back (as the runner's _uninterrupted)."""
    held = {signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGALRM}
    old = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        fn()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, old)


def main() -> int:
    _install_handlers()
    try:
        return serve(sys.stdin, sys.stdout)
    except _Stop as stop:          # a signal before serve's own handler was in place
        return stop.code


# == the runner side ==========================================================================
def split_pids(pids: dict[str, int]) -> dict[int, dict[str, int]]:
    """{"sender": P, "receiver": Q} -> {0: {"sender": P}, 1: {"receiver": Q}}: each agent is
    traced by the tracer on the node it runs on (sender on node 0, receiver on node 1)."""
    out: dict[int, dict[str, int]] = {}
    for role, pid in pids.items():
        if role not in ROLE_SIDE:
            raise UsageError(f"no node for side {role!r} on a two-node run",
                             "sides are sender (node 0) and receiver (node 1)")
        out.setdefault(SIDE_NODE[ROLE_SIDE[role]], {})[role] = int(pid)
    return out


def merge(per_node: dict[str, list[dict]], roles: dict[str, list[str]]) -> list[PointCounts]:
    """The nodes' counts as one list. Each node may only report the roles traced there and
    "other" (copies outside its agent), which is relabelled "other@<node>"."""
    out: list[PointCounts] = []
    for node, docs in per_node.items():
        for doc in docs:
            pc = PointCounts.from_json(doc)
            if pc.side == "other":
                pc.side = f"other@{node}"
            elif pc.side not in roles.get(node, []):
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


class _NodeProc:
    """The runner's end of one node's tracer process."""

    def __init__(self, node: str, role: str, argv: list[str], config: dict):
        self.node, self.role = node, role
        self._stderr = tempfile.TemporaryFile(mode="w+")
        self.proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self._stderr, text=True, bufsize=1,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.send({**config, "node": node})

    def send(self, msg: dict) -> None:
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except (BrokenPipeError, OSError, ValueError):
            raise self._gone("it exited") from None

    def expect(self, event: str, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stdout, selectors.EVENT_READ)
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise UsageError(f"the copy tracer on {self.node} sent no {event!r} within "
                                     f"{timeout:.0f} s{self._tail()}",
                                     "check the node's load (`bench lab status`), then retry")
                if not sel.select(timeout=min(remaining, 0.5)):
                    continue
                line = self.proc.stdout.readline()
                if line == "":
                    raise self._gone(f"it exited (code {self._wait(5)}) before {event!r}")
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if msg.get("event") == "error":
                    fix = msg.get("fix")
                    raise UsageError(f"on {self.node}: {msg.get('message')}"
                                     + (f" (fix there: {fix})" if fix else ""),
                                     fix or "see the message from the node")
                if msg.get("event") == event:
                    return msg
        finally:
            sel.close()

    def _wait(self, timeout: float) -> int | None:
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def _gone(self, what: str) -> UsageError:
        tail = self._tail()
        if "invalid choice: 'tracer'" in tail or "No module named bench.tracing.remote" in tail:
            return UsageError(f"the copybench on {self.node} has no remote tracer (older than "
                              "this one)", PROVISION_FIX)
        return UsageError(f"the copy tracer on {self.node} failed: {what}{tail}",
                          "see the node's message; `bench doctor --target ...` checks the node")

    def _tail(self, lines: int = 5) -> str:
        try:
            self._stderr.seek(0)
            tail = self._stderr.read().strip().splitlines()[-lines:]
        except (OSError, ValueError):
            return ""
        return (": " + " | ".join(tail)) if tail else ""

    def close(self, grace: float = 30.0) -> None:
        """End of stdin makes the node detach and exit; SIGTERM (over SSH: the session ends,
        which also ends the node's process by EOF/SIGHUP) only if it does not."""
        if self.proc.poll() is None:
            try:
                self.proc.stdin.close()
            except OSError:
                pass
            if self._wait(grace) is None:
                self.proc.terminate()
                if self._wait(5) is None:
                    self.proc.kill()
                    self.proc.wait()
        for f in (self.proc.stdin, self.proc.stdout, self._stderr):
            try:
                f.close()
            except (OSError, AttributeError):
                pass


@dataclass
class _Node:
    index: int
    name: str
    role: str
    argv: list[str]
    proc: _NodeProc | None = None
    ready: dict = field(default_factory=dict)


class RemoteTracer(Tracer):
    """One tracer per node, behind the one Tracer interface.

    `argv_for(side)` gives the command that starts `bench tracer` on that side's node
    (LinkPlacement.tracer_argv); `names` are the nodes' names (lab0, lab1)."""

    name = "remote"

    def __init__(self, argv_for, names: list[str], spec: str = "auto",
                 points: list[str] | None = None, survey: bool = False,
                 lifetime_s: float = DEFAULT_LIFETIME_S):
        self.spec = spec
        self.nodes = [_Node(SIDE_NODE[side], names[SIDE_NODE[side]], role, argv_for(side))
                      for role, side in ROLE_SIDE.items()]
        self.attached = False
        config = {"spec": spec, "points": points, "survey": survey, "bandwidth": survey,
                  "lifetime_s": lifetime_s}
        try:
            for n in self.nodes:            # start all first: the nodes select in parallel
                n.proc = _NodeProc(n.name, n.role, n.argv, config)
            for n in self.nodes:
                n.ready = n.proc.expect("ready", SURVEY_TIMEOUT_S if survey else READY_TIMEOUT_S)
        except BaseException:
            self._close()
            raise
        if survey:
            self._close()
        self.choices = [NodeChoice(n.name, n.role, c) for n in self.nodes
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

    def available(self) -> Availability:
        for n in self.nodes:
            av = n.ready.get("available") or {}
            if not av.get("ok"):
                return Availability(False, f"on {n.name}: {av.get('reason')}", av.get("fix", ""))
        return Availability(True, "; ".join(f"{n.name}: {n.ready['available'].get('reason')}"
                                            for n in self.nodes))

    def attach(self, pids: dict[str, int]) -> None:
        by_node = split_pids(pids)
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
        return merge(per_node, {n.name: [n.role] for n in self.nodes})

    def detach(self) -> None:
        """Every node detaches (and says so); then their processes end. Idempotent."""
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
        self._close()
        if errors:
            raise UsageError("could not confirm every node detached its tracer: "
                             + "; ".join(errors), "bench doctor --cleanup on the node(s)")

    def _close(self) -> None:
        for n in self.nodes:
            if n.proc is not None:
                n.proc.close()
                n.proc = None


if __name__ == "__main__":
    sys.exit(main())
