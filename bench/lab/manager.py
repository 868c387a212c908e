"""`bench lab up|down|status|destroy`: the lab's lifecycle, with state in one JSON file.

Invariants: a node counts as running only if its pid file names a live process
whose command line carries our QEMU -name; `down` removes every pid file; an
interrupted `up` stops whatever it started.
"""

from __future__ import annotations

import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.errors import UsageError
from bench.lab import image as image_mod
from bench.lab import inventory, ports, qemu, sshkeys
from bench.lab.paths import LabPaths
from bench.lab.progress import Progress
from bench.lab.state import (  # noqa: F401 - manager.status etc. are the lab's API
    load_state,
    node_from_state,
    node_to_state,
    running_nodes,
    save_state,
    status,
)

MAX_NODES = 2
MIN_MEMORY_MIB = 768
MAX_CPUS = 64
SSH_TIMEOUT = {"kvm": 180.0, "tcg": 420.0}


def validate_request(count: int, memory_mib: int, cpus: int | None = None) -> None:
    if not 1 <= count <= MAX_NODES:
        raise UsageError(f"--nodes {count}: the lab has 1 or {MAX_NODES} nodes",
                         "use --nodes 1 or --nodes 2")
    if memory_mib < MIN_MEMORY_MIB:
        raise UsageError(f"--memory {memory_mib}: too little for the lab VM",
                         f"use at least {MIN_MEMORY_MIB} MiB (1536 is the default)")
    if cpus is not None and not 1 <= cpus <= MAX_CPUS:
        raise UsageError(f"--cpus {cpus}: vCPUs per node must be between 1 and {MAX_CPUS}",
                         "leave --cpus out for the default (this machine's CPUs shared out "
                         "among the nodes)")


def plan_nodes(paths: LabPaths, count: int, memory_mib: int, cpus: int | None = None,
               pick_port=ports.free_port) -> list[qemu.NodeSpec]:
    """Node specs with fresh free ports; node 0 listens on the link, node 1 connects.
    `cpus`: vCPUs per node, None for qemu.default_cpus."""
    validate_request(count, memory_mib, cpus)
    vcpus = cpus or qemu.default_cpus(count)
    link_port = pick_port() if count > 1 else None
    nodes = []
    for i in range(count):
        ssh_port = pick_port()
        while ssh_port == link_port or any(n.ssh_port == ssh_port for n in nodes):
            ssh_port = pick_port()
        link = None
        if link_port:
            link = qemu.Link("listen" if i == 0 else "connect", link_port)
        d = paths.state
        nodes.append(qemu.NodeSpec(index=i, ssh_port=ssh_port, overlay=d / f"lab{i}.qcow2",
                                   console=d / f"lab{i}.console.log", pidfile=d / f"lab{i}.pid",
                                   memory_mib=memory_mib, cpus=vcpus, link=link))
    return nodes


def wait_for_ssh(node: qemu.NodeSpec, key: Path, timeout: float, progress: Progress) -> float:
    """Seconds until `ssh true` works; UsageError with the console tail otherwise."""
    t0 = time.monotonic()
    last = ""
    while time.monotonic() - t0 < timeout:
        if not qemu.running_pid(node.pidfile, node.proc_name):
            raise UsageError(
                f"{node.name}: QEMU exited while booting; console log tail:\n"
                + qemu.console_tail(node.console), f"see {node.console}")
        ok, last = sshkeys.ssh_ok("127.0.0.1", node.ssh_port, "root", key, timeout=15,
                                  known_hosts=None)
        if ok:
            return time.monotonic() - t0
        time.sleep(2)
    raise UsageError(
        f"{node.name}: SSH on 127.0.0.1:{node.ssh_port} did not come up within {timeout:.0f}s "
        f"(last error: {last or 'none'}); console log tail:\n" + qemu.console_tail(node.console),
        f"see {node.console}; `bench lab destroy` then `bench lab up` rebuilds the disks")


