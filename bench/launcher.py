"""A node's launcher: the run's agents and reference tools started without an SSH session each.

Over SSH every agent and every reference tool was a session of its own: on the TCG lab node a
session, `bench agent`'s interpreter and its imports cost about 0.9 s of the VM's one CPU per
process, two agents and two tools per sample. The runner starts one launcher per node and run
(`bench launcher`, like the topology helper). Each agent or tool is then one connection to the
launcher's unix socket, reached through the runner's shared SSH connection (a forwarded socket:
no session), and one fork and exec, with the connection as the child's stdin and stdout:

  agent  `python -m workloads.agent`, stderr into the same stream: the same agent, protocol
         and checks as `bench agent` over SSH;
  tool   `bench nsexec NETNS --until-eof -- ARGV` in the child (it enters the namespace and
         execs the tool, which ends when our side of the stream ends); stderr to a file that
         the launcher returns in its record.

Both are exec'd afresh, never forked from a warm interpreter: ours and the references start
the same way. (Forked from a launcher that had imported the agent, ours ran ≈25% faster than
exec'd ones under TCG, an emulator effect a reference tool would not get: measured and rejected.)

  runner -> node  {"lifetime_s": 14400}     idle limit, re-armed by every child started
  node -> runner  {"event": "ready", "pid": P, "socket": "/tmp/copybench-P-launch-…/agents.sock"}
  per connection  first a request line from the runner (bench/launched.py `request`), then the
                  child's. After the child has exited the launcher writes "\n\0" and a record
                  {"event": "exited", "code": N (negative: killed by that signal), "stderr": …}
                  and closes.

A child whose runner hung up (end of its stream) and that has not exited HANGUP_GRACE_S later
gets SIGTERM, and SIGKILL as long again after that: what the runner does to a process it
started itself. The launcher ends at end of its input, on SIGTERM/SIGINT/SIGHUP or when idle
for `lifetime_s`. Its children then die with it (PR_SET_PDEATHSIG), and its socket's directory
is removed. It never starts a thread: a fork copies only the calling thread.
"""

from __future__ import annotations

import contextlib
import json
import os
import select
import shutil
import signal
import socket
import sys
import tempfile
import time
import traceback

from bench.launched import HANGUP_GRACE_S, RECORD
from bench.procs import EXIT_RUNNER_GONE, SIGNALS, Stop, config_line, emitter, install_handlers

POLL_MS = 100
MAX_STDERR = 16384            # a tool's last stderr bytes returned in its record


class Launched:
    """One forked agent: its connection and when its runner hung up."""

    def __init__(self, conn: socket.socket):
        self.conn = conn
        self.hangup: float | None = None
        self.signalled = 0


def read_request(fd: int) -> dict:
    """The connection's first line, byte by byte: what follows is the child's to read."""
    line = b""
    while not line.endswith(b"\n") and len(line) < 65536:
        b = os.read(fd, 1)
        if not b:
            break
        line += b
    req = json.loads(line or b"{}")
    if not isinstance(req, dict) or req.get("launch") not in ("agent", "tool"):
        raise ValueError(f"bad request {line[:80]!r}")
    return req


def err_path(workdir: str, pid: int) -> str:
    return os.path.join(workdir, f"{pid}.stderr")


def run_child(conn: socket.socket, close: list, workdir: str) -> None:
    """In the forked child: exec the agent or the tool the runner asked for. Never returns."""
    code = 1
    try:
        for s in SIGNALS:
            signal.signal(s, signal.SIG_DFL)
        for f in close:
            with contextlib.suppress(OSError):
                f.close()
        req = read_request(conn.fileno())
        for fd in (0, 1, 2):
            os.dup2(conn.fileno(), fd)
        conn.close()
        if req["launch"] == "tool":
            err = os.open(err_path(workdir, os.getpid()), os.O_WRONLY | os.O_CREAT, 0o600)
            os.dup2(err, 2)
            os.close(err)
            from bench import nsexec
            argv = [str(a) for a in req.get("argv") or []]
            try:
                code = nsexec.main([req.get("netns") or "-", "--until-eof", "--", *argv])
            except OSError as e:       # entering the namespace or the exec: say which tool
                print(f"{argv[0] if argv else '(no command)'}: {e}", file=sys.stderr)
                code = 127
            return
        os.environ["PYTHONUNBUFFERED"] = "1"
        os.execv(sys.executable, [sys.executable, "-m", "workloads.agent"])
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
                        run_child(conn, [listener, *(c.conn for c in children.values())], d)
                    launched = Launched(conn)
                    children[pid] = by_fd[conn.fileno()] = launched
                    # RDHUP only: the data on it is the agent's to read, not ours.
                    poller.register(conn.fileno(), select.POLLRDHUP)
                    signal.setitimer(signal.ITIMER_REAL, idle)
                elif fd in by_fd:
                    by_fd.pop(fd).hangup = time.monotonic()
                    poller.unregister(fd)
            _reap(children, by_fd, poller, d)
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


def _reap(children: dict[int, Launched], by_fd: dict[int, Launched], poller,
          workdir: str) -> None:
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
        stderr = ""
        with contextlib.suppress(OSError):
            with open(err_path(workdir, pid), "rb") as f:
                f.seek(0, os.SEEK_END)
                f.seek(max(0, f.tell() - MAX_STDERR))
                stderr = f.read().decode(errors="replace")
            os.unlink(err_path(workdir, pid))
        record = {"event": "exited", "code": exit_code(status), "stderr": stderr}
        with contextlib.suppress(OSError):
            launched.conn.sendall(RECORD + json.dumps(record).encode() + b"\n")
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


def remove_stale(tmp: str | None = None) -> list[str]:
    """Socket directories of launchers that are gone (a SIGKILL leaves one behind): their
    names carry the launcher's pid (`bench doctor --cleanup`)."""
    from pathlib import Path
    root = Path(tmp or tempfile.gettempdir())
    removed = []
    for d in sorted(root.glob("copybench-*-launch-*")):
        pid = d.name.split("-")[1]
        if d.is_dir() and pid.isdigit() and not Path(f"/proc/{pid}").exists():
            shutil.rmtree(d, ignore_errors=True)
            removed.append(str(d))
    return removed


def main() -> int:
    install_handlers()
    try:
        return serve(sys.stdin, sys.stdout)
    except Stop as stop:
        return stop.code


if __name__ == "__main__":
    sys.exit(main())
