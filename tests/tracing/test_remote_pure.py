"""Two-node counting without VMs: the node protocol (bench.tracing.remote.serve), the runner's
RemoteTracer against fake node processes speaking it, pid/side mapping and the merge."""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.errors import UsageError
from bench.tracing import remote
from bench.tracing.base import Availability, PointCounts, Tracer

FAKE = Path(__file__).with_name("fake_node_tracer.py")
NAMES = ["lab0", "lab1"]


# -- pure parts ---------------------------------------------------------------------------------
def test_pids_go_to_the_node_their_agent_runs_on():
    assert remote.split_pids({"sender": 11, "receiver": 22}) == {0: {"sender": 11},
                                                                 1: {"receiver": 22}}
    assert remote.split_pids({"receiver": 22}) == {1: {"receiver": 22}}
    with pytest.raises(UsageError, match="no node for side 'other'"):
        remote.split_pids({"other": 1})
    # several flows: each flow's processes go where its role runs, under their own names
    assert remote.split_pids({"sender": 11, "receiver": 22, "sender.1": 12,
                              "receiver.1": 23}) == {0: {"sender": 11, "sender.1": 12},
                                                     1: {"receiver": 22, "receiver.1": 23}}
    merged = remote.merge({"lab0": [_pc("sender.1")], "lab1": [_pc("receiver.1")]},
                          {"lab0": ["sender"], "lab1": ["receiver"]})
    assert [p.side for p in merged] == ["sender.1", "receiver.1"]


def _pc(side, point="send_copy", calls=3, **kw):
    return PointCounts(point, side, "_copy_from_iter", "kmod", True, calls=calls,
                       bytes=calls * 100, ns_total=9, **kw).to_json()


def test_merge_keeps_each_nodes_sides_and_labels_stray_copies_with_the_node():
    lossy = PointCounts("recv_copy", "receiver", "_copy_to_iter", "kmod", True, calls=5, bytes=50)
    lossy.add_loss("kretprobe_missed", 2)
    merged = remote.merge({"lab0": [_pc("sender"), _pc("other", "zc_fallback", 2)],
                           "lab1": [lossy.to_json(), _pc("other", "zc_fallback", 7)]},
                          {"lab0": ["sender"], "lab1": ["receiver"]})
    by = {(p.side, p.point): p for p in merged}
    assert set(by) == {("sender", "send_copy"), ("other@lab0", "zc_fallback"),
                       ("receiver", "recv_copy"), ("other@lab1", "zc_fallback")}
    # Two kernels' stray copies are never summed into one figure.
    assert by[("other@lab0", "zc_fallback")].calls == 2
    assert by[("other@lab1", "zc_fallback")].calls == 7
    assert by[("sender", "send_copy")].quality == "exact"
    assert by[("receiver", "recv_copy")].quality == "lossy"       # quality travels intact
    assert by[("receiver", "recv_copy")].lost == {"kretprobe_missed": 2}
    assert "counted on lab1" in by[("receiver", "recv_copy")].notes


def test_merge_refuses_a_side_that_does_not_run_on_that_node():
    with pytest.raises(UsageError, match="lab1 reported side 'sender'"):
        remote.merge({"lab1": [_pc("sender")]}, {"lab0": ["sender"], "lab1": ["receiver"]})


# -- the node's loop in-process -----------------------------------------------------------------
class Recorder(Tracer):
    name = "kmod"

    def __init__(self):
        self.choices, self.pids, self.detached = [], None, 0

    def available(self):
        return Availability(True, "fake")

    def attach(self, pids):
        self.pids = pids

    def read(self):
        return [PointCounts("send_copy", "sender", "_copy_from_iter", "kmod", True, calls=4,
                            bytes=400)]

    def detach(self):
        self.detached += 1


def _serve(lines, tracer=None, **kw):
    tracer = tracer or Recorder()
    out = io.StringIO()
    code = remote.serve(io.StringIO("".join(json.dumps(x) + "\n" for x in lines)), out,
                        make_tracer=lambda spec, points: tracer, prepare=lambda t: None,
                        kernel="6.1.0-test", **kw)
    return code, [json.loads(ln) for ln in out.getvalue().splitlines()], tracer


