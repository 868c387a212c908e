"""RDMA devices for the rdma workloads: which device, port and GID index, and soft-RoCE set-up.

Pure parts read a sysfs tree given as a root (tests feed fixture trees):

  /sys/class/infiniband/DEV/ports/P/{state,link_layer,gids/I,gid_attrs/types/I,gid_attrs/ndevs/I}
  /sys/class/infiniband/DEV/parent      (soft devices: rxe, siw name their netdev there)

Policy (issue 9): a real RDMA NIC is used as it is, never reconfigured. Where none exists and the
kernel has `rdma_rxe`, the runner creates its own soft-RoCE link, named `cbrxe<pid>` so that `bench
doctor --cleanup` recognises a stale one (its runner gone), and removes it when the run ends.
"""

from __future__ import annotations

import os
import re
import subprocess
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from bench.errors import UsageError

SYS = Path("/sys")
OUR_LINK_RE = re.compile(r"^cbrxe(\d+)$")
ROCE_V2 = "RoCE v2"
ACTIVE = "ACTIVE"
SOFT_DRIVERS = ("rxe", "siw")


def our_link_name(pid: int | None = None) -> str:
    return f"cbrxe{os.getpid() if pid is None else pid}"


@dataclass(frozen=True)
class Gid:
    index: int
    gid: str
    type: str | None        # "RoCE v2", "IB/RoCE v1", None (IB, or unreadable)
    ndev: str | None

    @property
    def ipv4(self) -> str | None:
        """The IPv4 address of an IPv4-mapped GID (::ffff:a.b.c.d), else None."""
        g = self.gid.replace(":", "")
        if len(g) == 32 and g[:20] == "0" * 20 and g[20:24] == "ffff":
            return ".".join(str(int(g[i:i + 2], 16)) for i in range(24, 32, 2))
        return None


@dataclass(frozen=True)
class Port:
    device: str
    port: int
    state: str               # "ACTIVE", "DOWN", ...
    link_layer: str          # "Ethernet" | "InfiniBand"
    gids: tuple[Gid, ...] = ()
    parent: str | None = None    # soft devices: the netdev they run on

    @property
    def soft(self) -> bool:
        return self.parent is not None or self.device.startswith(SOFT_DRIVERS) or \
            bool(OUR_LINK_RE.match(self.device))

    @property
    def active(self) -> bool:
        return self.state == ACTIVE


@dataclass
class Choice:
    """What the agents and perftest use: device, port, GID index, and whether we made it."""

    device: str
    port: int
    gid_index: int | None        # None on InfiniBand (LID addressing)
    gid: str | None
    netdev: str | None
    link_layer: str
    soft: bool
    created: bool = False        # our soft-RoCE link, removed at the end of the run
    why: list[str] = field(default_factory=list)

    def to_json(self) -> dict:
        return asdict(self)

    def agent_config(self) -> dict:
        return {"rdma_device": self.device, "rdma_port": self.port,
                "rdma_gid_index": self.gid_index}


def _read(p: Path) -> str | None:
    try:
        return p.read_text().strip()
    except OSError:           # an empty GID slot's gid_attrs read fails with EINVAL
        return None


def ports(sys_root: Path = SYS) -> list[Port]:
    """Every RDMA port this kernel shows, in device-name order (ibv_get_device_list's order
    is the kernel's registration order; names sort the same way for rxe0, mlx5_0, ...)."""
    ib = sys_root / "class/infiniband"
    out = []
    if not ib.is_dir():
        return out
    for dev in sorted(ib.iterdir(), key=lambda p: p.name):
        parent = _read(dev / "parent")
        pdir = dev / "ports"
        if not pdir.is_dir():
            continue
        for p in sorted(pdir.iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0):
            state = (_read(p / "state") or "").split(":")[-1].strip()
            gids = []
            gdir = p / "gids"
            if gdir.is_dir():
                for g in sorted(gdir.iterdir(), key=lambda x: int(x.name)):
                    value = _read(g)
                    if not value or value.replace(":", "").strip("0") == "":
                        continue       # empty slot
                    gids.append(Gid(int(g.name), value, _read(p / "gid_attrs/types" / g.name),
                                    _read(p / "gid_attrs/ndevs" / g.name)))
            out.append(Port(dev.name, int(p.name), state, _read(p / "link_layer") or "",
                            tuple(gids), parent))
    return out


def port_to_json(p: Port) -> dict:
    return asdict(p)


def port_from_json(d: dict) -> Port:
    """A Port from another machine's `bench sysinfo` (its `rdma_ports`)."""
    return Port(d["device"], int(d["port"]), d.get("state", ""), d.get("link_layer", ""),
                tuple(Gid(int(g["index"]), g["gid"], g.get("type"), g.get("ndev"))
                      for g in d.get("gids", ())), d.get("parent"))


