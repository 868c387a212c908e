"""Run a command inside a named network namespace: `python -m bench.nsexec NS -- CMD ARGS...`
(`bench nsexec` on a node; NS `-` = stay in this one).

Used for reference tools (iperf3) so they cross the same veth as our agents. The
namespace switch is pyroute2's; then we exec, so the tool's pid is this process's pid. The
tool dies with its parent (PR_SET_PDEATHSIG, kept across exec): on a node that parent is the
SSH session, so a runner or connection that goes away leaves no iperf3 waiting there.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def main(argv: list[str]) -> int:
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m bench.nsexec NETNS|- -- CMD [ARGS...]", file=sys.stderr)
        return 2
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    if os.getppid() == 1:       # the parent is already gone: do not start an orphan
        return 3
    if argv[0] != "-":
        from pyroute2 import netns
        netns.setns(argv[0])
    os.execvp(argv[2], argv[2:])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
