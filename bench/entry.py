"""The `bench` command's entry point.

Node commands are what a runner starts on a node over SSH, several times per sample: the
agents, the copy tracer, the topology, iperf3 in a namespace, the node's metadata. They load
only their own module, not the CLI's (argparse and the rest): under emulation (the TCG lab)
that import alone takes about a second per start.
"""

from __future__ import annotations

import sys

# Undocumented: JSON lines on stdin/stdout (agent, tracer, topology, the agents' launcher), a
# tool in a netns (nsexec), or the node's metadata for the result (sysinfo).
NODE_COMMANDS = {"agent": "workloads.agent", "tracer": "bench.tracing.remote",
                 "topology": "bench.topology", "nsexec": "bench.nsexec", "sysinfo": "bench.sysinfo",
                 "launcher": "bench.launcher"}


def node_command(argv: list[str]) -> int | None:
    """Run a node command and return its exit code; None when argv is not one."""
    if not argv or argv[0] not in NODE_COMMANDS:
        return None
    import importlib
    module = importlib.import_module(NODE_COMMANDS[argv[0]])
    return module.main(argv[1:]) if argv[0] == "nsexec" else module.main()


def main() -> int:
    code = node_command(sys.argv[1:])
    if code is not None:
        return code
    from bench.cli import main as cli_main
    return cli_main()


if __name__ == "__main__":
    sys.exit(main())
