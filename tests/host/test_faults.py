"""Bad input, Ctrl-C and killed agents: one message, the right exit code, nothing left behind."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, bench_cmd, wait_for_agent


@pytest.mark.parametrize("args,needle", [
    (["--suite", "nope"], "unknown suite"),
    (["--suite", "smoke", "--workload", "udp", "--sizes", "65508"], "largest is 65507"),
    (["--suite", "smoke", "--sizes", "0"], "at least 1 byte"),
    (["--suite", "smoke", "--sizes", "-5"], "at least 1 byte"),
    (["--suite", "smoke", "--duration", "0"], "more than 0"),
    (["--suite", "smoke", "--workload", "pigeon"], "unknown workload"),
    (["--suite", "smoke", "--repeat", "0"], "at least 1"),
    (["--suite", "smoke", "--copies", "nonsense"], "unknown tracer backend"),
    (["--suite", "smoke", "--batch", "0"], "between 1 and 1024"),
    (["--suite", "smoke", "--sockbuf", "12"], "not a socket buffer size"),
    (["--suite", "socket-vs-rdma", "--workload", "io_uring", "--queue-depth", "0"],
     "queue depth 0"),
    (["--suite", "socket-vs-rdma", "--workload", "io_uring_zc", "--queue-depth", "32769"],
     "IORING_MAX_ENTRIES"),
])
def test_bad_input_exits_2_with_one_message(run_bench, no_leftovers, args, needle, tmp_path):
    rc, out, err, doc = run_bench("run", *args)
    assert rc == 2, err
    assert needle in err and "fix:" in err and "Traceback" not in err
    assert doc is None  # nothing was run, nothing written


def test_malformed_toml_file(run_bench, no_leftovers, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text("[[matrix]\nworkloads = ['udp'")
    rc, out, err, doc = run_bench("run", "--suite", str(bad))
    assert rc == 2 and "not valid TOML" in err and "Traceback" not in err


def test_not_root_for_veth_is_refused(run_bench, no_leftovers):
    if os.geteuid() != 0:
        rc, out, err, _ = run_bench("run", "--suite", "smoke")
        assert rc == 2 and "root" in err
        return
    p = subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                        *bench_cmd("run", "--suite", "smoke", "--out", "/tmp")],
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert p.returncode == 2, p.stderr
    assert "needs root" in p.stderr and "--topology loopback" in p.stderr


def test_missing_reference_tool(no_leftovers, tmp_path, root_only):
    env = dict(os.environ, PATH=f"{tmp_path}/empty")  # no iperf3 on PATH
    p = subprocess.run(bench_cmd("run", "--suite", "smoke", "--out", str(tmp_path)),
                       capture_output=True, text=True, cwd=REPO, env=env, timeout=60)
    assert p.returncode == 2 and "iperf3" in p.stderr and "--no-reference" in p.stderr


def _start(tmp_path, *args):
    return subprocess.Popen(bench_cmd("run", "--suite", "smoke", "--out", str(tmp_path), *args),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)


def _result(tmp_path):
    files = list(Path(tmp_path).glob("*.json"))
    assert len(files) == 1, files
    return json.loads(files[0].read_text())


def test_ctrl_c_mid_run_keeps_finished_cases(tmp_path, root_only, no_leftovers):
    p = _start(tmp_path, "--duration", "3", "--no-reference")
    # Let the first case (udp) finish, interrupt during the second (tcp).
    wait_for_agent(p.pid, "sender")
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if list(tmp_path.glob("*.json")) and any(
                c["status"] == "ok" for c in _result(tmp_path)["cases"]):
            break
        time.sleep(0.1)
    wait_for_agent(p.pid, "sender")
    p.send_signal(signal.SIGINT)
    out, err = p.communicate(timeout=30)
    assert p.returncode == 130, err
    doc = _result(tmp_path)
    assert doc["status"] == "interrupted"
    statuses = [c["status"] for c in doc["cases"]]
    assert [c["id"] for c in doc["cases"]] == ["udp-1472-veth-b32", "udp-1472-veth",
                                               "tcp-65536-veth"]     # every case is listed
    assert statuses[0] == "ok" and "interrupted" in statuses
    after = statuses[statuses.index("interrupted") + 1:]
    assert all(s == "not run" for s in after)


def test_killed_agent_fails_its_case_and_the_suite_goes_on(tmp_path, root_only, no_leftovers):
    p = _start(tmp_path, "--duration", "3", "--no-reference")     # udp, then tcp
    pid = wait_for_agent(p.pid, "receiver")
    time.sleep(0.5)
    os.kill(pid, signal.SIGKILL)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1, err
    doc = _result(tmp_path)
    assert doc["status"] == "failed" and "1 of 3 cases failed" in doc["reason"]
    first, *rest = doc["cases"]
    assert first["status"] == "failed" and "agent" in first["reason"]
    assert [c["status"] for c in rest] == ["ok", "ok"]
    assert all(s["payload_errors"] == 0 for c in rest for s in c["samples"])


def test_every_agent_thread_lives_in_the_agents_namespace(tmp_path, root_only, no_leftovers):
    """setns() moves one thread: a helper thread left in the host namespace would send its
    packets (e.g. UDP end markers) out of the machine. All threads must share the netns."""
    p = _start(tmp_path, "--duration", "3", "--no-reference", "--workload", "udp")
    try:
        pid = wait_for_agent(p.pid, "receiver")
        time.sleep(1.0)  # the reader and watchdog threads are up
        host_ns = os.readlink("/proc/self/ns/net")
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
        assert len(tasks) >= 2
        namespaces = {os.readlink(t / "ns/net") for t in tasks}
        assert len(namespaces) == 1 and host_ns not in namespaces, namespaces
    finally:
        p.communicate(timeout=60)
    assert p.returncode == 0


def _fake_bpftrace(tmp_path, body: str) -> str:
    """A stand-in for bpftrace: announces readiness like our script's BEGIN, then `body`."""
    fake = tmp_path / "bpftrace"
    fake.write_text("#!/usr/bin/env python3\nimport json, sys, time\n"
                    "print(json.dumps({'type': 'printf', 'data': 'copybench-ready\\n'}), flush=True)\n"
                    + body)
    fake.chmod(0o755)
    return str(fake)


