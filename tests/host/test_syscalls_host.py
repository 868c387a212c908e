"""Syscalls per agent on this kernel (root, bpftrace): exact where the workload makes them exact.

- UDP, one datagram per call: every send() is one sendto, including the ones that failed with
  ENOBUFS (counted by the sender as send_errors): sendto == datagrams sent + send_errors.
- UDP, batch 32: ceil(N / 32) sendmmsg calls (more only for partial or failed batches), no
  sendto at all.
- TCP: the receiver's recv_into loop is one recvfrom per call it reports (`recv_calls`), plus
  the one that returned end of stream, less a first call already blocked at attach.
Both ways of counting are covered: in the copy-counting sample (--copies auto) and in a sample
of its own (--copies off); and a counter that cannot attach costs a note, never the run.
"""

from __future__ import annotations

import math
import os
import shutil
from pathlib import Path

import pytest

from bench import plan, suite
from bench.placement import LocalPlacement
from bench.runner import Runner
from bench.tracing.syscount import SyscallTracer
from tests.conftest import our_netns


@pytest.fixture
def bpftrace(root_only):
    if not shutil.which("bpftrace"):
        pytest.skip("bpftrace is not installed")


def our_bpftrace() -> list[int]:
    """bpftrace processes running a script of this test process (copybench-<pid>-*.bt)."""
    tag = f"copybench-{os.getpid()}-".encode()
    found = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                argv = (d / "cmdline").read_bytes().split(b"\0")
            except OSError:
                continue
            if argv and argv[0].endswith(b"bpftrace") and any(tag in a for a in argv):
                found.append(int(d.name))
    return found


def our_children() -> list[int]:
    out = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int((d / "stat").read_text().rsplit(")", 1)[1].split()[1]) \
                    == os.getpid():
                out.append(int(d.name))
        except (OSError, IndexError, ValueError):
            pass
    return out


def run(tmp_path, workload, size, n, batch=None, copies="off", placement=None):
    ov = plan.Overrides(bytes=n * size, sizes=(size,), repeat=1, topology="veth",
                        workloads=(workload,), reference=False, batch=batch)
    r = Runner(plan.expand(suite.load("smoke"), ov), Path(tmp_path / "r.json"),
               placement=placement, copies_spec=copies, syscalls_spec="auto", warmup=False)
    r.check()
    res = r.run()
    assert res.status == "complete", res.reason
    # Only what this process made: other sessions may be running benches on this machine.
    assert not [n for n in our_netns() if n.startswith(f"cb{os.getpid()}")]
    assert not our_bpftrace() and not our_children()
    (case,) = [c for c in res.cases if c.status != "skipped"]
    return res, case


def test_udp_one_datagram_per_call_is_one_sendto_each(bpftrace, tmp_path):
    n = 3000
    res, case = run(tmp_path, "udp", 1472, n, batch=1)
    sc = case.syscalls
    assert sc["status"] == "ok" and sc["sample"] == "dedicated", sc
    tx, ts = sc["sides"]["sender"], sc["traced_sample"]
    assert ts["messages_sent"] == n
    assert tx["by_syscall"]["sendto"] == n + ts["send_errors"]
    assert "sendmmsg" not in tx["by_syscall"] and tx["quality"] == "exact"
    # the rest is the agent's protocol: a few dozen calls, not per datagram
    assert tx["calls"] - tx["by_syscall"]["sendto"] < 100
    assert tx["per_gb"] == pytest.approx(tx["calls"] / (n * 1472 / 1e9), rel=1e-3)
    rx = sc["sides"]["receiver"]
    assert rx["by_syscall"]["recvfrom"] >= ts["messages"]       # one per datagram, + the end
    assert rx["by_syscall"]["recvfrom"] <= ts["messages"] + 2
    assert res.metadata["method"]["syscalls"].startswith("system calls of each agent")


def test_udp_batch_32_is_one_sendmmsg_per_32(bpftrace, tmp_path):
    n = 3200
    _, case = run(tmp_path, "udp", 1472, n, batch=32)
    sc = case.syscalls
    assert sc["status"] == "ok", sc
    tx = sc["sides"]["sender"]
    calls, errors = tx["by_syscall"]["sendmmsg"], sc["traced_sample"]["send_errors"]
    assert math.ceil(n / 32) <= calls <= math.ceil(n / 32) * 1.1 + errors + 2, tx
    assert "sendto" not in tx["by_syscall"]
    assert sc["sides"]["receiver"]["top"][0]["name"] == "recvmmsg"


def test_tcp_receiver_calls_match_its_own_report_in_the_copy_sample(bpftrace, tmp_path):
    n, size = 2000, 65536
    res, case = run(tmp_path, "tcp", size, n, copies="auto")
    sc = case.syscalls
    if case.copies.get("status") == "ok":
        assert sc["sample"] == "copies"       # one traced sample counted both
    assert sc["status"] == "ok", sc
    ts = sc["traced_sample"]
    assert ts["recv_calls"] and ts["bytes"] == n * size
    # Its calls with data, plus the one that returned end of stream, less the first one when
    # it was already blocked in recv when the counter attached (entered before: not counted).
    recvfrom = sc["sides"]["receiver"]["by_syscall"]["recvfrom"]
    assert ts["recv_calls"] <= recvfrom <= ts["recv_calls"] + 1
    tx = sc["sides"]["sender"]
    assert tx["by_syscall"]["sendto"] >= n                     # sendall: at least one each
    assert sc["recv_calls_check"]["ratio"] > 0


class NoAttach(LocalPlacement):
    """A syscall counter whose bpftrace exits at once (it cannot attach)."""

    def syscall_tracer(self, survey=False, reuse=False):
        return SyscallTracer(binary="false")


def test_a_counter_that_cannot_attach_costs_one_note_not_the_run(bpftrace, tmp_path):
    res, case = run(tmp_path, "udp", 1472, 500, batch=1, placement=NoAttach())
    assert case.status == "ok" and case.samples
    note = res.metadata["syscalls_note"]
    assert "could not attach" in note["reason"] and note["fix"]
    assert case.syscalls["status"] == "failed"
