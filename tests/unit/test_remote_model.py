"""The remote model without machines: SSH host-key policy and its error, placements' argv,
checks and capability merging against fake targets, and `bench run --target` through a fake
`ssh` on PATH (exit 2, one message, the fix)."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bench import topology
from bench.errors import UsageError
from bench.lab import sshkeys
from bench.lab.inventory import Host
from bench.placement import LinkPlacement, NodePlacement, for_target
from bench.targets.ssh import SshTarget
from tests.conftest import REPO


def _opts(argv: list[str]) -> dict[str, str]:
    return dict(argv[i + 1].split("=", 1) for i, a in enumerate(argv) if a == "-o")


# -- host keys ------------------------------------------------------------------------------------
def test_real_hosts_are_checked_against_benchs_known_hosts(tmp_path):
    kh = tmp_path / "known_hosts"
    o = _opts(sshkeys.ssh_argv("h1", 2222, "root", None, known_hosts=kh))
    assert o["StrictHostKeyChecking"] == "accept-new" and o["UserKnownHostsFile"] == str(kh)
    t = SshTarget([Host("h1", "h1", 2222, "root")], known_hosts=kh)
    assert _opts(t.ssh_argv(0))["UserKnownHostsFile"] == str(kh)


def test_only_the_lab_vm_goes_unchecked():
    o = _opts(sshkeys.ssh_argv("127.0.0.1", 40000, "root", None, known_hosts=None))
    assert o["StrictHostKeyChecking"] == "no" and o["UserKnownHostsFile"] == "/dev/null"
    from bench.lab.target import LabTarget
    lab = LabTarget([Host("lab0", "127.0.0.1", 40000, "root")])
    assert lab.known_hosts is None and _opts(lab.ssh_argv(0))["StrictHostKeyChecking"] == "no"
    lab.close()
    with pytest.raises(TypeError):          # every caller must say which policy it wants
        sshkeys.ssh_argv("h1")


def test_default_known_hosts_file(tmp_path):
    assert sshkeys.default_known_hosts({"COPYBENCH_KNOWN_HOSTS": "/x/kh"}) == Path("/x/kh")
    env = {"COPYBENCH_CACHE": str(tmp_path / "cache")}
    assert sshkeys.default_known_hosts(env) == tmp_path / "cache" / "ssh" / "known_hosts"
    if os.geteuid() != 0:       # a cache this user cannot write: the user's data dir
        env = {"COPYBENCH_CACHE": "/proc/copybench", "XDG_DATA_HOME": str(tmp_path / "d")}
        assert sshkeys.default_known_hosts(env) == tmp_path / "d" / "copybench" / "known_hosts"


CHANGED = """@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
@    WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED!     @
@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@@
Host key for [h1]:2222 has changed and you have requested strict checking.
Host key verification failed.
"""


def test_a_changed_host_key_is_one_message_with_the_fix(tmp_path):
    kh = tmp_path / "known_hosts"
    err = sshkeys.host_key_error(CHANGED, "h1 (root@h1:2222)", "h1", 2222, kh)
    assert err is not None and "host key is not the one recorded in" in err.message
    assert f"ssh-keygen -R '[h1]:2222' -f {kh}" in err.fix
    assert sshkeys.host_key_error("Connection refused", "x", "h1", 22, kh) is None
    assert "ssh-keygen -R 'h1' -f" in sshkeys.host_key_error(CHANGED, "x", "h1", 22, kh).fix
    t = SshTarget([Host("h1", "h1", 2222, "root")], known_hosts=kh)
    assert "ssh-keygen -R" in t._unreachable(0, CHANGED).fix
    assert "ssh-copy-id" in t._unreachable(0, "Connection refused").fix


FAKE_SSH = """#!/bin/sh
# fake ssh: logs its argv; FAKE_SSH=changed: refuses like OpenSSH does on a changed host key
printf '%s\\n' "$@" >> "$FAKE_SSH_LOG"
if [ "$FAKE_SSH" = changed ]; then
  cat "$FAKE_SSH_BANNER" >&2
  exit 255