def choose_on_node(node_ports: list[Port], node: str, requested: str | None = None,
                   address: str | None = None) -> Choice:
    """A remote node's device, used as it is (real NIC first, else a soft-RoCE link already
    there, like the lab's rxe0): the runner never reconfigures another machine's RDMA."""
    try:
        c = choose(node_ports, requested, address=address)
    except UsageError as exc:
        raise UsageError(f"{node}: {exc.message}", exc.fix) from None
    if c is None:
        seen = ", ".join(f"{p.device}/{p.port} {p.state}" for p in node_ports) or "none"
        raise UsageError(f"{node}: no active RDMA port with a usable GID (have: {seen})",
                         no_device_fix())
    c.why.append(f"on {node}, as it is")
    return c


def pick_gid(port: Port, netdev: str | None = None, address: str | None = None) -> Gid | None:
    """The GID for RoCE v2 on the right netdev: the entry of type "RoCE v2" on `netdev` (the
    soft device's parent when not given) whose IPv4 is `address`; else any IPv4-mapped RoCE v2
    entry on that netdev; else any RoCE v2 entry there (IPv6). None on InfiniBand or if the
    netdev has no RoCE v2 GID yet (no address). Never a hard-coded index: the table's order
    depends on the driver, the addresses and the order they were added."""
    netdev = netdev or port.parent
    v2 = [g for g in port.gids if g.type == ROCE_V2 and (netdev is None or g.ndev == netdev)]
    for pref in (lambda g: address is not None and g.ipv4 == address,
                 lambda g: g.ipv4 is not None, lambda g: True):
        for g in v2:
            if pref(g):
                return g
    return None


def choose(all_ports: list[Port], requested: str | None = None, address: str | None = None,
           netdev: str | None = None) -> Choice | None:
    """Device, port and GID for a run. `requested`: --rdma-device NAME[:PORT]; else the first
    ACTIVE port, real devices before soft ones. None: nothing usable (the caller decides
    whether to create a soft-RoCE link or skip). A requested device that cannot work raises."""
    if requested:
        name, _, pnum = requested.partition(":")
        cand = [p for p in all_ports if p.device == name and (not pnum or str(p.port) == pnum)]
        if not cand:
            have = ", ".join(sorted({p.device for p in all_ports})) or "none"
            raise UsageError(f"--rdma-device {requested}: no such RDMA device/port (have: {have})",
                             "pick one from `ibv_devices` / `rdma link show`, or leave "
                             "--rdma-device out")
        active = [p for p in cand if p.active]
        if not active:
            raise UsageError(f"--rdma-device {requested}: port state {cand[0].state or '?'}, not "
                             "ACTIVE", "bring its netdev up (`ip link set DEV up`) or pick "
                             "another device")
        return _choice(active[0], address, netdev, strict=True)
    active = [p for p in all_ports if p.active]
    for p in sorted(active, key=lambda p: p.soft):   # stable: real NICs first
        c = _choice(p, address, netdev, strict=False)
        if c is not None:
            return c
    return None


def _choice(p: Port, address, netdev, strict: bool) -> Choice | None:
    if p.link_layer == "InfiniBand":
        return Choice(p.device, p.port, None, None, None, p.link_layer, p.soft,
                      why=["InfiniBand link layer: LID addressing, no GID index"])
    g = pick_gid(p, netdev, address)
    if g is None:
        if strict:
            raise UsageError(f"{p.device} port {p.port}: no RoCE v2 GID"
                             + (f" on {netdev or p.parent}" if (netdev or p.parent) else ""),
                             "give its netdev an IPv4 address (the GID table follows the "
                             "netdev's addresses)")
        return None
    return Choice(p.device, p.port, g.index, g.gid, g.ndev, p.link_layer, p.soft,
                  why=[f"GID {g.index} = {g.gid} ({g.type} on {g.ndev})"])


# -- soft-RoCE links -------------------------------------------------------------------------

def rxe_available(proc: Path = Path("/proc"), lib_modules: Path = Path("/lib/modules"),
                  release: str | None = None) -> tuple[bool, str]:
    """Can this kernel make a soft-RoCE link? (rdma_rxe loaded, or a module file to load)."""
    try:
        if "rdma_rxe " in (proc / "modules").read_text():
            return True, "rdma_rxe loaded"
    except OSError:
        return False, "no loadable modules (no /proc/modules) and no RDMA device"
    release = release or os.uname().release
    mdir = lib_modules / release
    if any(mdir.glob("kernel/drivers/infiniband/sw/rxe/rdma_rxe.ko*")):
        return True, "rdma_rxe module available"
    return False, f"this kernel ({release}) has no rdma_rxe module"