def test_serve_speaks_the_protocol_and_detaches_once():
    code, events, t = _serve([{"spec": "kmod", "node": "lab1"},
                              {"cmd": "attach", "pids": {"receiver": "77"}},
                              {"cmd": "read"}, {"cmd": "detach"}])
    assert code == 0 and t.pids == {"receiver": 77} and t.detached == 1
    assert [e["event"] for e in events] == ["ready", "attached", "counts", "detached"]
    assert events[0]["node"] == "lab1" and events[0]["kernel"] == "6.1.0-test"
    assert events[0]["available"]["ok"] is True
    assert events[2]["counts"][0]["calls"] == 4 and events[2]["counts"][0]["quality"] == "exact"


def test_a_reused_node_tracer_serves_sample_after_sample_until_quit():
    code, events, t = _serve([{"spec": "kmod", "reuse": True},
                              {"cmd": "attach", "pids": {"sender": 1}}, {"cmd": "read"},
                              {"cmd": "detach"},
                              {"cmd": "attach", "pids": {"sender": 2}}, {"cmd": "read"},
                              {"cmd": "detach"}, {"cmd": "quit"}])
    assert code == 0 and t.pids == {"sender": 2} and t.detached == 2
    assert [e["event"] for e in events] == ["ready"] + ["attached", "counts", "detached"] * 2
    # EOF on a reused tracer that is attached still detaches it
    code, events, t = _serve([{"spec": "kmod", "reuse": True},
                              {"cmd": "attach", "pids": {"sender": 1}}])
    assert code == remote.EXIT_RUNNER_GONE and t.detached == 1


def test_a_survey_that_is_reused_goes_on_serving_the_run():
    code, events, t = _serve([{"spec": "kmod", "survey": True, "bandwidth": False,
                               "reuse": True},
                              {"cmd": "attach", "pids": {"sender": 3}}, {"cmd": "read"},
                              {"cmd": "detach"}, {"cmd": "quit"}])
    assert code == 0 and t.pids == {"sender": 3} and t.detached == 1
    assert [e["event"] for e in events] == ["ready", "attached", "counts", "detached"]


def test_serve_detaches_when_the_runner_goes_away():
    code, events, t = _serve([{"spec": "auto"}, {"cmd": "attach", "pids": {"sender": 1}}])
    assert code == remote.EXIT_RUNNER_GONE and t.detached == 1


def test_serve_never_detaches_what_it_did_not_attach():
    code, events, t = _serve([{"spec": "auto", "survey": True, "bandwidth": False}])
    assert code == 0 and [e["event"] for e in events] == ["ready"] and t.detached == 0
    code, events, t = _serve([{"spec": "auto"}])
    assert code == remote.EXIT_RUNNER_GONE and t.detached == 0


def test_serve_reports_a_backend_that_cannot_work_with_its_fix():
    def refuse(spec, points):
        raise UsageError("backend kmod cannot measure anything here: no kernel headers",
                         "apt-get install linux-headers-6.1.0-x")
    out = io.StringIO()
    code = remote.serve(io.StringIO(json.dumps({"spec": "kmod"}) + "\n"), out, make_tracer=refuse)
    msg = json.loads(out.getvalue())
    assert code == 2 and msg["event"] == "error"
    assert msg["fix"] == "apt-get install linux-headers-6.1.0-x"


# -- fake node processes ------------------------------------------------------------------------
def _argv_for(tmp_path, modes=None):
    modes = modes or {}

    def argv(side):
        node = NAMES[remote.SIDE_NODE[side]]
        return [sys.executable, str(FAKE), str(tmp_path), node, modes.get(node, "ok")]
    return argv


