"""The one-node remote model on this machine: NodePlacement through a fake SSH (`sh -c`), so the
agents, iperf3 (`bench nsexec`), the copy tracer (`bench tracer`) and the topology (`bench
topology`) all start the way they start on a lab node, and the runner stays here. Also: the
node's topology goes away when the runner or SSH dies, and `bench doctor --cleanup` removes what
a SIGKILLed helper left."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from bench import plan, suite
from bench.lab.inventory import Host
from bench.placement import NodePlacement
from bench.runner import Runner
from bench.targets.ssh import SshTarget
from tests.conftest import REPO, agent_pids, leaked, our_netns


class LocalShellTarget(SshTarget):
    """An SSH target whose one "node" is this machine: ssh HOST CMD becomes sh -c CMD."""

    kind = "fake-ssh"

    def ssh_argv(self, node=0, tty=False):
        return ["sh", "-c"]


class LaunchingShellTarget(LocalShellTarget):
    """As LocalShellTarget, with a shared connection: the node's launcher socket is reached
    as it is (the same machine), so processes start through `bench launcher`."""

    def can_forward(self):
        return True

    def forward_unix(self, node, remote):
        return Path(remote)


def _target(cls, tmp_path):
    bench = tmp_path / "bench"
    bench.write_text(f"#!/bin/sh\nexport PYTHONPATH={REPO}\nexec {sys.executable} -m bench \"$@\"\n")
    bench.chmod(0o755)
    return cls([Host("node0", "127.0.0.1")], remote_bench=str(bench),
               known_hosts=tmp_path / "known_hosts")


@pytest.fixture
def node(tmp_path):
    return _target(LocalShellTarget, tmp_path)


def _wait_for(cond, timeout=20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return cond()


def test_one_node_run_goes_through_ssh_and_leaves_nothing(root_only, node, tmp_path):
    n, size = 100, 65536
    ov = plan.Overrides(bytes=n * size, sizes=(size,), repeat=1, topology="veth",
                        workloads=("tcp",), reference=True)
    ns0, agents0 = our_netns(), agent_pids()
    placement = NodePlacement(node)
    r = Runner(plan.expand(suite.load("smoke"), ov), tmp_path / "r.json", placement=placement,
               copies_spec="auto", warmup=False)
    r.result.metadata["placement"] = placement.describe()
    r.check()
    res = r.run()
    assert res.status == "complete", res.reason
    assert res.metadata["placement"] == {
        "kind": "node", "target": "fake-ssh", "hosts": ["node0"],
        "launch": "one SSH session each (bench agent, bench nsexec)"}   # no shared connection
    c = res.cases[0]
    assert c.status == "ok", (c.reason, c.fix)
    s = c.samples[0]
    assert (s["messages"], s["bytes"], s["payload_errors"]) == (n, n * size, 0)
    assert s["clock"] and s["cpu"]["system_busy_s"] is not None      # one machine: one clock
    assert c.network["kind"] == "veth" and c.network["tx_mtu"]        # the node's snapshot
    # iperf3 ran on the node in the namespaces (its byte count over veth is iperf3's business).
    assert c.reference and c.reference[0]["tool"] == "iperf3", c.reference
    assert "error" not in c.reference[0], c.reference
    cp = c.copies
    assert cp["status"] == "ok", cp
    # One tracer process on the node traces both agents.
    assert {(ch["node"], ch["role"]) for ch in res.metadata["copy_backends"]} == \
        {("node0", "sender+receiver")}
    for side in ("sender", "receiver"):
        assert cp["sides"][side]["bytes"] == n * size, (side, cp["sides"][side])
    assert leaked(ns0, agents0) == (set(), set())


RUNNER_DIES = textwrap.dedent("""
    import sys
    sys.path.insert(0, {repo!r})
    from tests.host.test_node_placement_local import LocalShellTarget
    from bench.lab.inventory import Host
    from bench.placement import NodePlacement
    p = NodePlacement(LocalShellTarget([Host("node0", "127.0.0.1")], remote_bench={bench!r}))
    ep = p.endpoints("veth")
    import subprocess, os
    r, w = os.pipe()                      # as ReferenceRows._spawn: the tool's stdin, held here
    tool = subprocess.Popen(p.tool_argv("rx", ep.rx_netns, ["sleep", "300"]), stdin=r)
    print(ep.tx_netns, ep.rx_netns, flush=True)
    sys.stdin.read()