def no_device_fix(netdev_hint: str = "eth0") -> str:
    return ("`bench lab up` and `--target lab` (a VM with soft-RoCE); on a kernel with rdma_rxe: "
            f"`modprobe rdma_rxe && rdma link add rxe0 type rxe netdev {netdev_hint}`, or let "
            "`bench run` create its own on the veth topology (as root)")


def _rdma(argv: list[str], netns: str | None = None, timeout: float = 30) -> \
        subprocess.CompletedProcess:
    prefix = ["ip", "netns", "exec", netns] if netns else []
    return subprocess.run(prefix + ["rdma", *argv], capture_output=True, text=True,
                          timeout=timeout)


class SoftRoce:
    """Our soft-RoCE link on one netdev: created on `add()`, always removed on `remove()`.

    `netns`: the namespace the netdev lives in (`rdma link add` looks the netdev up by name in
    the caller's namespace). See DESIGN.md "RDMA" for which netdev 6.1's rxe works on."""

    def __init__(self, netdev: str, netns: str | None = None, name: str | None = None,
                 sys_root: Path = SYS):
        self.netdev, self.netns = netdev, netns
        self.name = name or our_link_name()
        self.sys_root = sys_root
        self.created = False

    def add(self, timeout: float = 20.0) -> None:
        subprocess.run(["modprobe", "rdma_rxe"], capture_output=True, timeout=60)
        existing = {p.device: p for p in ports(self.sys_root)}
        if self.name in existing:
            raise UsageError(f"RDMA link {self.name} already exists",
                             f"`rdma link delete {self.name}` (or `bench doctor --cleanup` if "
                             "its run is gone)")
        on_netdev = [p.device for p in existing.values() if p.parent == self.netdev]
        if on_netdev:
            raise UsageError(f"{self.netdev} already has a soft-RoCE link ({on_netdev[0]}); rxe "
                             "allows one per netdev", f"use it: --rdma-device {on_netdev[0]}, "
                             f"or `rdma link delete {on_netdev[0]}`")
        res = _rdma(["link", "add", self.name, "type", "rxe", "netdev", self.netdev], self.netns)
        if res.returncode != 0:
            raise UsageError(f"rdma link add {self.name} type rxe netdev {self.netdev} failed: "
                             f"{(res.stderr or res.stdout).strip()[-300:]}",
                             no_device_fix(self.netdev))
        self.created = True
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:     # the port goes ACTIVE and the GIDs fill in
            mine = [p for p in ports(self.sys_root) if p.device == self.name]
            if mine and mine[0].active and pick_gid(mine[0], self.netdev):
                return
            time.sleep(0.2)
        self.remove()
        raise UsageError(f"soft-RoCE link {self.name} on {self.netdev}: port not ACTIVE with a "
                         f"RoCE v2 GID within {timeout:.0f} s", "check `rdma link show` and the "
                         "netdev's state and address")

    def remove(self) -> None:
        if not self.created:
            return
        _rdma(["link", "delete", self.name])
        self.created = False


def stale_links(names: list[str], alive=lambda pid: os.path.exists(f"/proc/{pid}")) -> list[str]:
    """Our soft-RoCE links whose runner is gone (pure, for `bench doctor --cleanup`)."""
    out = []
    for n in names:
        m = OUR_LINK_RE.match(n)
        if m and not alive(int(m.group(1))):
            out.append(n)
    return out


def remove_stale(sys_root: Path = SYS) -> list[str]:
    gone = []
    for name in stale_links(sorted({p.device for p in ports(sys_root)})):
        if _rdma(["link", "delete", name]).returncode == 0:
            gone.append(name)
    return gone


def memlock_error(need: int) -> str | None:
    """Why verbs registration will fail here (RLIMIT_MEMLOCK below what the MRs pin), or None.
    Root has CAP_IPC_LOCK, which lifts the limit."""
    import resource
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft == resource.RLIM_INFINITY or soft >= need:
        return None
    try:
        if os.geteuid() == 0:
            return None
    except AttributeError:
        pass
    return (f"RLIMIT_MEMLOCK is {soft} B, the memory regions need {need} B: registration would "
            "fail")


