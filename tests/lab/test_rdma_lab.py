"""RDMA in the lab VM (Debian 12, kernel 6.1, rdma_rxe, pyverbs, perftest): the working tree's
rdma workloads through `bench run`, on a soft-RoCE link the run creates and removes itself.

Each run is exact where it must be: N messages of S bytes arrive verified in the receiver's
registered memory, the kprobe module counts zero _copy_from_iter/_copy_to_iter for both agents
(the control connection's exchange ends before the tracer attaches), and soft-RoCE's own copies
(rxe_mr_copy) are reported as the row's kernel copies, at least once per payload byte per side.
Slow: soft-RoCE under QEMU TCG moves a few MB/s.
"""

from __future__ import annotations

import io
import json
import shlex
import tarfile
from pathlib import Path

import pytest

pytestmark = pytest.mark.lab

REPO = Path(__file__).resolve().parents[2]
REMOTE = "/root/copybench-rdma"
PY = "/opt/copybench/venv/bin/python"
N, SIZE = 64, 65536


class VM:
    def __init__(self, port: int, key: Path):
        from bench.lab.sshkeys import ssh_argv
        self.argv = ssh_argv("127.0.0.1", port, "root", key, known_hosts=None)

    def run(self, args: list[str], data: bytes | None = None, timeout: float = 900):
        import subprocess
        return subprocess.run(self.argv + [shlex.join(args)], input=data, capture_output=True,
                              timeout=timeout)

    def sh(self, script: str, timeout: float = 900) -> str:
        p = self.run(["sh", "-c", script], timeout=timeout)
        return p.stdout.decode() + p.stderr.decode()

    def push(self) -> None:
        """The working tree's harness, workloads and reports (the VM's installed copy may be
        older): the tests run exactly this tree."""
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for top in ("bench", "workloads", "reports"):
                tar.add(REPO / top, arcname=top,
                        filter=lambda ti: None if "__pycache__" in ti.name else ti)
        self.run(["rm", "-rf", REMOTE])
        self.run(["mkdir", "-p", REMOTE])
        self.run(["tar", "-C", REMOTE, "-xf", "-"], data=buf.getvalue())

    def bench(self, *args: str, timeout: float = 1500):
        out = f"/tmp/cb-rdma-out-{abs(hash(args)) % 10**8}"
        p = self.run(["sh", "-c", f"rm -rf {out}; cd {REMOTE} && {PY} -m bench.cli "
                      + " ".join(shlex.quote(a) for a in args) + f" --out {out}"],
                     timeout=timeout)
        text = self.run(["sh", "-c", f"cat {out}/*.json 2>/dev/null; rm -rf {out}"]).stdout
        doc = json.loads(text) if text.strip() else None
        return p.returncode, p.stdout.decode(), p.stderr.decode(), doc


@pytest.fixture(scope="module")
def vm():
    try:
        from bench.lab import manager
        from bench.lab.paths import lab_paths
    except ImportError as e:
        pytest.skip(f"lab code not importable ({e})")
    st = manager.status(lab_paths())
    if not st.get("running"):
        pytest.skip("no lab VM running: start it with `bench lab up` (tox -e lab)")
    v = VM(st["nodes"][0]["ssh_port"], Path(st["key"]))
    have = v.sh(f"{PY} -c 'import pyverbs' && command -v ib_write_bw && modprobe rdma_rxe && "
                "echo READY")
    if "READY" not in have:
        pytest.skip(f"the lab VM lacks pyverbs, perftest or rdma_rxe: {have[-300:]} "
                    "(re-provision: `bench lab up`)")
    v.push()
    _seed_kmod(v)
    yield v
    left = v.sh("rdma link show | grep -o 'cbrxe[0-9]*'; ip netns list | grep -E '^cb[0-9]+'; "
                "pgrep -a -f '[w]orkloads.agent|[i]b_write_bw|[i]b_send_bw'; true")
    assert left.strip() == "", f"left behind in the VM:\n{left}"


def _seed_kmod(v: VM) -> None:
    """Build the copy tracer module here when this host has Debian's headers for the VM's
    kernel (building under TCG takes minutes); else the VM builds it itself."""
    import sys
    import tempfile
    sys.path.insert(0, str(REPO / "tests" / "tracing"))
    from labvm import LabVM
    lab = LabVM(argv=v.argv)
    release = v.sh("uname -r").strip()
    with tempfile.TemporaryDirectory(prefix="cb-kmod-") as work:    # nothing left in /tmp
        lab.seed_kmod(release, Path(work))


