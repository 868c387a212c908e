"""Where the agents talk: host loopback, or two network namespaces joined by a veth pair.

`veth` (the default) makes data cross a device as on a wire, between 198.18.0.1 and .2 — the
RFC 2544 benchmarking range, and only inside namespaces we create. Names carry the creating
process's pid (`cb<pid>tx`, `cb<pid>rx`) so `bench doctor --cleanup` can tell a stale one from a
live one.

`KIND-mtuN` (`veth-mtu61492`, `loopback-mtu61492`) is the same with the MTU set to N inside our
namespaces: both veth ends, or the `lo` of a namespace of our own (`cb<pid>lo`, both agents in it)
— never the host's `lo`. TCP_ZEROCOPY_RECEIVE maps only whole pages, so its set-up gives every
segment a page-multiple payload (N = 15 x 4096 + 20 IPv4 + 32 TCP with timestamps = 61492; the
kernel's tcp_mmap example says 61512 for IPv6's 40-byte header). The set-up goes with the
namespaces.

On a remote node the topology is made by `bench topology` (`serve` below), a JSON-lines helper
the runner starts over SSH (bench.placement.NodePlacement):
  runner -> node  {"kind": "veth" | "loopback", "lifetime_s": 14400}  (idle limit: every
                  command re-arms it)
  node -> runner  {"event": "ready", "pid", "endpoints": {Endpoints}, "snapshot": {...}}
                  or {"event": "error", "message", "fix"} (then it exits 2)
  runner -> node  {"cmd": "snapshot"} -> {"event": "snapshot", "snapshot": {...}}
                  {"cmd": "down"}     -> {"event": "down"}, then exits 0
It removes what it made in every case: "down", end of input (the runner or SSH died: exit 3),
SIGTERM/SIGINT/SIGHUP (128+N), its lifetime watchdog (exit 4). Even a SIGKILL leaves only
namespaces named after a dead pid, which `bench doctor --cleanup` on the node removes.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sys
from dataclasses import asdict, dataclass

from bench import nsconfig
from bench.errors import UsageError
from bench.procs import EXIT_RUNNER_GONE, Stop, config_line, emitter, held, install_handlers

STALE_RE = re.compile(r"^cb(\d+)(tx|rx|lo)$")
TX_ADDR, RX_ADDR, PREFIX = "198.18.0.1", "198.18.0.2", 30
BASE_KINDS = ("loopback", "veth")
KIND_RE = re.compile(r"^(loopback|veth)(?:-mtu(\d+))?$")
MIN_MTU, MAX_MTU = 68, 65535      # IPv4's minimum; veth's largest (ETH_MAX_MTU)


def parse_kind(kind: str) -> tuple[str, int | None]:
    """("veth", 61492) for "veth-mtu61492", ("loopback", None) for "loopback"; UsageError
    naming the fix for anything else (pure: the plan checks suites with it)."""
    m = KIND_RE.match(kind or "")
    if not m:
        raise UsageError(f"unknown topology {kind!r}",
                         "use loopback or veth, optionally with an MTU set inside our "
                         "namespaces: loopback-mtu61492, veth-mtu61492")
    mtu = int(m.group(2)) if m.group(2) else None
    if mtu is not None and not MIN_MTU <= mtu <= MAX_MTU:
        raise UsageError(f"topology {kind}: MTU {mtu} out of range",
                         f"give an MTU between {MIN_MTU} and {MAX_MTU}, e.g. {m.group(1)}-mtu61492")
    return m.group(1), mtu


@dataclass
class Endpoints:
    kind: str
    tx_netns: str | None
    rx_netns: str | None
    tx_addr: str
    rx_addr: str
    tx_ifname: str | None = None
    rx_ifname: str | None = None


class Topology:
    """Context manager: created on enter, always removed on exit."""

    def __init__(self, kind: str, tag: int | None = None, rps_cpu: int | None = None):
        self.kind = kind
        self.base, self.mtu = parse_kind(kind) if KIND_RE.match(kind or "") else (kind, None)
        self.tag = os.getpid() if tag is None else tag
        # --cpus S,R,Q: the receiving veth end's softirq on CPU Q (RPS); None leaves it where
        # the kernel puts it (on veth: the sending CPU). Never applied to the host's loopback.
        self.rps_cpu = rps_cpu
        self._steered: dict = {}
        self.endpoints: Endpoints | None = None
        self._created_ns: list[str] = []

    def __enter__(self) -> Endpoints:
        try:
            self.endpoints = self.setup()
        except BaseException:
            self.teardown()
            raise
        return self.endpoints

    def __exit__(self, *exc) -> None:
        self.teardown()

    def check_privileges(self) -> None:
        if (self.base == "veth" or self.mtu is not None) and os.geteuid() != 0:
            raise UsageError(f"the {self.kind} topology creates network namespaces and needs root",
                             "run as root (sudo), or use --topology loopback")

    def setup(self) -> Endpoints:
        if self.kind == "loopback":
            return Endpoints("loopback", None, None, "127.0.0.1", "127.0.0.1")
        if self.base not in BASE_KINDS:
            parse_kind(self.kind)         # raises, naming the kinds there are
        self.check_privileges()
        from pyroute2 import IPRoute, netns
        if self.base == "loopback":      # loopback-mtuN: a namespace's own lo, never the host's
            ns = f"cb{self.tag}lo"
            netns.create(ns)
            self._created_ns.append(ns)
            self._lo_state = nsconfig.configure_loopback(ns, self.mtu)
            return Endpoints(self.kind, ns, ns, "127.0.0.1", "127.0.0.1")
        tx_ns, rx_ns = f"cb{self.tag}tx", f"cb{self.tag}rx"
        tx_if, rx_if = f"cb{self.tag}t", f"cb{self.tag}r"
        for name in (tx_ns, rx_ns):
            netns.create(name)
            self._created_ns.append(name)
        with IPRoute() as ipr:
            ipr.link("add", ifname=tx_if, kind="veth", peer=rx_if)
            for ifname, ns in ((tx_if, tx_ns), (rx_if, rx_ns)):
                ipr.link("set", index=ipr.link_lookup(ifname=ifname)[0], net_ns_fd=ns)
        self._state = {"kind": "veth"}
        for side, ns, ifname, addr in (("tx", tx_ns, tx_if, TX_ADDR), ("rx", rx_ns, rx_if, RX_ADDR)):
            for key, value in nsconfig.configure(ns, ifname, f"{addr}/{PREFIX}",
                                                 mtu=self.mtu).items():
                self._state[f"{side}_{key}"] = value
        if self.rps_cpu is not None:
            self._steered = {f"rx_{k}": v for k, v in
                             nsconfig.steer_receive(rx_ns, rx_if, self.rps_cpu).items()}
        return Endpoints(self.kind, tx_ns, rx_ns, TX_ADDR, RX_ADDR, tx_if, rx_if)

    def teardown(self) -> None:
        # Removing a namespace destroys the veth end inside it, and with it the pair.
        if not self._created_ns:
            return
        from pyroute2 import netns
        for name in list(self._created_ns):
            try:
                netns.remove(name)
            except OSError:
                pass
            self._created_ns.remove(name)

    def snapshot(self) -> dict:
        """Network state worth keeping next to the numbers: MTU and offloads per interface."""
        ep = self.endpoints
        if ep is not None and self.base == "loopback" and self.mtu is not None:
            out = {"kind": self.kind, "netns": ep.rx_netns, "mtu_set": self.mtu,
                   **nsconfig.state(ep.rx_netns, "lo")}
            if self.rps_cpu is not None:
                out["rps_note"] = "receive softirq not steered: loopback has no receive queue"
            return out
        if ep is None or self.base != "veth":
            out = {"kind": self.kind, "mtu": _loopback_mtu()}
            if self.rps_cpu is not None:
                out["rps_note"] = "receive softirq not steered: loopback is the host's device"
            return out
        out = {"kind": self.kind, **self._steered,
               **({"mtu_set": self.mtu} if self.mtu is not None else {})}
        for side, ns, ifname in (("tx", ep.tx_netns, ep.tx_ifname), ("rx", ep.rx_netns, ep.rx_ifname)):
            for key, value in nsconfig.state(ns, ifname).items():
                out[f"{side}_{key}"] = value
        return out


def _loopback_mtu() -> int | None:
    try:
        return int(open("/sys/class/net/lo/mtu").read())
    except OSError:
        return None


def stale_namespaces(names: list[str], alive=lambda pid: os.path.exists(f"/proc/{pid}")) -> list[str]:
    """Our namespaces whose creating runner is gone (pure, for `bench doctor --cleanup`)."""
    stale = []
    for n in names:
        m = STALE_RE.match(n)
        if m and not alive(int(m.group(1))):
            stale.append(n)
    return stale


def remove_stale() -> list[str]:
    from pyroute2 import netns
    gone = stale_namespaces(netns.listnetns())
    for n in gone:
        netns.remove(n)
    return gone


# == on a node: `bench topology` ===============================================================
def serve(rfile, wfile, make=Topology) -> int:
    """One config line, then the topology lives until "down", end of input, a signal or the
    watchdog; it is removed in every case. Returns the exit code."""
    emit = emitter(wfile)
    cfg = config_line(rfile, emit, '{"kind": "veth"}')
    if isinstance(cfg, int):
        return cfg
    kind = cfg.get("kind")
    if kind is None:
        emit("error", message=f"config without a kind: {cfg}", fix='{"kind": "veth"}')
        return 2
    idle = float(cfg.get("lifetime_s") or 0)      # re-armed by every command: an idle limit
    signal.setitimer(signal.ITIMER_REAL, idle)
    rps = cfg.get("rps_cpu")
    topo = make(kind, rps_cpu=None if rps is None else int(rps))

    def snapshot() -> dict:
        try:
            return topo.snapshot()
        except (OSError, RuntimeError) as exc:    # a snapshot is context, never fatal
            return {"kind": kind, "error": str(exc)}

    try:
        try:
            ep = topo.__enter__()           # removes whatever it made if it fails half-way
        except UsageError as exc:
            emit("error", message=exc.message, fix=exc.fix)
            return 2
        except (OSError, RuntimeError) as exc:
            emit("error", message=f"creating the {kind} topology failed: {exc}",
                 fix="`bench doctor --cleanup` on the node, then retry")
            return 2
        emit("ready", pid=os.getpid(), endpoints=asdict(ep), snapshot=snapshot())
        while True:
            line = rfile.readline()
            if not line:
                return EXIT_RUNNER_GONE
            signal.setitimer(signal.ITIMER_REAL, idle)
            try:
                cmd = json.loads(line).get("cmd")
            except (ValueError, AttributeError):
                continue
            if cmd == "snapshot":
                emit("snapshot", snapshot=snapshot())
            elif cmd == "down":
                held(topo.teardown)
                emit("down")
                return 0
            else:
                emit("error", message=f"unknown command {cmd!r}", fix="snapshot or down")
    except Stop as stop:
        return stop.code
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        held(topo.teardown)


def main() -> int:
    install_handlers()
    try:
        return serve(sys.stdin, sys.stdout)
    except Stop as stop:          # a signal before serve was in place
        return stop.code


if __name__ == "__main__":
    sys.exit(main())
