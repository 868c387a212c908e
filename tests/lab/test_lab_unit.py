"""Pure tests of the lab code: no VM, no root, no network beyond 127.0.0.1."""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from bench.errors import UsageError
from bench.lab import bundle, image, inventory, manager, ports, provision, qemu
from bench.lab.cli import add_parser, split_ssh_args
from bench.lab.paths import LabPaths, lab_paths
from bench.lab.progress import Quiet
from bench.targets.ssh import SshTarget

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBk copybench-lab"


# -- image cache key -------------------------------------------------------------------

def test_package_list_parsing_ignores_comments_blank_and_duplicates():
    text = "# head\nb\n\na  # why\nb\n  c \n"
    assert image.parse_packages(text) == ["a", "b", "c"]


def test_image_key_is_order_independent_and_tracks_inputs():
    k = image.image_key(["a", "b"], KEY)
    assert k == image.image_key(["b", "a", "a"], KEY)
    assert len(k) == 16 and int(k, 16) >= 0
    assert k != image.image_key(["a", "b", "c"], KEY)
    assert k != image.image_key(["a", "b"], KEY + "x")
    assert k != image.image_key(["a", "b"], KEY, recipe=image.RECIPE_VERSION + 1)


def test_default_packages_use_the_stock_kernel():
    pk = image.default_packages()
    assert "linux-image-amd64" in pk and "linux-headers-amd64" in pk
    assert not any("cloud" in p for p in pk)  # the cloud kernel lacks rdma_rxe
    for needed in ("python3-pyverbs", "rdma-core", "bpftrace", "openssh-server", "python3-apt"):
        assert needed in pk


def test_guest_files_authorize_the_key_with_strict_modes():
    files = image.guest_files(KEY)
    content, mode = files["root/.ssh/authorized_keys"]
    assert content == KEY + "\n" and mode == 0o600
    assert "iface eth0 inet dhcp" in files["etc/network/interfaces"][0]
    assert "copybench.eth1=" in files["usr/local/sbin/copybench-eth1"][0]


def test_interrupted_build_leaves_no_half_image(tmp_path, monkeypatch):
    monkeypatch.setattr(image, "check_tools", lambda: None)
    monkeypatch.setattr(image, "check_space", lambda where, need=0: None)

    def interrupted(*a, **k):
        raise KeyboardInterrupt

    monkeypatch.setattr(image, "_run_logged", interrupted)
    with pytest.raises(KeyboardInterrupt):
        image.build_image(tmp_path, ["a"], KEY, Quiet())
    assert [p.name for p in tmp_path.iterdir() if not p.name.endswith(".log")] == []
    assert image.find_image(tmp_path, image.image_key(["a"], KEY)) is None


def test_incomplete_cache_entry_is_not_trusted(tmp_path):
    key = image.image_key(["a"], KEY)
    (tmp_path / key).mkdir()
    (tmp_path / key / "rootfs.raw").write_bytes(b"")
    assert image.find_image(tmp_path, key) is None


def test_missing_mmdebstrap_names_the_apt_fix(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UsageError) as e:
        image.check_tools()
    assert "mmdebstrap" in e.value.message and e.value.fix == "apt-get install mmdebstrap"


def test_no_disk_space_is_a_usage_error(tmp_path):
    with pytest.raises(UsageError) as e:
        image.check_space(tmp_path, need=1 << 60)
    assert "COPYBENCH_CACHE" in e.value.fix


def test_cache_dir_from_environment():
    assert lab_paths({"COPYBENCH_CACHE": "/x"}).images == Path("/x/images")
    assert lab_paths({}).cache == Path("/var/cache/copybench")


# -- QEMU argv ----------------------------------------------------------------------------

def _node(i=0, link=None, d=Path("/s")):
    return qemu.NodeSpec(index=i, ssh_port=2222 + i, overlay=d / f"lab{i}.qcow2",
                         console=d / f"lab{i}.log", pidfile=d / f"lab{i}.pid", link=link)


