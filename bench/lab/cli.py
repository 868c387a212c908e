"""`bench lab up|down|status|ssh|destroy`.

bench/cli.py calls add_parser(subparsers); the handler is set as `func` and
takes the parsed args, returns an exit code, and raises UsageError for bad input.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys

from bench.errors import UsageError, report
from bench.lab import manager, sshkeys
from bench.lab.paths import lab_paths
from bench.lab.progress import Progress


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser(
        "lab", help="local QEMU lab VM(s) with kprobes, modules and soft-RoCE",
        description="A Debian 12 lab VM (or two joined by a virtual link) under QEMU, "
                    "provisioned by the project's Ansible roles. Cache: $COPYBENCH_CACHE "
                    "(default /var/cache/copybench).")
    sub = p.add_subparsers(dest="lab_command", metavar="COMMAND", required=True)
    up = sub.add_parser("up", help="build the image if needed, boot, provision")
    up.add_argument("--nodes", type=int, default=1, help="1, or 2 joined by a link on eth1")
    up.add_argument("--memory", type=int, default=1536, metavar="MiB", help="per node")
    up.add_argument("--cpus", type=int, default=None, metavar="N",
                    help="vCPUs per node (default: this machine's CPUs shared out among the "
                         "nodes, 1 to 4)")
    up.add_argument("--accel", default="auto", choices=["auto", "kvm", "tcg"],
                    help="auto boots a KVM probe guest and falls back to TCG")
    up.add_argument("--no-provision", action="store_true", help="skip Ansible")
    up.add_argument("--reprovision", action="store_true",
                    help="run Ansible even where the nodes hold this provisioning's key")
    sub.add_parser("down", help="power off the VMs (disks are kept)")
    st = sub.add_parser("status", help="is the lab running, on which ports")
    st.add_argument("--json", action="store_true")
    ssh = sub.add_parser("ssh", help="shell or command on a node: ssh [NODE] [-- CMD...]")
    ssh.add_argument("rest", nargs=argparse.REMAINDER, metavar="[NODE] [-- CMD...]")
    de = sub.add_parser("destroy", help="stop the lab and delete its disks and state")
    de.add_argument("--images", action="store_true",
                    help="also delete cached images, wheels and bundles")
    p.set_defaults(func=run)
    return p


def split_ssh_args(rest: list[str], node_names: list[str]) -> tuple[str, list[str]]:
    """[NODE] [-- CMD...] -> (node name, command argv)."""
    rest = list(rest)
    node = node_names[0] if node_names else "lab0"
    if rest and rest[0] != "--":
        node = rest.pop(0)
        if node.isdigit():
            node = f"lab{node}"
        if node not in node_names:
            raise UsageError(f"no lab node {node!r}", "use one of: " + ", ".join(node_names))
    if rest and rest[0] == "--":
        rest.pop(0)
    return node, rest


def run(args: argparse.Namespace) -> int:
    paths = lab_paths()
    progress = Progress()
    cmd = args.lab_command
    if cmd == "up":
        st = manager.up(paths, nodes=args.nodes, memory_mib=args.memory, accel=args.accel,
                        provision=not args.no_provision, progress=progress,
                        reprovision=args.reprovision, cpus=args.cpus)
        _print_status(st)
        return 0
    if cmd == "down":
        manager.down(paths, progress)
        return 0
    if cmd == "status":
        st = manager.status(paths)
        print(json.dumps(st, indent=2)) if args.json else _print_status(st)
        return 0
    if cmd == "ssh":
        st = manager.status(paths)
        running = [n for n in st["nodes"] if n["running"]]
        if not running:
            raise UsageError("the lab is not running", "run `bench lab up`")
        name, command = split_ssh_args(args.rest, [n["name"] for n in running])
        node = next(n for n in running if n["name"] == name)
        interactive = not command and sys.stdin.isatty()
        argv = sshkeys.ssh_argv("127.0.0.1", node["ssh_port"], "root", paths.key,
                                tty=interactive, known_hosts=None)
        if command:
            import shlex
            argv.append(shlex.join(command))
        return subprocess.run(argv).returncode
    if cmd == "destroy":
        manager.destroy(paths, images=args.images, progress=progress)
        return 0
    raise UsageError(f"unknown lab command {cmd!r}", "see `bench lab --help`")


def _print_status(st: dict) -> None:
    if not st["nodes"]:
        print(f"lab: not set up (state in {st['state']})")
        return
    print(f"lab: {'running' if st['running'] else 'not running'}"
          + (f" ({st['accel']})" if st.get("accel") else ""))
    for n in st["nodes"]:
        link = f", eth1 {n['link_addr']}" if n.get("link_addr") else ""
        print(f"  {n['name']}: {'up' if n['running'] else 'down'}, {n.get('cpus', 1)} vCPU(s), "
              f"ssh root@127.0.0.1 -p {n['ssh_port']}{link}")
    if st["running"]:
        print(f"  inventory: {st['inventory']}  key: {st['key']}")


def main(argv: list[str] | None = None) -> int:
    """`python -m bench.lab.cli ...`: `bench lab ...` without the rest of the CLI."""
    parser = argparse.ArgumentParser(prog="bench")
    add_parser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except UsageError as e:
        return report(e)
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