""")


def _sleepers_in(netns: str) -> list[int]:
    out = subprocess.run(["ip", "netns", "pids", netns], capture_output=True, text=True).stdout
    return [int(x) for x in out.split()]


def test_a_dead_runner_leaves_no_topology_on_the_node(root_only, node, tmp_path):
    ns0 = our_netns()
    runner = subprocess.Popen([sys.executable, "-c", RUNNER_DIES.format(
        repo=str(REPO), bench=node.remote_bench)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        text=True, cwd=REPO)
    try:
        made = runner.stdout.readline().split()
        assert len(made) == 2 and set(made) <= our_netns()
        assert _wait_for(lambda: _sleepers_in(made[1]))     # the "iperf3" in the rx netns
        tool = _sleepers_in(made[1])[0]
    finally:
        runner.kill()                         # no teardown, no "down": SIGKILL
        runner.wait()
    assert _wait_for(lambda: not (set(made) & our_netns())), our_netns() - ns0
    assert _wait_for(lambda: not Path(f"/proc/{tool}").exists())   # the tool ended too


def _helper(config: dict) -> tuple[subprocess.Popen, dict]:
    p = subprocess.Popen([sys.executable, "-m", "bench.topology"], stdin=subprocess.PIPE,
                         stdout=subprocess.PIPE, text=True, bufsize=1, cwd=REPO)
    p.stdin.write(json.dumps(config) + "\n")
    p.stdin.flush()
    ready = json.loads(p.stdout.readline())
    assert ready["event"] == "ready", ready
    return p, ready


@pytest.mark.parametrize("how,code", [("down", 0), ("eof", 3), ("SIGTERM", 128 + 15),
                                      ("SIGHUP", 128 + 1), ("watchdog", 4)])
def test_the_topology_helper_removes_its_namespaces(root_only, how, code):
    p, ready = _helper({"kind": "veth", "lifetime_s": 2.0 if how == "watchdog" else 600})
    ep = ready["endpoints"]
    assert {ep["tx_netns"], ep["rx_netns"]} == {f"cb{p.pid}tx", f"cb{p.pid}rx"}
    assert ready["snapshot"]["kind"] == "veth"
    if how == "down":
        p.stdin.write('{"cmd": "down"}\n')
        p.stdin.flush()
        assert json.loads(p.stdout.readline())["event"] == "down"
    elif how == "eof":
        p.stdin.close()
    elif how != "watchdog":
        os.kill(p.pid, getattr(signal, how))
    assert p.wait(timeout=30) == code
    assert not ({ep["tx_netns"], ep["rx_netns"]} & our_netns())


def test_doctor_cleanup_removes_what_a_killed_helper_left(root_only):
    from bench.cleanup import cleanup_all
    p, ready = _helper({"kind": "veth"})
    p.kill()
    p.wait()
    left = {ready["endpoints"]["tx_netns"], ready["endpoints"]["rx_netns"]}
    assert left <= our_netns()
    done = cleanup_all()
    assert not (left & our_netns()), done
    assert any(ready["endpoints"]["tx_netns"] in line for line in done)


def test_loopback_on_a_node_needs_no_namespace(node):
    placement = NodePlacement(node)
    try:
        ep = placement.endpoints("loopback")
        assert (ep.kind, ep.tx_netns, ep.rx_addr) == ("loopback", None, "127.0.0.1")
        assert placement.snapshot("loopback")["kind"] == "loopback"
    finally:
        placement.teardown()
    assert placement._helpers == {}



@pytest.mark.parametrize("launch", ["ssh", "launcher"])
def test_waiting_for_a_reference_server_looks_into_its_namespace(root_only, tmp_path, launch,
                                                                 monkeypatch):
    """The poll runs on the node (`ss -N` in an SSH call, or `ss` started in the namespace by
    the node's launcher): it sees a port that listens only inside the namespace, and gives up
    with the fix when nothing listens there."""
    import socket

    from bench import placement as placement_mod
    from bench.errors import UsageError
    from bench.setns import inside
    monkeypatch.setattr(placement_mod, "REMOTE_LISTEN_S", 1.0)
    name = f"cbwait{os.getpid()}"
    p = NodePlacement(_target(LocalShellTarget if launch == "ssh" else LaunchingShellTarget,
                              tmp_path))
    subprocess.run(["ip", "netns", "add", name], check=True)
    try:
        with inside(name):
            srv = socket.create_server(("127.0.0.1", 0))
        port = srv.getsockname()[1]
        p.wait_listening("rx", 0, port, timeout=5, netns=name)
        with pytest.raises(UsageError, match="did not listen") as e:
            p.wait_listening("rx", 0, port, timeout=1, netns=None)   # not in the host's
        assert "--no-reference" in e.value.fix
        srv.close()
        assert any(p._launchers.values()) == (launch == "launcher")
    finally:
        p.close()
        subprocess.run(["ip", "netns", "del", name], check=True)
