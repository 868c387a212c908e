"""The node launcher (bench/launcher.py) on this machine: the same agents and tools, started by it.

On a lab node the runner reaches the launcher's socket through its shared SSH connection; here
the test connects to it directly. What must hold: an agent pair it started moves and verifies exactly
what `bench agent` would; an agent's error and its exit reach the runner; an agent whose runner
hung up is stopped; a tool's stdout, stderr and exit code come back apart, and it ends when the
runner's side does; the launcher leaves nothing behind when its input ends.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench import launcher
from bench.agents import AgentError
from bench.launched import LaunchedAgent, LaunchedProcess


@pytest.fixture
def node_launcher():
    p = subprocess.Popen([sys.executable, "-m", "bench.entry", "launcher"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, bufsize=1)
    p.stdin.write(json.dumps({"lifetime_s": 120}) + "\n")
    p.stdin.flush()
    ready = json.loads(p.stdout.readline())
    assert ready["event"] == "ready", ready

    def connect():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        s.connect(ready["socket"])
        return s
    yield p, ready, connect
    if p.poll() is None:
        p.stdin.close()
        p.wait(timeout=20)


def children_of(pid: int) -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) \
                    == pid:
                out.append(int(d.name))
        except (OSError, IndexError, ValueError):
            pass
    return out


def test_a_launched_pair_moves_and_verifies_exactly_the_count_asked(node_launcher):
    p, _, connect = node_launcher
    n, size = 2000, 4096
    common = {"workload": "tcp", "size": size, "batch": 1, "max_seconds": 60,
              "rcvbuf": None, "sndbuf": None}
    rx = LaunchedAgent("receiver", {**common, "netns": None, "bind": "127.0.0.1", "cpu": None},
                       connect)
    tx = LaunchedAgent("sender", None, connect)
    try:
        ready = rx.expect("ready", 30)
        tx.configure({**common, "netns": None, "target": ["127.0.0.1", ready["port"]],
                      "duration": 30.0, "count": n, "cpu": None})
        tx_ready = tx.expect("ready", 30)
        # the launcher's children, named by the agents themselves
        assert {ready["pid"], tx_ready["pid"]} <= set(children_of(p.pid))
        assert Path(f"/proc/{tx_ready['pid']}/comm").read_text().strip() == "sender"
        tx.send({"cmd": "go"})
        sent = tx.expect("result", 60)
        rx.send({"cmd": "stop"}, required=False)
        got = rx.expect("result", 60)
    finally:
        tx.stop()
        rx.stop()
    assert sent["messages"] == n
    assert got["bytes"] == n * size and got["bad"] == 0
    time.sleep(0.3)
    assert children_of(p.pid) == []          # both exited and were reaped


def test_an_agents_error_and_its_exit_reach_the_runner(node_launcher):
    _, _, connect = node_launcher
    bad = LaunchedAgent("receiver", {"workload": "no_such_workload"}, connect)
    with pytest.raises(AgentError, match="no_such_workload"):
        bad.expect("ready", 30)
    # after its error the agent exits, and the launcher says how
    line = bad._readline(time.monotonic() + 30)
    while line and not line.startswith('{"event": "exited"'):
        line = bad._readline(time.monotonic() + 30)
    exited = json.loads(line)
    assert exited["event"] == "exited" and isinstance(exited["code"], int) and exited["code"] > 0
    bad.stop()


def test_an_agent_whose_runner_hung_up_is_gone(node_launcher):
    p, _, connect = node_launcher
    waiting = LaunchedAgent("receiver", None, connect)   # never configured
    deadline = time.monotonic() + 20
    while not children_of(p.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    (child,) = children_of(p.pid)
    t0 = time.monotonic()
    waiting.stop()        # returns once the launcher says it exited: reaped by then
    assert not Path(f"/proc/{child}").exists()
    assert time.monotonic() - t0 < launcher.HANGUP_GRACE_S   # it left at end of input


def test_the_launcher_escalates_to_sigterm_then_sigkill():
    stubborn = subprocess.Popen([sys.executable, "-c", "import signal, time; "
                                 "signal.signal(signal.SIGTERM, signal.SIG_IGN); print(1, "
                                 "flush=True); time.sleep(60)"], stdout=subprocess.PIPE)
    stubborn.stdout.readline()
    a, b = socket.socketpair()
    try:
        children = {stubborn.pid: launcher.Launched(a)}
        children[stubborn.pid].hangup = time.monotonic() - launcher.HANGUP_GRACE_S - 0.01
        launcher._escalate(children)             # SIGTERM: ignored
        assert children[stubborn.pid].signalled == 1
        time.sleep(0.2)
        assert stubborn.poll() is None
        children[stubborn.pid].hangup -= launcher.HANGUP_GRACE_S
        launcher._escalate(children)             # SIGKILL
        assert stubborn.wait(timeout=10) == -signal.SIGKILL
    finally:
        a.close()
        b.close()
        if stubborn.poll() is None:
            stubborn.kill()


def test_end_of_input_ends_the_launcher_its_agents_and_its_socket(node_launcher):
    p, ready, connect = node_launcher
    waiting = LaunchedAgent("receiver", None, connect)
    deadline = time.monotonic() + 20
    while not children_of(p.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    (child,) = children_of(p.pid)
    p.stdin.close()
    assert p.wait(timeout=20) == 3                 # EXIT_RUNNER_GONE
    assert not os.path.exists(os.path.dirname(ready["socket"]))
    deadline = time.monotonic() + 10
    while Path(f"/proc/{child}").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    status = Path(f"/proc/{child}/stat")
    assert not status.exists() or status.read_text().rsplit(")", 1)[1].split()[0] == "Z"
    waiting.stop()


def test_a_launcher_that_is_not_there_is_an_agent_error(tmp_path):
    def connect():
        s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            s.connect(str(tmp_path / "none.sock"))
        except OSError:
            s.close()
            raise
        return s
    with pytest.raises(AgentError, match="launcher"):
        LaunchedAgent("sender", None, connect)


def test_a_tools_output_error_and_code_come_back_apart(node_launcher):
    _, _, connect = node_launcher
    t = LaunchedProcess(connect, ["sh", "-c", "echo out; echo err >&2; printf tail; exit 3"], None)
    out, err = t.communicate(timeout=30)
    assert (out, err, t.returncode) == ("out\ntail", "err\n", 3)
    assert t.poll() == 3


def test_a_tool_ends_when_the_runners_side_does(node_launcher):
    from bench.procs import stop
    p, _, connect = node_launcher
    t = LaunchedProcess(connect, ["sleep", "30"], None)
    deadline = time.monotonic() + 20
    while not children_of(p.pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert t.poll() is None
    t0 = time.monotonic()
    assert stop(t, term_grace=10) == -signal.SIGTERM    # bench.procs.stop, as for a Popen
    assert time.monotonic() - t0 < 5
    assert children_of(p.pid) == []


def test_a_tool_that_is_not_installed_says_so(node_launcher):
    _, _, connect = node_launcher
    t = LaunchedProcess(connect, ["no-such-tool-here", "-x"], None)
    out, err = t.communicate(timeout=30)
    assert t.returncode != 0 and "no-such-tool-here" in err and out == ""


def test_doctor_cleanup_removes_a_dead_launchers_directory_only(tmp_path):
    dead = subprocess.Popen(["true"])
    dead.wait()
    gone = tmp_path / f"copybench-{dead.pid}-launch-abc"
    alive = tmp_path / f"copybench-{os.getpid()}-launch-def"
    for d in (gone, alive):
        d.mkdir()
        (d / "agents.sock").write_text("")
    assert launcher.remove_stale(str(tmp_path)) == [str(gone)]
    assert not gone.exists() and alive.exists()
