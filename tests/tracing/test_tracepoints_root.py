"""Root tests of the tracepoints backend on this machine (no kprobes needed): bpftrace on the
sock/skb tracepoints, counting in kernel maps."""

import os

import pytest

from bench.tracing import tracefs
from bench.tracing.tracepoints import TracepointsTracer

pytestmark = pytest.mark.root

COUNT, SIZE = 1000, 1000


def _tracer_or_skip(**kw):
    if os.geteuid() != 0:
        pytest.skip("needs root: tracefs instances")
    try:
        tracefs.ensure()
    except Exception as e:  # noqa: BLE001 - any reason means: no tracefs here
        pytest.skip(f"no tracefs: {e}")
    t = TracepointsTracer(**kw)
    av = t.available()
    if not av.ok:
        pytest.skip(f"tracepoints backend unavailable: {av.reason} ({av.fix})")
    return t


def _ours():
    root = tracefs.find()
    return [p.name for p in (root / "instances").iterdir()
            if tracefs.owner_pid(p.name) == os.getpid()]


def _run(tracer, count=COUNT, size=SIZE, proto="udp"):
    from peers import udp_pair
    with udp_pair(count, size, proto) as (pids, go):
        try:
            tracer.attach(pids)
            received = go()
            counts = tracer.read()
        finally:
            tracer.detach()
    return pids, received, counts


def test_udp_receive_bytes_exact_and_attributed():
    tracer = _tracer_or_skip()
    pids, received, counts = _run(tracer)
    assert received == COUNT * SIZE
    recv = [c for c in counts if c.point == "recv_copy" and c.side == "receiver"]
    assert len(recv) == 1, counts
    assert (recv[0].calls, recv[0].bytes) == (COUNT, COUNT * SIZE)
    # calls are a lower bound (csum_and_copy_to_iter copies per fragment, unseen here)
    assert recv[0].bytes_exact is True and recv[0].calls_exact is False
    assert {s["pid"] for s in recv[0].samples} == {pids["receiver"]}
    assert recv[0].quality == "estimate" and recv[0].lost == {}
    # nothing of the receiver's leaks to the sender side and vice versa
    assert [c.calls for c in counts if c.side == "sender" and c.point == "recv_copy"] == [0]
    send = [c for c in counts if c.point == "send_copy" and c.side == "sender"]
    if send:   # sock_send_length exists from 6.3 on
        assert (send[0].calls, send[0].bytes) == (COUNT, COUNT * SIZE)
        assert send[0].bytes_exact is True and send[0].calls_exact is False


def test_tcp_bytes_copied_equal_bytes_received_calls_are_estimates():
    tracer = _tracer_or_skip()
    _, received, counts = _run(tracer, 200, 65536, "tcp")
    assert received == 200 * 65536
    recv = next(c for c in counts if c.point == "recv_copy" and c.side == "receiver")
    assert recv.bytes == received and recv.bytes_exact is True
    assert recv.calls_exact is False and recv.quality == "estimate"


def test_comm_filter_attributes_by_name():
    tracer = _tracer_or_skip(comm={"sender": "sender", "receiver": "receiver"})
    _, _, counts = _run(tracer)
    recv = [c for c in counts if c.point == "recv_copy" and c.side == "receiver"]
    assert (recv[0].calls, recv[0].bytes) == (COUNT, COUNT * SIZE)


def test_detach_leaves_no_bpftrace_and_is_idempotent():
    tracer = _tracer_or_skip()
    _run(tracer)
    tracer.detach()
    assert tracer.proc.poll() is not None and tracer.path is None
    assert _ours() == []


def test_cleanup_stale_removes_a_dead_runs_instance():
    _tracer_or_skip()
    import subprocess
    import sys

    from bench.tracing.stale import cleanup_stale
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    root = tracefs.find()
    stale = root / "instances" / f"copybench-{p.pid}-receiver"
    stale.mkdir()
    tracefs.write(stale / "events/sock/enable", "1")   # as a crashed run would leave it
    done = cleanup_stale()
    assert not stale.exists()
    assert any(stale.name in d for d in done)
    dead = [i.name for i in (root / "instances").iterdir() if i.name.startswith("copybench-")
            and not tracefs.pid_alive(tracefs.owner_pid(i.name))]
    assert dead == []
