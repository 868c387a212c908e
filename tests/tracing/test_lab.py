"""Lab tests: inside the QEMU lab VM (Debian's stock kernel: kprobes, modules, rdma_rxe).

Exactness target from issue 4: 1000 UDP datagrams of 1000 B between processes named sender and
receiver give exactly 1000 send copies and 1000 receive copies of 1,000,000 B each.
"""

from pathlib import Path

import pytest
from labvm import REMOTE, lab_or_skip

pytestmark = pytest.mark.lab
COUNT, SIZE = 1000, 1000


@pytest.fixture(scope="module")
def vm(tmp_path_factory):
    lab = lab_or_skip()
    lab.push()
    lab.seed_kmod(lab.text(["uname", "-r"]).strip(), tmp_path_factory.mktemp("kmod"))
    yield lab
    leftovers = lab.text(["sh", "-c", "lsmod | grep -w copytrace; "
                          "grep copybench /sys/kernel/tracing/kprobe_events; "
                          "ls /sys/kernel/tracing/instances | grep copybench; "
                          "pgrep -ax bpftrace | grep copybench; true"])
    assert leftovers.strip() == "", f"left behind in the VM:\n{leftovers}"


def _by(counts, point, side):
    return [c for c in counts if c["point"] == point and c["side"] == side]


def _total(counts, point, side):
    cs = _by(counts, point, side)
    return sum(c["calls"] for c in cs), sum(c["bytes"] for c in cs)


@pytest.mark.parametrize("mode", ["pids", "comm"])
def test_kmod_udp_exact(vm, mode):
    args = ["kmod", str(COUNT), str(SIZE)] + (["--comm"] if mode == "comm" else [])
    out = vm.python("trace_udp.py", *args)
    assert out["received"] == COUNT * SIZE
    counts = out["counts"]
    assert _total(counts, "send_copy", "sender") == (COUNT, COUNT * SIZE)
    assert _total(counts, "recv_copy", "receiver") == (COUNT, COUNT * SIZE)
    assert _total(counts, "send_copy", "receiver") == (0, 0)   # no control-pipe noise
    assert _total(counts, "recv_copy", "sender") == (0, 0)
    send = next(c for c in _by(counts, "send_copy", "sender") if c["calls"])
    assert send["symbol"] == "_copy_from_iter" and send["exact"]
    assert send["ns_total"] > 0 and sum(send["ns_hist"].values()) == COUNT
    assert {s["pid"] for s in send["samples"]} == {out["pids"]["sender"]}
    assert all(s["addr"].startswith("0xff") for s in send["samples"])


def test_auto_discovers_notrace_and_picks_kmod(vm):
    out = vm.python("trace_udp.py", "auto", str(COUNT), str(SIZE))
    choices = {c["point"]: c for c in out["choices"]}
    for point in ("send_copy", "recv_copy"):
        assert choices[point]["backend"] == "kmod", choices[point]
        # the VM has bpftrace: it must have been rejected for a reason found on this kernel
        assert "_copy_" in choices[point]["rejected"]["bpftrace"]
    counts = out["counts"]
    assert _total(counts, "send_copy", "sender") == (COUNT, COUNT * SIZE)
    assert _total(counts, "recv_copy", "receiver") == (COUNT, COUNT * SIZE)


@pytest.mark.parametrize("backend", ["bpftrace", "kprobe_events"])
def test_traceable_function_counts_exactly(vm, backend):
    """udp_sendmsg is traceable on 6.1: the non-module backends count it exactly."""
    out = vm.python("trace_udp.py", backend, str(COUNT), str(SIZE),
                    "--probes=send_copy:udp_sendmsg:-:2")
    assert _total(out["counts"], "send_copy", "sender") == (COUNT, COUNT * SIZE)
    assert _total(out["counts"], "send_copy", "receiver") == (0, 0)
    if backend == "kprobe_events":   # the kernel's loss figures were read: none at this rate
        send = _by(out["counts"], "send_copy", "sender")[0]
        assert send["lost"] == {} and send["quality"] == "exact", send


def test_kmod_probe_cost_is_calibrated_and_below_the_copy_time(vm):
    out = vm.python("trace_udp.py", "kmod", str(COUNT), str(SIZE))
    for point, side in (("send_copy", "sender"), ("recv_copy", "receiver")):
        c = next(c for c in _by(out["counts"], point, side) if c["calls"])
        assert (c["calls"], c["bytes"]) == (COUNT, COUNT * SIZE)
        raw = c["ns_total"] / c["calls"]
        probe = c["ns_probe_per_call"]
        print(f"{c['symbol']}: raw {raw:.0f} ns/copy, probe {probe} ns/call, notes {c['notes']}")
        assert probe is not None and 0 < probe < raw, c


