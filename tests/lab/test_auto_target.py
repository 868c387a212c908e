"""The README's main job as a user on our machines meets it: `bench run --suite socket-vs-rdma`
with no --target. This kernel has no kprobes and no RDMA, so the run boots the lab VM itself,
runs every row there (exact copy counts, soft-RoCE), says where and why, and shuts it down.

Runs first in the lab tier (file order) with the lab down, and leaves it down: the session's
`lab` fixture boots its own for the tests after it. Slow: a boot and a provisioning run.
"""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import REPO
from tests.lab.conftest import _cannot_run_qemu

pytestmark = pytest.mark.lab

N, SIZE = 64, 65536


def _qemu_of(paths) -> str:
    return subprocess.run(["pgrep", "-af", f"qemu.*{paths.state}/"], capture_output=True,
                          text=True).stdout.strip()


def test_the_main_job_boots_the_lab_runs_there_and_shuts_it_down(tmp_path):
    from bench import autotarget, plan, suite
    from bench.lab import manager
    from bench.lab.paths import lab_paths
    why = _cannot_run_qemu()
    if why:
        pytest.skip(f"QEMU cannot run here: {why}")
    s = suite.load("socket-vs-rdma")
    unmet = autotarget.unmet_here(autotarget.used_needs(s, plan.expand(s), "auto"))
    if not unmet:
        pytest.skip("this machine has kprobes and RDMA itself: the main job stays here")
    paths = lab_paths()
    manager.down(paths)                   # a user's fresh machine: no lab running
    p = subprocess.run([sys.executable, "-m", "bench.cli", "run", "--suite", "socket-vs-rdma",
                        "--workload", "tcp", "--workload", "rdma_write", "--sizes", str(SIZE),
                        "--bytes", str(N * SIZE), "--repeat", "1", "--no-warmup",
                        "--out", str(tmp_path)], capture_output=True, text=True, timeout=2400,
                       cwd=REPO)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "target: lab:" in p.stderr and "booting it for this run" in p.stderr
    assert "shutting it down" in p.stderr                       # progress says what it does
    assert not manager.status(paths)["running"] and _qemu_of(paths) == ""
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    t = doc["metadata"]["target"]
    assert (t["requested"], t["chosen"], t["booted_by_this_run"]) == ("auto", "lab", True)
    assert set(t["unmet_here"]) == set(unmet)
    assert doc["metadata"]["placement"]["kind"] == "node"       # every row from the lab VM
    assert "launcher" in doc["metadata"]["placement"]["launch"]   # no session per process
    cases = {c["id"]: c for c in doc["cases"]}
    tcp, rdma = cases[f"tcp-{SIZE}-veth"], cases[f"rdma_write-{SIZE}-veth"]
    for c in (tcp, rdma):
        assert c["status"] == "ok", (c["id"], c.get("reason"), c.get("fix"))
        s = c["samples"][0]
        assert (s["messages"], s["bytes"], s["payload_errors"]) == (N, N * SIZE, 0), s
    # Exact copies in the lab: TCP copies every payload byte once per side (kmod).
    for side in ("sender", "receiver"):
        d = tcp["copies"]["sides"][side]
        assert d["bytes"] == N * SIZE and d["quality"] == "exact", (side, d)
    # RDMA on the lab's own soft-RoCE device, with perftest beside it on the same device.
    devs = rdma["network"]["rdma"]
    assert devs["tx"]["soft"] and devs["tx"]["device"] == devs["rx"]["device"]
    ref = [r for r in rdma["reference"] if not r.get("warmup")]
    assert ref and ref[0]["tool"] == "ib_write_bw" and "error" not in ref[0], ref