def test_remote_tracer_counts_each_agent_on_its_node_and_merges(tmp_path):
    survey = remote.RemoteTracer(_argv_for(tmp_path), NAMES, "kmod", survey=True)
    assert survey.available().ok
    got = [(c.node, c.role, c.point, c.backend) for c in survey.choices]
    assert ("lab0", "sender", "send_copy", "kmod") in got
    assert ("lab1", "receiver", "recv_copy", "kmod") in got
    assert all(c.to_json()["node"] in NAMES for c in survey.choices)
    bw = survey.bandwidth.to_json()
    assert bw["measured_on"] == "lab0" and set(bw["per_node"]) == set(NAMES)
    assert not list(tmp_path.glob("*.attach"))              # a survey attaches nothing

    t = remote.RemoteTracer(_argv_for(tmp_path), NAMES, "kmod")
    t.attach({"sender": 1234, "receiver": 5678})
    # Each node traces only the agent that runs on it, by that agent's own pid.
    assert json.loads((tmp_path / "lab0.attach").read_text()) == {"sender": 1234}
    assert json.loads((tmp_path / "lab1.attach").read_text()) == {"receiver": 5678}
    counts = {(p.side, p.point): p for p in t.read()}
    assert counts[("sender", "send_copy")].calls == 234
    assert counts[("receiver", "recv_copy")].calls == 678
    assert counts[("other@lab0", "zc_fallback")].calls == 2
    assert counts[("other@lab1", "zc_fallback")].calls == 2
    procs = [n.proc.proc for n in t.nodes]
    t.detach()
    assert all(p.poll() == 0 for p in procs)                # they said "detached" and ended
    for node in NAMES:
        assert (tmp_path / f"{node}.detach").read_text() == "detached\n"
    t.detach()                                              # idempotent


def test_a_reused_remote_tracer_keeps_its_node_processes_between_samples(tmp_path):
    t = remote.RemoteTracer(_argv_for(tmp_path), NAMES, "kmod", reuse=True)
    procs = [n.proc.proc for n in t.nodes]
    for pids in ({"sender": 1001, "receiver": 1002}, {"sender": 2001, "receiver": 2002}):
        t.attach(pids)
        assert {(p.side, p.calls) for p in t.read() if p.side in ("sender", "receiver")} == \
            {("sender", pids["sender"] % 1000), ("receiver", pids["receiver"] % 1000)}
        t.detach()
        assert all(p.poll() is None for p in procs)          # still serving, detached
    assert t.usable_for(10) and not t.usable_for(remote.DEFAULT_LIFETIME_S)
    for node in NAMES:
        assert (tmp_path / f"{node}.detach").read_text() == "detached\n" * 2
    t.close()
    assert all(p.wait(10) == 0 for p in procs)               # "quit": a clean exit
    assert not t.usable_for(10)
    t.close()                                                # idempotent


def test_the_runner_keeps_node_tracers_for_the_run_and_ends_them(tmp_path):
    placement = FakeLinkPlacement(_argv_for(tmp_path))
    r = _runner(tmp_path, placement, "kmod")
    made = []

    def make():
        made.append(placement.tracer("kmod", reuse=True))
        return made[-1]
    case = type("C", (), {"duration": 1.0})()
    a = r.counting.reused("copies", case, make)
    assert r.counting.reused("copies", case, make) is a and len(made) == 1
    procs = [n.proc.proc for n in a.nodes]
    r.counting.close()
    assert all(p.wait(10) == 0 for p in procs) and r.counting.kept == {}
    b = r.counting.reused("copies", case, make)             # after a drop: a fresh one
    assert b is not a and len(made) == 2
    r.counting.close()                                       # as _stop_everything does
    assert all(n.proc is None for n in b.nodes)


def test_an_explicit_backend_refused_on_one_node_fails_naming_node_and_fix(tmp_path):
    with pytest.raises(UsageError) as ei:
        remote.RemoteTracer(_argv_for(tmp_path, {"lab1": "refuse"}), NAMES, "bpftrace",
                            survey=True)
    assert "on lab1: backend bpftrace cannot measure" in ei.value.message
    assert ei.value.fix == "use --backend auto, or the lab VM (bench lab up)"


def test_a_failed_attach_detaches_every_node(tmp_path):
    t = remote.RemoteTracer(_argv_for(tmp_path, {"lab1": "noattach"}), NAMES, "kmod")
    with pytest.raises(UsageError, match="on lab1: insmod copytrace failed"):
        t.attach({"sender": 1, "receiver": 2})
    assert (tmp_path / "lab0.detach").read_text() == "detached\n"
    assert all(n.proc is None for n in t.nodes)


def test_a_node_without_the_remote_tracer_names_the_fix(tmp_path):
    def old_bench(side):
        return [sys.executable, "-c", "import sys; sys.stderr.write(\"bench: error: argument "
                "COMMAND: invalid choice: 'tracer'\\n\"); sys.exit(2)"]
    with pytest.raises(UsageError) as ei:
        remote.RemoteTracer(old_bench, NAMES, "auto", survey=True)
    assert "has no copy tracer" in ei.value.message and "bench lab up --nodes 2" in ei.value.fix


