"""A node's agent launcher: the run's agents forked from one interpreter that has imported them.

Starting an agent over SSH costs a session, an interpreter and its imports: under emulation
(the TCG lab) about 0.9 s of the node's one CPU per agent, two agents per sample, measured. The
runner starts one launcher per node and run (`bench launcher`, like the topology helper). It
imports the agent and every workload once. Each agent is then one connection to the launcher's
unix socket (through the runner's shared SSH connection: a forwarded socket, no new session)
and one fork. The child runs `workloads.agent.main()` with that connection as its stdin,
stdout and stderr: the same agent, protocol and checks as `bench agent` over SSH.

  runner -> node  {"lifetime_s": 14400}     idle limit, re-armed by every agent started
  node -> runner  {"event": "ready", "pid": P, "socket": "/tmp/copybench-P-launch-…/agents.sock"}
  per connection  the agent's own JSON lines (workloads/agent.py); stderr lines in between
                  are not JSON. After the agent has exited, the launcher adds one line
                  {"event": "exited", "code": N} (negative: killed by that signal) and closes.

An agent whose runner hung up (end of its stream) and that has not exited HANGUP_GRACE_S later
gets SIGTERM, and SIGKILL as long again after that: what the runner does to an agent it started
itself. The launcher ends at end of its input, on SIGTERM/SIGINT/SIGHUP or when idle for
`lifetime_s`. Its agents then die with it (they ask for PR_SET_PDEATHSIG), and its socket's
directory is removed. It never starts a thread: a fork copies only the calling thread, and the
agent must be the only thread when it enters its namespace.
"""

from __future__ import annotations

import contextlib
import importlib
import json
import os
import pkgutil
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback

from bench.procs import EXIT_RUNNER_GONE, SIGNALS, Stop, config_line, emitter, install_handlers

HANGUP_GRACE_S = 2.0
POLL_MS = 100


def preload() -> list[str]:
    """Import the agent and every workload module now, once, instead of in every agent.
    Returns the ones that cannot be imported here (liburing, pyverbs missing): their agents
    import them again and report the error the usual way."""
    import workloads
    import workloads.agent  # noqa: F401
    missing = []
    for mod in pkgutil.iter_modules(workloads.__path__):
        try:
            importlib.import_module(f"workloads.{mod.name}")
        except Exception:             # noqa: BLE001 - reported by the agent that needs it
            missing.append(mod.name)
    return missing


class Launched:
    """One forked agent: its connection and when its runner hung up."""

    def __init__(self, conn: socket.socket):
        self.conn = conn
        self.hangup: float | None = None
        self.signalled = 0


def run_child(conn: socket.socket, close: list) -> None:
    """In the forked child: become the agent on `conn`. Never returns."""
    code = 1
    try:
        for s in SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        for f in close:
            with contextlib.suppress(OSError):
                f.close()
        for fd in (0, 1, 2):
            os.dup2(conn.fileno(), fd)
        conn.close()
        sys.stdin = open(0, encoding="utf-8", closefd=False)               # noqa: SIM115
        sys.stdout = open(1, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", encoding="utf-8", buffering=1, closefd=False)  # noqa: SIM115
        from workloads import agent
        code = agent.main()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    except BaseException:             # noqa: BLE001 - the runner reads it as the agent's stderr
        traceback.print_exc()
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def exit_code(status: int) -> int:
    return os.waitstatus_to_exitcode(status)


def serve(rfile, wfile, workdir: str | None = None) -> int:
    emit = emitter(wfile)
    cfg = config_line(rfile, emit, '{"lifetime_s": 3600}')
    if isinstance(cfg, int):
        return cfg
    idle = float(cfg.get("lifetime_s") or 0)
    preload()
    d = tempfile.mkdtemp(prefix=f"copybench-{os.getpid()}-launch-", dir=workdir)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    children: dict[int, Launched] = {}
    by_fd: dict[int, Launched] = {}
    try:
        path = os.path.join(d, "agents.sock")
        listener.bind(path)
        listener.listen(16)
        signal.setitimer(signal.ITIMER_REAL, idle)
        emit("ready", pid=os.getpid(), socket=path)
        poller = select.poll()
        poller.register(rfile.fileno(), select.POLLIN)
        poller.register(listener.fileno(), select.POLLIN)
        while True:
            for fd, _ in poller.poll(POLL_MS):
                if fd == rfile.fileno():
                    if not os.read(fd, 4096):
                        return EXIT_RUNNER_GONE
                elif fd == listener.fileno():
                    conn, _ = listener.accept()
                    pid = os.fork()
                    if pid == 0:
                        run_child(conn, [listener, *(c.conn for c in children.values())])
                    launched = Launched(conn)
                    children[pid] = by_fd[conn.fileno()] = launched
                    # RDHUP only: the data on it is the agent's to read, not ours.
                    poller.register(conn.fileno(), select.POLLRDHUP)
                    signal.setitimer(signal.ITIMER_REAL, idle)
                elif fd in by_fd:
                    by_fd.pop(fd).hangup = time.monotonic()
                    poller.unregister(fd)
            _reap(children, by_fd, poller)
            _escalate(children)
    except Stop as stop:
        return stop.code
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        for pid in children:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        listener.close()
        shutil.rmtree(d, ignore_errors=True)


def _reap(children: dict[int, Launched], by_fd: dict[int, Launched], poller) -> None:
    """Every agent that exited: its code to its runner, then its connection closed."""
    while children:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        launched = children.pop(pid, None)
        if launched is None:
            continue
        fd = launched.conn.fileno()
        if by_fd.pop(fd, None) is not None:
            poller.unregister(fd)
        with contextlib.suppress(OSError):
            launched.conn.sendall(json.dumps({"event": "exited",
                                              "code": exit_code(status)}).encode() + b"\n")
        launched.conn.close()


def _escalate(children: dict[int, Launched]) -> None:
    """SIGTERM, then SIGKILL, to an agent still running HANGUP_GRACE_S after its runner left."""
    now = time.monotonic()
    for pid, launched in children.items():
        if launched.hangup is None:
            continue
        due = launched.hangup + HANGUP_GRACE_S * (launched.signalled + 1)
        if now >= due and launched.signalled < 2:
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGTERM if launched.signalled == 0 else signal.SIGKILL)
            launched.signalled += 1


def main() -> int:
    install_handlers()
    try:
        return serve(sys.stdin, sys.stdout)
    except Stop as stop:
        return stop.code


if __name__ == "__main__":
    sys.exit(main())