class Devices:
    """The runner's RDMA devices for one run: chosen once per topology, our soft-RoCE links
    removed by `release()` (always called, like the namespaces)."""

    def __init__(self, requested: str | None = None, sys_root: Path = SYS):
        self.requested = requested
        self.sys_root = sys_root
        self._links: list[SoftRoce] = []
        self._carriers: list[Carrier] = []
        self._chosen: dict[str, dict[str, Choice]] = {}
        self._failed: dict[str, UsageError] = {}

    def for_endpoints(self, ep) -> dict[str, Choice]:
        """{"tx": Choice, "rx": Choice} for a topology's endpoints (cached per kind)."""
        if ep.kind in self._failed:          # one attempt per run: later cases fail alike
            raise self._failed[ep.kind]
        if ep.kind not in self._chosen:
            try:
                self._chosen[ep.kind] = self._choose(ep)
            except UsageError as exc:
                self._failed[ep.kind] = exc
                raise
        return self._chosen[ep.kind]

    def _choose(self, ep) -> dict[str, Choice]:
        found = ports(self.sys_root)
        if self.requested:
            c = choose(found, self.requested)
            return {"tx": c, "rx": c}
        real = choose([p for p in found if not p.soft])
        if real is not None:                  # a real NIC, used as it is
            return {"tx": real, "rx": real}
        ok, why = rxe_available()
        if ok and os.geteuid() == 0 and ep.kind == "veth":
            return self._soft_roce(ep)
        soft = choose(found)
        if soft is not None:                  # someone's soft-RoCE link (the lab's rxe0)
            return {"tx": soft, "rx": soft}
        raise UsageError("no RDMA device here and no way to make one"
                         + (f" ({why})" if not ok else
                            " (soft-RoCE set-up needs root and the veth topology)"),
                         no_device_fix())

    def _soft_roce(self, ep) -> dict[str, Choice]:
        """Our soft-RoCE link on the topology we built. Kernel 6.1's rxe works only on a netdev
        of the initial network namespace (its UDP port 4791 socket and route lookups live
        there): on a veth end inside our namespaces every WR fails at once (IBV_WC_LOC_QP_OP_ERR,
        measured in the lab). So the run adds a carrier veth, one end in the initial namespace
        (the rxe link's netdev, a 198.19.0.0/16 address of its own) and the peer in the
        receiver's namespace (a veth has carrier only while its peer is up); both agents use
        that one device, and rxe loops the packets back inside it."""
        carrier = Carrier(os.getpid(), ep.rx_netns)
        self._carriers.append(carrier)
        carrier.add()
        link = SoftRoce(carrier.ifname, None, sys_root=self.sys_root)
        self._links.append(link)
        link.add()
        mine = [p for p in ports(self.sys_root) if p.device == link.name]
        c = _choice(mine[0], carrier.address, carrier.ifname, strict=True)
        c.created = True
        c.why.append(f"soft-RoCE link {link.name} created by this run on {carrier.ifname} "
                     f"({carrier.address}, initial namespace; peer {carrier.peer} in "
                     f"{ep.rx_netns}); both agents on it (rxe loopback); removed at the end")
        return {"tx": c, "rx": c}

    def release(self) -> list[str]:
        gone = []
        for link in self._links:
            if link.created:
                link.remove()
                gone.append(link.name)
        for carrier in self._carriers:
            carrier.remove()
        self._links.clear()
        self._carriers.clear()
        self._chosen.clear()
        return gone


class Carrier:
    """The veth that carries our soft-RoCE link: `cb<tag>q` in the initial namespace with
    198.19.X.Y/30 (tag-derived, so concurrent runs do not share an address), peer `cb<tag>p`
    in the receiver's namespace. Removing the namespace removes the pair; `remove()` does it
    explicitly, and `bench doctor --cleanup` removes a stale namespace (and with it the pair)."""

    def __init__(self, tag: int, peer_netns: str | None):
        self.ifname, self.peer = f"cb{tag}q", f"cb{tag}p"
        self.peer_netns = peer_netns
        n = tag % 16384
        base = f"198.19.{n >> 6}.{(n & 63) * 4}"
        self.address = base.rsplit(".", 1)[0] + f".{(n & 63) * 4 + 1}"
        self.peer_address = base.rsplit(".", 1)[0] + f".{(n & 63) * 4 + 2}"
        self.created = False

    def add(self) -> None:
        steps = [["ip", "link", "add", self.ifname, "type", "veth", "peer", "name", self.peer]]
        self.created = True
        peer_ip = ["ip"] + (["-n", self.peer_netns] if self.peer_netns else [])
        if self.peer_netns:
            steps.append(["ip", "link", "set", self.peer, "netns", self.peer_netns])
        steps += [["ip", "addr", "add", f"{self.address}/30", "dev", self.ifname],
                  peer_ip + ["addr", "add", f"{self.peer_address}/30", "dev", self.peer],
                  ["ip", "link", "set", self.ifname, "up"],
                  peer_ip + ["link", "set", self.peer, "up"]]
        for argv in steps:
            res = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            if res.returncode != 0:
                self.remove()
                raise UsageError(f"soft-RoCE carrier veth: `{' '.join(argv)}` failed: "
                                 f"{res.stderr.strip()[-200:]}", "run as root; `bench doctor "
                                 "--cleanup` removes leftovers of killed runs")

    def remove(self) -> None:
        if self.created:
            subprocess.run(["ip", "link", "del", self.ifname], capture_output=True, timeout=30)
            self.created = False