def _run_case(vm, workload: str, extra=()):
    rc, out, err, doc = vm.bench("run", "--suite", "socket-vs-rdma", "--target", "local", "--workload", workload,
                                 "--sizes", str(SIZE), "--bytes", str(N * SIZE), "--repeat",
                                 "1", "--copies", "kmod", *extra)
    assert rc == 0, out[-3000:] + err[-3000:]
    (case,) = doc["cases"]
    assert case["status"] == "ok", case
    return case, out


@pytest.mark.parametrize("workload,tool", [("rdma_write", "ib_write_bw"),
                                           ("rdma_send", "ib_send_bw")])
def test_rdma_case_verifies_payload_with_zero_socket_copies(vm, workload, tool):
    case, out = _run_case(vm, workload)
    # Our own soft-RoCE link on the run's topology, removed at the end (fixture checks).
    dev = case["network"]["rdma"]["rx"]
    assert dev["created"] and dev["soft"] and dev["device"].startswith("cbrxe"), dev
    # RoCE v2 GID of the carrier veth's 198.19.x.y address (IPv4-mapped), not a fixed index.
    assert dev["gid_index"] is not None and dev["netdev"].endswith("q"), dev
    assert dev["gid"].startswith("0000:0000:0000:0000:0000:ffff:c613:"), dev
    for s in case["samples"]:
        # Exact: every message arrived and was verified in the registered memory.
        assert (s["messages_sent"], s["messages"], s["bytes"]) == (N, N, N * SIZE), s
        assert s["payload_errors"] == 0
        assert s["clock"].startswith("receiver") and s["gbps"] > 0
        tx, rx = s["rdma"]["sender"], s["rdma"]["receiver"]
        assert tx["wrs_posted"] >= N and tx["completions"] >= 1 and rx["completions"] >= 1
    # perftest in the same run, alternated with ours, on the same device and GID index.
    refs = [r for r in case["reference"] if not r.get("warmup")]
    assert refs and all(r["tool"] == tool and r.get("gbps", 0) > 0 for r in refs), refs
    assert refs[0]["device"]["gid_index"] == dev["gid_index"]
    cp = case["copies"]
    assert cp["status"] == "ok", cp
    for side in ("sender", "receiver"):
        d = cp["sides"][side]
        # Exactly zero socket copies on the verbs data path, counted by kprobes (kmod).
        assert (d["calls"], d["bytes"], d["quality"]) == (0, 0, "exact"), d
        assert d["total_copied_per_payload_byte"] is None        # never "copy-free" on rxe
    sr = cp["sides"]["soft-RoCE"]
    # rxe's responder runs in a tasklet (often ksoftirqd), yet every copy is tied to the flow
    # by its MR's owner (rdma_rxe's BTF gives where the ib_mr is): none unattributed, exact.
    assert "rxe_mr_copy" in sr["symbols"] and sr["quality"] == "exact", sr
    assert "unattributed" not in sr, sr
    # Requester (MR -> packet) and responder (packet -> MR): each payload byte at least twice.
    assert sr["bytes"] >= 2 * N * SIZE, sr
    assert "soft-RoCE" in out


def test_a_failed_completion_names_its_status(vm):
    """The status names come from Debian's python3-pyverbs, which the lab has (this host has
    no RDMA stack): status 12 is a retry-exceeded completion."""
    out = vm.sh(f"cd {REMOTE} && {PY} -c 'from workloads.rdma_verbs import _wc_status; "
                "print(_wc_status(12))'")
    assert out.strip() == "IBV_WC_RETRY_EXC_ERR", out


def test_unknown_rdma_device_fails_the_case_with_one_message(vm):
    rc, out, err, doc = vm.bench("run", "--suite", "socket-vs-rdma", "--target", "local",
                                 "--workload", "rdma_write", "--sizes", "4096", "--bytes", "40960",
                                 "--no-reference",
                                 "--copies", "off", "--rdma-device", "nope9")
    assert rc == 1, out + err
    (case,) = doc["cases"]
    assert case["status"] == "failed" and "no such RDMA device" in case["reason"], case


