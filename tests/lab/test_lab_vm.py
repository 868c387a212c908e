"""The lab end to end: boot, provision with the project's roles, check what the
harness needs inside the VM, then two nodes joined by a link. Slow (TCG)."""

from __future__ import annotations

import json
import subprocess
import time

import pytest

from bench.lab import bundle, manager, provision
from bench.lab.progress import Progress
from bench.lab.target import LabTarget

pytestmark = pytest.mark.lab


def _timed(lab, name, fn, *a, **kw):
    t0 = time.monotonic()
    try:
        return fn(*a, **kw)
    finally:
        lab.timings[name] = time.monotonic() - t0


@pytest.fixture(scope="module")
def provisioned(lab):
    # One bundle for every run in this session, so re-runs compare like with like.
    lab.bundle = bundle.build_bundle()
    recap = _timed(lab, "provision_first_s", provision.run_playbook, lab.paths.inventory,
                   bundle=lab.bundle)
    return recap


@pytest.fixture(scope="module")
def vm(lab, provisioned):
    target = LabTarget.from_lab(lab.paths)
    yield target
    target.close()          # its shared SSH connection


def sh(vm, *argv, node=0, timeout=300):
    return vm.run(node, list(argv), timeout=timeout).stdout


def test_first_provision_succeeds(provisioned):
    assert provisioned and all(r.failed == 0 and r.unreachable == 0 for r in provisioned)


def test_kprobes_and_kallsyms(vm):
    assert "CONFIG_KPROBES=y" in sh(vm, "grep", "-h", "CONFIG_KPROBES=", "/boot/config-" +
                                    sh(vm, "uname", "-r").strip())
    assert sh(vm, "test", "-r", "/proc/kallsyms") == ""
    assert "_copy_from_iter" in sh(vm, "grep", "-m1", "-w", "_copy_from_iter", "/proc/kallsyms")


def test_modules_and_headers(vm):
    release = sh(vm, "uname", "-r").strip()
    sh(vm, "modprobe", "rdma_rxe")
    assert "rdma_rxe" in sh(vm, "cat", "/proc/modules")
    assert sh(vm, "test", "-f", f"/lib/modules/{release}/build/Makefile") == ""
    for tool in ("gcc", "make", "bpftrace"):
        assert sh(vm, "which", tool).strip()


def test_rxe_device_and_pyverbs(vm):
    out = sh(vm, "rdma", "link", "show")
    assert "rxe0/1" in out and "netdev eth0" in out, out
    assert sh(vm, "systemctl", "is-enabled", "copybench-rxe.service").strip() == "enabled"
    assert "ok" in sh(vm, "python3", "-c", "import pyverbs; print('ok')")
    # the harness venv sees Debian's pyverbs too
    assert "ok" in sh(vm, "/opt/copybench/venv/bin/python", "-c", "import pyverbs; print('ok')")


def test_base_role_settings(vm):
    assert int(sh(vm, "sysctl", "-n", "net.core.optmem_max")) >= 4194304
    assert int(sh(vm, "sysctl", "-n", "net.core.rmem_max")) >= 67108864
    # a fresh login session gets the memlock limit from limits.d
    assert sh(vm, "sh", "-c", "ulimit -l").strip() == "unlimited"


def test_guest_reads_its_clock_without_a_system_call(lab, vm):
    # The agents and the reference tools read the clock per message: the guest's clocksource
    # must be one the vDSO reads in user space (tsc, kvm-clock), not HPET or acpi_pm (a system
    # call and, under TCG, an emulated MMIO access per read) — also with several vCPUs.
    cpus = manager.load_state(lab.paths)["nodes"][0].get("cpus", 1)
    assert int(sh(vm, "nproc")) == cpus
    source = sh(vm, "cat", "/sys/devices/system/clocksource/clocksource0/current_clocksource")
    assert source.strip() in ("tsc", "kvm-clock"), f"{cpus} vCPU(s): clocksource {source}"


def test_bench_installed(vm):
    assert sh(vm, "readlink", "/usr/local/bin/bench") == "/opt/copybench/venv/bin/bench\n"
    assert "usage" in sh(vm, "bench", "--help").lower()


def test_converged_rerun_changes_nothing(lab, vm):
    # Lists older than a day, as in any cached image after a day: an offline node must
    # still converge without asking a mirror (it has no route to one).
    sh(vm, "touch", "-d", "3 days ago", "/var/lib/apt/lists")
    sh(vm, "rm", "-f", "/var/lib/apt/periodic/update-success-stamp")
    recap = _timed(lab, "provision_converged_s", provision.run_playbook, lab.paths.inventory,
                   bundle=lab.bundle)
    assert [(r.host, r.changed, r.failed) for r in recap] == [("lab0", 0, 0)]