def _opt(argv, flag):
    return [argv[i + 1] for i, a in enumerate(argv) if a == flag]


def test_qemu_argv_tcg_single_node():
    argv = qemu.qemu_argv(_node(), Path("/k"), Path("/i"), "tcg")
    # one host thread for all vCPUs: multi-threaded TCG ran stale code after kprobe patching
    assert _opt(argv, "-accel") == ["tcg,thread=single"] and _opt(argv, "-cpu") == ["max"]
    nets = _opt(argv, "-netdev")
    assert nets == ["user,id=n0,restrict=on,hostfwd=tcp:127.0.0.1:2222-:22"]
    assert "root=/dev/vda" in _opt(argv, "-append")[0]
    assert "copybench.eth1" not in _opt(argv, "-append")[0]
    assert _opt(argv, "-pidfile") == ["/s/lab0.pid"] and "-daemonize" in argv
    assert _opt(argv, "-serial") == ["file:/s/lab0.log"]
    assert _opt(argv, "-drive") == ["file=/s/lab0.qcow2,if=virtio,format=qcow2"]


def test_qemu_argv_kvm_uses_host_cpu():
    argv = qemu.qemu_argv(_node(), Path("/k"), Path("/i"), "kvm")
    assert _opt(argv, "-accel") == ["kvm"] and _opt(argv, "-cpu") == ["host"]
    with pytest.raises(ValueError):
        qemu.qemu_argv(_node(), Path("/k"), Path("/i"), "hvf")


def test_two_nodes_joined_by_a_loopback_socket_netdev(tmp_path):
    nodes = manager.plan_nodes(LabPaths(tmp_path), 2, 1536)
    a, b = (qemu.qemu_argv(n, Path("/k"), Path("/i"), "tcg") for n in nodes)
    port = nodes[0].link.port
    assert _opt(a, "-netdev")[1] == f"socket,id=n1,listen=127.0.0.1:{port}"
    assert _opt(b, "-netdev")[1] == f"socket,id=n1,connect=127.0.0.1:{port}"
    assert "copybench.eth1=198.18.0.1/24" in _opt(a, "-append")[0]
    assert "copybench.eth1=198.18.0.2/24" in _opt(b, "-append")[0]
    # distinct MACs on both NICs, all ports distinct
    assert len(set(_opt(a, "-device") + _opt(b, "-device"))) == 4
    assert len({nodes[0].ssh_port, nodes[1].ssh_port, port}) == 3
    # every host-side endpoint is on loopback
    for argv in (a, b):
        for net in _opt(argv, "-netdev"):
            assert "127.0.0.1" in net


@pytest.mark.parametrize("nodes,mem,cpus", [(0, 1536, None), (3, 1536, None), (1, 100, None),
                                            (1, 1536, 0), (1, 1536, 65)])
def test_bad_lab_sizes_are_usage_errors(tmp_path, nodes, mem, cpus):
    with pytest.raises(UsageError):
        manager.plan_nodes(LabPaths(tmp_path), nodes, mem, cpus)


@pytest.mark.parametrize("host,nodes,want", [(2, 1, 2), (2, 2, 1), (1, 1, 1), (1, 2, 1),
                                             (16, 1, 4), (16, 2, 4), (6, 2, 3)])
def test_default_vcpus_share_the_host_cpus_among_the_nodes(host, nodes, want):
    assert qemu.default_cpus(nodes, host_cpus=host) == want


def test_several_tcg_vcpus_keep_the_tsc_clocksource(tmp_path):
    # With >1 TCG vCPU the guest marks its TSC unsynchronized and reads the clock from HPET:
    # a system call per clock read in every hot loop. tsc=reliable, only there.
    one, = manager.plan_nodes(LabPaths(tmp_path), 1, 1536, cpus=1)
    two, = manager.plan_nodes(LabPaths(tmp_path), 1, 1536, cpus=2)
    def append(node, accel):
        return _opt(qemu.qemu_argv(node, Path("/k"), Path("/i"), accel), "-append")[0].split()
    assert "tsc=reliable" in append(two, "tcg")
    assert "tsc=reliable" not in append(one, "tcg")
    assert "tsc=reliable" not in append(two, "kvm")     # kvm-clock has its own vDSO path


