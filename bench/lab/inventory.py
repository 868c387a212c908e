"""Ansible INI inventories: writing the lab's, reading users' for `--target`.

Only the INI subset our targets need is read: `[group]` host lines with
key=value variables, `[group:vars]` and `[all:vars]`. Anything fancier is
refused with a message rather than half-understood.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

from bench.errors import UsageError


@dataclass(frozen=True)
class Host:
    name: str
    address: str
    port: int = 22
    user: str | None = None
    key: Path | None = None
    vars: dict[str, str] = field(default_factory=dict, compare=False, hash=False)


def render_lab_inventory(nodes: list[dict], key: Path) -> str:
    """nodes: [{"name", "ssh_port", "rdma_netdev", "link_addr"?}]."""
    lines = ["# Written by `bench lab up`; regenerated on every up.", "[lab]"]
    for n in nodes:
        hv = {"ansible_host": "127.0.0.1", "ansible_port": str(n["ssh_port"]),
              "rdma_netdev": n["rdma_netdev"]}
        if n.get("link_addr"):
            hv["link_addr"] = n["link_addr"]
        lines.append(n["name"] + " " + " ".join(f"{k}={v}" for k, v in hv.items()))
    lines += [
        "",
        "[lab:vars]",
        "ansible_user=root",
        f"ansible_ssh_private_key_file={key}",
        "ansible_python_interpreter=/usr/bin/python3",
        "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'",
        # The lab VM has no route to any mirror: everything is baked into the image.
        "copybench_offline=true",
        # bench shares one SSH connection per node for all of a run's sessions (SshTarget).
        "copybench_ssh_max_sessions=64",
        "",
    ]
    return "\n".join(lines)


def write_inventory(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    tmp.replace(path)
    return path


def _kv(tokens: list[str], where: str) -> dict[str, str]:
    out = {}
    for t in tokens:
        if "=" not in t:
            raise UsageError(f"{where}: expected key=value, got {t!r}",
                             "write host variables as key=value")
        k, v = t.split("=", 1)
        out[k] = v
    return out


def parse_inventory(text: str, source: str = "inventory") -> list[Host]:
    """Hosts in file order, each with its own, its groups' and all:vars merged."""
    groups: dict[str, list[str]] = {}
    group_vars: dict[str, dict[str, str]] = {}
    host_vars: dict[str, dict[str, str]] = {}
    order: list[str] = []
    section, kind = "ungrouped", "hosts"
    for lineno, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        where = f"{source}:{lineno}"
        if line.startswith("["):
            if not line.endswith("]"):
                raise UsageError(f"{where}: bad section header {line!r}", "use [group]")
            name = line[1:-1]
            section, _, kind = name.partition(":")
            kind = kind or "hosts"
            if kind not in ("hosts", "vars", "children"):
                raise UsageError(f"{where}: unknown section kind {kind!r}",
                                 "use [group], [group:vars] or [group:children]")
            continue
        try:
            tokens = shlex.split(line, comments=True)
        except ValueError as e:
            raise UsageError(f"{where}: {e}", "fix the quoting") from None
        if kind == "vars":
            group_vars.setdefault(section, {}).update(_kv(tokens, where))
        elif kind == "hosts":
            name = tokens[0]
            if "[" in name:
                raise UsageError(f"{where}: host ranges like {name!r} are not supported",
                                 "list the hosts one per line")
            groups.setdefault(section, []).append(name)
            host_vars.setdefault(name, {}).update(_kv(tokens[1:], where))
            if name not in order:
                order.append(name)
    if text.lstrip().startswith(("---", "all:")):
        raise UsageError(f"{source} looks like a YAML inventory", "use an INI inventory")
    hosts = []
    for name in order:
        merged = dict(group_vars.get("all", {}))
        for g, members in groups.items():
            if name in members:
                merged.update(group_vars.get(g, {}))
        merged.update(host_vars[name])
        try:
            port = int(merged.get("ansible_port", "22"))
        except ValueError:
            raise UsageError(f"{source}: host {name}: ansible_port is not a number",
                             "set ansible_port=22 or another port number") from None
        key = merged.get("ansible_ssh_private_key_file")
        hosts.append(Host(name=name, address=merged.get("ansible_host", name), port=port,
                          user=merged.get("ansible_user"), key=Path(key) if key else None,
                          vars=merged))
    if not hosts:
        raise UsageError(f"{source} lists no hosts", "add at least one host line under [group]")
    return hosts


def parse_host_list(spec: str) -> list[Host]:
    """'a,root@b,c:2222' -> hosts; user@ and :port are optional."""
    hosts = []
    for item in (s.strip() for s in spec.split(",")):
        if not item:
            continue
        user, _, hostport = item.rpartition("@")
        host, _, port = hostport.partition(":")
        if not host or (port and not port.isdigit()):
            raise UsageError(f"bad host {item!r} in {spec!r}", "use [user@]host[:port],...")
        hosts.append(Host(name=host, address=host, port=int(port) if port else 22,
                          user=user or None))
    if not hosts:
        raise UsageError(f"no hosts in {spec!r}", "use [user@]host[:port],...")
    return hosts


def load_hosts(target: str) -> list[Host]:
    """An inventory file path or a comma-separated host list."""
    path = Path(target).expanduser()
    if path.is_file():
        return parse_inventory(path.read_text(), str(path))
    looks_like_path = "/" in target or path.suffix in (".ini", ".cfg", ".yml", ".yaml", ".txt")
    if looks_like_path or path.exists():
        raise UsageError(f"inventory {target} does not exist or is not a file",
                         "pass an existing INI inventory (see ansible/inventory.example.ini) "
                         "or a host list like root@host1,root@host2")
    return parse_host_list(target)