def test_check_mode_against_converged_vm(lab, vm):
    recap = _timed(lab, "provision_check_s", provision.run_playbook, lab.paths.inventory,
                   ["--check"], bundle=lab.bundle)
    assert [(r.host, r.changed, r.failed) for r in recap] == [("lab0", 0, 0)]


def test_ansible_syntax_check_for_real_hosts():
    pb = provision.find_playbook_bin()
    inv = provision.ansible_dir() / "inventory.example.ini"
    res = subprocess.run([pb, "--syntax-check", "-i", str(inv),
                          str(provision.ansible_dir() / "site.yml")], capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_rxe_link_and_sysctls_survive_a_reboot(lab, vm):
    vm.run(0, ["systemctl", "reboot"], check=False, timeout=30)
    time.sleep(5)  # let it go down before we wait for it to come back
    node = manager.node_from_state(manager.load_state(lab.paths)["nodes"][0])
    _timed(lab, "reboot_to_ssh_s", manager.wait_for_ssh, node, lab.paths.key,
           manager.SSH_TIMEOUT["tcg"], Progress())
    deadline = time.monotonic() + 120  # the unit runs late in boot
    while "rxe0/1" not in (out := sh(vm, "rdma", "link", "show")) and time.monotonic() < deadline:
        time.sleep(3)
    assert "rxe0/1" in out and "netdev eth0" in out, out
    assert int(sh(vm, "sysctl", "-n", "net.core.optmem_max")) >= 4194304


def test_doctor_through_the_lab_target(vm):
    """What the issue asks of the lab: bench doctor there sees kprobes, module
    loading, headers and an rxe device."""
    report = vm.doctor()
    checks = {c["name"]: c for c in report} if isinstance(report, list) else \
        {c["name"]: c for c in report.get("checks", [])}
    for name in ("kprobes", "modules", "kernel_headers", "rdma_device"):
        assert checks.get(name, {}).get("ok"), f"doctor in the lab: {name}: {checks.get(name)}"
    assert "rxe" in checks["rdma_device"]["detail"]


def _bench_cli(*args, timeout=1200, env=None):
    import sys
    return subprocess.run([sys.executable, "-m", "bench.cli", *args], capture_output=True,
                          text=True, timeout=timeout, env=env)


def _left_on_node(vm, node=0) -> str:
    """Anything of a run still on a node: namespaces, our processes, the kprobe module, our
    tracefs instances (the syscall counter's hist trigger lives in one)."""
    return sh(vm, "sh", "-c", "ip netns list; pgrep -af 'bench (agent|tracer|topology|nsexec"
              "|launcher)|iperf3|workloads.agent' | grep -v pgrep; lsmod | grep -w copytrace; "
              "ls /sys/kernel/tracing/instances | grep copybench; true",
              node=node).strip()


def test_one_node_run_through_the_remote_model(vm, tmp_path):
    """--target lab with one node: the runner here; agents, iperf3, the tracer and the veth
    topology on lab0 over SSH, every flag honoured; the result written here, saying where it
    was measured; nothing left on the node."""
    n, size = 100, 65536
    p = _bench_cli("run", "--suite", "smoke", "--target", "lab", "--workload", "tcp",
                   "--bytes", str(n * size), "--repeat", "1", "--no-warmup", "--cpus", "0,0,0",
                   "--topology", "veth", "--out", str(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(next(tmp_path.glob("smoke-*.json")).read_text())
    meta = doc["metadata"]
    assert {k: meta["placement"][k] for k in ("kind", "target", "hosts")} == \
        {"kind": "node", "target": "lab", "hosts": ["lab0"]}
    assert meta["placement"]["launch"].startswith("started by the node's launcher")
    assert meta["kernel"].startswith("6.1.") and meta["hostname"] != meta["runner_host"]
    assert meta["method"]["cpus"] == {"sender": 0, "receiver": 0, "softirq": 0}
    c = doc["cases"][0]
    assert c["id"] == f"tcp-{size}-veth" and c["status"] == "ok", c
    assert len(c["samples"]) == 1 and not c["samples"][0].get("warmup")
    s0 = c["samples"][0]
    assert (s0["messages"], s0["bytes"], s0["payload_errors"]) == (n, n * size, 0)
    assert c["network"]["kind"] == "veth" and c["network"]["tx_mtu"]
    # the node's topology helper steered the receiving end's softirq (RPS, read back there)
    assert c["network"]["rx_rps_cpu"] == 0, c["network"]
    assert int(c["network"]["rx_rps_cpus"].replace(",", ""), 16) == 1, c["network"]
    assert c["reference"] and c["reference"][0]["tool"] == "iperf3"
    assert "error" not in c["reference"][0], c["reference"]
    assert c["copies"]["status"] == "ok" and \
        c["copies"]["sides"]["receiver"]["bytes"] == n * size, c["copies"]
    assert _left_on_node(vm) == ""


def test_host_keys_trust_on_first_use_and_a_changed_key_ends_the_run(vm, lab, tmp_path):
    """The lab VM as a real host (an inventory, not --target lab): bench records its key in
    its own known_hosts on first use; a different key there ends the run, exit 2, with the
    ssh-keygen -R fix, before anything starts."""
    import os
    port = vm.hosts[0].port
    inv = tmp_path / "hosts.ini"
    inv.write_text(f"[hosts]\nlab0 ansible_host=127.0.0.1 ansible_port={port} ansible_user=root "
                   f"ansible_ssh_private_key_file={lab.paths.key}\n")
    kh = tmp_path / "ssh" / "known_hosts"
    env = dict(os.environ, COPYBENCH_KNOWN_HOSTS=str(kh))
    p = _bench_cli("doctor", "--target", str(inv), "--json", env=env, timeout=300)
    assert p.returncode == 0, p.stderr
    name = f"[127.0.0.1]:{port}"
    found = subprocess.run(["ssh-keygen", "-F", name, "-f", str(kh)], capture_output=True,
                           text=True)
    assert found.returncode == 0, "not recorded on first use"
    entry = [ln.split() for ln in kh.read_text().splitlines() if ln.strip()][0]   # maybe hashed
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", entry[1].removeprefix("ssh-"), "-N", "",
                    "-f", str(other)], check=True)
    kh.write_text(" ".join([entry[0], *other.with_suffix(".pub").read_text().split()[:2]]) + "\n")
    out = tmp_path / "out"
    p = _bench_cli("run", "--suite", "smoke", "--target", str(inv), "--out", str(out),
                   env=env, timeout=300)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "its SSH host key is not the one recorded in" in p.stderr
    assert f"ssh-keygen -R '{name}' -f {kh}" in p.stderr
    assert not out.exists() and _left_on_node(vm) == ""
    # The fix it names works: the old key forgotten, the host's key is recorded again.
    subprocess.run(["ssh-keygen", "-R", name, "-f", str(kh)], check=True, capture_output=True)
    p = _bench_cli("doctor", "--target", str(inv), "--json", env=env, timeout=300)
    assert p.returncode == 0, p.stderr


def test_seed_counts_through_bench_run_in_the_lab(vm, tmp_path):
    """Issue 4's exactness through the harness itself: 1000 UDP datagrams of 1000 B between the
    agents `sender` and `receiver` -> exactly 1000 send and 1000 receive copies of 1,000,000 B,
    counted by kprobes (kmod, since 6.1's _copy_*_iter are notrace), attributed by pid."""
    p = _bench_cli("run", "--suite", "smoke", "--target", "lab", "--workload", "udp",
                   "--sizes", "1000", "--bytes", "1000000", "--batch", "1", "--no-reference",
                   "--out", str(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    doc = json.loads(next(tmp_path.glob("*.json")).read_text())
    assert doc["metadata"]["kernel"].startswith("6.1.")
    c = doc["cases"][0]
    assert c["status"] == "ok" and c["samples"][0]["messages"] == 1000
    sides = c["copies"]["sides"]
    for side, symbol in (("sender", "_copy_from_iter"), ("receiver", "_copy_to_iter")):
        d = sides[side]
        assert (d["calls"], d["bytes"]) == (1000, 1_000_000), (side, d)
        assert d["exact"] is True and d["backends"] == ["kmod"] and d["symbols"] == [symbol]
        assert d["ns_per_copy"] and d["ns_per_copy"] > 0
        assert d["cost"]["model_seconds"] > 0
    assert "| udp-1000-veth | sender | 1000 | 1.000 | 1000000 | 1.000 |" in p.stdout
    # The same sample counted the agents' system calls with the kernel's hist trigger (6.1 has
    # them; no bpftrace compile per sample): one sendto per datagram, exactly.
    sc = c["syscalls"]
    assert sc["status"] == "ok" and sc["sample"] == "copies", sc
    assert "hist trigger" in sc["counted_by"]["nodes"]["lab0"]["available"]
    tx, rx = sc["sides"]["sender"], sc["sides"]["receiver"]
    assert tx["by_syscall"]["sendto"] == 1000 + sc["traced_sample"]["send_errors"], tx
    assert 1000 <= rx["by_syscall"]["recvfrom"] <= 1002, rx
    assert tx["quality"] == rx["quality"] == "exact"


def test_tcp_bytes_copied_equal_bytes_sent_through_bench_run(vm, tmp_path):
    n, size = 200, 65536
    p = _bench_cli("run", "--suite", "smoke", "--target", "lab", "--workload", "tcp",
                   "--bytes", str(n * size), "--no-reference", "--out", str(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    c = json.loads(next(tmp_path.glob("*.json")).read_text())["cases"][0]
    for side in ("sender", "receiver"):
        d = c["copies"]["sides"][side]
        assert d["bytes"] == n * size and d["bytes_per_payload_byte"] == 1.0, (side, d)


def test_msg_zerocopy_over_veth_moves_every_copy_to_the_fallback(vm, tmp_path):
    """Issue 7's moved copies: over veth the kernel copies each MSG_ZEROCOPY skb later
    (skb_copy_ubufs); COPY#1 vanishes but the sender's total stays ~1.0 copied per payload
    byte, measured by a probe (kmod), with the kernel's completion report beside it."""
    n, size = 100, 65536
    p = _bench_cli("run", "--suite", "socket-vs-rdma", "--target", "lab", "--workload",
                   "msg_zerocopy", "--sizes", str(size), "--bytes", str(n * size),
                   "--no-reference", "--out", str(tmp_path))
    assert p.returncode == 0, p.stdout + p.stderr
    c = json.loads(next(tmp_path.glob("*.json")).read_text())["cases"][0]
    tx = c["copies"]["sides"]["sender"]
    assert tx["bytes_per_payload_byte"] < 0.05, tx            # COPY#1 moved away ...
    assert tx["deferred"]["source"] == "probe" and "skb_copy_ubufs" in tx["deferred"]["symbols"]
    assert tx["total_copied_per_payload_byte"] >= 0.95, tx   # ... not gone (every byte, >= once)
    assert tx["completion_report"]["copied"] == tx["completion_report"]["completed"] > 0
    assert "the sender's zerocopy sends were copied later after all" in p.stdout


def _no_qemu_left(paths) -> None:
    assert not list(paths.state.glob("*.pid")), "stale pid files"
    # QEMU's command line names its pid file, which lives in this lab's state dir.
    out = subprocess.run(["pgrep", "-af", f"qemu.*{paths.state}/"], capture_output=True,
                         text=True).stdout
    assert out.strip() == "", f"QEMU still running: {out}"


def test_two_nodes_joined_by_a_link(lab):
    """Down (nothing left behind), up --nodes 2, provision both, traffic and RDMA across."""
    paths = lab.paths
    manager.down(paths)
    _no_qemu_left(paths)
    t0 = time.monotonic()
    manager.up(paths, nodes=2, provision=False)
    lab.timings["up_two_nodes_s"] = time.monotonic() - t0
    _timed(lab, "provision_two_nodes_s", provision.run_playbook, paths.inventory,
           bundle=lab.bundle)
    vm = LabTarget.from_lab(paths)
    assert [vm.link_address(0), vm.link_address(1)] == ["198.18.0.1", "198.18.0.2"]
    assert "1 received" in sh(vm, "ping", "-c", "1", "-W", "5", "198.18.0.2")
    for node in (0, 1):
        assert "netdev eth1" in sh(vm, "rdma", "link", "show", node=node)
    # RDMA WRITE between the two kernels over soft-RoCE (slow under TCG, but real).
    server = vm.exec(1, ["ib_write_bw", "-d", "rxe0", "-x", "1", "-s", "65536", "-n", "200"])
    try:
        time.sleep(3)
        client = vm.run(0, ["ib_write_bw", "-d", "rxe0", "-x", "1", "-s", "65536", "-n", "200",
                            "198.18.0.2"], timeout=180)
        assert "65536" in client.stdout, client.stdout + client.stderr
    finally:
        server.kill()
        server.wait()
    # The harness across the link: sender agent on lab0, receiver agent on lab1, iperf3 too.
    import tempfile
    from pathlib import Path
    with tempfile.TemporaryDirectory() as out:
        n, size = 300, 65536
        p = _bench_cli("run", "--suite", "smoke", "--target", "lab", "--workload", "tcp",
                       "--bytes", str(n * size), "--out", out)
        assert p.returncode == 0, p.stdout + p.stderr
        doc = json.loads(next(Path(out).glob("*.json")).read_text())
        c = doc["cases"][0]
        assert c["id"] == f"tcp-{size}-link" and c["status"] == "ok", c
        s0 = c["samples"][0]
        assert (s0["messages"], s0["bytes"], s0["payload_errors"]) == (n, n * size, 0)
        assert s0["cpu"]["sender_machine"] and s0["cpu"]["receiver_machine"]
        assert c["reference"][0].get("gbps", 0) > 0, c["reference"]
        assert doc["metadata"]["placement"]["hosts"] == ["lab0", "lab1"]
        assert set(doc["metadata"]["nodes"]) == {"lab0", "lab1"}
    vm.close()
    # `down` must leave nothing behind; then one provisioned node again for the
    # lab tests that run after this module (e.g. tests/tracing) in the same session.
    manager.down(paths)
    _no_qemu_left(paths)
    _timed(lab, "back_to_one_node_s", manager.up, paths, nodes=1)
