"""Run a command inside a named network namespace:

    python -m bench.nsexec NS [--until-eof] -- CMD ARGS...     (`bench nsexec` on a node)

NS `-` stays in this one. Used for reference tools (iperf3) so they cross the same veth as our
agents. The namespace switch is setns(2) (bench/setns.py); then we exec, so the tool's pid is this process's
pid. The tool dies with its parent (PR_SET_PDEATHSIG, kept across exec): here the runner, on a
node the SSH session. `--until-eof` (remote tools) also ends it when its stdin ends: the runner
here holds that pipe, so a runner that dies while its ssh client lives on leaves no iperf3
waiting on the node either.
"""

import ctypes
import os
import signal
import sys

PR_SET_PDEATHSIG = 1


def _prctl_pdeathsig(sig: int) -> None:
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, sig, 0, 0, 0)


def _end_at_eof() -> None:
    """A watcher child reads our stdin; at its end it stops us (the tool, after exec). It dies
    with us (PDEATHSIG), so it never outlives the tool. The tool itself reads /dev/null."""
    tool = os.getpid()
    if os.fork() == 0:
        _prctl_pdeathsig(signal.SIGKILL)
        if os.getppid() == tool:
            try:
                while os.read(0, 65536):
                    pass
            except OSError:
                pass
            os.kill(tool, signal.SIGTERM)
        os._exit(0)
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)


def main(argv: list[str]) -> int:
    until_eof = argv[1:2] == ["--until-eof"]
    if until_eof:
        argv = argv[:1] + argv[2:]
    if len(argv) < 3 or argv[1] != "--":
        print("usage: python -m bench.nsexec NETNS|- [--until-eof] -- CMD [ARGS...]",
              file=sys.stderr)
        return 2
    _prctl_pdeathsig(signal.SIGTERM)
    if os.getppid() == 1:       # the parent is already gone: do not start an orphan
        return 3
    if argv[0] != "-":
        from bench.setns import enter
        enter(argv[0])
    if until_eof:
        _end_at_eof()
    os.execvp(argv[2], argv[2:])
    return 127  # not reached


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