def test_vcpus_reach_qemu_and_the_state_file(tmp_path, monkeypatch):
    monkeypatch.setattr(qemu.os, "cpu_count", lambda: 2)
    one = manager.plan_nodes(LabPaths(tmp_path), 1, 1536)
    two = manager.plan_nodes(LabPaths(tmp_path), 2, 1536)
    asked = manager.plan_nodes(LabPaths(tmp_path), 1, 1536, cpus=3)
    assert [n.cpus for n in one + two + asked] == [2, 1, 1, 3]
    assert _opt(qemu.qemu_argv(asked[0], Path("/k"), Path("/i"), "tcg"), "-smp") == ["3"]
    state = manager.node_to_state(asked[0])
    assert state["cpus"] == 3 and manager.node_from_state(state).cpus == 3
    del state["cpus"]            # a state file written before vCPUs were recorded
    assert manager.node_from_state(state).cpus == 1


def test_missing_qemu_names_the_apt_fix(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.raises(UsageError) as e:
        qemu.find_qemu()
    assert "qemu-system-x86" in e.value.fix and e.value.fix.startswith("apt-get install")


def test_kvm_probe_without_dev_kvm_falls_back(monkeypatch):
    monkeypatch.setattr(os, "access", lambda p, m: False)
    assert qemu.choose_accel("auto", Path("/k"))[0] == "tcg"
    with pytest.raises(UsageError):
        qemu.choose_accel("kvm", Path("/k"))
    assert qemu.choose_accel("tcg", Path("/k")) == ("tcg", "requested")


# -- pid files -------------------------------------------------------------------------

def test_pid_file_of_an_unrelated_process_is_not_ours(tmp_path):
    pf = tmp_path / "lab0.pid"
    pf.write_text(f"{os.getpid()}\n")  # this pytest process: alive, but not our QEMU
    assert qemu.running_pid(pf, "copybench-lab0") is None
    assert qemu.stop(pf, "copybench-lab0") is False
    assert not pf.exists()  # stale pid files are removed


def test_stop_terminates_a_matching_process(tmp_path):
    pf = tmp_path / "lab0.pid"
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)",
                             "copybench-lab0"])
    pf.write_text(str(proc.pid))
    try:
        for _ in range(50):  # until the child has exec'd `sleep`
            if qemu.running_pid(pf, "copybench-lab0"):
                break
            time.sleep(0.05)
        assert qemu.running_pid(pf, "copybench-lab0") == proc.pid
        assert qemu.stop(pf, "copybench-lab0", grace=5) is True
        assert proc.wait(timeout=5) is not None and not pf.exists()
    finally:
        proc.kill()


# -- ports ----------------------------------------------------------------------------

def test_free_port_is_bindable_on_loopback():
    p = ports.free_port()
    assert 1024 <= p <= 65535 and not ports.port_in_use(p)


def test_port_in_use_is_a_usage_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert ports.port_in_use(port)
        with pytest.raises(UsageError) as e:
            ports.require_free(port, "ssh forward")
        assert str(port) in e.value.message
    with pytest.raises(UsageError):
        ports.require_free(70000, "x")


# -- console tail and SSH wait ------------------------------------------------------------

def test_console_tail_strips_escapes_and_keeps_the_end(tmp_path):
    log = tmp_path / "c.log"
    log.write_bytes(b"".join(b"\x1b[0;32mline %d\x1b[0m\r\n" % i for i in range(100)))
    tail = qemu.console_tail(log, lines=3)
    assert tail == "line 97\nline 98\nline 99"
    assert qemu.console_tail(tmp_path / "missing") == "(no console log)"


