"""The lab's state: one JSON file naming its nodes (ports, disks, pid files), and what of it
is running. Read by the lifecycle (bench/lab/manager.py) and by `--target lab`
(bench/lab/target.py) alike."""

from __future__ import annotations

import json
from pathlib import Path

from bench.atomic import write_text
from bench.lab import qemu
from bench.lab.paths import LabPaths


def load_state(paths: LabPaths) -> dict | None:
    try:
        return json.loads(paths.state_file.read_text())
    except (OSError, ValueError):
        return None


def save_state(paths: LabPaths, state: dict) -> None:
    write_text(paths.state_file, json.dumps(state, indent=2) + "\n")


def node_from_state(n: dict) -> qemu.NodeSpec:
    link = qemu.Link(**n["link"]) if n.get("link") else None
    return qemu.NodeSpec(index=n["index"], ssh_port=n["ssh_port"], overlay=Path(n["overlay"]),
                         console=Path(n["console"]), pidfile=Path(n["pidfile"]),
                         memory_mib=n["memory_mib"], cpus=n.get("cpus", 1), link=link)


def node_to_state(node: qemu.NodeSpec) -> dict:
    return {"index": node.index, "name": node.name, "ssh_port": node.ssh_port,
            "overlay": str(node.overlay), "console": str(node.console),
            "pidfile": str(node.pidfile), "memory_mib": node.memory_mib, "cpus": node.cpus,
            "link": {"mode": node.link.mode, "port": node.link.port} if node.link else None,
            "link_addr": node.eth1_addr,
            "rdma_netdev": "eth1" if node.link else "eth0"}


def running_nodes(state: dict | None) -> list[dict]:
    if not state:
        return []
    return [n for n in state["nodes"]
            if qemu.running_pid(Path(n["pidfile"]), f"copybench-{n['name']}")]


def status(paths: LabPaths) -> dict:
    state = load_state(paths)
    if not state:
        return {"running": False, "nodes": [], "state": str(paths.state)}
    alive = {n["name"] for n in running_nodes(state)}
    nodes = [{"name": n["name"], "running": n["name"] in alive, "ssh_port": n["ssh_port"],
              "cpus": n.get("cpus", 1), "memory_mib": n.get("memory_mib"),
              "link_addr": n.get("link_addr"), "console": n["console"]}
             for n in state["nodes"]]
    return {"running": bool(alive) and len(alive) == len(nodes), "nodes": nodes,
            "accel": state.get("accel"), "image": state.get("image"),
            "inventory": str(paths.inventory), "key": str(paths.key),
            "state": str(paths.state)}