@contextmanager
def _sigterm_as_interrupt() -> Iterator[None]:
    """SIGTERM (CI timeouts, `kill`) takes the same clean-up path as Ctrl-C."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    old = signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


def up(paths: LabPaths, nodes: int = 1, memory_mib: int = 1536, accel: str = "auto",
       provision: bool = True, progress: Progress | None = None,
       reprovision: bool = False, cpus: int | None = None) -> dict:
    """Build/reuse the image, boot `nodes` VMs (`cpus` vCPUs each, None: the default),
    wait for SSH, write the inventory, provision (skipped where the nodes hold this
    provisioning's key, unless `reprovision`).
    Ctrl-C or SIGTERM at any point leaves no QEMU and no pid file."""
    with _sigterm_as_interrupt():
        return _up(paths, nodes, memory_mib, accel, provision, progress or Progress(),
                   reprovision, cpus)


def _up(paths: LabPaths, nodes: int, memory_mib: int, accel: str, provision: bool,
        progress: Progress, reprovision: bool = False, cpus: int | None = None) -> dict:
    if accel not in ("auto", "kvm", "tcg"):
        raise UsageError(f"--accel {accel}: unknown accelerator", "use auto, kvm or tcg")
    validate_request(nodes, memory_mib, cpus)  # before touching anything
    qemu_bin = qemu.find_qemu()
    state = load_state(paths)
    alive = running_nodes(state)
    if alive:
        running_cpus = {n.get("cpus", 1) for n in state["nodes"]}
        if cpus is not None and running_cpus != {cpus}:
            raise UsageError(f"the lab is running with {'/'.join(map(str, running_cpus))} "
                             f"vCPU(s) per node, not {cpus}",
                             "run `bench lab down` first, or leave --cpus out")
        if len(alive) == nodes == len(state["nodes"]):
            progress.line(f"lab already running ({nodes} node(s), {state['accel']})")
            if provision:
                _provision(paths, progress, reprovision)
            return status(paths)
        raise UsageError(f"a lab with {len(state['nodes'])} node(s) is already running",
                         "run `bench lab down` first")
    unlisted = qemu.ours_running(paths.state)
    if unlisted:
        raise UsageError("a copybench QEMU that the lab's state does not list holds this lab's "
                         "disks: " + "; ".join(r.describe() for r in unlisted),
                         "run `bench lab down` (it stops every QEMU of this lab, listed or not)")
    _cleanup_stale(paths, state)

    key = sshkeys.ensure_key(paths.key)
    pubkey = key.with_suffix(".pub").read_text()
    img = _image(paths, pubkey, progress)
    key_id = img.dir.name
    # No node is running here, and overlays on an older image are rebuilt below.
    for old in image_mod.prune(paths.images, keep=key_id):
        progress.line(f"removed superseded image {old.name}")
    with progress.step("Choosing the accelerator"):
        chosen, why = qemu.choose_accel(accel, img.kernel, qemu_bin, paths.kvm_probe)
    progress.line(f"accelerator: {chosen} ({why})")

    specs = plan_nodes(paths, nodes, memory_mib, cpus)
    paths.state.mkdir(parents=True, exist_ok=True)
    old = {n["name"]: n for n in (state or {}).get("nodes", [])}
    for extra in range(nodes, MAX_NODES):  # disks of nodes this lab no longer has
        for suffix in (".qcow2", ".console.log", ".pid"):
            (paths.state / f"lab{extra}{suffix}").unlink(missing_ok=True)
    for n in specs:
        # Keep a node's disk (and so its provisioning) while the image is unchanged.
        if not (n.overlay.exists() and old.get(n.name, {}).get("image_key") == key_id):
            qemu.create_overlay(img.rootfs, n.overlay)
    new_state = {"accel": chosen, "accel_reason": why, "image": str(img.dir),
                 "kernel_version": img.manifest.get("kernel_version"),
                 "nodes": [dict(node_to_state(n), image_key=key_id) for n in specs],
                 "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    save_state(paths, new_state)
    try:
        with progress.step(f"Booting {nodes} node(s) under {chosen.upper()} to SSH"):
            for n in specs:
                pid = qemu.start(n, qemu.qemu_argv(n, img.kernel, img.initrd, chosen, qemu_bin))
                progress.line(f"  {n.name}: pid {pid}, {n.cpus} vCPU(s), "
                              f"ssh 127.0.0.1:{n.ssh_port}, console {n.console}")
            for n in specs:
                secs = wait_for_ssh(n, key, SSH_TIMEOUT[chosen], progress)
                progress.line(f"  {n.name}: SSH up after {secs:.0f}s")
    except BaseException:
        # Ctrl-C or a failed boot: leave no QEMU and no pid file behind.
        for n in specs:
            qemu.stop(n.pidfile, n.proc_name, grace=2)
        raise
    inventory.write_inventory(paths.inventory, inventory.render_lab_inventory(
        new_state["nodes"], key))
    if provision:
        try:
            _provision(paths, progress, reprovision)
        except KeyboardInterrupt:
            down(paths, progress)
            raise
    return status(paths)


def _image(paths: LabPaths, pubkey: str, progress: Progress) -> image_mod.Image:
    packages = image_mod.default_packages()
    if image_mod.find_image(paths.images, image_mod.image_key(packages, pubkey)) is None:
        try:
            from bench.lab import bundle
            deps = bundle.dependencies(bundle.project_root() / "pyproject.toml")
            wheels = bundle.dependency_wheels(paths.wheels, deps, progress)
        except UsageError as e:  # no source tree or no PyPI: the role installs later
            progress.line(f"  not pre-installing Python dependencies: {e.message}")
            deps, wheels = [], None
        return image_mod.build_image(paths.images, packages, pubkey, progress, wheels, deps)
    return image_mod.build_image(paths.images, packages, pubkey, progress)


def _provision(paths: LabPaths, progress: Progress, again: bool = False) -> None:
    from bench.lab import provision  # imports ansible lookups only when needed

    key = provision.provision_key(paths.inventory)
    if not again and _provisioned_with(paths, key, progress):
        return
    provision.run_playbook(paths.inventory, progress=progress)


def _provisioned_with(paths: LabPaths, key: str, progress: Progress) -> bool:
    """Whether every node's marker (site.yml's last task) holds `key`; if so, this tree's
    copybench is installed where a node has another, and Ansible is not needed."""
    from bench.lab.provision import MARKER
    from bench.lab.target import LabTarget
    target = LabTarget.from_lab(paths)
    try:
        for node in range(len(target.hosts)):
            res = target.run(node, ["cat", MARKER], timeout=120, check=False)
            if res.returncode != 0 or res.stdout.strip() != key:
                return False
        progress.line(f"every node is provisioned with these roles for this inventory (key "
                      f"{key[:12]}): Ansible skipped (`bench lab up --reprovision` runs it)")
        target.prepare(progress)
        return True
    except UsageError as exc:     # Ansible then runs, and reports what is wrong
        progress.line(f"  not skipping Ansible: {exc.message}")
        return False
    finally:
        target.close()


def _cleanup_stale(paths: LabPaths, state: dict | None) -> None:
    """Pid files of dead processes (e.g. after a host reboot) are removed."""
    for pf in paths.state.glob("*.pid") if paths.state.exists() else []:
        name = "copybench-" + pf.stem
        if not qemu.running_pid(pf, name):
            pf.unlink(missing_ok=True)


def down(paths: LabPaths, progress: Progress | None = None) -> int:
    """Power the VMs off (cleanly if SSH answers) and remove pid files. Returns #stopped."""
    progress = progress or Progress()
    state = load_state(paths)
    alive = running_nodes(state)
    key = paths.key
    # Clean shutdown keeps the overlays' file systems consistent for the next up;
    # nodes that do not take the command (still booting, hung) are just stopped.
    accepted = []
    for n in alive:
        argv = sshkeys.ssh_argv("127.0.0.1", n["ssh_port"], "root", key,
                                known_hosts=None) + ["systemctl", "poweroff"]
        try:
            res = subprocess.run(argv, capture_output=True, timeout=15,
                                 stdin=subprocess.DEVNULL)
            if res.returncode == 0:
                accepted.append(n)
        except subprocess.TimeoutExpired:
            pass
    deadline = time.monotonic() + 60
    while accepted and time.monotonic() < deadline and running_nodes({"nodes": accepted}):
        time.sleep(0.5)
    for n in (state or {}).get("nodes", []):
        qemu.stop(Path(n["pidfile"]), f"copybench-{n['name']}", grace=5)
    unlisted = stop_unlisted(paths, progress)
    _cleanup_stale(paths, state)
    if alive:
        progress.line(f"stopped {len(alive)} node(s)")
    elif not unlisted:
        progress.line("no lab node was running")
    return len(alive) + len(unlisted)


def stop_unlisted(paths: LabPaths, progress: Progress) -> list[qemu.Running]:
    """Stop this lab's QEMUs that its state file does not (or no longer) list, saying which:
    left running, one holds a disk and a port and the next `up` boots beside it."""
    listed = {qemu.read_pid(Path(n["pidfile"])) for n in running_nodes(load_state(paths))}
    stopped = []
    for r in qemu.ours_running(paths.state):
        if r.pid not in listed and qemu.stop_pid(r.pid, r.name):
            progress.line(f"stopped a QEMU the lab's state did not list: {r.describe()}")
            stopped.append(r)
    return stopped


def destroy(paths: LabPaths, images: bool = False, progress: Progress | None = None) -> None:
    """Stop the lab and delete its disks and state; with images=True also the image cache."""
    progress = progress or Progress()
    down(paths, progress)
    shutil.rmtree(paths.state, ignore_errors=True)
    progress.line(f"removed {paths.state}")
    if images:
        for d in (paths.images, paths.bundles, paths.wheels):
            shutil.rmtree(d, ignore_errors=True)
            progress.line(f"removed {d}")