def test_dead_qemu_during_boot_reports_the_console_tail(tmp_path):
    node = _node(d=tmp_path)
    node.console.write_text("Booting...\nKernel panic - not syncing: VFS: Unable to mount root\n")
    with pytest.raises(UsageError) as e:
        manager.wait_for_ssh(node, tmp_path / "key", 5, Quiet())
    assert "QEMU exited" in e.value.message and "Kernel panic" in e.value.message
    assert str(node.console) in e.value.fix


# -- inventory ----------------------------------------------------------------------------

def test_lab_inventory_round_trips():
    nodes = [{"name": "lab0", "ssh_port": 2222, "rdma_netdev": "eth1", "link_addr": "198.18.0.1/24"},
             {"name": "lab1", "ssh_port": 2223, "rdma_netdev": "eth1", "link_addr": "198.18.0.2/24"}]
    text = inventory.render_lab_inventory(nodes, Path("/c/ssh/id_ed25519"))
    hosts = inventory.parse_inventory(text)
    assert [(h.name, h.address, h.port, h.user) for h in hosts] == [
        ("lab0", "127.0.0.1", 2222, "root"), ("lab1", "127.0.0.1", 2223, "root")]
    assert hosts[1].key == Path("/c/ssh/id_ed25519")
    assert hosts[1].vars["rdma_netdev"] == "eth1" and hosts[1].vars["link_addr"] == "198.18.0.2/24"
    assert hosts[0].vars["copybench_offline"] == "true"


def test_write_inventory_is_atomic(tmp_path):
    p = inventory.write_inventory(tmp_path / "d" / "inv.ini", "[lab]\nx\n")
    assert p.read_text() == "[lab]\nx\n" and not list(p.parent.glob("*.tmp"))


def test_example_inventory_parses():
    hosts = inventory.load_hosts(str(Path(__file__).parents[2] / "ansible/inventory.example.ini"))
    assert [h.name for h in hosts] == ["hostA", "hostB"]
    assert hosts[0].user == "root" and hosts[0].vars["rdma_netdev"] == "enp1s0"


def test_inventory_vars_merge_all_group_and_host():
    text = "[all:vars]\nansible_user=u\nx=1\n[g]\nh1 ansible_port=2200\n[g:vars]\nx=2\n"
    (h,) = inventory.parse_inventory(text)
    assert (h.user, h.port, h.vars["x"]) == ("u", 2200, "2")


@pytest.mark.parametrize("text", ["[g]\nh1 novalue\n", "[g\nh1\n", "# nothing\n",
                                  "[g]\nh[1:3]\n", "[g]\nh ansible_port=x\n", "[g:weird]\na=1\n"])
def test_bad_inventories_are_usage_errors(text):
    with pytest.raises(UsageError):
        inventory.parse_inventory(text)


def test_host_list_and_bad_paths():
    hosts = inventory.load_hosts("root@a,b:2200")
    assert [(h.user, h.address, h.port) for h in hosts] == [("root", "a", 22), (None, "b", 2200)]
    for bad in ("./missing/inventory.ini", "nope.ini", "a:port"):
        with pytest.raises(UsageError):
            inventory.load_hosts(bad)


# -- SSH target ----------------------------------------------------------------------------

def test_exec_quotes_the_remote_command(monkeypatch):
    seen = {}

    class FakePopen:
        def __init__(self, argv, **kw):
            seen["argv"], seen["kw"] = argv, kw

    monkeypatch.setattr(subprocess, "Popen", FakePopen)
    t = SshTarget([inventory.Host("b", "10.0.0.2", 2222, "root", Path("/k"))])
    t.exec(0, ["bench", "agent", "--name", "a b; rm -rf /"])
    assert seen["argv"][0] == "ssh" and "-p" in seen["argv"] and "root@10.0.0.2" in seen["argv"]
    assert seen["argv"][-1] == "bench agent --name 'a b; rm -rf /'"
    assert seen["kw"]["stdin"] == subprocess.DEVNULL