def test_a_tracer_that_dies_mid_sample_is_reported_not_counted(tmp_path):
    from bench.errors import UsageError
    from bench.tracing import catalog
    from bench.tracing.bpftrace import BpftraceTracer
    t = BpftraceTracer(probes=[catalog.by_symbol("sock:sock_recv_length")],
                       binary=_fake_bpftrace(tmp_path, "sys.exit(3)\n"))
    t.attach({"receiver": os.getpid()})
    script = t.path
    time.sleep(0.5)
    with pytest.raises(UsageError, match="exited during the sample"):
        t.read()
    t.detach()
    assert not script.exists(), "generated script left behind"


def test_a_reattached_bpftrace_tracer_reports_only_its_new_run(tmp_path):
    """Node tracers are reused from case to case: the second sample's output must not carry
    the first's maps."""
    import json

    from bench.tracing import catalog
    from bench.tracing.bpftrace import BpftraceTracer
    # Its SIGINT handler is in place before it says ready (bpftrace's maps print on SIGINT).
    fake = tmp_path / "bpftrace"
    fake.write_text("#!/usr/bin/env python3\nimport json, os, signal, sys, time\n"
                    "def done(*a):\n"
                    "    print(json.dumps({'type': 'run', 'data': os.getpid()}), flush=True)\n"
                    "    sys.exit(0)\n"
                    "signal.signal(signal.SIGINT, done)\n"
                    "print(json.dumps({'type': 'printf', 'data': 'copybench-ready\\n'}), "
                    "flush=True)\n"
                    "time.sleep(60)\n")
    fake.chmod(0o755)
    t = BpftraceTracer(probes=[catalog.by_symbol("sock:sock_recv_length")], binary=str(fake))
    runs = []
    for _ in range(2):
        t.attach({"receiver": os.getpid()})
        text, _ = t._stop_and_collect()
        runs.append([json.loads(ln)["data"] for ln in text.splitlines() if '"run"' in ln])
        t.detach()
    assert len(runs[0]) == 1 and len(runs[1]) == 1 and runs[0] != runs[1]


def test_a_failed_tracer_costs_the_case_its_counts_not_its_samples(tmp_path, monkeypatch):
    """In-process run over loopback (no root): the traced sample's tracer fails; the case is ok
    with its untraced samples, and its copies say why they are missing."""
    from bench import plan, suite
    from bench.errors import UsageError
    from bench.placement import LocalPlacement
    from bench.runner import Runner

    class Broken:
        choices = []

        def available(self):
            from bench.tracing.base import Availability
            return Availability(True, "broken on purpose")

        def attach(self, pids):
            pass

        def read(self):
            raise UsageError("bpftrace exited during the sample (status 1)", "see dmesg")

        def detach(self):
            pass

    monkeypatch.setattr(LocalPlacement, "tracer",
                        lambda self, spec, survey=False, reuse=False: Broken())
    p = plan.expand(suite.load("smoke"), plan.Overrides(bytes=64 * 65536, topology="loopback",
                                                        workloads=("tcp",), reference=False))
    out = tmp_path / "r.json"
    r = Runner(p, out, copies_spec="auto")
    r.check()
    result = r.run()
    [c] = result.cases
    assert c.status == "ok" and c.samples and c.samples[0]["bytes"] == 64 * 65536
    assert c.copies["status"] == "failed" and "exited during the sample" in c.copies["reason"]
    doc = json.loads(out.read_text())
    assert doc["status"] == "complete" and doc["cases"][0]["copies"]["status"] == "failed"
