"""sendfile and vmsplice+splice over veth: exact verified streams, what the send tracepoint
saw inside them (page references, counted apart from copies), a file changed under sendfile
caught by the receiver, and a sendfile_dir that cannot work refused before anything starts."""

import json
import os
import subprocess
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, bench_cmd, wait_for_agent

pytestmark = pytest.mark.root

N = 300


@pytest.mark.parametrize("workload,size", [("sendfile", 65536), ("sendfile", 1000),
                                           ("splice", 65536), ("splice", 4096)])
def test_n_messages_arrive_verified_and_the_sends_are_spliced(run_bench, root_only,
                                                              no_leftovers, workload, size):
    rc, out, err, doc = run_bench("run", "--suite", "sendfile-splice", "--workload", workload,
                                  "--sizes", str(size), "--bytes", str(N * size), "--repeat",
                                  "1", "--no-reference", "--syscalls", "off")
    assert rc == 0, err
    c = doc["cases"][0]
    assert c["id"] == f"{workload}-{size}-veth" and c["status"] == "ok", c.get("reason")
    for s in c["samples"]:
        assert (s["messages_sent"], s["messages"], s["bytes"]) == (N, N, N * size)
        assert s["payload_errors"] == 0 and s["stream_gap_bytes"] == 0
    copies = c["copies"]
    assert copies["status"] == "ok", copies
    tx = copies["sides"]["sender"]
    if tx["backends"] == ["tracepoints"] or not tx["backends"]:
        # sock_send_length fired inside sendfile/splice for exactly the payload: bytes the
        # socket took as page references, none through a copying send
        assert tx["bytes"] == 0 and tx["spliced"]["bytes"] == N * size, tx
        assert tx["total_quality"] == "estimate" and "page references" in tx["total_note"]
    else:       # a copy probe (kprobes): what the kernel really copied on the send side
        assert tx["quality"] == "exact"
    assert copies["sides"]["receiver"]["bytes"] == N * size


def _sendfile_fd(pid: int) -> Path:
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if "copybench-sendfile-" in target:
            return fd
    raise AssertionError("the sender holds no sendfile file")


def test_a_file_changed_during_sendfile_is_caught(tmp_path, root_only, no_leftovers):
    p = subprocess.Popen(bench_cmd("run", "--suite", "sendfile-splice", "--workload",
                                   "sendfile", "--sizes", "65536", "--duration", "3",
                                   "--repeat", "1", "--no-warmup", "--no-reference",
                                   "--copies", "off", "--syscalls", "off",
                                   "--out", str(tmp_path)),
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    pid = wait_for_agent(p.pid, "sender")
    deadline = time.monotonic() + 20
    while True:           # the file exists once the agent has written it, before "ready"
        try:
            fd = _sendfile_fd(pid)
            break
        except (AssertionError, OSError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    time.sleep(1.0)                       # mid-sample
    with open(fd, "r+b") as f:            # the unlinked file, through the sender's descriptor
        f.write(b"\xff" * 4096)
    out, err = p.communicate(timeout=120)
    assert p.returncode == 1, err
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    c = doc["cases"][0]
    assert c["status"] == "failed" and "payload verification failed" in c["reason"], c
    assert c["samples"][0]["payload_errors"] > 0


def test_a_sendfile_dir_that_cannot_work_is_bad_input(tmp_path, no_leftovers):
    suite = tmp_path / "s.toml"
    suite.write_text('name = "s"\n[defaults]\nsendfile_dir = "/nonexistent/dir"\n'
                     '[[matrix]]\nworkloads = ["sendfile"]\nsizes = [4096]\n')
    p = subprocess.run(bench_cmd("run", "--suite", str(suite), "--topology", "loopback",
                                 "--out", str(tmp_path / "out")),
                       capture_output=True, text=True, cwd=REPO, timeout=60)
    assert p.returncode == 2
    assert "sendfile_dir /nonexistent/dir is not a directory" in p.stderr
    assert "fix: set sendfile_dir" in p.stderr and "Traceback" not in p.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").glob("*.json"))