def test_unreachable_host_is_a_usage_error():
    if shutil.which("ssh") is None:
        pytest.skip("no ssh client: apt-get install openssh-client")
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t = SshTarget([inventory.Host("h", "127.0.0.1", port, "root", None)])
    with pytest.raises(UsageError) as e:
        t.check(timeout=10)
    assert "unreachable" in e.value.message and "h (root@127.0.0.1" in e.value.message
    with pytest.raises(UsageError):
        t.host(3)


def test_lab_target_needs_a_running_lab(tmp_path, monkeypatch):
    from bench.lab.target import LabTarget
    with pytest.raises(UsageError) as e:
        LabTarget.from_lab(LabPaths(tmp_path))
    assert "bench lab up" in e.value.fix


# -- CLI ---------------------------------------------------------------------------------

def _parse(argv):
    parser = argparse.ArgumentParser(prog="bench")
    add_parser(parser.add_subparsers(dest="command"))
    return parser.parse_args(argv)


def test_cli_registers_lab_subcommands():
    args = _parse(["lab", "up", "--nodes", "2", "--memory", "1024", "--accel", "tcg"])
    assert (args.lab_command, args.nodes, args.memory, args.accel) == ("up", 2, 1024, "tcg")
    assert callable(args.func)
    for sub in ("down", "status", "destroy"):
        assert _parse(["lab", sub]).lab_command == sub
    assert _parse(["lab", "ssh", "lab1", "--", "uname", "-r"]).rest == ["lab1", "--", "uname", "-r"]


def test_cli_bad_node_count_fails_before_touching_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("COPYBENCH_CACHE", str(tmp_path))
    args = _parse(["lab", "up", "--nodes", "3"])
    with pytest.raises(UsageError):
        args.func(args)
    assert list(tmp_path.iterdir()) == []


def test_ssh_argument_splitting():
    assert split_ssh_args([], ["lab0"]) == ("lab0", [])
    assert split_ssh_args(["--", "uname", "-a"], ["lab0"]) == ("lab0", ["uname", "-a"])
    assert split_ssh_args(["1", "--", "id"], ["lab0", "lab1"]) == ("lab1", ["id"])
    with pytest.raises(UsageError):
        split_ssh_args(["lab7"], ["lab0"])


# -- provisioning helpers ------------------------------------------------------------------

RECAP = """
PLAY RECAP *********************************************************************
lab0                       : ok=13   changed=0    unreachable=0    failed=0    skipped=1
lab1                       : ok=12   changed=3    unreachable=0    failed=1    skipped=1
"""


def test_parse_recap():
    r = provision.parse_recap(RECAP)
    assert [(x.host, x.ok, x.changed, x.failed) for x in r] == [("lab0", 13, 0, 0), ("lab1", 12, 3, 1)]


def test_missing_inventory_for_provisioning(tmp_path):
    with pytest.raises(UsageError):
        provision.run_playbook(tmp_path / "nope.ini", progress=Quiet())


def test_bundle_key_is_stable_and_skips_bytecode():
    root = bundle.project_root()
    files = bundle.source_files(root)
    assert all("__pycache__" not in p.parts for p in files)
    assert root / "pyproject.toml" in files
    deps = bundle.dependencies(root / "pyproject.toml")
    assert bundle.bundle_key(root, deps) == bundle.bundle_key(root, deps)


def test_ansible_syntax_check():
    try:
        pb = provision.find_playbook_bin()
    except UsageError as e:
        pytest.skip(f"{e.message}: {e.fix}")
    site = provision.ansible_dir() / "site.yml"
    inv = Path(__file__).parents[2] / "ansible/inventory.example.ini"
    res = subprocess.run([pb, "--syntax-check", "-i", str(inv), str(site)],
                         capture_output=True, text=True,
                         env=dict(os.environ, ANSIBLE_CONFIG=str(site.parent / "ansible.cfg")))
    assert res.returncode == 0, res.stdout + res.stderr


