"""The two-node counting path on one machine: the runner counts through RemoteTracer with one
real `python -m bench.tracing.remote` process per side (here both on this kernel, so the sides
run in two veth namespaces instead of two machines). What this adds to the pure tests: real
agents, the real node-side select/attach/read/detach, the runner's pid mapping and merge."""

from __future__ import annotations

import sys
from pathlib import Path

from bench import plan, suite
from bench.placement import LocalPlacement
from bench.runner import Runner
from bench.tracing.remote import RemoteTracer
from tests.conftest import leaked, our_netns


class TracerPerSide(LocalPlacement):
    def tracer(self, spec, survey=False, reuse=False):
        return RemoteTracer(lambda side: [sys.executable, "-m", "bench.tracing.remote"],
                            ["nodeA", "nodeB"], spec, survey=survey, reuse=reuse)


def test_runner_counts_through_one_tracer_process_per_side(root_only, tmp_path):
    n, size = 200, 65536
    ov = plan.Overrides(bytes=n * size, sizes=(size,), repeat=1, topology="veth",
                        workloads=("tcp",), reference=False)
    ns0 = our_netns()
    r = Runner(plan.expand(suite.load("smoke"), ov), Path(tmp_path / "r.json"),
               placement=TracerPerSide(), copies_spec="auto")
    r.check()
    res = r.run()
    assert res.status == "complete" and leaked(ns0, set())[0] == set()
    cp = res.cases[0].copies
    assert cp["status"] == "ok", cp
    nodes = {(c["node"], c["role"]) for c in res.metadata["copy_backends"]}
    assert nodes == {("nodeA", "sender"), ("nodeB", "receiver")}
    for side, node in (("sender", "nodeA"), ("receiver", "nodeB")):
        d = cp["sides"][side]
        # TCP: bytes copied = payload bytes on each side, whichever backend this kernel allows
        # (tracepoints: bytes exact, calls an estimate; kprobe backends: exact).
        assert d["bytes"] == n * size, (side, d)
        pts = [p for p in cp["points"] if p["side"] == side and p["point"] == d["point"]]
        assert pts and all(f"counted on {node}" in p["notes"] for p in pts)
        assert all(p["bytes_exact"] for p in pts) and all(not p["lost"] for p in pts)


class SyscallsPerSide(LocalPlacement):
    """The syscall counter as on two nodes: one `bench tracer` (spec syscalls) per side."""

    def syscall_tracer(self, survey=False, reuse=False):
        from bench.tracing.syscount import SPEC
        return RemoteTracer(lambda side: [sys.executable, "-m", "bench.tracing.remote"],
                            ["nodeA", "nodeB"], SPEC, survey=survey, reuse=reuse)


def test_syscalls_counted_through_one_tracer_process_per_side(root_only, tmp_path):
    import shutil
    if not shutil.which("bpftrace"):
        import pytest
        pytest.skip("bpftrace is not installed")
    n, size = 1000, 1472
    ov = plan.Overrides(bytes=n * size, sizes=(size,), repeat=1, topology="veth",
                        workloads=("udp",), reference=False, batch=1)
    r = Runner(plan.expand(suite.load("smoke"), ov), Path(tmp_path / "r.json"),
               placement=SyscallsPerSide(), copies_spec="off", syscalls_spec="auto")
    r.check()
    res = r.run()
    assert res.status == "complete"
    (case,) = [c for c in res.cases if c.status != "skipped"]
    sc = case.syscalls
    assert sc["status"] == "ok" and sc["sample"] == "dedicated", sc
    tx, rx = sc["sides"]["sender"], sc["sides"]["receiver"]
    assert tx["counted_on"] == ["nodeA"] and rx["counted_on"] == ["nodeB"]
    assert tx["by_syscall"]["sendto"] == n + sc["traced_sample"]["send_errors"]
    assert "sendto" not in rx["by_syscall"]
    assert rx["by_syscall"]["recvfrom"] >= sc["traced_sample"]["messages"]
    assert sc["counted_by"]["nodes"]["nodeA"]["kernel"]
