"""Lab tests: copies follow the socket, not the system call (kmod, the lab's 6.1 kernel).

os.write/os.read on a TCP socket and iperf3 (write/read of 64 KiB) were counted as 0 copies
when only send*/recv* system calls opened the filter; the socket entry functions
(catalog.SOCKET_GATES) now do.
"""

import json

import pytest
from labvm import REMOTE, lab_or_skip

pytestmark = pytest.mark.lab
COUNT, SIZE = 23, 1000
IPERF_BYTES = 10 * 1024 * 1024


@pytest.fixture(scope="module")
def vm(tmp_path_factory):
    lab = lab_or_skip()
    lab.push()
    lab.seed_kmod(lab.text(["uname", "-r"]).strip(), tmp_path_factory.mktemp("kmod"))
    yield lab
    left = lab.text(["sh", "-c", "lsmod | grep -w copytrace; pgrep -ax iperf3; true"])
    assert left.strip() == "", f"left behind in the VM:\n{left}"


def _trace(vm, backend: str, cmd: str, name: str) -> dict:
    vm.text(["sh", "-c", f"cd {REMOTE} && python3 -m bench.trace_cmd --backend {backend} "
             f"--json /tmp/{name}.json -- {cmd}"], timeout=900)
    return json.loads(vm.text(["cat", f"/tmp/{name}.json"]))


def _total(counts, point):
    cs = [c for c in counts if c["point"] == point and c["side"] == "cmd"]
    return sum(c["calls"] for c in cs), sum(c["bytes"] for c in cs), cs


def test_os_write_read_on_tcp_are_counted_exactly(vm):
    doc = _trace(vm, "kmod", f"python3 {REMOTE}/tests/tracing/tcp_rw.py {COUNT} {SIZE}", "rw")
    assert doc["returncode"] == 0
    for point in ("send_copy", "recv_copy"):
        calls, nbytes, cs = _total(doc["counts"], point)
        assert (calls, nbytes) == (COUNT, COUNT * SIZE), cs
        assert all(c["quality"] == "exact" for c in cs), cs


def test_iperf3_bytes_copied_equal_bytes_moved(vm):
    """iperf3 writes and reads (no send/recv calls). Bytes moved per side: iperf3's own
    sum_sent / sum_received (the server stops reading at the end of the test) plus the
    control connection, which sends and receives the same bytes within the traced tree."""
    cmd = ("sh -c 'iperf3 -s -1 -p 5399 >/dev/null & sleep 2; "
           f"iperf3 -c 127.0.0.1 -p 5399 -n {IPERF_BYTES} -l 64K -J >/tmp/iperf_c.json; wait'")
    doc = _trace(vm, "kmod", cmd, "iperf")
    end = json.loads(vm.text(["cat", "/tmp/iperf_c.json"]))["end"]
    sent, received = end["sum_sent"]["bytes"], end["sum_received"]["bytes"]
    assert sent == IPERF_BYTES
    _, copied_in, scs = _total(doc["counts"], "send_copy")
    _, copied_out, rcs = _total(doc["counts"], "recv_copy")
    control = copied_in - sent
    assert 0 < control < 4096, (copied_in, sent)
    assert copied_out - received == control, (copied_out, received, control)
    assert all(c["quality"] == "exact" for c in scs + rcs), scs + rcs


@pytest.mark.parametrize("backend", ["bpftrace", "kprobe_events"])
def test_socket_gate_on_the_other_kprobe_backends(vm, backend):
    """Same program, the backends that cannot reach 6.1's notrace _copy_*_iter: traceable
    tcp_sendmsg/tcp_recvmsg stand in, so this tests their socket gate (write and read are no
    socket system calls): 23 calls of 1000 B each way, exact."""
    out = vm.python("trace_rw.py", backend, str(COUNT), str(SIZE))
    assert out["moved"] == COUNT * SIZE
    by = {c["point"]: c for c in out["counts"] if c["side"] == "cmd"}
    for point in ("send_copy", "recv_copy"):
        assert (by[point]["calls"], by[point]["bytes"]) == (COUNT, COUNT * SIZE), by
        assert by[point]["quality"] == "exact", by[point]


@pytest.mark.parametrize("backend", ["kmod", "bpftrace", "kprobe_events"])
def test_a_unix_socket_opens_no_gate(vm, backend):
    """Each message goes over TCP and over a unix socketpair, both with os.write/os.read
    (a node launcher's agents talk to it over unix sockets). skb_copy_datagram_from_iter is
    the unix send's copy (TCP does not call it), skb_copy_datagram_iter both receives': only
    the TCP bytes may count, and no unix send at all."""
    out = vm.python("trace_rw.py", backend, str(COUNT), str(SIZE), "--unix")
    assert out["moved"] == out["unix"] == COUNT * SIZE
    by = {c["point"]: c for c in out["counts"] if c["side"] == "cmd"}
    assert by["send_copy"]["bytes"] == 0, by
    assert by["recv_copy"]["bytes"] == COUNT * SIZE and by["recv_copy"]["calls"] >= COUNT, by