def _apt_tasks():
    yaml = pytest.importorskip("yaml", reason="PyYAML comes with ansible-core (`bench.bootstrap`)")
    for tasks in sorted((provision.ansible_dir() / "roles").glob("*/tasks/main.yml")):
        for task in yaml.safe_load(tasks.read_text()) or []:
            if "ansible.builtin.apt" in task:
                yield tasks.parent.parent.name, task["ansible.builtin.apt"]


def _render(value, offline: bool):
    templating = pytest.importorskip("ansible.template", reason="ansible-core (`bench.bootstrap`)")
    from ansible.parsing.dataloader import DataLoader
    templar = templating.Templar(loader=DataLoader(),
                                 variables={"copybench_offline": str(offline).lower()})
    return templar.template(templating.trust_as_template(value) if isinstance(value, str)
                            else value)


@pytest.mark.parametrize("offline", [True, False])
def test_offline_hosts_never_refresh_the_apt_cache(offline):
    # Ansible's apt module refreshes when `update_cache or cache_valid_time` and the lists
    # are older than cache_valid_time. The lab VM has no route to a mirror and its image's
    # lists age with the cache, so a refresh there fails provisioning (5 retries, then fatal).
    tasks = list(_apt_tasks())
    assert {role for role, _ in tasks} >= {"tracing", "rdma"}
    for role, apt in tasks:
        refresh = bool(_render(apt.get("update_cache", False), offline)) or \
            bool(int(_render(apt.get("cache_valid_time", 0), offline)))
        assert refresh is (not offline), (role, apt)


def test_prune_keeps_only_the_current_image(tmp_path):
    for name in ("aaaa", "bbbb", ".tmp-cccc-1"):
        (tmp_path / name).mkdir()
    (tmp_path / "build-aaaa.log").write_text("x")
    gone = image.prune(tmp_path, keep="bbbb")
    assert [p.name for p in gone] == ["aaaa"]
    assert sorted(p.name for p in tmp_path.iterdir()) == [".tmp-cccc-1", "bbbb"]


def test_mounts_under_finds_chroot_mounts_only():
    info = ("22 1 0:21 / /proc rw - proc proc rw\n"
            "90 1 0:5 / /c/images/.tmp-x/root/dev rw - devtmpfs udev rw\n"
            "91 1 0:5 / /c/images/.tmp-xy rw - tmpfs t rw\n")
    assert image.mounts_under(Path("/c/images/.tmp-x"), info) == ["/c/images/.tmp-x/root/dev"]


class LocalShellTarget(SshTarget):
    """An SshTarget whose 'remote' is a local shell: exercises quoting, the tar
    stream back and clean-up without a VM."""

    def ssh_argv(self, node=0, tty=False):
        return ["sh", "-c"]


def test_missing_remote_bench_says_how_to_provision(tmp_path):
    t = LocalShellTarget([inventory.Host("local", "127.0.0.1")], remote_bench="no-such-bench-x")
    with pytest.raises(UsageError) as e:
        t.doctor()
    assert "not installed" in e.value.message and "site.yml" in e.value.fix


def test_kvm_probe_is_remembered_for_this_host_boot_only(monkeypatch, tmp_path):
    calls = []

    def probe(kernel, qemu_bin):
        calls.append(kernel)
        return False, "a KVM guest did not get through kernel boot in 25s (nested KVM hangs)"

    monkeypatch.setattr(qemu, "probe_kvm", probe)
    monkeypatch.setattr(qemu, "boot_id", lambda: "boot-1")
    cache = tmp_path / "kvm-probe.json"
    assert qemu.choose_accel("auto", Path("/k"), "qemu", cache)[0] == "tcg"
    accel, why = qemu.choose_accel("auto", Path("/k"), "qemu", cache)
    assert (accel, len(calls)) == ("tcg", 1) and "probed earlier in this host boot" in why
    qemu.choose_accel("auto", Path("/other-kernel"), "qemu", cache)      # another kernel: probe
    assert len(calls) == 2
    monkeypatch.setattr(qemu, "boot_id", lambda: "boot-2")               # host rebooted: probe
    qemu.choose_accel("auto", Path("/other-kernel"), "qemu", cache)
    assert len(calls) == 3
    cache.write_text("{not json")                                       # damaged: probe again
    qemu.choose_accel("auto", Path("/other-kernel"), "qemu", cache)
    assert len(calls) == 4