def test_doctor_cleanup_removes_a_stale_soft_roce_link_only(vm):
    out = vm.sh("ip link add cbstale0 type veth peer name cbstale1 && ip link set cbstale0 up && "
                "ip link set cbstale1 up && rdma link add cbrxe999999 type rxe netdev cbstale0 && "
                f"cd {REMOTE} && {PY} -m bench.cli doctor --cleanup | grep -i soft-roce; "
                "rdma link show | grep -c cbrxe999999; ip link del cbstale0; true")
    assert "removed stale soft-RoCE link cbrxe999999" in out, out
    assert out.strip().endswith("0"), out


def _agent(vm, cfg: dict, setup: str = "", prefix: str = "",
           timeout: float = 120) -> list[dict]:
    """One agent fed its config on stdin; `setup` runs before the pipe (a `;` inside the
    pipeline would hand the config to the setup command instead of the agent). stdin stays
    open a while: its end means "runner gone", and the agent would exit before reporting."""
    line = json.dumps(cfg)
    out = vm.sh(f"cd {REMOTE} && {setup or 'true'} && (echo {shlex.quote(line)}; sleep 20) | "
                f"{prefix} timeout 60 {PY} -m workloads.agent", timeout=timeout)
    return [json.loads(x) for x in out.splitlines() if x.startswith("{")]


def test_memlock_too_low_is_one_clear_message(vm):
    """An unprivileged agent under a tiny RLIMIT_MEMLOCK: registration fails, the agent says
    why and how to fix it, and exits (its verbs objects die with it)."""
    dev = vm.sh("rdma link show | awk '{print $2}' | cut -d/ -f1 | head -1").strip()
    if not dev:
        pytest.skip("no RDMA link in the VM to register against")
    events = _agent(vm, {"role": "receiver", "workload": "rdma_write", "size": 1 << 20,
                         "bind": "127.0.0.1", "rdma_device": dev, "max_seconds": 60},
                    setup=f"chmod -R a+rX {REMOTE}",
                    # prlimit after runuser: runuser's PAM session (pam_limits) would reset
                    # the limit to the lab's unlimited memlock.
                    prefix="runuser -u nobody -- prlimit --memlock=65536")
    errors = [e for e in events if e.get("event") == "error"]
    assert errors and "MR registration" in errors[0]["message"], events
    assert "RLIMIT_MEMLOCK" in errors[0]["message"] and "ulimit -l" in errors[0]["message"]


def test_both_wait_modes_in_one_run_and_each_row_says_how_it_waited(vm):
    """rdma_wait: the `rdma-wait` suite's events and poll cases side by side, N messages each.
    Polling agents never sleep; ib_send_bw prints that -e took effect; ib_write_bw, which has
    no -e, is recorded as busy-polling and its events row as not like for like."""
    rc, out, err, doc = vm.bench("run", "--suite", "rdma-wait", "--target", "local",
                                 "--sizes", str(SIZE), "--bytes", str(N * SIZE), "--repeat", "1",
                                 "--copies", "off", "--syscalls", "off")
    assert rc == 0, out[-3000:] + err[-3000:]
    cases = {c["id"]: c for c in doc["cases"]}
    assert set(cases) == {f"{wl}-{SIZE}-veth{sfx}" for wl in ("rdma_write", "rdma_send")
                          for sfx in ("", "-poll")}, list(cases)
    for cid, case in cases.items():
        assert case["status"] == "ok", case
        wait = "poll" if cid.endswith("-poll") else "events"
        assert case["params"]["rdma"]["wait"] == wait
        for s in case["samples"]:
            assert (s["messages"], s["payload_errors"]) == (N, 0), s
            for side in ("sender", "receiver"):
                r = s["rdma"][side]
                assert r["wait"] == wait, r
                if wait == "poll":           # never a sleep, never an event: only polling
                    assert (r["sleeps"], r.get("cq_events", 0), r["spin_limit_s"]) == \
                        (0, 0, None), r
        refs = [r for r in case["reference"] if not r.get("warmup")]
        assert refs and all("error" not in r for r in refs), refs
        for r in refs:
            w = r["method"]["wait"]
            alike = not (case["workload"] == "rdma_write" and wait == "events")
            used = wait if alike else "poll"
            assert (w["ours"], w["reference"], w["like_for_like"]) == (wait, used, alike), w
            assert w["seen"]["client"] == used, w      # perftest's own header agrees
        if not alike:
            assert "Events feature not available on WRITE verb" in refs[0]["method"]["wait"][
                "unlike"]
    assert "waiting NOT like for like" in out and "ib_send_bw -e sleeps on CQ events" in out