def test_kprobe_events_reads_skb_data_len_from_btf(vm):
    """kprobe_events fetches skb_copy_ubufs' bytes at BTF's sk_buff.data_len offset: the
    zerocopy fallback's bytes are the payload (kmod reads the same field), never 0."""
    out = vm.text(["sh", "-c", f"BACKEND=kprobe_events python3 "
                   f"{REMOTE}/tests/tracing/zc_peer.py 100 65536"])
    import json
    doc = json.loads(out.strip().splitlines()[-1])
    assert doc["received"] == 100 * 65536
    zc = [c for c in doc["counts"] if c["symbol"] == "skb_copy_ubufs"]
    assert zc and all(c["backend"] == "kprobe_events" for c in zc)
    assert sum(c["bytes"] for c in zc) > 0.9 * 100 * 65536, zc
    assert all(c["quality"] == "exact" for c in zc), zc


SENDER_C = Path(__file__).with_name("data") / "csender.c"


def test_bench_trace_counts_a_c_program_exactly(vm):
    """The image has a C toolchain with libc headers: a C UDP sender compiled in the VM, run
    under `bench trace` (kmod): N sends of S bytes are N copies of N*S bytes, each way."""
    n, size = 1000, 1000
    vm.run(["sh", "-c", "cat > /tmp/csender.c"], data=SENDER_C.read_bytes())
    vm.text(["gcc", "-O2", "-Wall", "-Werror", "-o", "/tmp/csender", "/tmp/csender.c"])
    out = vm.text(["sh", "-c", f"cd {REMOTE} && python3 -m bench.trace_cmd --backend kmod "
                   f"--json /tmp/csender.json -- /tmp/csender {n} {size}"])
    assert f"sent {n} x {size} B" in out
    import json
    doc = json.loads(vm.text(["cat", "/tmp/csender.json"]))
    assert doc["returncode"] == 0
    counts = doc["counts"]
    assert _total(counts, "send_copy", "cmd") == (n, n * size)
    assert _total(counts, "recv_copy", "cmd") == (n, n * size)
    for point in ("send_copy", "recv_copy"):
        assert all(c["quality"] == "exact" and c["backend"] == "kmod"
                   for c in _by(counts, point, "cmd")), counts


UDP_SELF = ("import socket\n"
            "a = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); a.bind(('127.0.0.1', 0))\n"
            "b = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
            "for i in range(23):\n"
            "    b.sendto(b'HELLO_NETWORK', a.getsockname()); a.recv(64)\n")


def test_bench_trace_reproduces_the_seed_lines(vm):
    out = vm.text(["sh", "-c", f"cd {REMOTE} && python3 -m bench.trace_cmd --backend kmod "
                   f"--samples 2 -- python3 -c \"$0\"", UDP_SELF])
    assert out.count("[COPY1] PID=") == 2 and out.count("[COPY4] PID=") == 2
    assert " len=13 ns=" in out
    row = next(line for line in out.splitlines() if line.startswith("send_copy ")
               and "_copy_from_iter " in line)
    assert row.split()[3:5] == ["23", "299"]        # 23 copies of 13 B


def test_ctrl_c_unloads_the_module(vm):
    # A background job of a non-interactive shell ignores SIGINT; restore it as a terminal has.
    launch = ("import os, signal, sys; signal.signal(signal.SIGINT, signal.SIG_DFL); "
              "os.execvp(sys.argv[1], sys.argv[1:])")
    script = (f"cd {REMOTE} && (python3 -c \"$0\" python3 -m bench.trace_cmd --backend kmod "
              "-- sleep 60 > /tmp/trace.out 2>&1 & pid=$!; "
              "for i in $(seq 120); do lsmod | grep -qw copytrace && break; sleep 1; done; "
              "kill -INT $pid; wait $pid; echo rc=$?; lsmod | grep -cw copytrace; true)")
    out = vm.text(["sh", "-c", script, launch])
    assert "rc=130" in out and out.strip().endswith("0"), out


LOAD_CYCLES = 25


def test_load_unload_cycles_under_traffic_leave_the_guest_working(vm):
    # With a host thread per vCPU this guest soft-locked (a vCPU trapping on an int3 already
    # removed) or jumped to 0 within 9 and 28 cycles of two runs; one thread: 100 clean.
    out = vm.python("attach_cycles.py", str(LOAD_CYCLES), "busy", timeout=900)
    assert out["cycles"] == LOAD_CYCLES and out["kernel_trouble"] == [], out
    assert vm.text(["sh", "-c", "lsmod | grep -cw copytrace; true"]).strip() == "0"