# -- skipping Ansible on nodes that hold this provisioning's key -------------------------------

def _inv(tmp_path, name, nodes):
    text = inventory.render_lab_inventory(nodes, Path("/k/id"))
    p = tmp_path / name
    p.write_text(text)
    return p


def test_provision_key_follows_roles_and_inventory_but_not_ssh_ports(tmp_path, monkeypatch):
    roles = tmp_path / "ansible"
    shutil.copytree(provision.ansible_dir(), roles)
    monkeypatch.setattr(provision, "ansible_dir", lambda: roles)
    one = [{"name": "lab0", "ssh_port": 40001, "rdma_netdev": "eth0"}]
    two = [{"name": "lab0", "ssh_port": 40001, "rdma_netdev": "eth1", "link_addr": "198.18.0.1/30"},
           {"name": "lab1", "ssh_port": 40002, "rdma_netdev": "eth1", "link_addr": "198.18.0.2/30"}]
    k1 = provision.provision_key(_inv(tmp_path, "a.ini", one))
    assert provision.provision_key(_inv(tmp_path, "b.ini", [dict(one[0], ssh_port=45555)])) == k1
    assert provision.provision_key(_inv(tmp_path, "c.ini", two)) != k1     # one node vs two
    task = roles / "roles" / "rdma" / "tasks" / "main.yml"
    task.write_text(task.read_text() + "\n# changed\n")
    assert provision.provision_key(_inv(tmp_path, "a.ini", one)) != k1


def test_playbook_gets_the_key_and_site_yml_forgets_it_first_and_writes_it_last(tmp_path):
    import yaml
    inv = _inv(tmp_path, "a.ini", [{"name": "lab0", "ssh_port": 40001, "rdma_netdev": "eth0"}])
    for bundle_path in (Path("/cache/copybench-aaaa.tar"), None):
        argv = provision.playbook_argv(inv, [], bundle_path)
        assert f"copybench_provision_key={provision.provision_key(inv)}" in argv
    (play,) = yaml.safe_load((provision.ansible_dir() / "site.yml").read_text())
    first = play["pre_tasks"][0]["ansible.builtin.file"]
    assert first == {"path": provision.MARKER, "state": "absent"}
    last = play["post_tasks"][-1]
    assert last["ansible.builtin.copy"]["dest"] == provision.MARKER
    assert "copybench_provision_key" in last["ansible.builtin.copy"]["content"]
    assert not play.get("tasks")            # nothing runs after the record but the roles' handlers


class _Node:
    def __init__(self, out, rc=0):
        self.out, self.rc = out, rc


def test_lab_up_skips_ansible_only_when_every_node_holds_the_key(tmp_path, monkeypatch):
    calls = []

    class FakeTarget:
        def __init__(self, outs):
            self.hosts, self.outs = outs, outs

        def run(self, node, argv, timeout=None, check=True):
            assert argv == ["cat", provision.MARKER]
            return subprocess.CompletedProcess(argv, self.outs[node].rc, self.outs[node].out, "")

        def prepare(self, progress=None):
            calls.append("this tree installed")

        def close(self):
            calls.append("closed")

    from bench.lab import target as lab_target
    for outs, expect in (([_Node("K\n"), _Node("K\n")], True),
                         ([_Node("K\n"), _Node("OLD\n")], False),
                         ([_Node("", 1)], False)):
        monkeypatch.setattr(lab_target.LabTarget, "from_lab", classmethod(
            lambda cls, paths, outs=outs: FakeTarget(outs)))
        assert manager._provisioned_with(LabPaths(tmp_path), "K", Quiet()) is expect
    assert calls == ["this tree installed", "closed", "closed", "closed"]
