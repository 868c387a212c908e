"""Run a command inside a named network namespace: `python -m bench.nsexec NS -- CMD ARGS...`.

Used for reference tools (iperf3) so they cross the same veth as our agents. The
namespace switch is pyroute2's; then we exec, so the tool's pid is this process's pid.
"""

import os
import sys


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m bench.nsexec NETNS -- CMD [ARGS...]", file=sys.stderr)
        return 2
    from pyroute2 import netns
    netns.setns(argv[0])
    os.execvp(argv[2], argv[2:])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