@pytest.mark.parametrize("backend, symbol", [("kmod", None), ("kprobe_events", "udp_sendmsg")])
def test_cleanup_after_a_killed_tracer(vm, backend, symbol):
    args = f"{backend} {symbol or ''}"
    script = (f"cd {REMOTE} && (python3 tests/tracing/hold_tracer.py {args} > /tmp/hold.out & "
              "pid=$!; for i in $(seq 120); do grep -q attached /tmp/hold.out && break; "
              "sleep 1; done; kill -9 $pid; wait $pid; "
              "echo before: $(lsmod | grep -cw copytrace) $(grep -c copybench "
              "/sys/kernel/tracing/kprobe_events); "
              "python3 -c 'from bench.tracing.stale import cleanup_stale; "
              "print(cleanup_stale())'; "
              "echo after: $(lsmod | grep -cw copytrace) $(grep -c copybench "
              "/sys/kernel/tracing/kprobe_events) "
              "$(ls /sys/kernel/tracing/instances | grep -c copybench))")
    out = vm.text(["sh", "-c", script])
    before = out.split("before:")[1].split()[:2]
    assert before != ["0", "0"], out                 # the kill did leave something behind
    assert out.split("after:")[1].split()[:3] == ["0", "0", "0"], out


def test_msg_zerocopy_on_loopback_moves_the_copy(vm):
    """Send copies vanish with MSG_ZEROCOPY, but loopback copies the pages in skb_copy_ubufs."""
    out = vm.python("zc_peer.py", "100", "65536")
    assert out["received"] == 100 * 65536
    def total(sym):   # the process's own slot plus "other" (softirq run by ksoftirqd)
        return sum(c["bytes"] for c in out["counts"] if c["symbol"] == sym)

    assert total("_copy_from_iter") == 0                # no COPY#1 for the zerocopy sends
    assert total("skb_copy_ubufs") > 0.9 * 100 * 65536
    assert total("_copy_to_iter") == 100 * 65536        # the receive copy stays
    # Wherever the softirq ran (the sender's time or ksoftirqd), each zerocopy skb is tied to
    # the flow by its sending socket: nothing is left unattributed in "other".
    other = [c for c in out["counts"] if c["symbol"] == "skb_copy_ubufs" and c["side"] == "other"]
    assert sum(c["bytes"] for c in other) == 0, other


def test_rdma_over_rxe_counts_emulation_copies_not_socket_copies(vm):
    has = vm.text(["sh", "-c", "command -v ib_write_bw >/dev/null && rdma link show | "
                   "grep -o 'rxe[0-9]*' | head -1; true"]).strip()
    if not has:
        pytest.skip("no rxe link or perftest in the lab VM: rdma link add rxe0 type rxe "
                    "netdev eth0")
    addr = vm.text(["sh", "-c", "ip -4 -o addr show eth0 | awk '{print $4}' | cut -d/ -f1"])
    n, size = 100, 65536
    bw = f"ib_write_bw -d {has} -x 1 -n {n} -s {size}"
    cmd = f"{bw} >/dev/null 2>&1 & sleep 3; {bw} {addr.strip()} >/dev/null 2>&1; wait"
    vm.text(["sh", "-c", f"cd {REMOTE} && python3 -m bench.trace_cmd --backend kmod "
             f"--json /tmp/rxe.json -- sh -c \"$0\" >/dev/null", cmd], timeout=900)
    import json
    counts = json.loads(vm.text(["cat", "/tmp/rxe.json"]))["counts"]
    rxe = sum(c["bytes"] for c in counts if c["symbol"] == "rxe_mr_copy")
    sock = sum(c["bytes"] for c in counts if c["point"] in ("send_copy", "recv_copy"))
    assert rxe >= 2 * n * size        # requester MR -> packet, responder packet -> MR
    assert sock < 10_000              # only perftest's TCP handshake, no payload
    # rxe's tasklets copy outside perftest's processes, but each MR's owner is traced
    other = [c for c in counts if c["symbol"] == "rxe_mr_copy" and c["side"] == "other"]
    assert sum(c["bytes"] for c in other) == 0, other


def test_kmod_tcp_bytes_copied_equal_bytes_sent(vm):
    count, size = 200, 100_000
    out = vm.python("trace_udp.py", "kmod", str(count), str(size), "--tcp")
    assert out["received"] == count * size
    assert _total(out["counts"], "send_copy", "sender")[1] == count * size
    assert _total(out["counts"], "recv_copy", "receiver")[1] == count * size