def _node(tmp_path, *cfg_extra, lifetime=None):
    p = subprocess.Popen([sys.executable, str(FAKE), str(tmp_path), "lab1"],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
    cfg = {"spec": "kmod", "node": "lab1"}
    if lifetime:
        cfg["lifetime_s"] = lifetime
    p.stdin.write(json.dumps(cfg) + "\n" + json.dumps({"cmd": "attach",
                                                        "pids": {"receiver": 9}}) + "\n")
    p.stdin.flush()
    assert json.loads(p.stdout.readline())["event"] == "ready"
    assert json.loads(p.stdout.readline())["event"] == "attached"
    return p


@pytest.mark.parametrize("how,code", [("eof", remote.EXIT_RUNNER_GONE),
                                      ("SIGTERM", 128 + signal.SIGTERM),
                                      ("SIGINT", 128 + signal.SIGINT),
                                      ("SIGHUP", 128 + signal.SIGHUP)])
def test_the_node_detaches_when_runner_or_ssh_dies(tmp_path, how, code):
    p = _node(tmp_path)
    if how == "eof":
        p.stdin.close()
    else:
        os.kill(p.pid, getattr(signal, how))
    assert p.wait(timeout=20) == code
    assert (tmp_path / "lab1.detach").read_text() == "detached\n"


def test_the_nodes_own_watchdog_detaches_it(tmp_path):
    t0 = time.monotonic()
    p = _node(tmp_path, lifetime=1.5)
    assert p.wait(timeout=20) == remote.EXIT_WATCHDOG
    assert time.monotonic() - t0 >= 1.5
    assert (tmp_path / "lab1.detach").read_text() == "detached\n"
    p.stdin.close()


# -- the runner with a two-node placement -------------------------------------------------------
class FakeLinkPlacement:
    name, remote = "link", True

    def __init__(self, argv_for):
        self.argv_for = argv_for

    def tracer(self, spec, survey=False, reuse=False):
        return remote.RemoteTracer(self.argv_for, NAMES, spec, survey=survey, reuse=reuse)

    def sysinfo(self):
        return {}


def _runner(tmp_path, placement, spec):
    from bench.plan import Plan
    from bench.runner import Runner
    return Runner(Plan("t", ()), tmp_path / "r.json", placement=placement, copies_spec=spec)


# The run's counting (bench/counting.py), as the runner builds it.


def test_runner_check_records_each_nodes_choices(tmp_path):
    r = _runner(tmp_path, FakeLinkPlacement(_argv_for(tmp_path)), "kmod")
    assert r.counting.check_copies() is None
    nodes = {(c["node"], c["role"]) for c in r.result.metadata["copy_backends"]}
    assert nodes == {("lab0", "sender"), ("lab1", "receiver")}
    assert r.result.metadata["memory_bandwidth"]["measured_on"] == "lab0"
    r.counting.close()         # kept for the run (see the next test): a run ends them


def test_the_runners_survey_is_its_first_tracer_and_ends_with_the_run(tmp_path):
    r = _runner(tmp_path, FakeLinkPlacement(_argv_for(tmp_path)), "kmod")
    assert r.counting.check_copies() is None
    kept = r.counting.kept["copies"]
    assert kept.reuse and all(n.proc is not None for n in kept.nodes)
    from bench.plan import Case
    case = Case("tcp", 4096, "link", 1.0, None, 1, False)
    assert r.counting.reused("copies", case, lambda: pytest.fail("a second survey")) is kept
    procs = [n.proc.proc for n in kept.nodes]
    r.counting.close()
    assert all(p.wait(timeout=20) == 0 for p in procs)     # asked to quit, and ended
    assert not r.counting.kept


def test_runner_check_fails_with_one_message_for_an_explicit_backend(tmp_path):
    r = _runner(tmp_path, FakeLinkPlacement(_argv_for(tmp_path, {"lab0": "refuse"})), "bpftrace")
    with pytest.raises(UsageError) as ei:
        r.counting.check_copies()
    assert ei.value.message.startswith("--copies bpftrace: on lab0: backend bpftrace cannot")
    assert "fix there: use --backend auto" in ei.value.message