@pytest.mark.parametrize("workload,tool", [("rdma_send_lat", "ib_send_lat"),
                                           ("rdma_write_lat", "ib_write_lat")])
def test_rdma_round_trips_verified_with_zero_socket_copies(vm, workload, tool):
    """N transactions of 64 B each way: exactly N verified requests and N verified responses,
    their round trips in the histogram, zero socket copies on both agents (kmod), soft-RoCE's
    own copies at least once per payload byte on each end of each direction, and perftest's
    latency test beside ours for the same count (qperf runs for a time: not for --bytes)."""
    n, size = 200, 64
    rc, out, err, doc = vm.bench("run", "--suite", "latency", "--target", "local",
                                 "--workload", workload, "--sizes", str(size),
                                 "--bytes", str(n * size), "--repeat", "1", "--copies", "kmod")
    assert rc == 0, out[-3000:] + err[-3000:]
    (case,) = doc["cases"]
    assert case["status"] == "ok", case
    samples = [s for s in case["samples"] if not s.get("warmup")]
    for s in samples:
        req, resp = s["rr"]["requester"], s["rr"]["responder"]
        assert (req["transactions"], req["verified"], req["bad_responses"]) == (n, n, 0), req
        assert (resp["requests"], resp["bad_requests"]) == (n, 0), resp
        assert s["latency"]["transactions"] == n and s["latency"]["p50_ns"] > 0
        assert s["payload_errors"] == 0
        assert s["rdma"]["sender"]["opcode"] == ("SEND" if workload == "rdma_send_lat"
                                                 else "RDMA_WRITE"), s["rdma"]
    lat = case["latency"]
    assert lat["transactions"] == n * len(samples) and lat["min_ns"] <= lat["p50_ns"]
    cp = case["copies"]
    assert cp["status"] == "ok", cp
    for side in ("sender", "receiver"):
        d = cp["sides"][side]
        assert (d["calls"], d["bytes"], d["quality"]) == (0, 0, "exact"), d
    sr = cp["sides"]["soft-RoCE"]
    # each message is copied MR -> packet on its sender and packet -> MR on its receiver
    assert sr["bytes"] >= 2 * 2 * n * size and sr["quality"] == "exact", sr
    share = lat["copy_share"]
    assert share["status"] in ("ok", "not calibrated"), share
    refs = [r for r in case["reference"] if not r.get("warmup")]
    assert refs and all(r["tool"] == tool and "error" not in r for r in refs), refs
    assert refs[0]["mode"] == "iterations" and refs[0]["p50_ns"] > 0, refs[0]
    assert refs[0]["method"]["iterations_from"] == "the case's --bytes"


def test_rdma_flows_are_qps_of_their_own_each_verified(vm):
    """--flows 2 on rdma_write: two agent pairs, each its own QP, N messages each arriving
    verified; the aggregate is their sum; zero socket copies for every flow's processes;
    ib_write_bw -q 2 beside it."""
    rc, out, err, doc = vm.bench("run", "--suite", "socket-vs-rdma", "--target", "local",
                                 "--workload", "rdma_write", "--sizes", str(SIZE), "--bytes",
                                 str(N * SIZE), "--repeat", "1", "--flows", "2",
                                 "--copies", "kmod")
    assert rc == 0, out[-3000:] + err[-3000:]
    (case,) = doc["cases"]
    assert case["status"] == "ok" and case["id"] == f"rdma_write-{SIZE}-veth-p2", case
    for s in case["samples"]:
        assert (s["bytes"], s["payload_errors"]) == (2 * N * SIZE, 0), s
        assert [(f["messages"], f["bytes"]) for f in s["flows"]] == [(N, N * SIZE)] * 2
        assert all(f["rdma"]["sender"]["wrs_posted"] >= N for f in s["flows"]), s["flows"]
    refs = [r for r in case["reference"] if not r.get("warmup")]
    assert refs and all(r["tool"] == "ib_write_bw" and "error" not in r for r in refs), refs
    assert refs[0]["parallel"]["qps"] == 2
    cp = case["copies"]
    assert cp["status"] == "ok", cp
    for side in ("sender", "receiver"):
        d = cp["sides"][side]
        assert (d["calls"], d["bytes"], d["quality"]) == (0, 0, "exact"), d
    assert cp["sides"]["soft-RoCE"]["bytes"] >= 2 * 2 * N * SIZE, cp["sides"]["soft-RoCE"]