fi
exit 0
"""


def _bench_with_fake_ssh(tmp_path, mode: str, *args: str):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / "ssh").write_text(FAKE_SSH)
    (bin_dir / "ssh").chmod(0o755)
    (tmp_path / "banner").write_text(CHANGED)
    env = dict(os.environ, PATH=f"{bin_dir}:{os.environ['PATH']}", FAKE_SSH=mode,
               FAKE_SSH_LOG=str(tmp_path / "ssh.log"), FAKE_SSH_BANNER=str(tmp_path / "banner"),
               COPYBENCH_KNOWN_HOSTS=str(tmp_path / "kh" / "known_hosts"))
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True,
                          text=True, env=env, cwd=REPO, timeout=60)


def test_bench_run_on_a_host_whose_key_changed_exits_2_before_anything(tmp_path):
    p = _bench_with_fake_ssh(tmp_path, "changed", "run", "--suite", "smoke", "--target",
                             "root@h1:2222", "--out", str(tmp_path / "out"))
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines[0].startswith("bench: error: h1 (root@h1:2222): its SSH host key is not the one")
    kh = tmp_path / "kh" / "known_hosts"
    assert lines[1] == (f"bench: fix: if you trust the host's new key, forget the old one with "
                        f"`ssh-keygen -R '[h1]:2222' -f {kh}` and run again (the new key is "
                        "recorded on first use); otherwise find out why it changed")
    assert len(lines) == 2 and not (tmp_path / "out").exists()
    log = (tmp_path / "ssh.log").read_text().splitlines()
    assert "StrictHostKeyChecking=accept-new" in log and f"UserKnownHostsFile={kh}" in log
    assert log[-1] == "true"                 # only the reachability check ran, nothing else
    assert kh.parent.is_dir()


def test_two_node_target_refuses_another_topology(tmp_path):
    inv = tmp_path / "hosts.ini"
    inv.write_text("[lab]\na link_addr=198.18.0.1/30\nb link_addr=198.18.0.2/30\n")
    p = _bench_with_fake_ssh(tmp_path, "ok", "run", "--suite", "smoke", "--target", str(inv),
                             "--topology", "veth", "--out", str(tmp_path / "out"))
    assert p.returncode == 2
    assert "--topology veth: a two-node target runs across its link" in p.stderr


# -- placements against a fake target ---------------------------------------------------------
class FakeTarget:
    kind = "fake"
    remote_bench = "bench"

    def __init__(self, n=1, facts=None, doctor=None):
        self.hosts = [Host(f"n{i}", f"10.0.0.{i}", vars={"link_addr": f"198.18.0.{i + 1}/30"})
                      for i in range(n)]
        self._facts, self._doctor, self.calls = facts or {}, doctor or {}, []

    def host(self, i):
        return self.hosts[i]

    def link_address(self, i):
        return self.hosts[i].vars["link_addr"].split("/")[0]

    def ssh_argv(self, node=0, tty=False):
        return ["ssh", self.hosts[node].name]

    def can_forward(self):
        return False           # one SSH session per agent, as on real hosts

    def run(self, node, argv, timeout=None, check=True):
        self.calls.append((node, argv))
        facts = {"uid": 0, "missing": [], "cpus": [0, 1], **self._facts.get(node, {})}
        return subprocess.CompletedProcess(argv, 0, json.dumps(facts) + "\n", "")

    def doctor(self, node=0):
        return self._doctor.get(node, [])


def test_for_target_picks_node_or_link():
    assert isinstance(for_target(FakeTarget(1)), NodePlacement)
    link = for_target(FakeTarget(2))
    assert isinstance(link, LinkPlacement) and link.forced_topology == "link"
    assert link.describe() == {"kind": "link", "target": "fake", "hosts": ["n0", "n1"],
                               "launch": "one SSH session each (bench agent, bench nsexec)"}
    node = NodePlacement(FakeTarget(1))
    assert node.describe() == {"kind": "node", "target": "fake", "hosts": ["n0"],
                               "launch": "one SSH session each (bench agent, bench nsexec)"}
    assert node.agent_argv("tx") == ["ssh", "n0", "bench agent"]
    assert node.tool_argv("rx", "cb1rx", ["iperf3", "-s"]) == \
        ["ssh", "n0", "bench nsexec cb1rx --until-eof -- iperf3 -s"]
    assert link.tool_argv("tx", None, ["iperf3", "-c", "x"])[-1] == \
        "bench nsexec - --until-eof -- iperf3 -c x"
    assert link.tracer_argv("rx") == ["ssh", "n1", "bench tracer"]


def test_node_checks_name_the_node_and_the_fix():
    t = FakeTarget(1)
    NodePlacement(t).check({"iperf3"}, {"veth"}, (0, 1))
    assert t.calls[0][1][-1] == "iperf3"          # the node is asked for the plan's tools
    with pytest.raises(UsageError, match="missing reference tool on n0: iperf3 not") as e:
        NodePlacement(FakeTarget(1, {0: {"missing": ["iperf3"]}})).check({"iperf3"}, {"veth"},
                                                                          None)
    assert "--no-reference" in e.value.fix
    with pytest.raises(UsageError, match="veth topology .* on n0 and needs root") as e:
        NodePlacement(FakeTarget(1, {0: {"uid": 1000}})).check(set(), {"veth"}, None)
    assert "--topology loopback" in e.value.fix
    NodePlacement(FakeTarget(1, {0: {"uid": 1000}})).check(set(), {"loopback"}, None)
    LinkPlacement(FakeTarget(2, {0: {"uid": 1000}})).check(set(), {"link"}, None)
    with pytest.raises(UsageError, match="CPU 7 is not available on n1"):
        LinkPlacement(FakeTarget(2, {1: {"cpus": [0]}})).check(set(), {"link"}, (1, 7))
    # the third CPU (receive softirq) is on the receiver's machine
    with pytest.raises(UsageError, match="CPU 5 is not available on n1"):
        LinkPlacement(FakeTarget(2, {0: {"cpus": [5]}, 1: {"cpus": [0]}})).check(
            set(), {"link"}, (5, 0, 5))
    node = NodePlacement(FakeTarget(1))
    node.check(set(), {"veth"}, (0, 1, 1))
    assert node.rps_cpu == 1
    node.check(set(), {"veth"}, (0, 1))
    assert node.rps_cpu is None


@pytest.mark.parametrize("text,want", [("0,1", (0, 1)), ("0,1,1", (0, 1, 1)), (None, None)])
def test_cpus_take_a_sender_a_receiver_and_an_optional_softirq_cpu(text, want):
    from bench.cli import parse_cpus
    assert parse_cpus(text) == want


@pytest.mark.parametrize("text", ["0", "0,1,2,3", "a,b", "0,-1"])
def test_bad_cpus_are_usage_errors_naming_the_forms(text):
    from bench.cli import parse_cpus
    with pytest.raises(UsageError) as e:
        parse_cpus(text)
    assert "--cpus 0,1,1" in e.value.fix


@pytest.mark.parametrize("cpu,mask", [(0, "1"), (1, "2"), (31, "80000000"), (35, "8,00000000"),
                                      (64, "1,00000000,00000000")])
def test_rps_masks_are_sysfs_hex_words(cpu, mask):
    from bench.nsconfig import cpu_mask
    assert cpu_mask(cpu) == mask


@pytest.mark.parametrize("stdout,ok", [("00000000,00000002\n", True), ("2", True),
                                       ("00000001", False), ("sh: 1: permission denied", False),
                                       ("", False)])
def test_rps_read_back_must_name_the_cpu(monkeypatch, stdout, ok):
    """What sysfs reads back after the write decides; text that is no mask is a failure with
    its words, never a ValueError."""
    import subprocess

    from bench import nsconfig
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: subprocess.CompletedProcess(
        a[0], 0, stdout, ""))
    if ok:
        assert nsconfig.steer_receive("cbns", "cbv1", 1)["rps_cpu"] == 1
    else:
        with pytest.raises(RuntimeError, match="failed"):
            nsconfig.steer_receive("cbns", "cbv1", 1)


def test_capabilities_come_from_every_node_and_fail_on_any():
    def checks(ok):
        return [{"name": "io_uring", "ok": ok, "detail": "works" if ok else "disabled",
                 "fix": "" if ok else "sysctl kernel.io_uring_disabled=0"},
                {"name": "kvm", "ok": False, "detail": "-", "fix": "-"}]
    t = FakeTarget(2, doctor={0: checks(True), 1: checks(False)})
    caps = LinkPlacement(t).capabilities({"io_uring"})
    assert caps == {"io_uring": (False, "n1: disabled", "sysctl kernel.io_uring_disabled=0")}
    assert LinkPlacement(FakeTarget(2, doctor={0: checks(True), 1: checks(True)})) \
        .capabilities({"io_uring"})["io_uring"][0] is True
    assert NodePlacement(FakeTarget(1)).capabilities(set()) == {}     # no SSH call for nothing


def test_one_node_tracer_is_one_process_for_both_agents(tmp_path):
    from bench.tracing import remote
    fake = Path(__file__).parents[1] / "tracing" / "fake_node_tracer.py"
    t = remote.RemoteTracer(lambda side: [sys.executable, str(fake), str(tmp_path), "n0"], ["n0"],
                            "kmod", role_node={"sender": 0, "receiver": 0})
    try:
        assert [(n.name, n.roles) for n in t.nodes] == [("n0", ["sender", "receiver"])]
        t.attach({"sender": 1001, "receiver": 2002})
        assert json.loads((tmp_path / "n0.attach").read_text()) == {"sender": 1001,
                                                                     "receiver": 2002}
        sides = {p.side for p in t.read()}
        assert sides == {"sender", "receiver", "other@n0"}
    finally:
        t.detach()
    assert (tmp_path / "n0.detach").read_text() == "detached\n"


# -- the node's topology helper, in process --------------------------------------------------------
class FakeTopology:
    made: list = []

    def __init__(self, kind, rps_cpu=None):
        self.kind, self.removed, self.rps_cpu = kind, 0, rps_cpu
        FakeTopology.made.append(self)

    def __enter__(self):
        if self.kind == "veth":
            raise UsageError("the veth topology creates network namespaces and needs root",
                             "run as root (sudo), or use --topology loopback")
        return topology.Endpoints("loopback", None, None, "127.0.0.1", "127.0.0.1")

    def snapshot(self):
        return {"kind": self.kind}

    def teardown(self):
        self.removed += 1


def _serve(*lines):
    out = io.StringIO()
    code = topology.serve(io.StringIO("".join(json.dumps(x) + "\n" for x in lines)), out,
                          make=FakeTopology)
    return code, [json.loads(ln) for ln in out.getvalue().splitlines()], FakeTopology.made[-1]


def test_topology_helper_protocol_and_cleanup():
    code, events, topo = _serve({"kind": "loopback"}, {"cmd": "snapshot"}, {"cmd": "down"})
    assert code == 0 and [e["event"] for e in events] == ["ready", "snapshot", "down"]
    assert events[0]["endpoints"]["rx_addr"] == "127.0.0.1" and topo.removed >= 1
    assert topo.rps_cpu is None
    code, events, topo = _serve({"kind": "loopback", "rps_cpu": 1})
    assert code == 3 and topo.removed >= 1            # end of input: removed all the same
    assert topo.rps_cpu == 1                          # --cpus S,R,Q reaches the node's topology
    code, events, topo = _serve({"kind": "veth"})
    assert code == 2 and events == [{"event": "error", "message": "the veth topology creates "
                                     "network namespaces and needs root",
                                     "fix": "run as root (sudo), or use --topology loopback"}]


@pytest.mark.parametrize("text, code", [
    ("", 3),                          # runner gone before its config: nothing to set up
    ("not json\n", 2), ("[1, 2]\n", 2), ('{"no": "kind"}\n', 2),
])
def test_node_helpers_refuse_a_bad_config_line_with_one_error(text, code):
    out = io.StringIO()
    made = len(FakeTopology.made)
    assert topology.serve(io.StringIO(text), out, make=FakeTopology) == code
    events = [json.loads(ln) for ln in out.getvalue().splitlines()]
    assert len(FakeTopology.made) == made                # no topology was built
    assert [e["event"] for e in events] == ([] if code == 3 else ["error"])
    if events:
        assert "veth" in events[0]["fix"]


def test_the_lab_shares_one_connection_per_node_and_close_ends_it(monkeypatch):
    from bench.lab.target import LabTarget
    calls = []
    monkeypatch.setattr(sshkeys.subprocess, "run", lambda argv, **kw: calls.append(argv))
    lab = LabTarget([Host("lab0", "127.0.0.1", 40000, "root"),
                     Host("lab1", "127.0.0.1", 40001, "root")])
    o = _opts(lab.ssh_argv(1))
    control = Path(o["ControlPath"]).parent
    assert o["ControlMaster"] == "auto" and control.is_dir()
    assert len(str(control / ("x" * 40))) < 108          # fits a unix socket path
    assert _opts(lab.ssh_argv(0))["ControlPath"] == o["ControlPath"]   # one directory per run
    lab.close()
    assert not control.exists()
    assert [a[a.index("-O") + 1] for a in calls] == ["exit", "exit"]
    assert [a[-1] for a in calls] == ["root@127.0.0.1", "root@127.0.0.1"]
    assert {a[a.index("-p") + 1] for a in calls} == {"40000", "40001"}
    lab.close()                                           # twice is harmless
    assert len(calls) == 2


def test_real_hosts_get_one_connection_per_call(tmp_path):
    t = SshTarget([Host("h1", "h1", 2222, "root")], known_hosts=tmp_path / "kh")
    assert "ControlMaster" not in _opts(t.ssh_argv(0))
    t.close()


def test_node_commands_do_not_load_the_cli():
    """What a runner starts on a node several times per sample loads only its own module:
    under emulation the CLI's imports cost about a second per start."""
    code = ("import sys; from bench.entry import node_command;"
            "rc = node_command(['agent']);"      # no config line: one error event, exit 1
            "print(rc, 'bench.cli' in sys.modules, 'argparse' in sys.modules)")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                       cwd=REPO, stdin=subprocess.DEVNULL)
    assert p.stdout.splitlines()[-1].split() == ["1", "False", "False"], p.stderr


def test_forwarding_a_node_socket_rides_the_shared_connection_only(tmp_path, monkeypatch):
    """The agents' launcher is reached through the node's shared SSH connection (`ssh -O
    forward -L local:remote`, no session); real hosts without one keep `bench agent` per agent."""
    t = SshTarget([Host("h1", "h1", 2222, "root")], known_hosts=tmp_path / "kh")
    assert not t.can_forward()
    t.share_connections()
    assert t.can_forward()
    calls = []

    def run(argv, **kw):
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0 if len(calls) == 1 else 255, "",
                                           "forwarding refused")
    monkeypatch.setattr(subprocess, "run", run)
    try:
        local = t.forward_unix(0, "/tmp/copybench-9-launch-x/agents.sock")
        argv = calls[0]
        assert argv[-5:] == ["-O", "forward", "-L",
                             f"{local}:/tmp/copybench-9-launch-x/agents.sock", "root@h1"]
        assert local.parent == t._control and len(str(local)) < 100   # sun_path's limit
        with pytest.raises(UsageError, match="forwarding refused") as exc:
            t.forward_unix(0, "/tmp/other.sock")
        assert "AllowStreamLocalForwarding" in exc.value.fix
    finally:
        monkeypatch.undo()
        t.close()
